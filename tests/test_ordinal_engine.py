"""The ordinal family through the whole engine: a vector of cut points per species.

- packing of s (m, q) and the analytic ELBO gradient against finite differences
  (probit and logit; covariates, offsets, row effects, missing cells);
- the analytic Hessian by blocks against finite differences of the gradient;
- num_lv = 0 equals independent maximum-likelihood fits per species
  (statsmodels OrderedModel): log-likelihood, coefficients, cut points, SEs;
- recovery of Theta Theta' from data simulated from an ordinal GLLVM;
- the dune data (unused categories: warned, bounded, converged), the results
  layer (cut-point tables, residuals, predictions, report) and save/load.
"""
import warnings

import numpy as np
import pandas as pd
import pytest

import jsdm
from _engine_helpers import fd_hessian
from jsdm.exceptions import DataWarning, JSDMError
from jsdm.families import get_family
from jsdm.model.blocks import dispersion_step
from jsdm.model.fit import make_layout, neg_elbo
from jsdm.model.objective import evaluate
from jsdm.model.params import S_BOUNDS
from jsdm.model.problem import Problem, build_problem
from jsdm.model.hessian import hessian_blocks

# sites at category 0 for every species are beside the point here
pytestmark = pytest.mark.filterwarnings("ignore:sites with no non-zero:jsdm.exceptions.DataWarning")

LINKS = ["probit", "logit"]
ROW_EFFECTS = [None, "fixed", "random"]


def cut_param(tau):
    """Log gaps s (m, K-2) from cut points (m, K-1) with tau_1 = 0."""
    return np.log(np.diff(np.asarray(tau, dtype=float), axis=1))


def simulate_ordinal(link, n, m, K, d, seed, p=0, spread=1.0):
    """(Y, X, theta, s): categories 0..K-1 drawn from an ordinal GLLVM."""
    rng = np.random.default_rng(seed)
    fam = get_family("ordinal", link=link)
    theta = np.tril(rng.normal(0.0, 1.0, (m, d)))
    X = rng.normal(size=(n, p))
    B = rng.normal(0.0, 0.5, (m, p))
    gaps = rng.uniform(0.6, 1.4, (m, K - 2)) * spread
    tau = np.concatenate([np.zeros((m, 1)), np.cumsum(gaps, axis=1)], axis=1)
    eta = rng.normal(0.0, 0.3, m) + X @ B.T + rng.standard_normal((n, d)) @ theta.T
    s = cut_param(tau)
    Y = fam.sample(eta + tau[:, -1] / 2 - 0.3, s, None, rng)
    return Y, X, theta, s


def tiny_problem(link, *, n=7, m=4, K=4, p=2, d=2, row_effect=None, seed=0, missing=0.2):
    """A hand-built Problem (no info dict: q comes from the family) with ~20% missing cells."""
    rng = np.random.default_rng(seed)
    fam = get_family("ordinal", link=link)
    Y, X, _, _ = simulate_ordinal(link, n, m, K, 1, seed, p=p)
    Y[0, 0] = K - 1                                 # K is read from the data
    W = (rng.random((n, m)) > missing).astype(float)
    W[1, 1] = 0.0
    return Problem(Y=Y, W=W, X=X, family=fam, num_lv=d, row_effect=row_effect,
                   sites=pd.Index([f"s{i}" for i in range(n)]),
                   species=pd.Index([f"sp{j}" for j in range(m)]),
                   terms=tuple(f"x{k}" for k in range(p)),
                   offset=rng.normal(0.0, 0.3, (n, m)))


def numeric_grad(prob, layout, x, h=1e-5):
    g = np.empty_like(x)
    for k in range(x.size):
        xp, xm = x.copy(), x.copy()
        xp[k] += h
        xm[k] -= h
        g[k] = (evaluate(prob, layout.unpack(xp), grad=False).value
                - evaluate(prob, layout.unpack(xm), grad=False).value) / (2.0 * h)
    return g


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        return fn(*args, **kwargs)


# --- packing and the gradient ------------------------------------------------------------
def test_layout_packs_a_matrix_of_cut_points():
    prob = tiny_problem("probit", K=5)
    assert prob.n_disp == 3 and prob.s_shape == (prob.m, 3)
    layout = make_layout(prob)
    assert layout.slices["s"].stop - layout.slices["s"].start == prob.m * 3
    x = np.random.default_rng(1).normal(size=layout.size)
    P = layout.unpack(x)
    assert P.s.shape == (prob.m, 3)
    np.testing.assert_allclose(layout.pack(P), x, rtol=1e-13, atol=1e-15)
    lo, hi = layout.bounds()
    assert np.all(lo[layout.slices["s"]] == S_BOUNDS[0]) and np.all(hi[layout.slices["s"]] == S_BOUNDS[1])


@pytest.mark.parametrize("row_effect", ROW_EFFECTS, ids=lambda r: f"row-{r}")
@pytest.mark.parametrize("d", [0, 2], ids=lambda d: f"d{d}")
@pytest.mark.parametrize("link", LINKS)
def test_gradient_matches_finite_differences(link, d, row_effect):
    prob = tiny_problem(link, d=d, row_effect=row_effect, seed=d + 3)
    layout = make_layout(prob)
    x = np.random.default_rng(2).normal(0.0, 0.4, layout.size)
    P = layout.unpack(x)
    ga = layout.pack_grad(evaluate(prob, P).grad, P)
    gn = numeric_grad(prob, layout, x)
    sl = layout.slices["s"]
    assert np.abs(ga[sl]).max() > 1e-3            # the cut points do enter
    np.testing.assert_allclose(ga, gn, rtol=0, atol=1e-6 * max(1.0, np.abs(gn).max()))


@pytest.mark.parametrize("link", LINKS)
def test_missing_cells_do_not_contribute(link):
    prob = tiny_problem(link, missing=0.4, seed=5)
    layout = make_layout(prob)
    x = np.random.default_rng(3).normal(0.0, 0.4, layout.size)
    Y2 = np.where(prob.W > 0, prob.Y, (prob.Y + 1) % 3)
    assert not np.array_equal(Y2, prob.Y)
    prob2 = Problem(Y=Y2, W=prob.W, X=prob.X, family=prob.family, num_lv=prob.d, row_effect=None,
                    sites=prob.sites, species=prob.species, terms=prob.terms, offset=prob.offset,
                    info={"n_dispersion": prob.n_disp})
    e1, e2 = (evaluate(pr, layout.unpack(x)) for pr in (prob, prob2))
    assert e1.value == pytest.approx(e2.value, rel=1e-13)
    np.testing.assert_allclose(e1.grad.s, e2.grad.s, rtol=1e-12, atol=1e-12)


def test_dispersion_step_solves_or_falls_back_per_species():
    gs = np.array([[1.0, -2.0], [0.5, 0.5]])
    good = np.array([[-2.0, 0.5], [0.5, -1.0]])
    bad = np.array([[-1.0, 3.0], [3.0, -1.0]])             # indefinite: coordinate rule
    ds = dispersion_step(gs, np.stack([good, bad]), 0.25)
    np.testing.assert_allclose(ds[0], np.linalg.solve(-good, gs[0]))
    np.testing.assert_allclose(ds[1], [0.5, 0.5])          # -g / diag
    scalar = dispersion_step(np.array([1.0, -1.0]), np.array([-2.0, 1.0]), 0.25)
    np.testing.assert_allclose(scalar, [0.5, -0.25])


# --- the Hessian ---------------------------------------------------------------------------
@pytest.mark.parametrize("row_effect", ROW_EFFECTS, ids=lambda r: f"row-{r}")
@pytest.mark.parametrize("link", LINKS)
def test_hessian_matches_finite_differences_of_gradient(link, row_effect):
    prob = tiny_problem(link, row_effect=row_effect, K=5, seed=11)
    layout = make_layout(prob)
    x = np.random.default_rng(4).normal(0.0, 0.3, layout.size)
    H = hessian_blocks(prob, layout.unpack(x), layout).dense(layout.size)
    Hfd = fd_hessian(neg_elbo(prob, layout), x)
    sl = layout.slices["s"]
    assert np.abs(Hfd[sl, sl]).max() > 1e-2
    assert np.abs(H - Hfd).max() <= 1e-6 * np.abs(Hfd).max()
    assert np.allclose(H, H.T)


# --- num_lv = 0 against statsmodels -------------------------------------------------------
@pytest.fixture(scope="module", params=LINKS)
def independent_fits(request):
    """(link, jsdm fit with num_lv=0, statsmodels results per species) on 3 species x 150 sites."""
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    link = request.param
    Y, X, _, _ = simulate_ordinal(link, 150, 3, 4, 1, seed=21, p=2)
    assert all(set(np.unique(Y[:, j])) == {0, 1, 2, 3} for j in range(3))
    Xdf = pd.DataFrame(X, columns=["x1", "x2"])
    fit = jsdm.gllvm(pd.DataFrame(Y), Xdf, family="ordinal", link=link, num_lv=0, gtol=1e-5)
    refs = []
    for j in range(3):
        mod = OrderedModel(Y[:, j].astype(int), X, distr=link)
        refs.append(mod.fit(method="bfgs", disp=False, maxiter=5000, gtol=1e-8))
    return link, fit, refs


def test_num_lv0_loglik_equals_orderedmodel(independent_fits):
    _, fit, refs = independent_fits
    assert fit.converged
    llf = sum(r.llf for r in refs)
    assert fit.llf == pytest.approx(llf, rel=1e-5)


def test_num_lv0_estimates_equal_orderedmodel(independent_fits):
    """OrderedModel: P(y <= k) = F(c_k - x'b), thresholds (c_1, log(c_2 - c_1), ...).

    Ours: P(y <= k) = F(tau_(k+1) - beta0 - x'B) with tau_1 = 0, so beta0 = -c_1,
    B = b and tau_k = c_k - c_1 (our log gaps are OrderedModel's increments).
    """
    _, fit, refs = independent_fits
    for j, r in enumerate(refs):
        b, th = r.params[:2], r.params[2:]
        c = np.cumsum(np.concatenate([[th[0]], np.exp(th[1:])]))
        np.testing.assert_allclose(fit.coef.iloc[j, 1:], b, atol=2e-4)
        assert fit.coef.iloc[j, 0] == pytest.approx(-c[0], abs=2e-4)
        np.testing.assert_allclose(fit.dispersion.iloc[j], c - c[0], atol=2e-4)


def test_num_lv0_standard_errors_equal_orderedmodel(independent_fits):
    """Slopes and intercept SEs from the analytic Hessian = OrderedModel's (numerical) ones."""
    _, fit, refs = independent_fits
    se = fit.bse
    for j, (sp, r) in enumerate(zip(fit.species, refs)):
        np.testing.assert_allclose(se.loc[("coef", sp, "x1")], r.bse[0], rtol=2e-3)
        np.testing.assert_allclose(se.loc[("coef", sp, "x2")], r.bse[1], rtol=2e-3)
        np.testing.assert_allclose(se.loc[("coef", sp, "Intercept")], r.bse[2], rtol=2e-3)
        # the first gap: tau_2 = exp(th_1), its SE by the delta method from OrderedModel's
        tau2 = np.exp(r.params[3])
        np.testing.assert_allclose(se.loc[("dispersion", sp, "1|2")], tau2 * r.bse[3], rtol=2e-3)


def test_cut_point_covariance_is_the_delta_method_of_the_gaps(independent_fits):
    from jsdm.results.inference import information

    _, fit, _ = independent_fits
    info = information(fit)
    sl = fit.state.layout.slices["s"]
    q = fit.problem.n_disp
    C = info.cov_packed[sl, sl][:q, :q]                     # first species' log gaps
    e = np.exp(fit.state.params.s[0])
    J = np.tril(np.ones((q, q))) * e[None, :]               # d tau_(k+1) / d c_i
    sp = fit.species[0]
    rows = [("dispersion", sp, lab) for lab in fit.dispersion.columns[1:]]
    np.testing.assert_allclose(fit.cov_params().loc[rows, rows].to_numpy(), J @ C @ J.T, rtol=1e-6)


# --- recovery ------------------------------------------------------------------------------
@pytest.mark.parametrize("link", LINKS)
def test_recovers_residual_covariance(link):
    Y, _, theta, _ = simulate_ordinal(link, 300, 20, 4, 2, seed=31)
    assert all(len(np.unique(Y[:, j])) == 4 for j in range(20))
    fit = quiet(jsdm.gllvm, pd.DataFrame(Y), family="ordinal", link=link, num_lv=2, seed=1)
    assert fit.converged
    S, Shat = theta @ theta.T, fit.loadings.to_numpy() @ fit.loadings.to_numpy().T
    iu = np.triu_indices(20, 1)
    assert np.corrcoef(S[iu], Shat[iu])[0, 1] > 0.9
    assert np.corrcoef(np.diag(S), np.diag(Shat))[0, 1] > 0.8


# --- dune: unused categories merged, convergence, the results layer ----------------------
@pytest.fixture(scope="module")
def dune_fits():
    Y = jsdm.datasets.load_dune().Y
    with pytest.warns(DataWarning, match=r"30 of 30 species do not use every category 0\.\.9: "
                                         r"Achimill \(uses 0-4\); Agrostol \(uses 0, 3-5, 7-8\)"):
        fit = quiet_dune(Y, 2)
    fit0 = quiet(jsdm.gllvm, Y, family="ordinal", num_lv=0, seed=1)
    return fit, fit0


def quiet_dune(Y, d, **kw):
    """Fit dune, letting only the ordinal DataWarning through."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        warnings.filterwarnings("always", message="family 'ordinal'", category=DataWarning)
        return jsdm.gllvm(Y, family="ordinal", num_lv=d, seed=1, **kw)


def used_categories(Y, K=10):
    """(m, K) bool straight from the table: species j shows category k."""
    Y = np.asarray(Y)
    return np.stack([(Y == k).any(axis=0) for k in range(K)], axis=1)


def test_dune_fit_converges_and_beats_num_lv0(dune_fits):
    fit, fit0 = dune_fits
    assert fit.converged and fit0.converged
    assert fit.llf >= fit0.llf
    kj = used_categories(fit.community.Y).sum(axis=1)
    assert fit.state.params.s.shape == (30, kj.max() - 2)
    s = fit.state.params.s
    assert np.all((s > S_BOUNDS[0] + 1.0) & (s < S_BOUNDS[1] - 1.0))     # nothing runs to the box
    assert fit.df == 30 + 30 * 2 - 1 + np.maximum(kj - 2, 0).sum()


def test_dispersion_table_shows_the_merged_categories(dune_fits):
    fit, _ = dune_fits
    disp = fit.dispersion
    U = used_categories(fit.community.Y)
    assert list(disp.columns) == [f"{k}|{k + 1}" for k in range(9)]
    for j, sp in enumerate(fit.species):
        tau, cats = disp.loc[sp].to_numpy(), np.flatnonzero(U[j])
        k = np.arange(9)
        np.testing.assert_array_equal(np.isposinf(tau), k >= cats.max())
        np.testing.assert_array_equal(np.isneginf(tau), k < cats.min())
        fin = tau[np.isfinite(tau)]
        assert fin[0] == 0.0 and np.all(np.diff(fin) >= 0)
        # equal cut points exactly around the unused middle categories
        inner = np.arange(cats.min() + 1, cats.max())
        np.testing.assert_array_equal(tau[inner - 1] == tau[inner], ~U[j, inner])
    cuts = fit.params.xs("dispersion", level="block")
    kj = U.sum(axis=1)
    assert len(cuts) == np.maximum(kj - 2, 0).sum()
    assert list(cuts.loc["Achimill"].index) == ["1|2", "2|3", "3|4"]          # uses 0-4
    assert list(cuts.loc["Agrostol"].index) == ["3|4", "4|5", "5|7", "7|8"]   # uses 0, 3-5, 7-8
    np.testing.assert_allclose(cuts.loc["Agrostol"].to_numpy(),
                               disp.loc["Agrostol", ["3|4", "4|5", "6|7", "7|8"]].to_numpy())
    assert np.isfinite(fit.bse.xs("dispersion", level="block")).all()


def test_merging_is_the_limit_of_the_unmerged_model(dune_fits):
    """The merged model's ELBO equals the unmerged one's with the unused categories' gaps at
    their limits (0 around an unused middle category, +inf above the largest)."""
    fit, _ = dune_fits
    prob, P = fit.problem, fit.state.params
    tau = fit.dispersion.to_numpy().copy()
    assert np.all(tau[:, 0] == 0.0)                       # every dune species shows category 0
    top = np.where(np.isposinf(tau), 1e4 * (1 + np.arange(9)), 0.0)
    tau = np.where(np.isposinf(tau), np.nanmax(np.where(np.isfinite(tau), tau, np.nan)) + top, tau)
    tau = tau + 1e-9 * np.arange(9)                        # equal cut points: gaps of 1e-9
    unbound = Problem(Y=prob.Y, W=prob.W, X=prob.X, family=get_family("ordinal"), num_lv=2,
                      row_effect=None, sites=prob.sites, species=prob.species, terms=prob.terms,
                      info={"n_dispersion": 8})
    Q = P.copy()
    Q.s = cut_param(tau)
    full = evaluate(unbound, Q, grad=False).value
    assert full == pytest.approx(fit.llf, abs=1e-5)
    Q.s = np.minimum(Q.s, np.log(0.5))                     # finite gaps: strictly lower
    assert evaluate(unbound, Q, grad=False).value < fit.llf - 1.0


def test_unused_category_warning_names_species():
    Y = pd.DataFrame({"a": [0, 1, 2, 0, 1, 2], "b": [0, 2, 2, 0, 0, 2], "c": [0, 1, 1, 0, 1, 0]})
    with pytest.warns(DataWarning, match=r"2 of 3 species.*b \(uses 0, 2\); c \(uses 0-1\)"):
        prob = build_problem(Y, family="ordinal", num_lv=1)
    assert prob.info["n_dispersion"] == 1
    np.testing.assert_array_equal(prob.s_free, [[True], [False], [False]])
    with pytest.raises(JSDMError, match="at least 3 categories"):
        build_problem(Y.clip(upper=1), family="ordinal", num_lv=1)
    with pytest.raises(JSDMError, match="cutpoints='common'"):
        build_problem(Y[["b", "c"]], family="ordinal", num_lv=1)


@pytest.fixture(scope="module")
def small_fit():
    Y, X, _, _ = simulate_ordinal("logit", 60, 5, 4, 2, seed=41, p=1)
    return quiet(jsdm.gllvm, pd.DataFrame(Y), pd.DataFrame(X, columns=["x"]), family="ordinal",
                 link="logit", num_lv=2, seed=2)


def test_results_layer_on_an_ordinal_fit(small_fit, tmp_path):
    fit = small_fit
    assert fit.converged
    se = fit.bse
    assert np.isfinite(se).all() and (se > 0).all()
    ci = fit.conf_int()
    cut = ci.xs("dispersion", level="block")
    assert (cut["lower"] > 0).all() and (cut["lower"] < fit.params["dispersion"]).all()
    text = str(fit.summary())
    assert "1|2" in text and "2|3" in text
    mu = fit.fitted()
    assert ((mu >= 0) & (mu <= 3)).all().all()
    np.testing.assert_allclose(fit.predict(type="response"), mu)
    r = fit.residuals(seed=1).to_numpy()
    assert abs(r.mean()) < 0.3 and 0.7 < r.std() < 1.3
    with pytest.raises(JSDMError, match="kind='dunn-smyth'"):
        fit.residuals(kind="pearson")
    sim = fit.simulate(seed=3)
    assert set(np.unique(sim)) <= {0.0, 1.0, 2.0, 3.0}
    assert np.allclose(np.diag(fit.residual_covariance(add_family_variance=True)),
                       (fit.loadings ** 2).sum(axis=1) + np.pi ** 2 / 3)
    marg = fit.predict(type="response", lv="marginal")
    assert marg.shape == (60, 5) and ((marg > 0) & (marg < 3)).all().all()


def test_report_and_plots(small_fit, tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    fit = small_fit
    fit.plot_residuals()
    fit.plot_ordination()
    out = fit.report(tmp_path / "ordinal.html")
    html = open(out if not isinstance(out, (list, tuple)) else out[0], encoding="utf-8").read()
    assert "Cut points" in html and "ordered categories" in html


def test_save_load_round_trip(small_fit, tmp_path):
    fit = small_fit
    path = fit.save(tmp_path / "ordinal.jsdm")
    back = jsdm.load(path)
    assert back.problem.n_disp == fit.problem.n_disp == 2
    assert back.state.params.s.shape == (5, 2)
    assert back.llf == fit.llf
    pd.testing.assert_frame_equal(back.dispersion, fit.dispersion)
    pd.testing.assert_series_equal(back.bse, fit.bse)
    assert evaluate(back.problem, back.state.params, grad=False).value == pytest.approx(fit.llf, rel=1e-12)
