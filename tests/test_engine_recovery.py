"""Recovery: data simulated from the model (n = 300 sites, m = 30 species, d = 2 latent
variables, 2 covariates) are fitted back, and the rotation-invariant truth is recovered:
the residual covariance Theta Theta', the slopes and intercepts, the NB dispersions.
"""
import warnings

import numpy as np
import pytest

import jsdm

N, M, D = 300, 30, 2
CASES = [("poisson", "poisson"), ("nb", "negative_binomial")]


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def recovered(request):
    family = request.param[1]
    com, truth = jsdm.simulate_community(N, M, num_lv=D, family=family, n_covariates=2,
                                         seed=2024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.DataWarning)
        fit = jsdm.gllvm(com, family=family, num_lv=D, n_init=1, seed=0)
    return fit, truth


def corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_fit_converged(recovered):
    fit, _ = recovered
    assert fit.converged, f"not converged: {fit.state.message}"
    assert np.isfinite(fit.llf)


def test_residual_covariance_recovered(recovered):
    fit, truth = recovered
    th = fit.loadings.to_numpy()
    S, S0 = th @ th.T, truth.residual_covariance.to_numpy()
    off = ~np.eye(M, dtype=bool)
    assert corr(S, S0) > 0.9
    assert corr(S[off], S0[off]) > 0.9
    assert 0.7 < np.trace(S) / np.trace(S0) < 1.4


def test_loadings_structure(recovered):
    fit, _ = recovered
    th = fit.loadings.to_numpy()
    assert np.all(np.triu(th, 1) == 0.0), "theta must be zero above the diagonal"
    assert np.all(np.diag(th[:D]) > 0.0), "theta's diagonal must be positive"


def test_slopes_and_intercepts_recovered(recovered):
    fit, truth = recovered
    B, B0 = fit.coef[["x1", "x2"]].to_numpy(), truth.B.to_numpy()
    assert corr(B, B0) > 0.9
    assert np.abs(B - B0).mean() < 0.15
    b, b0 = fit.coef["Intercept"].to_numpy(), truth.beta0.to_numpy()
    assert corr(b, b0) > 0.95
    assert np.abs(b - b0).mean() < 0.2


def test_site_scores_span_true_latent_space(recovered):
    """Site scores equal the true latent variables up to a rotation: regress one on the other."""
    fit, truth = recovered
    a, z = fit.lv.to_numpy(), truth.z.to_numpy()
    coef, *_ = np.linalg.lstsq(a, z, rcond=None)
    r2 = 1.0 - ((z - a @ coef) ** 2).sum(0) / ((z - z.mean(0)) ** 2).sum(0)
    assert np.all(r2 > 0.8), f"R^2 of true LVs on fitted scores: {r2}"


def test_dispersion_recovered(recovered):
    fit, truth = recovered
    if truth.dispersion is None:
        pytest.skip("family without dispersion")
    phi, phi0 = fit.dispersion.to_numpy(), truth.dispersion.to_numpy()
    assert 0.6 < np.median(phi) / np.median(phi0) < 1.6


# --- random row effects ----------------------------------------------------------------------
def with_site_effects(com, truth, sigma, seed):
    """The simulated community redrawn with N(0, sigma^2) site effects added to eta."""
    import pandas as pd

    fam = jsdm.get_family(truth.family, link=truth.link)
    rng = np.random.default_rng(seed)
    eta = truth.eta.to_numpy() + rng.normal(0.0, sigma, (com.n_sites, 1))
    s = None if truth.dispersion is None else fam.dispersion_param(truth.dispersion.to_numpy())
    Y = pd.DataFrame(fam.sample(eta, s, truth.trials, rng), index=com.sites, columns=com.species)
    return jsdm.Community(Y, com.X)


@pytest.mark.filterwarnings("ignore::jsdm.JSDMWarning")
@pytest.mark.parametrize("d", [1, 2], ids=lambda d: f"d{d}")
def test_random_row_effects_nest_no_row_effects(d):
    """sigma -> 0 gives back the model without site effects, so the fit with random row
    effects must converge and reach at least the ELBO of the fit without them."""
    com, _ = jsdm.simulate_community(40, 8, num_lv=d, family="poisson", n_covariates=1, seed=17,
                                     intercept=0.5)
    plain = jsdm.gllvm(com, family="poisson", num_lv=d, n_init=1, seed=0)
    rand = jsdm.gllvm(com, family="poisson", num_lv=d, row_effect="random", n_init=1, seed=0)
    assert rand.converged, f"max |gradient| {rand.max_grad:.3g} after {rand.n_iter} iterations"
    assert rand.llf >= plain.llf - 1e-3


@pytest.mark.filterwarnings("ignore::jsdm.JSDMWarning")
def test_random_row_effect_sd_recovered():
    com, truth = jsdm.simulate_community(200, 20, num_lv=2, family="poisson", n_covariates=1,
                                         seed=31, intercept=0.5)
    com = with_site_effects(com, truth, sigma=0.6, seed=32)
    fit = jsdm.gllvm(com, family="poisson", num_lv=2, row_effect="random", n_init=1, seed=0)
    assert fit.converged
    assert 0.4 < fit.row_sigma < 0.8
    th, th0 = fit.loadings.to_numpy(), truth.theta.to_numpy()
    assert corr(th @ th.T, th0 @ th0.T) > 0.9
