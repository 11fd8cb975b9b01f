"""Residuals, predictions and simulation from fitted GLLVMs."""
import warnings

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import jsdm
from jsdm import GLLVMResults
from jsdm.exceptions import JSDMError
from jsdm.results.predict import marginal_mean


def _quiet_fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        return jsdm.gllvm(*args, **kwargs)


@pytest.fixture(scope="module")
def nb_data():
    com, _ = jsdm.simulate_community(80, 30, num_lv=2, family="nb", n_covariates=1, seed=3,
                                     intercept=1.0, dispersion=0.5)
    return com


@pytest.fixture(scope="module")
def pois_fit():
    com, _ = jsdm.simulate_community(60, 6, num_lv=2, family="poisson", n_covariates=2, seed=4, intercept=0.5)
    Y = com.Y.copy()
    Y.iloc[2, 1] = np.nan
    return _quiet_fit(jsdm.Community(Y, com.X), family="poisson", num_lv=2, seed=1, n_init=1)


# --- residuals -------------------------------------------------------------------------------
def test_dunn_smyth_residuals_normal_for_correct_model_not_for_misspecified(nb_data):
    good = _quiet_fit(nb_data, family="nb", num_lv=2, seed=1, n_init=1)
    r = good.residuals(seed=1)
    assert r.shape == nb_data.Y.shape and r.index.equals(nb_data.sites)
    assert stats.kstest(r.to_numpy().ravel(), "norm").pvalue > 0.01
    bad = _quiet_fit(nb_data, family="poisson", num_lv=2, seed=1, n_init=1)
    rb = bad.residuals(seed=1).to_numpy().ravel()
    assert stats.kstest(rb, "norm").pvalue < 1e-6
    assert rb.std() > 1.2                       # overdispersion left in the residuals


def test_residuals_seeded_missing_and_kinds(pois_fit):
    fit = pois_fit
    a, b = fit.residuals(seed=7), fit.residuals(seed=7)
    assert a.equals(b) and not a.equals(fit.residuals(seed=8))
    assert np.isnan(a.iloc[2, 1]) and a.isna().sum().sum() == 1
    y = fit.community.Y
    mu = fit.fitted()
    assert np.allclose(fit.residuals("response"), y - mu, equal_nan=True)
    assert np.allclose(fit.residuals("pearson"), (y - mu) / np.sqrt(mu), equal_nan=True)
    with pytest.raises(ValueError, match="dunn-smyth"):
        fit.residuals("deviance")


# --- predict ---------------------------------------------------------------------------------
def test_conditional_predictions_are_the_fitted_values(pois_fit):
    fit = pois_fit
    assert np.allclose(fit.predict(type="link"), fit.linear_predictor())
    assert np.allclose(fit.predict(type="response"), fit.fitted())
    assert fit.predict(type="link").columns.equals(fit.species)


def test_predict_and_fitted_default_to_the_response_scale(pois_fit):
    """One default scale for predict() and fitted(); leaving type out says so until it is settled."""
    with pytest.warns(FutureWarning, match="response scale by default"):
        default = pois_fit.predict()
    pd.testing.assert_frame_equal(default, pois_fit.fitted())
    assert not np.allclose(default, pois_fit.linear_predictor())


def test_marginal_predictions_integrate_over_latent_variables(pois_fit):
    fit = pois_fit
    P = fit.state.params
    fixed = P.beta0 + fit.problem.X @ P.B.T
    marg = fit.predict(type="response", lv="marginal").to_numpy()
    assert np.allclose(marg, np.exp(fixed + 0.5 * (P.theta ** 2).sum(1)))
    z = np.random.default_rng(0).standard_normal((100_000, fit.num_lv))
    mc = np.exp(fixed[0] + z @ P.theta.T).mean(0)
    assert np.allclose(marg[0], mc, rtol=0.02)
    assert np.allclose(fit.predict(type="link", lv="marginal"), fixed)
    assert not np.allclose(marg, np.exp(fixed))          # not the z = 0 plug-in


def test_gauss_hermite_marginal_mean_matches_probit_closed_form():
    fam = jsdm.get_family("binomial", link="probit")
    F = np.linspace(-3, 3, 13)[:, None] * np.ones((1, 3))
    var = np.array([0.1, 1.0, 4.0])[None, :] * np.ones_like(F)
    exact = special.ndtr(F / np.sqrt(1.0 + var))
    assert np.allclose(marginal_mean(fam, F, var), exact, atol=1e-6)


def test_predict_new_sites_from_covariates(pois_fit):
    fit = pois_fit
    new = fit.community.X.iloc[[5, 0, 3]]
    pred = fit.predict(new, type="response")
    assert pred.index.equals(new.index)
    assert np.allclose(pred, fit.predict(type="response", lv="marginal").loc[new.index])
    with pytest.raises(JSDMError, match="marginal"):
        fit.predict(new, type="response", lv="conditional")
    with pytest.raises(JSDMError, match="x2"):
        fit.predict(new[["x1"]], type="response")


def test_new_site_design_keeps_categorical_levels():
    com = jsdm.datasets.load_mite()
    X = com.X.copy()
    X["SubsDens"] = (X["SubsDens"] - X["SubsDens"].mean()) / X["SubsDens"].std()
    keep = com.Y.index[com.Y.iloc[:, :8].sum(axis=1) > 0]
    sub = jsdm.Community(com.Y.loc[keep].iloc[:, :8], X.loc[keep])
    fit = _quiet_fit(sub, family="poisson", num_lv=0, formula="~ SubsDens + Topo", n_init=1, seed=1)
    new = X.loc[keep].iloc[[0, 1]]
    assert (new["Topo"] == new["Topo"].iloc[0]).all()     # one level only in newdata
    assert np.allclose(fit.predict(new, type="link"), fit.predict(type="link").iloc[[0, 1]])


def test_confidence_interval_delta_method(pois_fit):
    fit = pois_fit
    new = fit.community.X.iloc[:4]
    ci = fit.predict_interval(new, type="link", interval="confidence", alpha=0.1)
    assert list(ci.columns) == ["prediction", "lower", "upper"]
    C = fit.cov_params()
    sp = fit.species[2]
    idx = [("coef", sp, t) for t in ["Intercept", "x1", "x2"]]
    x = np.r_[1.0, new.iloc[1].to_numpy()]
    se = np.sqrt(x @ C.loc[idx, idx].to_numpy() @ x)
    row = ci.loc[(new.index[1], sp)]
    assert row["upper"] - row["prediction"] == pytest.approx(stats.norm.isf(0.05) * se)
    resp = fit.predict_interval(new, type="response", interval="confidence")
    assert (resp["lower"] < resp["prediction"]).all() and (resp["prediction"] < resp["upper"]).all()
    with pytest.raises(JSDMError, match="marginal"):
        fit.predict_interval(type="link", interval="confidence")
    with pytest.raises(JSDMError, match="interval must be"):
        fit.predict_interval(new, interval=None)


def test_deprecated_interval_and_level_arguments_still_work(pois_fit):
    """predict(interval=, level=) give the same table as predict_interval(alpha=), with FutureWarnings."""
    fit, new = pois_fit, pois_fit.community.X.iloc[:3]
    want = fit.predict_interval(new, type="link", interval="confidence", alpha=0.1)
    with pytest.warns(FutureWarning) as record:
        old = fit.predict(new, type="link", interval="confidence", level=0.9)
    messages = " ".join(str(w.message) for w in record)
    assert "predict_interval" in messages and "alpha=0.1" in messages
    pd.testing.assert_frame_equal(old, want)
    with pytest.raises(TypeError, match="both alpha"):
        jsdm.results.predict.predict(fit, new, type="link", interval="confidence", alpha=0.1,
                                     level=0.9)


def test_prediction_interval_covers_new_draws(pois_fit):
    fit = pois_fit
    pi = fit.predict_interval(type="response", interval="prediction", alpha=0.1, seed=1, n_draws=400)
    y = fit.simulate(n=200, seed=2)
    lo = pi["lower"].unstack().to_numpy()
    hi = pi["upper"].unstack().to_numpy()
    inside = [((t.to_numpy() >= lo) & (t.to_numpy() <= hi)).mean() for _, t in y.groupby(level="draw")]
    assert np.mean(inside) >= 0.88                       # discrete: at least the nominal 0.9 - MC error


# --- simulate --------------------------------------------------------------------------------
def test_simulate_seeded_and_moments(pois_fit):
    fit = pois_fit
    a = fit.simulate(seed=3)
    assert a.equals(fit.simulate(seed=3)) and a.shape == fit.community.Y.shape
    many = fit.simulate(n=300, seed=4)
    assert many.index.names == ["draw", "site"]
    cond_mean = many.groupby(level="site").mean().loc[fit.sites]
    assert np.allclose(cond_mean, fit.fitted(), rtol=0.25, atol=0.3)
    marg = fit.simulate(n=300, conditional=False, seed=5).groupby(level="site").mean().loc[fit.sites]
    expected = fit.predict(type="response", lv="marginal")
    assert np.median(np.abs(marg.to_numpy() / expected.to_numpy() - 1)) < 0.15
    with pytest.raises(JSDMError, match="n must"):
        fit.simulate(n=0)


def test_dunn_smyth_randomises_at_the_atom_of_a_continuous_family():
    """Tweedie has a point mass at zero: its zeros must get spread residuals, not one value."""
    from jsdm.model.residuals import dunn_smyth

    fam = jsdm.get_family("tweedie")
    rng = np.random.default_rng(0)
    eta = np.full((400, 3), -0.5)
    s = np.zeros(3)
    y = fam.sample(eta, s, None, rng)
    r = dunn_smyth(fam, y, eta, s, None, rng=1)
    zeros = r[y == 0]
    assert (y == 0).sum() > 50
    assert np.unique(np.round(zeros, 12)).size == zeros.size
    assert stats.kstest(r.ravel(), "norm").pvalue > 0.01


@pytest.mark.parametrize("row_effect,type", [("fixed", "link"), ("fixed", "response"),
                                              ("random", "response")])
def test_confidence_interval_includes_the_row_effect_uncertainty(row_effect, type):
    """se of the marginal mean = sqrt(g' C g), g the numerical gradient of the prediction in every
    packed model parameter it depends on (species' coefficients and loadings, alpha_i or log sigma)."""
    from jsdm.model.hessian import species_positions
    from jsdm.results.inference import information

    com, truth = jsdm.simulate_community(40, 5, num_lv=1, family="poisson", n_covariates=0,
                                         seed=6, intercept=1.0)   # (fixed rows absorb covariates)
    rng = np.random.default_rng(0)                      # add site effects (sd 0.5) to the truth
    eta = truth.eta.to_numpy() + rng.normal(0.0, 0.5, (40, 1))
    Y = com.Y.copy()
    Y[:] = rng.poisson(np.exp(eta))
    fit = _quiet_fit(jsdm.Community(Y, com.X), family="poisson", num_lv=1, row_effect=row_effect,
                     seed=1, n_init=1)
    i, j = 7, 3
    ci = fit.predict_interval(type=type, lv="marginal", interval="confidence", alpha=0.05)
    row = ci.loc[(fit.sites[i], fit.species[j])]
    layout, P = fit.state.layout, fit.state.params
    x0 = layout.pack(P)
    pos = [int(q) for q in species_positions(layout)[j, :2] if q >= 0]     # beta0, theta
    pos.append(layout.slices["alpha_fixed"].start + i - 1 if row_effect == "fixed"
               else layout.slices["log_sigma"].start)
    g = np.zeros(len(pos))
    for a, q in enumerate(pos):
        vals = []
        for sgn in (1.0, -1.0):
            x = x0.copy()
            x[q] += sgn * 1e-5
            moved = GLLVMResults(fit.problem, replace(fit.state, params=layout.unpack(x)),
                                 fit.settings)
            vals.append(moved.predict(type=type, lv="marginal").iloc[i, j])
        g[a] = (vals[0] - vals[1]) / 2e-5
    C = information(fit).cov_packed[np.ix_(pos, pos)]
    se = np.sqrt(g @ C @ g)
    z = stats.norm.isf(0.025)
    if type == "link":
        assert row["upper"] - row["prediction"] == pytest.approx(z * se, rel=1e-4)
    else:       # built on the log scale and transformed back: (log upper - log mu) = z se / mu
        assert np.log(row["upper"] / row["prediction"]) == pytest.approx(z * se / row["prediction"],
                                                                           rel=1e-4)
    assert g[-1] != 0.0


def test_analyses_are_deterministic_without_a_seed(pois_fit):
    """Same fit, same call, same result: randomised residuals and Monte Carlo prediction
    intervals repeat exactly when no seed is given; a seed gives other draws."""
    r1 = pois_fit.residuals("dunn-smyth")
    r2 = pois_fit.residuals("dunn-smyth")
    assert r1.equals(r2)
    assert not r1.equals(pois_fit.residuals("dunn-smyth", seed=11))
    p1 = pois_fit.predict_interval(interval="prediction", type="response")
    p2 = pois_fit.predict_interval(interval="prediction", type="response")
    for a, b in zip(p1 if isinstance(p1, tuple) else [p1], p2 if isinstance(p2, tuple) else [p2]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
