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
    cpl = nt._coupling(prob, P)
    Hbb, gb = nt._species_blocks(prob, P, ce, Xt, cpl)
    D, gu = nt._site_blocks(prob, P, ce, U)
    op = nt._Schur(prob, ce, Xt, U, free, Hbb, np.linalg.inv(D), cpl)
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
    u = prob.predictor.site_means(P)              # (a_i, alpha_i): latent variables first
    return np.concatenate([b, u.ravel()])


def _means_gradient(prob, P, x, free_only=False):
    """Gradient of the ELBO in (species means, site means) with A fixed (full theta, or its
    free lower triangle when ``free_only``)."""
    from jsdm.model.objective import evaluate

    pred = prob.predictor
    m, n, p, d = prob.m, prob.n, prob.p, prob.d
    ks, kv, kr = 1 + p + d, pred.kv, pred.kr
    T = P.copy()
    b, u = x[:m * ks].reshape(m, ks), x[m * ks:].reshape(n, kv)
    T.beta0, T.B, T.theta = b[:, 0], b[:, 1:1 + p], b[:, 1 + p:]
    pred.set_site_means(T, u)
    ev = evaluate(prob, T)
    S = T.L @ np.swapaxes(T.L, 1, 2)                 # joint site covariances (LV first)
    Q = (ev.Gv.T @ S.reshape(n, kr * kr)).reshape(m, kr, kr)
    UR = pred.site_design(T, random_only=True)
    th = ev.Gm.T @ T.a + 2.0 * np.einsum("jkl,jl->jk", Q[:, :d, :], UR)
    if free_only:
        th = np.tril(th)
    gu = pred.site_means(ev.grad)
    return np.concatenate([np.column_stack([ev.grad.beta0, ev.grad.B, th]).ravel(), gu.ravel()])


@pytest.mark.parametrize("family,row_effect", [("negative_binomial", None), ("poisson", None),
                                               ("binomial", None), ("tweedie", None),
                                               ("negative_binomial", "random")])
def test_exact_mean_curvature_equals_finite_differences(family, row_effect):
    prob, P = _means_problem(family, row_effect)
    n, m = prob.n, prob.m
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
    ce = {**ce, "Emv": Emv, "Evv": Evv}
    Xt = np.column_stack([np.ones(n), prob.X, P.a])
    U = nt._site_design(prob, P)
    ks, kv = Xt.shape[1], U.shape[1]
    cpl = nt._coupling(prob, P)
    Hbb, _ = nt._species_blocks(prob, P, ce, Xt, cpl)
    D, _ = nt._site_blocks(prob, P, ce, U)
    C = nt._cross(prob, ce, Xt, U, slice(0, n), np.ones((m, ks)), cpl).reshape(m * ks, n * kv)
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
    Hbb_gn, _ = nt._species_blocks(prob, P, ce_gn, Xt, cpl)
    assert np.abs(Hbb_gn - Hbb).max() > 1e-2 * np.abs(H).max()
    # matrix-free products with the exact terms equal the dense cross block
    op = nt._Schur(prob, ce, Xt, U, np.ones((m, ks)), Hbb, np.linalg.inv(D), cpl)
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
    from jsdm.model.blocks import curvature_diagonal, scaled_gradient, scaled_max
    from jsdm.model.objective import evaluate

    prob, P, = _means_problem("negative_binomial", widen=1.0)
    layout = jsdm.model.fit.make_layout(prob)
    g = layout.pack_grad(evaluate(prob, P).grad, P)
    direct = scaled_max(layout, P, g, curvature_diagonal(prob, layout, P))   # its own evaluation
    reuse = scaled_gradient(prob, layout, P, cell_eval(prob, P, order=2))
    assert direct > 0 and reuse == pytest.approx(direct, rel=1e-12)


def _fitted(n=80, m=12, family="negative_binomial", row_effect=None, seed=3):
    com, _ = jsdm.simulate_community(n, m, num_lv=2, family=family, n_covariates=2, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        fit = jsdm.gllvm(com, family=family, num_lv=2, row_effect=row_effect, n_init=1, seed=1)
    return fit.problem, fit.state.params.copy()


@pytest.mark.parametrize("row_effect", [None, "random"], ids=["none", "random"])
def test_gauge_step_is_the_exact_optimum_over_latent_reparametrisations(row_effect):
    """a -> T a, A -> T A T', theta -> T^-T theta: cells unchanged, KL least, theta triangular."""
    from jsdm.model.objective import kl_terms, moments

    prob, P = _fitted(row_effect=row_effect)
    T0 = np.array([[1.7, 0.0], [0.6, 0.5]])             # move off the optimal gauge
    Q = P.copy()
    Q.a = P.a @ T0.T
    R = np.eye(P.L.shape[1])                            # T0 on the latent variables only
    R[:2, :2] = T0
    Q.L = R @ P.L
    Q.theta = P.theta @ np.linalg.inv(T0)
    ce = cell_eval(prob, Q)
    G, cg = nt.gauge_step(prob, Q, ce)
    M0, V0 = moments(prob, Q)
    M1, V1 = moments(prob, G)
    np.testing.assert_allclose(M1, M0, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(V1, V0, rtol=1e-10, atol=1e-12)
    assert np.all(np.triu(G.theta[:2], 1) == 0) and np.all(np.diag(G.theta) > 0)
    assert np.all(np.diagonal(G.L, axis1=1, axis2=2) > 0)
    # the KL-optimal gauge: mean second moment of q is the identity
    S = (G.a.T @ G.a + G.A.sum(0)) / prob.n
    np.testing.assert_allclose(S, np.eye(2), atol=1e-10)
    assert cg["site"].sum() > ce["site"].sum() + 1.0
    np.testing.assert_allclose(cg["site"], cell_eval(prob, G)["site"], rtol=1e-10, atol=1e-8)
    # no T does better: random nearby T raise the KL (the ELBO's only T-dependent part)
    rng = np.random.default_rng(0)
    for _ in range(20):
        T = np.eye(2) + 0.05 * rng.normal(size=(2, 2))
        R = G.copy()
        Tf = np.eye(G.L.shape[1])
        Tf[:2, :2] = T
        S = Tf @ G.L @ np.swapaxes(G.L, 1, 2) @ Tf.T     # the KL reads log det from diag(L)
        R.a, R.L = G.a @ T.T, np.linalg.cholesky(S)
        assert kl_terms(prob, R).sum() > kl_terms(prob, G).sum()
    # a second step changes nothing
    G2, _ = nt.gauge_step(prob, G, cg)
    np.testing.assert_allclose(G2.theta, G.theta, atol=1e-10)
    np.testing.assert_allclose(G2.a, G.a, atol=1e-10)


def test_polish_dispersion_drives_the_dispersion_gradient_down():
    """Species whose dispersion is far off reach a tiny scaled gradient; ce matches a fresh evaluation."""
    from jsdm.model.blocks import polish_dispersion

    prob, P = _fitted()
    Q = P.copy()
    Q.s = P.s.copy()
    Q.s[[1, 4, 7]] = [-6.0, 3.0, P.s[7] + 1.5]      # phi far too small, far too large, off
    ce = cell_eval(prob, Q, order=2)
    before = ce["site"].sum()
    R, cr = polish_dispersion(prob, Q, ce, tol=1e-6)
    fresh = cell_eval(prob, R, order=2)
    sc = np.abs(fresh["gs"]) / np.sqrt(np.maximum(-fresh["gss"], 1.0))
    assert sc[[1, 4, 7]].max() < 1e-6
    assert fresh["site"].sum() > before
    unchanged = np.setdiff1d(np.arange(prob.m), [1, 4, 7])
    assert np.array_equal(R.s[unchanged], Q.s[unchanged]) or sc[unchanged].max() < 1e-6
    for key in ("site", "species", "gs", "gss", "Gm", "Gv"):
        np.testing.assert_allclose(cr[key], fresh[key], rtol=1e-9, atol=1e-9, err_msg=key)


def test_anchor_order_picks_strong_species_only_when_the_first_are_weak():
    from jsdm.model.fit import anchor_order

    rng = np.random.default_rng(0)
    theta = rng.normal(size=(30, 2))
    theta[0] = [3.0, 0.0]
    theta[1] = [0.5, 3.0]
    assert anchor_order(theta) is None                   # the data's first species pin it well
    theta[0] = [0.05, 0.0]                               # a nearly uninformative first species
    order = anchor_order(theta)
    assert order is not None and sorted(order) == list(range(30))
    norms = (theta ** 2).sum(1)
    assert order[0] == int(np.argmax(norms)) and 0 not in order[:2]
    assert anchor_order(theta[:, :1]) is None            # one latent variable: nothing to pin


def test_reordering_and_rotating_the_latent_variables_leaves_the_elbo_unchanged():
    from jsdm.model.fit import _reordered_problem, reorder_species, to_triangular
    from jsdm.model.objective import kl_terms, moments

    prob, P = _fitted()
    order = np.r_[5, 2, np.setdiff1d(np.arange(prob.m), [5, 2])]
    work = _reordered_problem(prob, order)
    Q = to_triangular(reorder_species(P, order))
    assert np.all(np.triu(Q.theta[:2], 1) == 0) and np.all(np.diag(Q.theta[:2]) > 0)
    M0, V0 = moments(prob, P)
    M1, V1 = moments(work, Q)
    np.testing.assert_allclose(M1, M0[:, order], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(V1, V0[:, order], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(kl_terms(work, Q), kl_terms(prob, P), rtol=1e-10)
    np.testing.assert_allclose(cell_eval(work, Q)["site"], cell_eval(prob, P)["site"], rtol=1e-10)
    back = to_triangular(reorder_species(Q, np.argsort(order)))
    np.testing.assert_allclose(back.theta, P.theta, atol=1e-10)
    np.testing.assert_allclose(back.a, P.a, atol=1e-10)
    np.testing.assert_allclose(back.A, P.A, atol=1e-10)


def test_a_weak_first_species_fit_keeps_the_data_convention_and_optimum(monkeypatch):
    """Fitting with strong anchors first, then rotating back, reaches the same optimum."""
    import jsdm.model.fit as fm

    com, _ = jsdm.simulate_community(300, 40, num_lv=2, family="negative_binomial",
                                     n_covariates=1, seed=2, intercept=-2.0, intercept_sd=1.5)
    Y = com.Y
    first = int(np.argmin((Y > 0).sum().to_numpy()))        # the rarest species first
    Y = Y.iloc[:, [first] + [j for j in range(Y.shape[1]) if j != first]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        fit = jsdm.gllvm(Y, com.X, family="nb", num_lv=2, n_init=1, seed=0)
        assert fm.anchor_order(fit.loadings.to_numpy()) is not None   # the case this is about
        monkeypatch.setattr(fm, "ANCHOR_GAIN", np.inf)                # the data's order throughout
        plain = jsdm.gllvm(Y, com.X, family="nb", num_lv=2, n_init=1, seed=0, maxiter=20000)
    assert fit.converged and plain.converged
    assert list(fit.loadings.index) == list(Y.columns)
    th = fit.loadings.to_numpy()
    assert th[0, 1] == 0.0 and th[0, 0] > 0 and th[1, 1] > 0
    assert fit.llf >= plain.llf - 1e-3
    np.testing.assert_allclose(th @ th.T, plain.loadings.to_numpy() @ plain.loadings.to_numpy().T,
                               atol=0.05 * np.abs(th @ th.T).max())


def test_lbfgs_rescales_when_its_own_test_disagrees_with_the_convergence_check(monkeypatch):
    """mite, NB, 1 LV, fixed row effects, 2 covariates: L-BFGS stopped on its scaled gradient
    (scaled by the curvature where it started) while the fit's check, with the curvature at
    the end, gave 1.1e-3 > gtol; restarting with fresh scaling converges to a higher ELBO."""
    import jsdm.model.fit as fm

    com = jsdm.datasets.load_mite()
    X = com.X[["SubsDens", "WatrCont"]].astype(float)
    X = (X - X.mean()) / X.std(ddof=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        fit = jsdm.gllvm(com.Y, X, family="nb", num_lv=1, row_effect="fixed", n_init=1, seed=0)
        monkeypatch.setattr(fm, "LBFGS_RESCALES", 0)
        once = jsdm.gllvm(com.Y, X, family="nb", num_lv=1, row_effect="fixed", n_init=1, seed=0)
    assert fit.converged and fit.state.scaled_grad <= 1e-3
    assert fit.llf >= once.llf - 1e-6
