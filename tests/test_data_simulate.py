"""The GLLVM simulator: structure, seeding, realistic defaults, and moments vs parameters.

Moment checks draw many sites so that sample moments are within a few standard
errors of the values implied by the parameters; tolerances are 4-5 standard errors.
"""
import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import jsdm
from jsdm import JSDMError, simulate_community
from jsdm.families import get_family

N_BIG = 20_000
pytestmark = pytest.mark.filterwarnings("ignore::jsdm.exceptions.DataWarning")  # empty sites happen


def need(name):
    """Skip until the family is registered (it is added in another issue)."""
    try:
        get_family(name)
    except JSDMError:
        pytest.skip(f"family {name!r} is not registered yet")


def link_variance(truth):
    """Series: marginal variance of eta_ij - beta0_j, |beta_j|^2 + |theta_j|^2."""
    return (truth.B ** 2).sum(axis=1) + (truth.theta ** 2).sum(axis=1)


# --- structure ---------------------------------------------------------------------------
def test_structure_labels_and_eta():
    com, truth = simulate_community(30, 6, num_lv=3, n_covariates=2, seed=1)
    assert (com.n_sites, com.n_species) == (30, 6)
    assert list(com.sites[:2]) == ["site01", "site02"] and com.species[-1] == "sp06"
    assert com.covariates == ["x1", "x2"]
    assert truth.B.shape == (6, 2) and truth.theta.shape == (6, 3) and truth.z.shape == (30, 3)
    assert list(truth.theta.columns) == ["LV1", "LV2", "LV3"]
    th = truth.theta.to_numpy()
    assert np.all(np.triu(th, 1) == 0) and np.all(np.diag(th) > 0)
    eta = (truth.beta0.to_numpy() + com.X.to_numpy() @ truth.B.to_numpy().T
           + truth.z.to_numpy() @ th.T)
    np.testing.assert_allclose(truth.eta.to_numpy(), eta)
    assert truth.dispersion is None and truth.family == "poisson"
    np.testing.assert_allclose(truth.residual_covariance.to_numpy(), th @ th.T)


def test_no_covariates_no_latent_variables():
    com, truth = simulate_community(10, 3, num_lv=0, n_covariates=0, seed=2)
    assert com.X is None and truth.B.shape == (3, 0) and truth.theta.shape == (3, 0)
    np.testing.assert_allclose(truth.eta.to_numpy(), np.tile(truth.beta0.to_numpy(), (10, 1)))


def test_seeded():
    a, ta = simulate_community(20, 5, seed=42)
    b, tb = simulate_community(20, 5, seed=42)
    c, _ = simulate_community(20, 5, seed=43)
    assert a.equals(b)
    pd.testing.assert_frame_equal(ta.theta, tb.theta)
    assert not a.equals(c)


@pytest.mark.parametrize("seed", range(5))
def test_default_scales_look_like_field_counts(seed):
    com, _ = simulate_community(seed=seed)
    y = com.Y.to_numpy()
    assert 0.1 < (y == 0).mean() < 0.8  # zeros common but not everything
    assert y.max() < 5_000
    means = y.mean(axis=0)
    assert 0.3 < np.median(means) < 20 and means.min() < means.max() / 5  # rare and common


def test_argument_errors():
    with pytest.raises(JSDMError, match="num_lv=4 exceeds n_species=3"):
        simulate_community(10, 3, num_lv=4)
    with pytest.raises(JSDMError, match="n_sites must be a whole number >= 1"):
        simulate_community(0, 3)
    with pytest.raises(JSDMError, match="no dispersion"):
        simulate_community(10, 3, dispersion=2.0)
    with pytest.raises(JSDMError, match="unknown family 'zebra'; valid families: .*poisson"):
        simulate_community(10, 3, family="zebra")


# --- moments: Poisson ------------------------------------------------------------------
@pytest.fixture(scope="module")
def poisson_big():
    return simulate_community(N_BIG, 5, num_lv=2, n_covariates=2, seed=11)


def test_poisson_marginal_mean_matches_parameters(poisson_big):
    com, truth = poisson_big
    s2 = link_variance(truth)
    expected = np.exp(truth.beta0 + s2 / 2)              # E[exp(eta)], eta ~ N(beta0, s2)
    var = expected + expected ** 2 * (np.exp(s2) - 1)    # Var y = E mu + Var mu
    se = np.sqrt(var / N_BIG)
    observed = com.Y.mean()
    assert (np.abs(observed - expected) < 4 * se).all(), (observed, expected, se)


def test_poisson_conditional_moments(poisson_big):
    com, truth = poisson_big
    mu = np.exp(truth.eta.to_numpy())
    r = (com.Y.to_numpy() - mu) / np.sqrt(mu)
    assert abs(r.mean()) < 0.02 and abs(r.var() - 1) < 0.05


def test_link_scale_covariance_is_BB_plus_theta_theta(poisson_big):
    _, truth = poisson_big
    B, th = truth.B.to_numpy(), truth.theta.to_numpy()
    emp = np.cov(truth.eta.to_numpy(), rowvar=False)
    np.testing.assert_allclose(emp, B @ B.T + th @ th.T, atol=0.06)
    np.testing.assert_allclose(np.cov(truth.z.to_numpy(), rowvar=False), np.eye(2), atol=0.04)
    np.testing.assert_allclose(truth.z.mean(), 0, atol=0.04)


# --- moments: other families (run once they are registered) ------------------------
def test_negative_binomial_variance():
    need("negative_binomial")
    phi = np.array([0.2, 1.0, 2.0])
    com, truth = simulate_community(N_BIG, 3, num_lv=1, family="nb", n_covariates=1,
                                    dispersion=phi, intercept=1.0, intercept_sd=0.3, seed=5)
    np.testing.assert_allclose(truth.dispersion.to_numpy(), phi)
    y, mu = com.Y.to_numpy(), np.exp(truth.eta.to_numpy())
    assert np.all(np.abs(y.mean(axis=0) / mu.mean(axis=0) - 1) < 0.05)
    phi_hat = ((y - mu) ** 2 - mu).sum(axis=0) / (mu ** 2).sum(axis=0)  # Var = mu + phi mu^2
    np.testing.assert_allclose(phi_hat, phi, rtol=0.15)


def test_negative_binomial_default_dispersion():
    need("negative_binomial")
    com, truth = simulate_community(40, 4, family="negative_binomial", seed=3)
    assert np.allclose(truth.dispersion, 0.5) and com.response_type == "count"


@pytest.mark.parametrize("link", ["probit", "logit"])
def test_binomial_marginal_prevalence(link):
    need("binomial")
    com, truth = simulate_community(N_BIG, 4, family="binomial", link=link, seed=7)
    assert com.response_type == "binary" and truth.link == link
    s2 = link_variance(truth)
    if link == "probit":  # P(y = 1) = Phi(beta0 / sqrt(1 + s2)) exactly
        expected = stats.norm.cdf(truth.beta0 / np.sqrt(1 + s2))
    else:                 # no closed form: average expit(eta) over the drawn eta
        expected = special.expit(truth.eta.to_numpy()).mean(axis=0)
    se = np.sqrt(expected * (1 - expected) / N_BIG)
    assert np.all(np.abs(com.Y.mean().to_numpy() - expected) < 4.5 * se)


def test_binomial_with_trials():
    need("binomial")
    com, truth = simulate_community(N_BIG, 3, family="binomial", trials=5, seed=8)
    y = com.Y.to_numpy()
    assert y.min() >= 0 and y.max() <= 5 and np.all(truth.trials == 5)
    p = special.expit(truth.eta.to_numpy())
    resid = (y - 5 * p) / np.sqrt(5 * p * (1 - p))
    assert abs(resid.mean()) < 0.03 and abs(resid.var() - 1) < 0.05


def test_gaussian_moments():
    need("gaussian")
    sd = np.array([0.5, 1.0, 2.0])
    com, truth = simulate_community(N_BIG, 3, family="gaussian", dispersion=sd, seed=9)
    y = com.Y
    expected_var = link_variance(truth) + sd ** 2
    se_var = expected_var * np.sqrt(2 / N_BIG)
    assert np.all(np.abs(y.var() - expected_var) < 5 * se_var)
    assert np.all(np.abs(y.mean() - truth.beta0) < 5 * np.sqrt(expected_var / N_BIG))
    resid = y.to_numpy() - truth.eta.to_numpy()
    np.testing.assert_allclose(resid.std(axis=0), sd, rtol=0.03)


def test_zero_inflated_poisson_default_and_zero_share():
    """Default pi = 0.3 (not 1, which would give only zeros); zeros = pi + (1 - pi) e^-mu."""
    com, truth = simulate_community(N_BIG, 3, family="zip", seed=10)
    np.testing.assert_allclose(truth.dispersion, 0.3)
    y, mu = com.Y.to_numpy(), np.exp(truth.eta.to_numpy())
    expected = (0.3 + 0.7 * np.exp(-mu)).mean(axis=0)
    se = np.sqrt(expected * (1 - expected) / N_BIG)
    assert np.all(np.abs((y == 0).mean(axis=0) - expected) < 4.5 * se)
    with pytest.raises(JSDMError, match="below 1"):
        simulate_community(20, 3, family="zip", dispersion=1.0)


def test_ordinal_categories_follow_the_cut_points():
    """P(y <= k | eta) = Phi(tau_(k+1) - eta) (probit); default cut points (0, 1, 2)."""
    com, truth = simulate_community(N_BIG, 3, family="ordinal", seed=11)
    assert list(truth.dispersion.columns) == ["tau1", "tau2", "tau3"]
    np.testing.assert_allclose(truth.dispersion.to_numpy(), [[0.0, 1.0, 2.0]] * 3)
    y, eta = com.Y.to_numpy(), truth.eta.to_numpy()
    assert set(np.unique(y)) == {0.0, 1.0, 2.0, 3.0}
    for k, tau in enumerate((0.0, 1.0, 2.0)):
        expected = stats.norm.cdf(tau - eta).mean(axis=0)
        se = np.sqrt(expected * (1 - expected) / N_BIG)
        assert np.all(np.abs((y <= k).mean(axis=0) - expected) < 4.5 * se)
    cuts = np.array([[0.0, 0.5], [0.0, 2.0]])
    _, t2 = simulate_community(30, 2, family="ordinal", dispersion=cuts, seed=1)
    np.testing.assert_allclose(t2.dispersion.to_numpy(), cuts)
    for bad in ((1.0, 2.0), (0.0, 2.0, 1.0), (0.0,)):
        with pytest.raises(JSDMError, match="cut points"):
            simulate_community(10, 3, family="ordinal", dispersion=bad)


def test_reachable_from_datasets():
    assert jsdm.datasets.simulate_community is simulate_community
