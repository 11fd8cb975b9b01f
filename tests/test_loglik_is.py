"""The honest likelihood: the site_latent adapter, importance sampling and quadrature over
site latent vectors, loglik_is, anova(loglik="is") and the approximation check in diagnose()."""
import warnings

import numpy as np
import pytest
from scipy import special, stats

import jsdm
from jsdm.results import marginal
from jsdm.results.latent import site_latent


def _fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        return jsdm.gllvm(*args, **kwargs)


def _mite_subset(n_sites=28, n_species=12, binary=False):
    """Spider-sized subset of the mite data: the first sites, the most abundant species."""
    com = jsdm.datasets.load_mite()
    Y = com.Y.loc[com.sites[:n_sites]]
    sp = Y.sum().sort_values(ascending=False).index[:n_species]
    X = com.X[["SubsDens", "WatrCont"]]
    X = (X - X.mean()) / X.std()
    Y = Y[sp]
    if binary:
        Y = (Y > 0).astype(float)
    return jsdm.Community(Y, X.loc[com.sites[:n_sites]])


def _arrays(fit):
    Y = fit.problem.Y
    return Y, np.broadcast_to(fit.problem.W, Y.shape)


def _brute_force(fit, n_grid=301, half=9.0):
    """log p(y_i) per site by a dense trapezoid grid over z in the prior's coordinates, in the
    rotated box of +- ``half`` sds of the fit's q(z_i) (eigen-directions): independent of the
    quadrature and importance sampling under test (uses only family.loglik, coef, loadings)."""
    fam, d = fit.family, fit.num_lv
    th = fit.loadings.to_numpy()
    F = (fit.coef["Intercept"].to_numpy()
         + fit.problem.X @ fit.coef[list(fit.terms)].to_numpy().T)
    s = None if fit.dispersion is None else fam.dispersion_param(fit.dispersion.to_numpy())
    Y = np.where(fit.problem.W > 0, fit.problem.Y, 0.0)
    out = []
    g = np.linspace(-half, half, n_grid)
    for i in range(fit.problem.n):
        a, A = fit.lv.to_numpy()[i], fit.lv_cov[i]
        ev, V = np.linalg.eigh(A)
        axes = V * np.sqrt(ev)                                  # columns: sd directions
        G = np.stack(np.meshgrid(*([g] * d), indexing="ij"), -1).reshape(-1, d)
        Z = a + G @ axes.T
        eta = F[i] + Z @ th.T
        ll = fam.loglik(np.broadcast_to(Y[i], eta.shape), eta, s).sum(1)
        ll += -0.5 * (Z ** 2).sum(1) - 0.5 * d * np.log(2 * np.pi)
        tw = np.full(n_grid, g[1] - g[0])
        tw[[0, -1]] *= 0.5
        logw = np.log(tw)
        LW = sum(np.meshgrid(*([logw] * d), indexing="ij")).ravel()
        out.append(special.logsumexp(ll + LW) + np.log(np.prod(np.sqrt(ev))))
    return np.array(out)


# --- the adapter ------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::jsdm.DataWarning")
@pytest.mark.parametrize("family,kw", [
    ("poisson", {}),
    ("nb", {"row_effect": "random"}),
    ("binomial", {"row_effect": "fixed"}),
    ("gaussian", {}),
], ids=["poisson", "nb-random-row", "binomial-fixed-row", "gaussian"])
def test_adapter_reproduces_the_elbo(family, kw):
    com, _ = jsdm.simulate_community(25, 6, num_lv=2, family=family, n_covariates=1, seed=2)
    Y = com.Y.copy()
    Y.iloc[3, 2] = np.nan
    fit = _fit(jsdm.Community(Y, com.X), family=family, num_lv=2, seed=1, **kw)
    sl = site_latent(fit)
    elbo_i = marginal.site_elbo(sl, *_arrays(fit))
    assert elbo_i.shape == (25,)
    assert np.isclose(elbo_i.sum(), fit.llf, rtol=1e-10, atol=1e-8)
    assert sl.r == 2 + (kw.get("row_effect") == "random")


def test_fit_q_recovers_the_fitted_posterior():
    fit = _fit(_mite_subset(), family="nb", num_lv=2, seed=1)
    sl = site_latent(fit)
    a, A = marginal.fit_q(sl, *_arrays(fit))
    assert np.abs(a - fit.lv.to_numpy()).max() < 5e-3
    assert np.abs(A - fit.lv_cov).max() < 5e-3


# --- exact cases ------------------------------------------------------------------------------
def test_gaussian_is_estimate_is_unbiased_for_the_exact_likelihood():
    com, _ = jsdm.simulate_community(40, 5, num_lv=2, family="gaussian", n_covariates=1, seed=7)
    fit = _fit(com, family="gaussian", num_lv=2, seed=1)
    # exact: y_i ~ N(F_i, Theta Theta' + diag(sd^2)), scipy's multivariate normal
    F = fit.coef["Intercept"].to_numpy() + fit.problem.X @ fit.coef[list(fit.terms)].to_numpy().T
    th = fit.loadings.to_numpy()
    cov = th @ th.T + np.diag(fit.dispersion.to_numpy() ** 2)
    exact = sum(stats.multivariate_normal(F[i], cov).logpdf(fit.problem.Y[i]) for i in range(40))
    ests = [fit.loglik_is(n_draws=300, seed=s) for s in range(8)]
    z = np.array([(e.value - exact) / e.se for e in ests])
    assert all(e.se > 0 for e in ests)                       # a genuine Monte Carlo estimate
    assert np.all(np.abs(z) < 4.0)
    assert abs(z.mean()) < 3.0 / np.sqrt(len(z))             # no bias at the SE's resolution
    assert abs(fit.llf - exact) < 1e-3                       # the Gaussian VA is exact


def test_poisson_without_latent_variables_is_exact():
    com, _ = jsdm.simulate_community(30, 5, num_lv=0, family="poisson", n_covariates=1, seed=3)
    fit = _fit(com, family="poisson", num_lv=0, seed=1)
    est = fit.loglik_is(n_draws=50, seed=0)
    mu = fit.fitted().to_numpy()
    exact = stats.poisson.logpmf(fit.problem.Y, mu).sum()
    assert est.se == 0.0
    assert np.isclose(est.value, exact, rtol=1e-10)
    assert np.isclose(est.value, fit.llf, rtol=1e-10)


# --- above the ELBO -----------------------------------------------------------------------------
@pytest.mark.parametrize("family,kw", [("binomial", {}), ("nb", {"row_effect": "random"})],
                         ids=["binomial", "nb-random-row"])
def test_is_estimate_lies_above_the_elbo(family, kw):
    com = _mite_subset(binary=family == "binomial")
    fit = _fit(com, family=family, num_lv=2 if family == "binomial" else 1, seed=1, **kw)
    est = fit.loglik_is(n_draws=1000, seed=1)
    assert est.gap > -3.0 * est.se
    if family == "binomial":
        assert est.gap > 3.0 * est.se
    else:   # the joint q of latent variable and row effect (issue 14) left little gap: measured
        assert est.gap < 0.6    # 0.28 (se 0.12); 0.86 with the factorised q before
    assert (est.sites["gap"] > -4.0 * est.sites["se"] - 1e-9).all()
    assert est.min_ess > 100


# --- against brute-force quadrature on spider-sized mite subsets --------------------------------
@pytest.mark.parametrize("d", [1, 2])
def test_is_agrees_with_brute_force_quadrature_on_mite_subsets(d):
    fit = _fit(_mite_subset(), family="nb", num_lv=d, seed=1)
    brute = _brute_force(fit, n_grid=2001 if d == 1 else 161)
    est = fit.loglik_is(n_draws=2000, seed=2)
    assert abs(est.value - brute.sum()) < 3.0 * est.se
    z = (est.sites["loglik"].to_numpy() - brute) / est.sites["se"].to_numpy()
    assert np.abs(z).max() < 4.5
    quad = marginal.log_marginal(site_latent(fit), *_arrays(fit), method="quadrature")
    assert np.abs(quad.logp - brute).max() < 1e-5
    assert (brute >= marginal.site_elbo(site_latent(fit), *_arrays(fit)) - 1e-8).all()


def test_loglik_is_is_deterministic_and_checks_its_arguments():
    fit = _fit(_mite_subset(14, 6), family="poisson", num_lv=1, seed=1)
    a, b = fit.loglik_is(n_draws=100, seed=5), fit.loglik_is(n_draws=100, seed=5)
    assert a.value == b.value and a.sites.index.equals(fit.sites)
    assert list(a.to_frame().columns)[:4] == ["loglik_is", "se", "elbo", "gap"]
    with pytest.raises(jsdm.JSDMError, match="n_draws"):
        fit.loglik_is(n_draws=1)
    with pytest.raises(jsdm.JSDMError, match="positive"):
        fit.loglik_is(df=-1)


# --- anova and diagnose -------------------------------------------------------------------------
def test_anova_with_the_is_likelihood():
    com = _mite_subset(binary=True)
    f1 = _fit(com, family="binomial", num_lv=1, seed=1)
    f2 = _fit(com, family="binomial", num_lv=2, seed=1)
    tab = jsdm.anova(f1, f2, loglik="is", n_draws=500, seed=0)
    e1, e2 = f1.loglik_is(n_draws=500, seed=0), f2.loglik_is(n_draws=500, seed=0)
    assert np.isclose(tab["llf_is"].iloc[1], e2.value)
    assert np.isclose(tab["statistic"].iloc[1], 2 * (e2.value - e1.value))
    assert np.isclose(tab["statistic_se"].iloc[1], 2 * np.hypot(e1.se, e2.se))
    assert np.isclose(tab["gap"].iloc[0], e1.value - f1.llf)
    plain = jsdm.anova(f1, f2)
    assert "llf_is" not in plain.columns
    with pytest.raises(jsdm.JSDMError, match="loglik"):
        jsdm.anova(f1, f2, loglik="laplace")


def test_diagnose_reports_the_approximation():
    fit = _fit(_mite_subset(binary=True), family="binomial", num_lv=2, seed=1)
    diag = fit.diagnose(n_draws=200)
    keys = " ".join(diag.stats)
    assert "importance sampling" in keys and "ELBO gap" in keys
    off = fit.diagnose(approximation=False)
    assert not any("ELBO gap" in k for k in off.stats)
    exact = _fit(_mite_subset(14, 5), family="poisson", num_lv=0, seed=1).diagnose(hessian=False)
    assert exact.stats["variational approximation"].startswith("exact")
