"""Goodness of fit: pseudo-R2, richness prediction intervals, joint occurrence."""
import warnings

import numpy as np
import pandas as pd
import pytest

import jsdm
from jsdm.analysis.goodness import joint_occurrence, pseudo_r2, richness


def _fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        return jsdm.gllvm(*args, **kwargs)


@pytest.fixture(scope="module")
def binary_fit():
    com, _ = jsdm.simulate_community(120, 8, num_lv=2, family="binomial", n_covariates=1,
                                     seed=31, loading_sd=1.0)
    return _fit(com, family="binomial", num_lv=2, seed=1)


def test_nakagawa_r2(binary_fit):
    r2 = pseudo_r2(binary_fit)
    assert list(r2.index[:-1]) == list(binary_fit.species) and r2.index[-1] == "overall"
    sp = r2.iloc[:-1]
    var_f = (binary_fit.problem.X @ binary_fit.coef[["x1"]].to_numpy().T).var(0)
    assert np.allclose(sp["var_fixed"], var_f)
    assert np.allclose(sp["var_lv"], (binary_fit.loadings.to_numpy() ** 2).sum(1))
    assert np.allclose(sp["var_obs"], np.pi ** 2 / 3)
    total = sp[["var_fixed", "var_lv", "var_row", "var_obs"]].sum(axis=1)
    assert np.allclose(sp["marginal"], sp["var_fixed"] / total)
    assert (sp["conditional"] >= sp["marginal"]).all() and (sp["conditional"] < 1).all()
    assert np.isclose(r2.loc["overall", "marginal"], sp["marginal"].mean())
    assert "Nakagawa" in r2.attrs["definition"]


def test_tjur_and_correlation_r2(binary_fit):
    t = pseudo_r2(binary_fit, kind="tjur")
    P = binary_fit.fitted().to_numpy()
    Y = binary_fit.community.Y.to_numpy()
    j = 3
    assert np.isclose(t["r2"].iloc[j], P[Y[:, j] == 1, j].mean() - P[Y[:, j] == 0, j].mean())
    c = pseudo_r2(binary_fit, kind="cor")
    assert np.isclose(c["r2"].iloc[j], np.corrcoef(Y[:, j], P[:, j])[0, 1] ** 2)
    counts = _fit(jsdm.simulate_community(30, 4, num_lv=1, seed=1)[0], family="poisson",
                  num_lv=1, seed=1)
    with pytest.raises(jsdm.JSDMError, match="presence/absence"):
        pseudo_r2(counts, kind="tjur")
    with pytest.raises(jsdm.JSDMError, match="kind"):
        pseudo_r2(counts, kind="mcfadden")


def test_richness_intervals_cover_about_95_percent_on_model_data():
    com, _ = jsdm.simulate_community(200, 12, num_lv=2, family="poisson", n_covariates=1,
                                     seed=41, intercept=-0.5, loading_sd=0.8)
    fit = _fit(com, family="poisson", num_lv=2, seed=1)
    r = richness(fit, n_draws=1000, seed=2)
    cover = r["inside"].mean()
    assert 0.90 <= cover <= 0.995, cover
    assert abs(cover - r["interval_probability"].mean()) < 0.03     # as the model says
    # the expected richness is the sum of marginal presence probabilities
    pres = fit.predict(type="response", lv="marginal", summary="presence").sum(axis=1)
    assert np.allclose(r["expected"], pres, atol=0.15)
    assert (r["lower"] <= r["expected"]).all() and (r["expected"] <= r["upper"]).all()
    cond = richness(fit, lv="conditional", n_draws=300, seed=2)
    assert (cond["upper"] - cond["lower"]).mean() < (r["upper"] - r["lower"]).mean()
    new = richness(fit, newdata=pd.DataFrame({"x1": [0.0, 1.0]}), n_draws=200)
    assert "observed" not in new.columns and len(new) == 2


def test_richness_errors(binary_fit):
    g = _fit(jsdm.simulate_community(30, 4, num_lv=1, family="gaussian", seed=1)[0],
             family="gaussian", num_lv=1, seed=1)
    with pytest.raises(jsdm.JSDMError, match="absence"):
        richness(g)
    with pytest.raises(jsdm.JSDMError, match="new sites"):
        richness(binary_fit, newdata=pd.DataFrame({"x1": [0.0]}), lv="conditional")
    with pytest.raises(jsdm.JSDMError, match="alpha"):
        richness(binary_fit, alpha=95)
    with pytest.warns(FutureWarning, match="alpha=0.1"):    # the old name still works
        old = richness(binary_fit, level=0.9, n_draws=50, seed=1)
    pd.testing.assert_frame_equal(old, richness(binary_fit, alpha=0.1, n_draws=50, seed=1))


def test_joint_occurrence_against_simulation(binary_fit):
    jo = joint_occurrence(binary_fit)
    n_sim = 1500
    sims = binary_fit.simulate(n=n_sim, conditional=False, seed=3).to_numpy()
    sims = (sims.reshape(n_sim, 120, 8) > 0).astype(float)
    emp = np.einsum("dij,dil->jl", sims, sims) / (n_sim * 120)
    se = np.sqrt(emp * (1 - emp) / (n_sim * 120))
    assert np.all(np.abs(emp - jo.to_numpy()) < 4.5 * se + 1e-4)
    pres = binary_fit.predict(type="response", lv="marginal", summary="presence").mean()
    assert np.allclose(np.diag(jo), pres, atol=1e-4)
    ratio = joint_occurrence(binary_fit, kind="ratio")
    assert np.allclose(np.diag(ratio), 1.0)
    # species that load alike co-occur more than their covariate responses predict
    th = binary_fit.loadings.to_numpy()
    r = ratio.to_numpy()[np.triu_indices(8, 1)]
    same = (th @ th.T)[np.triu_indices(8, 1)]
    assert np.corrcoef(r, same)[0, 1] > 0.5
