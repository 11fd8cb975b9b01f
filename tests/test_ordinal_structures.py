"""Ordinal cut points per species and common to all species, and merged categories (issue 11).

- the ELBO's analytic gradient and Hessian against finite differences, for a common set
  of cut points (a global parameter: sums over species) and for cut points per species
  where species miss categories (their held entries are left out of the parameter vector);
- the ELBO below the marginal log-likelihood, site by site, by importance sampling and
  by adaptive Gauss-Hermite quadrature (an ordinal log-pmf written here with scipy);
- recovery of cut points and loadings from simulated data with both structures;
- nesting (common is a special case of per species), save/load, summary, CLI.
"""
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import jsdm
from _engine_helpers import fd_hessian
from jsdm.families import Ordinal
from jsdm.model.fit import make_layout, neg_elbo
from jsdm.model.hessian import hessian_blocks
from jsdm.model.objective import evaluate
from jsdm.model.problem import build_problem

LINKS = ["probit", "logit"]
STRUCTURES = ["species", "common"]

# simulated tables may have sites at category 0 for every species: beside the point here
pytestmark = pytest.mark.filterwarnings("ignore:sites with no non-zero:jsdm.exceptions.DataWarning")


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        return fn(*args, **kwargs)


def table_with_gaps(n=10, m=5, K=5, p=1, seed=0, missing=0.15):
    """(Y with NaN, X): ordinal data where species miss categories (top, middle, bottom)."""
    rng = np.random.default_rng(seed)
    Y = rng.integers(0, K, size=(n, m)).astype(float)
    Y[:, 0] = np.minimum(Y[:, 0], K - 2)               # never the top category
    Y[Y[:, 1] == 2, 1] = 1                             # no middle category 2
    Y[:, 2] = np.maximum(Y[:, 2], 1)                   # never 0
    Y[0, 3], Y[1, 3], Y[2, 3] = 0, 2, 4                 # uses 0, 2, 4 at least
    Y[rng.random((n, m)) < missing] = np.nan
    Y[0, -1], Y[1, -1], Y[2, -1] = 0, 1, K - 1
    X = pd.DataFrame(rng.normal(size=(n, p)), columns=[f"x{k + 1}" for k in range(p)])
    return pd.DataFrame(Y, columns=[f"sp{j}" for j in range(m)]), X


def gap_problem(link, structure, row_effect=None, d=2, **kw):
    Y, X = table_with_gaps(**kw)
    return quiet(build_problem, Y, X, family=Ordinal(link, cutpoints=structure), num_lv=d,
                 row_effect=row_effect)


def numeric_grad(prob, layout, x, h=1e-5):
    g = np.empty_like(x)
    for k in range(x.size):
        xp, xm = x.copy(), x.copy()
        xp[k] += h
        xm[k] -= h
        g[k] = (evaluate(prob, layout.unpack(xp), grad=False).value
                - evaluate(prob, layout.unpack(xm), grad=False).value) / (2.0 * h)
    return g


# --- structure of the parameter vector ------------------------------------------------------
def test_layout_packs_free_cut_points_only():
    Y, _ = table_with_gaps()
    U = np.stack([(Y.to_numpy() == k).any(axis=0) for k in range(5)], axis=1)     # from the data
    kj = U.sum(axis=1)
    sp = gap_problem("probit", "species")
    lay = make_layout(sp)
    assert sp.s_shape == (5, kj.max() - 2)
    assert lay.slices["s"].stop - lay.slices["s"].start == np.maximum(kj - 2, 0).sum()
    np.testing.assert_array_equal(sp.s_free, np.arange(kj.max() - 2)[None, :] < (kj - 2)[:, None])
    x = np.random.default_rng(1).normal(size=lay.size)
    np.testing.assert_allclose(lay.pack(lay.unpack(x)), x)
    co = gap_problem("probit", "common")
    lay = make_layout(co)
    assert co.s_shape == (1, U.any(axis=0).sum() - 2)
    assert lay.slices["s"].stop - lay.slices["s"].start == U.any(axis=0).sum() - 2
    pos = lay.s_positions()
    assert pos.shape == (5, 3) and np.all(pos == pos[0])           # one set for every species


# --- gradient and Hessian -------------------------------------------------------------------
@pytest.mark.parametrize("row_effect", [None, "fixed", "random"], ids=lambda r: f"row-{r}")
@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("link", LINKS)
def test_gradient_matches_finite_differences(link, structure, row_effect):
    prob = gap_problem(link, structure, row_effect=row_effect, seed=3)
    layout = make_layout(prob)
    x = np.random.default_rng(2).normal(0.0, 0.4, layout.size)
    P = layout.unpack(x)
    ga = layout.pack_grad(evaluate(prob, P).grad, P)
    gn = numeric_grad(prob, layout, x)
    sl = layout.slices["s"]
    assert np.abs(ga[sl]).min() > 1e-6                # every packed cut point enters
    np.testing.assert_allclose(ga, gn, rtol=0, atol=1e-6 * max(1.0, np.abs(gn).max()))


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("link", LINKS)
def test_hessian_matches_finite_differences(link, structure):
    prob = gap_problem(link, structure, row_effect="fixed", n=8, m=4, seed=5)
    layout = make_layout(prob)
    x = np.random.default_rng(4).normal(0.0, 0.3, layout.size)
    H = hessian_blocks(prob, layout.unpack(x), layout).dense(layout.size)
    Hfd = fd_hessian(neg_elbo(prob, layout), x)
    sl = layout.slices["s"]
    assert np.abs(Hfd[sl, sl]).max() > 1e-2
    assert np.abs(H - Hfd).max() <= 1e-6 * np.abs(Hfd).max()
    # the full Newton phase's cheaper Hessian (forward differences for the third-order terms)
    Hf = hessian_blocks(prob, layout.unpack(x), layout, forward=True).dense(layout.size)
    assert np.abs(Hf - Hfd).max() <= 1e-3 * np.abs(Hfd).max()


# --- the bound ------------------------------------------------------------------------------
def ref_logpmf(link, y, eta, cuts):
    """log P(Y = y | eta) from the cut points between categories (K-1,; may hold +-inf), with
    scipy's log-cdf; F(b) - F(a) taken on the side of the smaller tail (F symmetric)."""
    logF = special.log_ndtr if link == "probit" else special.log_expit
    full = np.concatenate([[-np.inf], cuts, [np.inf]])
    a, b = full[y.astype(int)] - eta, full[y.astype(int) + 1] - eta
    flip = a > 0
    lo, hi = np.where(flip, -b, a), np.where(flip, -a, b)
    lhi, llo = logF(hi), logF(lo)
    with np.errstate(divide="ignore"):
        return lhi + np.log1p(-np.exp(llo - lhi))


def site_log_marginal(fit, u, logw, inflate):
    """log p(y_i) per site by weighting points u (K, d) of N(0, I) mapped through the inflated
    variational posterior; returns (log p (n,), delta-method standard errors (n,))."""
    prob, P = fit.problem, fit.params_raw
    cuts, link = fit.dispersion.to_numpy(), fit.family.link
    c = np.sqrt(inflate)
    out, se = np.empty(prob.n), np.empty(prob.n)
    for i in range(prob.n):
        z = P.a[i] + c * u @ P.L[i].T
        eta = P.beta0 + z @ P.theta.T
        logr = -0.5 * (u ** 2).sum(1) - np.log(c) * u.shape[1] - np.log(np.diag(P.L[i])).sum()
        ll = sum(prob.W[i, j] * ref_logpmf(link, np.full(len(u), prob.Y[i, j]), eta[:, j], cuts[j])
                 for j in range(prob.m) if prob.W[i, j] > 0)
        lw = ll - 0.5 * (z ** 2).sum(1) - logr + logw
        out[i] = special.logsumexp(lw)
        r = np.exp(lw - out[i])
        se[i] = np.sqrt(max(np.sum(r ** 2) - 1.0 / len(r), 0.0))
    return out, se


@pytest.mark.parametrize("structure", STRUCTURES)
def test_elbo_below_marginal_loglik(structure):
    com, _ = jsdm.simulate_community(40, 8, num_lv=2, family="ordinal", n_covariates=0, seed=17,
                                     dispersion=(0.0, 0.8, 1.7, 2.5))
    Y = com.Y.copy()
    Y.iloc[:, 0] = Y.iloc[:, 0].clip(upper=3)           # a species without the top category
    fit = quiet(jsdm.gllvm, Y, family="ordinal", num_lv=2, cutpoints=structure, n_init=1, seed=0)
    assert fit.converged
    elbo_i = evaluate(fit.problem, fit.params_raw, grad=False).site_terms
    z, w = np.polynomial.hermite_e.hermegauss(30)
    g1, g2 = np.meshgrid(z, z, indexing="ij")
    l1, l2 = np.meshgrid(np.log(w / w.sum()), np.log(w / w.sum()), indexing="ij")
    quad_i, _ = site_log_marginal(fit, np.column_stack([g1.ravel(), g2.ravel()]),
                                  (l1 + l2).ravel(), inflate=1.5)
    K = 20000
    is_i, se_i = site_log_marginal(fit, np.random.default_rng(123).standard_normal((K, 2)),
                                   np.full(K, -np.log(K)), inflate=2.0)
    assert np.median(se_i) < 0.02
    easy = se_i < 0.01
    np.testing.assert_array_less(np.abs(is_i - quad_i)[easy], 6 * se_i[easy] + 2e-3)
    np.testing.assert_array_less(elbo_i, quad_i + 1e-6)                # site by site
    assert elbo_i.sum() <= is_i.sum() + 5 * np.sqrt(np.sum(se_i ** 2)) + 1e-6
    gap = quad_i - elbo_i
    assert gap.sum() > 1e-3 and gap.mean() < 1.0


# --- recovery -------------------------------------------------------------------------------
def corr_offdiag(A, B):
    iu = np.triu_indices(A.shape[0], 1)
    return np.corrcoef(A[iu], B[iu])[0, 1]


@pytest.mark.parametrize("link", LINKS)
def test_recovers_common_cut_points_and_loadings(link):
    tau = np.array([0.0, 0.7, 1.5, 2.4])
    com, truth = jsdm.simulate_community(300, 16, num_lv=2, family="ordinal", link=link,
                                         n_covariates=0, seed=41, dispersion=tau,
                                         intercept=-0.8, loading_sd=0.8)
    fit = quiet(jsdm.gllvm, com, family="ordinal", link=link, num_lv=2, cutpoints="common",
                n_init=1, seed=1)
    assert fit.converged
    est = fit.dispersion.to_numpy()
    assert np.all(est == est[0])                               # one set, shown for every species
    se = fit.bse.xs("dispersion", level="block").to_numpy()
    np.testing.assert_array_less(np.abs(est[0, 1:] - tau[1:]), np.maximum(4 * se, 0.05))
    th, th0 = fit.loadings.to_numpy(), truth.theta.to_numpy()
    assert corr_offdiag(th @ th.T, th0 @ th0.T) > 0.9
    assert np.corrcoef(np.diag(th @ th.T), np.diag(th0 @ th0.T))[0, 1] > 0.8
    se0 = fit.bse.xs("coef", level="block").xs("Intercept", level="term").to_numpy()
    assert np.abs((fit.coef["Intercept"].to_numpy() - truth.beta0.to_numpy()) / se0).max() < 4.0


def test_recovers_species_cut_points_and_loadings():
    rng = np.random.default_rng(8)
    m = 10
    tau = np.concatenate([np.zeros((m, 1)), np.cumsum(rng.uniform(0.4, 1.4, (m, 3)), axis=1)], axis=1)
    com, truth = jsdm.simulate_community(400, m, num_lv=2, family="ordinal", n_covariates=0,
                                         seed=9, dispersion=tau, intercept=1.0, loading_sd=0.8)
    assert all(len(np.unique(com.Y[c])) == 5 for c in com.Y.columns)     # no merging here
    fit = quiet(jsdm.gllvm, com, family="ordinal", num_lv=2, n_init=1, seed=1)
    assert fit.converged
    est = fit.dispersion.to_numpy()
    se = fit.bse.xs("dispersion", level="block").to_numpy().reshape(m, 3)
    z = (est[:, 1:] - tau[:, 1:]) / se
    assert np.abs(z).max() < 4.5 and np.abs(z.mean()) < 1.0
    assert np.corrcoef(est[:, 1:].ravel(), tau[:, 1:].ravel())[0, 1] > 0.9
    th, th0 = fit.loadings.to_numpy(), truth.theta.to_numpy()
    assert corr_offdiag(th @ th.T, th0 @ th0.T) > 0.9
    # common cut points are a special case: their fit cannot be better (nested models)
    common = quiet(jsdm.gllvm, com, family="ordinal", num_lv=2, cutpoints="common", n_init=1, seed=1)
    assert common.converged and common.llf <= fit.llf + 1e-3
    assert common.df == fit.df - m * 3 + 3


# --- the results layer ------------------------------------------------------------------------
def test_common_fit_results_save_load_and_summary(tmp_path):
    Y = jsdm.datasets.load_dune().Y
    fit = quiet(jsdm.gllvm, Y, family="ordinal", num_lv=2, cutpoints="common", n_init=1, seed=1)
    assert fit.converged and fit.settings["cutpoints"] == "common"
    assert fit.df == 30 + 59 + 8                      # dune uses every category 0-9 somewhere
    cuts = fit.params.xs("dispersion", level="block")
    assert list(cuts.index) == [("(common)", f"{k}|{k + 1}") for k in range(1, 9)]
    assert np.isfinite(fit.bse.xs("dispersion", level="block")).all()
    summ = fit.summary()
    assert summ.header["Cut points"] == "common" and "(common)" in str(summ)
    back = jsdm.load(fit.save(tmp_path / "common.jsdm"))
    assert back.family.cut_structure == "common" and back.llf == fit.llf
    pd.testing.assert_frame_equal(back.dispersion, fit.dispersion)
    pd.testing.assert_series_equal(back.bse, fit.bse)
    sim = fit.simulate(seed=2)
    assert set(np.unique(sim)) <= set(range(10))


def test_merged_species_fit_predicts_only_used_categories():
    Y, _ = table_with_gaps(n=30, m=5, missing=0.0, seed=4)
    fit = quiet(jsdm.gllvm, Y, family="ordinal", num_lv=1, n_init=1, seed=1)
    U = np.stack([(Y.to_numpy() == k).any(axis=0) for k in range(5)], axis=1)
    probs = fit.family.probs(fit.linear_predictor().to_numpy(), fit.params_raw.s)
    for j in range(5):
        assert np.all(probs[:, j, ~U[j]] == 0.0) and np.allclose(probs[:, j, :].sum(-1), 1.0)
    sim = fit.simulate(n=3, seed=3)
    sims = sim if isinstance(sim, list) else [sim]
    for s in sims:
        arr = np.asarray(s)
        for j in range(5):
            assert set(np.unique(arr[:, j])) <= set(np.flatnonzero(U[j]))
    r = fit.residuals(seed=1).to_numpy()
    assert np.all(np.isfinite(r))


def test_cutpoints_argument_checks():
    Y = jsdm.datasets.load_dune().Y
    with pytest.raises(jsdm.JSDMError, match="family='ordinal' only"):
        jsdm.gllvm(Y, family="poisson", cutpoints="common")
    with pytest.raises(jsdm.JSDMError, match="cutpoints must be one of"):
        jsdm.gllvm(Y, family="ordinal", cutpoints="shared")


def test_cli_cutpoints(tmp_path):
    from jsdm.cli import main

    path = tmp_path / "dune.csv"
    jsdm.datasets.load_dune().Y.to_csv(path)
    out = tmp_path / "out"
    assert main(["fit", str(path), "--family", "ordinal", "--cutpoints", "common", "--num-lv", "2",
                 "--n-init", "1", "--out", str(out), "--quiet"]) == 0
    fit = jsdm.load(out / "fit.jsdm")
    assert fit.family.cut_structure == "common"
    assert "Cut points" in (out / "summary.txt").read_text()


def test_readme_cover_class_example_runs():
    """The README's cover-class example (run as written) and what its comments claim."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = text.split("Cover classes (Braun-Blanquet", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    ns = {"jsdm": jsdm}
    quiet(exec, block, ns)
    fit, common = ns["fit"], ns["common"]
    assert fit.converged and common.converged
    Y = jsdm.datasets.load_dune().Y
    top = int(Y["Achimill"].max())
    cuts = fit.dispersion.loc["Achimill"].to_numpy()
    assert cuts[0] == 0.0 and np.all(np.isposinf(cuts[top:])) and np.all(np.isfinite(cuts[:top]))
    assert np.all(common.dispersion.to_numpy() == common.dispersion.to_numpy()[0])
    assert fit.aic < common.aic                       # "per species fits dune better"


@pytest.mark.parametrize("link", LINKS)
def test_ell_for_wide_normals_matches_dense_quadrature(link):
    """ell and its m, v derivatives at large variances (sd 1.5 to 25, the separated species'
    regime) against a dense composite rule on an independent scipy log-pmf."""
    rng = np.random.default_rng(3)
    n = 40
    cuts = np.array([0.0, 0.4, 1.1, 2.5])                 # K = 5 categories
    y = rng.integers(0, 5, n).astype(float)
    sd = np.exp(rng.uniform(np.log(1.5), np.log(25.0), n))
    m = rng.uniform(-60.0, 40.0, n)
    fam = Ordinal(link)
    s = np.tile(np.log(np.diff(cuts)), (n, 1))             # one "species" per cell
    e = fam.ell(y, m, sd ** 2, s)
    x, w = np.polynomial.legendre.leggauss(20)
    for i in range(n):
        edges = np.linspace(m[i] - 10 * sd[i], m[i] + 10 * sd[i], int(80 * sd[i]) + 1)
        half = 0.5 * np.diff(edges)
        u = ((edges[:-1] + half)[:, None] + half[:, None] * x).ravel()
        wu = (half[:, None] * w).ravel() * stats.norm.pdf(u, m[i], sd[i])
        h = ref_logpmf(link, np.full(u.size, y[i]), u, cuts)
        z = (u - m[i]) / sd[i]
        val = h @ wu
        dm = (h * z / sd[i]) @ wu                           # d/dm E[h] = E[h (u - m)] / v
        dv = (h * (z * z - 1.0) / (2.0 * sd[i] ** 2)) @ wu  # d/dv E[h] = E[h ((u-m)^2 - v)] / (2 v^2)
        scale = max(1.0, abs(val))
        assert abs(e.value[i] - val) <= 1e-9 * scale
        assert abs(e.d_m[i] - dm) <= 1e-7 * max(1.0, abs(dm)) * (1 + abs(m[i]) / sd[i])
        assert abs(e.d_v[i] - dv) <= 1e-7 * max(1.0, abs(dv)) * (1 + (m[i] / sd[i]) ** 2)


def test_bound_family_pickles_after_use():
    """Worker processes (cross-validation) get the bound family: its cached quadrature rules
    (closures) are dropped and rebuilt."""
    import pickle

    Y, _ = table_with_gaps(missing=0.0)
    fam = quiet(Ordinal("logit").prepare, Y.to_numpy())
    s = np.zeros(fam.free_dispersion().shape)
    e1 = fam.ell(Y.to_numpy(), np.zeros(Y.shape), np.full(Y.shape, 3.0), s, order=2)
    back = pickle.loads(pickle.dumps(fam))
    np.testing.assert_array_equal(back.categories_used, fam.categories_used)
    e2 = back.ell(Y.to_numpy(), np.zeros(Y.shape), np.full(Y.shape, 3.0), s, order=2)
    np.testing.assert_array_equal(e1.value, e2.value)
    np.testing.assert_array_equal(e1.d_ss, e2.d_ss)
