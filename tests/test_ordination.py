"""Ordination: principal axes of a Theta', biplot scalings, rotated site covariances."""
import numpy as np
import pandas as pd
import pytest

import jsdm
from jsdm.analysis.ordination import ordination, principal_axes

from _analysis_helpers import fit_mite_poisson, quiet_fit, random_rotation, rotated_fit


@pytest.fixture(scope="module")
def mite_poisson():
    return fit_mite_poisson()


@pytest.fixture(scope="module")
def mite_nocov():
    com = jsdm.datasets.load_mite()
    return quiet_fit(com, family="poisson", num_lv=2, seed=1, formula="~ 1")


def _latent(fit):
    return fit.lv.to_numpy() @ fit.loadings.to_numpy().T


@pytest.mark.parametrize("scaling,exponent", [("symmetric", 0.5), ("sites", 1.0), ("species", 0.0),
                                              ("symmetric", 0.3)])
def test_scores_reproduce_the_latent_structure(mite_poisson, scaling, exponent):
    o = ordination(mite_poisson, scaling=scaling, exponent=exponent)
    assert o.exponent == exponent
    np.testing.assert_allclose(o.sites.to_numpy() @ o.species.to_numpy().T, _latent(mite_poisson),
                               atol=1e-10)
    assert list(o.sites.index) == list(mite_poisson.sites)
    assert list(o.species.index) == list(mite_poisson.species)
    assert list(o.sites.columns) == ["LV1", "LV2"]
    np.testing.assert_allclose(o.site_transform @ o.species_transform.T, np.eye(2), atol=1e-10)


def test_principal_axes_are_orthogonal_and_ordered(mite_poisson):
    o = ordination(mite_poisson, scaling="species")
    n = len(mite_poisson.sites)
    S = o.sites.to_numpy()
    # "species" scaling: site scores are sqrt(n) U, orthogonal with unit mean square
    np.testing.assert_allclose(S.T @ S / n, np.eye(2), atol=1e-10)
    sv = np.linalg.svd(_latent(mite_poisson), compute_uv=False)[:2]
    np.testing.assert_allclose(o.singular_values, sv, rtol=1e-10)
    np.testing.assert_allclose(o.share, sv ** 2 / np.sum(sv ** 2), rtol=1e-10)
    assert o.share.iloc[0] >= o.share.iloc[1] and o.share.sum() == pytest.approx(1.0)
    P = o.species.to_numpy()
    np.testing.assert_allclose(P.T @ P, np.diag(sv ** 2 / n), atol=1e-10)
    # sign convention: the largest species score on each axis is positive
    assert np.all(P[np.argmax(np.abs(P), axis=0), [0, 1]] > 0)
    assert o.axis_labels[0].startswith("LV1 (") and o.axis_labels[0].endswith("%)")


@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
def test_invariant_to_rotating_the_latent_variables(mite_poisson, reflect):
    Q = random_rotation(2, seed=3, reflect=reflect)
    rot = rotated_fit(mite_poisson, Q)
    a, b = ordination(mite_poisson), ordination(rot)
    pd.testing.assert_frame_equal(a.sites, b.sites, atol=1e-9, rtol=1e-9)
    pd.testing.assert_frame_equal(a.species, b.species, atol=1e-9, rtol=1e-9)
    np.testing.assert_allclose(a.site_cov, b.site_cov, atol=1e-10)
    np.testing.assert_allclose(a.share, b.share)


def test_site_covariances_rotate_with_the_scores(mite_poisson):
    o = ordination(mite_poisson, scaling="sites")
    A = np.asarray(mite_poisson.lv_cov)
    T = o.site_transform
    np.testing.assert_allclose(o.site_cov[5], T.T @ A[5] @ T, atol=1e-12)
    assert o.site_cov.shape == (len(mite_poisson.sites), 2, 2)
    assert np.all(np.linalg.eigvalsh(o.site_cov) > 0)


def test_covariate_correlations(mite_nocov):
    o = ordination(mite_nocov)
    X = mite_nocov.community.X
    assert o.covariates.loc["WatrCont", "LV1"] == pytest.approx(np.corrcoef(X["WatrCont"], o.sites["LV1"])[0, 1])
    assert "Topo[Hummock]" in o.covariates.index   # categorical covariates as level indicators
    assert np.all(np.abs(o.covariates.to_numpy()) <= 1.0)
    # water content is the main gradient of the mite data: strongly related to the ordination
    assert np.hypot(*o.covariates.loc["WatrCont"]) > 0.5
    assert ordination(mite_nocov, covariates=False).covariates is None


def test_bad_arguments(mite_poisson):
    with pytest.raises(jsdm.JSDMError, match="scaling"):
        ordination(mite_poisson, scaling="hill")
    with pytest.raises(jsdm.JSDMError, match="exponent"):
        ordination(mite_poisson, exponent=2.0)
    with pytest.raises(jsdm.JSDMError, match="rank"):
        principal_axes(np.ones((10, 2)), np.random.default_rng(0).standard_normal((5, 2)))


def test_needs_latent_variables():
    com, _ = jsdm.simulate_community(40, 8, 1, "poisson", 0, seed=2)
    fit = quiet_fit(com, family="poisson", num_lv=0)
    with pytest.raises(jsdm.JSDMError, match="num_lv"):
        ordination(fit)
