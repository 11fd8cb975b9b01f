"""The joint Newton step for quadratic responses (jsdm/model/newton_nonlinear.py): its
gradient and curvature blocks against the analytic gradient and its finite differences,
its step raises the ELBO, and a fit with the Newton phase reaches the optimum of the
L-BFGS route."""
import functools

import numpy as np
import pytest

from jsdm.model.newton_nonlinear import _Blocks, newton_means, supported
from jsdm.model.objective import cell_eval, evaluate
from jsdm.model.params import Layout
from test_ordination_quadratic import _problem


def _point(prob, seed=5):
    layout = Layout(prob.predictor)
    x = np.random.default_rng(seed).normal(0.0, 0.3, layout.size)
    P = layout.unpack(x)
    P.D_q = np.abs(np.asarray(P.D_q)) + 0.1
    return P


def _grad_blocks(prob, P):
    """(species block incl. D_j (m, kp), global D (ng,), site block (n, kv + ns): the site
    means and the free entries of Sigma_i) of the analytic gradient (unclipped)."""
    from jsdm.model.terms.quadratic import sigma_pairs

    pred = prob.predictor
    ev = evaluate(prob, P)
    g = ev.grad
    gp = pred.species_coef(g) * pred.free
    # d ELBO / d Sigma_i (symmetric): sum_j Gv U U' + the term's part + (Sigma^-1 - Pr) / 2
    kr = pred.kr
    UR = pred.site_design(P, random_only=True)
    UU = (UR[:, :, None] * UR[:, None, :]).reshape(pred.m, kr * kr)
    G = (ev.Gv @ UU).reshape(pred.n, kr, kr)
    G += pred.nonlinear_terms[0].sigma_gradient(pred, P, ev.Gm, ev.Gv)
    S = P.L @ np.swapaxes(P.L, 1, 2)
    G += 0.5 * (np.linalg.inv(S) - np.diag(pred.prior_precision(P)))
    gS = np.column_stack([G[:, k, l] * (1 if k == l else 2) for k, l in sigma_pairs(kr)])
    gu = np.column_stack([pred.site_means(g), gS])
    Dq = np.asarray(g.D_q, dtype=float)
    if Dq.ndim == 2:
        return np.column_stack([gp, Dq]), np.zeros(0), gu
    return gp, Dq, gu


def _shift(prob, P, dphi=None, dD=None, du=None):
    """P moved in the species block, D, and the site block (means, then Sigma's entries)."""
    from jsdm.model.terms.quadratic import sigma_pairs

    pred = prob.predictor
    T = P.copy()
    if dphi is not None:
        pred.set_species_coef(T, pred.species_coef(P) + dphi)
    if dD is not None:
        T.D_q = np.asarray(P.D_q, dtype=float) + dD
    if du is not None:
        kv = pred.kv
        pred.set_site_means(T, pred.site_means(P) + du[:, :kv])
        S = P.L @ np.swapaxes(P.L, 1, 2)
        for e, (k, l) in enumerate(sigma_pairs(pred.kr)[:du.shape[1] - kv]):
            S[:, k, l] += du[:, kv + e]
            if k != l:
                S[:, l, k] += du[:, kv + e]
        T.L = np.linalg.cholesky(S)
    return T


CASES = [("poisson", True, dict(num_lv=2)), ("poisson", "lv", dict(num_lv=2)),
         ("gaussian", True, dict(num_lv=2)), ("gaussian", "lv", dict(num_lv=1, row_effect="random")),
         ("poisson", True, dict(num_lv=1, row_effect="random")),
         ("negative_binomial", "lv", dict(num_lv=2, row_effect="fixed"))]


@pytest.mark.parametrize("sigma", [False, True])
@pytest.mark.parametrize("family,mode,case", CASES)
def test_blocks_match_the_gradient_and_its_finite_differences(family, mode, case, sigma,
                                                              monkeypatch):
    """Every block of the curvature (species, global D, site, and the species x site cross
    blocks) against central differences of the analytic gradient: a coordinate of all
    species (or all sites) at once for the diagonal blocks (the ELBO separates over species
    given the sites and over sites given the species), one species at a time for the cross
    blocks; the site block with and without the entries of Sigma_i. E_mv, E_vv come from a forward difference of the family's derivatives in v
    (step 1e-4 (1 + v) in the fit, relative error of that order): taken here with step 1e-7,
    so that what is compared is the assembly."""
    from jsdm.model import newton

    monkeypatch.setattr(newton, "mv_curvature", functools.partial(newton.mv_curvature, h=1e-7))
    prob = _problem(family, mode, **case)
    pred = prob.predictor
    P = _point(prob)
    ce = cell_eval(prob, P, clip=False)
    assert supported(prob) and not (ce["Gv"] > 0).any()
    B = _Blocks(prob, P, ce, sigma=sigma)
    gp, gg, gu = _grad_blocks(prob, P)
    gu = gu[:, :B.kv]           # the site means, and Sigma's entries when in the step
    np.testing.assert_allclose(B.gp * B.free, gp * B.free, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(B.gg, gg, rtol=1e-9, atol=1e-9)
    free_u = np.ones_like(gu)
    for i, k in pred.pinned:
        free_u[i, k] = 0.0
    np.testing.assert_allclose(B.gu, gu * free_u, rtol=1e-9, atol=1e-9)
    tol = 2e-5
    h = 1e-5
    m, kp = B.gp.shape
    ks, n, kv = pred.ks, pred.n, B.kv

    def close(a, b):
        scale = max(np.abs(b).max(), 1.0)
        assert np.abs(a - b).max() <= tol * scale, (np.abs(a - b).max(), scale)

    def diff(**kw):
        kw = {k: v for k, v in kw.items() if v is not None}
        plus = _grad_blocks(prob, _shift(prob, P, **kw))
        minus = _grad_blocks(prob, _shift(prob, P, **{k: -v for k, v in kw.items()}))
        dp, dg, du = [(a - b) / (2 * h) for a, b in zip(plus, minus)]
        return dp, dg, du[:, :B.kv]

    def species_shift(a, j=None):
        e = np.zeros((m, kp))
        if j is None:
            e[:, a] = h
        else:
            e[j, a] = h
        return dict(dphi=e[:, :ks], dD=e[:, ks:] if kp > ks else None)

    for a in range(kp):
        if not B.free[:, a].any():
            continue
        dp, dg, _ = diff(**species_shift(a))
        rows = B.free[:, a] > 0
        close((B.Hpp[:, :, a] * B.free)[rows], (dp * B.free)[rows])
        if B.ng:
            close(B.Hpg[rows, a, :].sum(0), dg)
        for j in (0, m - 1):
            if B.free[j, a]:
                _, _, du = diff(**species_shift(a, j))
                close(B.C[a, :, :, j].T * free_u, du * free_u)
    for g in range(B.ng):
        e = np.zeros(B.ng)
        e[g] = h
        dp, dg, du = diff(dD=e)
        close(B.Hgg[:, g], dg)
        close(B.Hpg[:, :, g] * B.free, dp * B.free)
        close(B.Cg[:, g, :] * free_u, du * free_u)
    for k in range(kv):
        e = np.zeros((n, kv))
        e[:, k] = h
        _, _, du = diff(du=e)
        mask = free_u * free_u[:, k:k + 1]         # (a pinned coordinate: its own row, column)
        close(B.Huu[:, :, k] * mask, du * mask)


@pytest.mark.parametrize("family,mode,case", CASES[:3])
def test_newton_step_raises_the_elbo(family, mode, case):
    prob = _problem(family, mode, **case)
    P = _point(prob)
    ce = cell_eval(prob, P)
    before = float(ce["site"].sum())
    for _ in range(3):
        P, ce, ok = newton_means(prob, P, ce)
        assert ok
        after = float(ce["site"].sum())
        assert after > before
        before = after


@pytest.mark.parametrize("family,mode,case", CASES)
def test_dense_schur_matches_its_products(family, mode, case):
    """The dense Schur complement (factorised for small systems) and the matrix-free
    products of the conjugate-gradient route are the same operator."""
    prob = _problem(family, mode, **case)
    P = _point(prob)
    B = _Blocks(prob, P, cell_eval(prob, P))
    A = B.dense()
    rng = np.random.default_rng(1)
    for _ in range(3):
        z = rng.normal(size=A.shape[0])
        np.testing.assert_allclose(A @ z, B.neg_schur(z), rtol=1e-10, atol=1e-10)
    # the step factorises the lower triangle only (built without the symmetrising passes)
    np.testing.assert_allclose(np.tril(B.dense(lower=True)), np.tril(A), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family,mode,case", CASES[:2])
def test_step_on_the_face_of_the_bound(family, mode, case):
    """D entries near their bound 0 that the step takes below it are set to reach 0 exactly,
    and the rest of the step solves the Newton system given them (projected Newton); entries
    farther from the bound are left to the line search's clipping."""
    from jsdm.model import newton_nonlinear as nl
    from jsdm.model.newton import newton_ascent

    prob = _problem(family, mode, **case)
    P, _, _ = newton_ascent(prob, _point(prob), max_iter=30)     # -S positive definite here
    B = _Blocks(prob, P, cell_eval(prob, P))
    A, Asym = B.dense(lower=True), B.dense()
    assert np.linalg.eigvalsh(Asym)[0] > 0
    rhs = (np.concatenate([B.gp.ravel(), B.gg]) - B.c(B.dinv(B.gu))) * B.freez
    idx = B._D_index()
    D = np.full(idx.size, 0.5)
    D[::2] = 0.5 * nl._FACE_NEAR            # every other entry near the bound ...
    dz0 = np.zeros(rhs.size)
    dz0[idx] = -1.0                         # ... and a step taking all of them below it
    dz = B._on_face(A.copy(), rhs, dz0, D)
    near = np.zeros(rhs.size, bool)
    near[idx[::2]] = B.freez[idx[::2]] > 0          # (D entries held at 0 by the blocks stay)
    assert near.any()
    np.testing.assert_array_equal(dz[near], -D[::2][near[idx[::2]]])  # exactly onto the bound
    free = ~near & (B.freez > 0)
    np.testing.assert_allclose((Asym @ dz)[free], rhs[free], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("family,mode,case", CASES[:2])
def test_cg_route_solves_the_damped_system(family, mode, case):
    """The conjugate-gradient route (large systems): near an optimum (30 Newton iterations
    from the test point; -S positive definite there) it solves -S x = rhs as the dense
    factorisation does; from the test point, where -S is indefinite, its damped step
    raises the ELBO."""
    from jsdm.model import newton_nonlinear as nl
    from jsdm.model.newton import newton_ascent

    prob = _problem(family, mode, **case)
    P0 = _point(prob)
    P, _, _ = newton_ascent(prob, P0, max_iter=30)
    B = _Blocks(prob, P, cell_eval(prob, P))
    A = B.dense()
    assert np.linalg.eigvalsh(A)[0] > 0
    rhs = np.random.default_rng(2).normal(size=A.shape[0]) * B.freez
    np.testing.assert_allclose(B.solve_cg(rhs, rtol=1e-12, maxiter=500),
                               np.linalg.solve(A, rhs), rtol=1e-6, atol=1e-8)
    ce = cell_eval(prob, P0)
    B0 = _Blocks(prob, P0, ce)
    assert np.linalg.eigvalsh(B0.dense())[0] < 0
    old = nl._DENSE_FLOPS
    try:
        nl._DENSE_FLOPS = 0.0
        before = float(ce["site"].sum())
        _, ct, ok = newton_means(prob, P0, ce)
    finally:
        nl._DENSE_FLOPS = old
    assert ok and float(ct["site"].sum()) > before


def test_damped_solve_leaves_its_matrix_as_it_was():
    """``_solve_pd`` damps an indefinite system on its diagonal and restores the diagonal:
    the face step (``_Blocks._on_face``) solves again from the same matrix, which must not
    carry the first solve's damping (it was then damped twice)."""
    from jsdm.model.newton_nonlinear import _solve_pd

    rng = np.random.default_rng(3)
    B = rng.normal(size=(6, 6))
    A = B + B.T - 3.0 * np.eye(6)                       # indefinite
    assert np.linalg.eigvalsh(A)[0] < 0
    A0 = A.copy()
    memo = {}
    x = _solve_pd(A, np.ones(6), memo)
    np.testing.assert_array_equal(A, A0)
    assert memo["lam"] > 0                             # it was damped
    lam = memo["lam"] * max(np.abs(np.diag(A0)).max(), 1.0)
    np.testing.assert_allclose((np.tril(A0) + np.tril(A0, -1).T + lam * np.eye(6)) @ x,
                               np.ones(6), rtol=1e-10, atol=1e-10)
