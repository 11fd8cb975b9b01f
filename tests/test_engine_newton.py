"""The joint Newton step: the matrix-free Schur complement equals the dense one."""
import warnings

import numpy as np
import pytest

import jsdm
from jsdm.model import newton as nt
from jsdm.model.blocks import cell_eval


def _operator(row_effect, shift=0.05):
    com, _ = jsdm.simulate_community(60, 8, num_lv=2, family="negative_binomial",
                                     n_covariates=2, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        fit = jsdm.gllvm(com, family="nb", num_lv=2, row_effect=row_effect, n_init=1, seed=1)
    prob, P = fit.problem, fit.state.params.copy()
    P.beta0 = P.beta0 + shift                      # a little away from the optimum
    ce = cell_eval(prob, P)
    Xt = np.column_stack([np.ones(prob.n), prob.X, P.a])
    U = nt._site_design(prob, P)
    free = np.ones((prob.m, Xt.shape[1]))
    free[:, 1 + prob.p:] = np.tril(np.ones((prob.m, prob.d)))
    Hbb, gb = nt._species_blocks(prob, P, ce, Xt)
    D, gu = nt._site_blocks(prob, P, ce, U)
    op = nt._Schur(prob, ce, Xt, U, free, Hbb, np.linalg.inv(D))
    return prob, ce, op, gb * free - op.c(op.dinv(gu))


@pytest.mark.parametrize("row_effect", [None, "fixed", "random"], ids=["none", "fixed", "random"])
def test_matrix_free_schur_products_equal_the_dense_matrix(row_effect):
    prob, ce, op, _ = _operator(row_effect)
    S = nt._dense_schur(prob, ce, op)
    x = np.random.default_rng(2).normal(size=op.free.shape)
    np.testing.assert_allclose(op.neg_schur(x).ravel(), -(S @ x.ravel()), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("row_effect", [None, "random"], ids=["none", "random"])
def test_conjugate_gradients_solve_the_newton_system_near_the_optimum(row_effect):
    prob, ce, op, rhs = _operator(row_effect)
    S = nt._dense_schur(prob, ce, op)
    direct = nt._solve_nd(S, -rhs.ravel())
    cg = op.solve_cg(rhs, rtol=1e-12, maxiter=1000).ravel()
    np.testing.assert_allclose(cg, direct, rtol=1e-7, atol=1e-10)


def test_both_solvers_reach_the_same_optimum(monkeypatch):
    com, _ = jsdm.simulate_community(150, 40, num_lv=2, family="negative_binomial",
                                     n_covariates=2, seed=5)
    fits = {}
    for limit in (10, 10 ** 6):
        monkeypatch.setattr(nt, "_DIRECT_MAX", limit)
        fits[limit] = jsdm.gllvm(com, family="nb", num_lv=2, n_init=1, seed=1)
    assert fits[10].converged and fits[10 ** 6].converged
    assert abs(fits[10].llf - fits[10 ** 6].llf) < 1e-5 * abs(fits[10].llf)


# --- the exact curvature of the means (E_mv, E_vv terms) -------------------------------------

def _means_problem(family, row_effect=None, widen=3.0):
    """A small problem at a start whose variational covariances are widened (E_mv, E_vv matter)."""
    from jsdm.model.start import glm_start, initial_params

    sim = family if family in ("poisson", "negative_binomial", "binomial", "gaussian") else "poisson"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        com, _ = jsdm.simulate_community(12, 5, num_lv=2, family=sim, n_covariates=2, seed=3)
        prob = jsdm.model.problem.build_problem(com, family=jsdm.families.get_family(family),
                                                num_lv=2, row_effect=row_effect)
    P = initial_params(prob, np.random.default_rng(0), jitter=0.3, glm=glm_start(prob))
    P.L = P.L * widen
    return prob, P


def _means_vector(prob, P):
    b = np.column_stack([P.beta0, P.B, P.theta]).ravel()
    u = P.a if P.alpha is None else np.column_stack([P.alpha, P.a])
    return np.concatenate([b, u.ravel()])


def _means_gradient(prob, P, x, free_only=False):
    """Gradient of the ELBO in (species means, site means) with A fixed (full theta, or its
    free lower triangle when ``free_only``)."""
    from jsdm.model.objective import evaluate

    m, n, p, d = prob.m, prob.n, prob.p, prob.d
    ks, kv = 1 + p + d, d + (P.alpha is not None)
    T = P.copy()
    b, u = x[:m * ks].reshape(m, ks), x[m * ks:].reshape(n, kv)
    T.beta0, T.B, T.theta = b[:, 0], b[:, 1:1 + p], b[:, 1 + p:]
    if P.alpha is not None:
        T.alpha = u[:, 0].copy()
    T.a = u[:, kv - d:].copy()
    ev = evaluate(prob, T)
    Q = (ev.Gv.T @ T.A.reshape(n, d * d)).reshape(m, d, d)
    th = ev.Gm.T @ T.a + 2.0 * np.einsum("jkl,jl->jk", Q, T.theta)
    if free_only:
        th = np.tril(th)
    gu = ev.grad.a if P.alpha is None else np.column_stack([ev.grad.alpha, ev.grad.a])
    return np.concatenate([np.column_stack([ev.grad.beta0, ev.grad.B, th]).ravel(), gu.ravel()])


@pytest.mark.parametrize("family,row_effect", [("negative_binomial", None), ("poisson", None),
                                               ("binomial", None), ("tweedie", None),
                                               ("negative_binomial", "random")])
def test_exact_mean_curvature_equals_finite_differences(family, row_effect):
    prob, P = _means_problem(family, row_effect)
    n, m, p, d = prob.n, prob.m, prob.p, prob.d
    x0 = _means_vector(prob, P)
    N, h = x0.size, 1e-5
    H = np.empty((N, N))
    for k in range(N):
        e = np.zeros(N)
        e[k] = h
        H[:, k] = (_means_gradient(prob, P, x0 + e) - _means_gradient(prob, P, x0 - e)) / (2 * h)
    H = 0.5 * (H + H.T)
    ce = cell_eval(prob, P)
    Emv, Evv = nt.mv_curvature(prob, P, ce)
    ce = {**ce, "Emv": Emv, "Evv": Evv, "theta": P.theta}
    Xt = np.column_stack([np.ones(n), prob.X, P.a])
    U = nt._site_design(prob, P)
    ks, kv = Xt.shape[1], U.shape[1]
    A = P.A
    Hbb, _ = nt._species_blocks(prob, P, ce, Xt, A)
    D, _ = nt._site_blocks(prob, P, ce, U)
    C = nt._cross(prob, ce, Xt, U, slice(0, n), np.ones((m, ks)), A).reshape(m * ks, n * kv)
    M = np.zeros((N, N))
    for j in range(m):
        M[j * ks:(j + 1) * ks, j * ks:(j + 1) * ks] = Hbb[j]
    for i in range(n):
        s = slice(m * ks + i * kv, m * ks + (i + 1) * kv)
        M[s, s] = D[i]
    M[:m * ks, m * ks:], M[m * ks:, :m * ks] = C, C.T
    # forward differences in v (step 1e-4 (1 + v)) limit the agreement
    assert np.abs(M - H).max() <= 2e-4 * np.abs(H).max()
    # the Gauss-Newton-type curvature alone is far off with these covariances
    ce_gn = {k: v for k, v in ce.items() if k not in ("Emv", "Evv")}
    Hbb_gn, _ = nt._species_blocks(prob, P, ce_gn, Xt, A)
    assert np.abs(Hbb_gn - Hbb).max() > 1e-2 * np.abs(H).max()
    # matrix-free products with the exact terms equal the dense cross block
    op = nt._Schur(prob, ce, Xt, U, np.ones((m, ks)), Hbb, np.linalg.inv(D), A)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(m, ks)), rng.normal(size=(n, kv))
    np.testing.assert_allclose(op.ct(x).ravel(), C.T @ x.ravel(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(op.c(y).ravel(), C @ y.ravel(), rtol=1e-10, atol=1e-10)


def test_exact_newton_on_the_means_converges_quadratically(monkeypatch):
    """A held fixed, the joint mean step is a Newton step: the gradient squares each step."""
    monkeypatch.setattr(nt, "_EXACT_FROM", 0.0)          # always use the E_mv, E_vv terms
    com, _ = jsdm.simulate_community(60, 10, num_lv=2, family="negative_binomial",
                                     n_covariates=2, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        fit = jsdm.gllvm(com, family="nb", num_lv=2, n_init=1, seed=1)
    prob, P = fit.problem, fit.state.params.copy()
    P.beta0 = P.beta0 + 0.2
    P.theta = P.theta * 1.1
    P.a = P.a * 0.9
    x0 = _means_vector(prob, P)
    norms = [np.abs(_means_gradient(prob, P, x0, True)).max()]
    for _ in range(5):
        P, _, ok = nt.newton_means(prob, P, cell_eval(prob, P))
        assert ok
        norms.append(np.abs(_means_gradient(prob, P, _means_vector(prob, P), True)).max())
    assert norms[5] < 1e-9 * norms[0]
    assert norms[4] < 10.0 * norms[3] ** 2 / norms[0]      # quadratic, not linear


def test_scaled_gradient_from_a_cell_evaluation_equals_the_direct_one():
    from jsdm.model.blocks import scaled_gradient
    from jsdm.model.fit import _max_scaled_gradient
    from jsdm.model.objective import evaluate

    prob, P, = _means_problem("negative_binomial", widen=1.0)
    layout = jsdm.model.fit.make_layout(prob)
    g = layout.pack_grad(evaluate(prob, P).grad, P)
    direct = _max_scaled_gradient(prob, layout, P, g)
    reuse = scaled_gradient(prob, layout, P, cell_eval(prob, P, order=2))
    assert direct > 0 and reuse == pytest.approx(direct, rel=1e-12)
