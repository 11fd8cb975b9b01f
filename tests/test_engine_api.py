"""The entry point jsdm.gllvm: data shapes in, determinism, missing cells, warnings, df."""
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import jsdm
from jsdm.exceptions import ConvergenceWarning, JSDMError

N, M = 30, 6


@pytest.fixture(scope="module")
def sim():
    com, truth = jsdm.simulate_community(N, M, num_lv=1, family="poisson", n_covariates=2,
                                         seed=3, intercept=0.5)
    return com, truth


def quiet_fit(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        return jsdm.gllvm(*args, **kw)


@pytest.fixture(scope="module")
def base_fit(sim):
    com, _ = sim
    return quiet_fit(com, family="poisson", num_lv=1, n_init=1, seed=0)


def same_fit(a, b):
    assert a.llf == b.llf
    pd.testing.assert_frame_equal(a.coef, b.coef)
    pd.testing.assert_frame_equal(a.loadings, b.loadings)
    pd.testing.assert_frame_equal(a.lv, b.lv)


# --- data shapes ---------------------------------------------------------------------------
def test_community_input_keeps_labels(sim, base_fit):
    com, _ = sim
    fit = base_fit
    assert list(fit.coef.index) == list(com.species)
    assert list(fit.coef.columns) == ["Intercept", "x1", "x2"]
    assert list(fit.lv.index) == list(com.sites)
    assert list(fit.loadings.index) == list(com.species)
    assert fit.fitted().shape == (N, M)
    assert list(fit.fitted().columns) == list(com.species)
    assert fit.nobs == N * M
    assert np.isfinite(fit.llf) and fit.aic > 0 and fit.bic > fit.aic


def test_wide_dataframe_with_X_equals_community(sim, base_fit):
    com, _ = sim
    fit = quiet_fit(com.Y, com.X, family="poisson", num_lv=1, n_init=1, seed=0)
    same_fit(fit, base_fit)


def test_long_dataframe_equals_community(sim, base_fit):
    com, _ = sim
    long = com.to_long(response="count")
    fit = quiet_fit(long, response="count", site="site", species="species", family="poisson",
                    num_lv=1, n_init=1, seed=0)
    same_fit(fit, base_fit)


def test_long_dataframe_needs_all_three_names(sim):
    com, _ = sim
    with pytest.raises(JSDMError, match="species"):
        jsdm.gllvm(com.to_long(), response="y", site="site", family="poisson")


def test_formula_selects_terms(sim):
    com, _ = sim
    fit = quiet_fit(com, family="poisson", num_lv=1, formula="~ x1", n_init=1, seed=0)
    assert fit.terms == ["x1"]
    assert list(fit.coef.columns) == ["Intercept", "x1"]


def test_family_instance_and_alias_accepted(sim, base_fit):
    com, _ = sim
    fit = quiet_fit(com, family=jsdm.families.Poisson(), num_lv=1, n_init=1, seed=0)
    same_fit(fit, base_fit)
    try:
        nb = quiet_fit(com, family="nb", num_lv=1, n_init=1, seed=0, maxiter=5)
    except JSDMError:
        pytest.skip("negative binomial family not registered yet")
    assert nb.family.name == "negative_binomial"
    assert nb.dispersion is not None and list(nb.dispersion.index) == list(com.species)


def test_unknown_family_lists_valid_ones(sim):
    com, _ = sim
    with pytest.raises(JSDMError) as err:
        jsdm.gllvm(com, family="poison", num_lv=1)
    msg = str(err.value)
    assert "poison" in msg and "poisson" in msg and "valid" in msg


def test_unknown_link_lists_valid_ones(sim):
    com, _ = sim
    with pytest.raises(JSDMError, match="log"):
        jsdm.gllvm(com, family="poisson", link="identity", num_lv=1)


@pytest.mark.parametrize("bad", [-1, 1.5, "two"])
def test_bad_num_lv_rejected(sim, bad):
    com, _ = sim
    with pytest.raises(JSDMError, match="num_lv"):
        jsdm.gllvm(com, family="poisson", num_lv=bad)


def test_bad_row_effect_rejected(sim):
    com, _ = sim
    with pytest.raises(JSDMError, match="row_effect"):
        jsdm.gllvm(com, family="poisson", num_lv=1, row_effect="mixed")


# --- determinism ---------------------------------------------------------------------------
def test_same_seed_bit_identical(sim):
    com, _ = sim
    a = quiet_fit(com, family="poisson", num_lv=2, n_init=2, seed=42)
    b = quiet_fit(com, family="poisson", num_lv=2, n_init=2, seed=42)
    same_fit(a, b)
    for k, v in vars(a.params_raw).items():
        w = getattr(b.params_raw, k)
        assert (v is None and w is None) or np.array_equal(v, w), k
    assert a.n_iter == b.n_iter


def test_fit_does_not_mutate_input(sim):
    com, _ = sim
    Y = com.Y.copy()
    Y.iloc[0, 0] = np.nan
    X = com.X.copy()
    Y0, X0 = Y.copy(), X.copy()
    quiet_fit(Y, X, family="poisson", num_lv=1, n_init=1, seed=0, maxiter=5)
    pd.testing.assert_frame_equal(Y, Y0)
    pd.testing.assert_frame_equal(X, X0)


# --- num_lv = 0 ----------------------------------------------------------------------------
def test_num_lv0_works(sim):
    com, _ = sim
    fit = quiet_fit(com, family="poisson", num_lv=0, n_init=1, seed=0)
    assert fit.converged
    assert fit.num_lv == 0 and fit.loadings.shape == (M, 0) and fit.lv.shape == (N, 0)
    assert fit.df == M * 3
    assert np.isfinite(fit.llf)


# --- missing cells -------------------------------------------------------------------------
def test_nan_response_drops_out(sim, base_fit):
    com, _ = sim
    Y = com.Y.copy()
    Y.iloc[4, 2] = np.nan
    fit = quiet_fit(Y, com.X, family="poisson", num_lv=1, n_init=1, seed=0)
    assert fit.nobs == base_fit.nobs - 1
    assert fit.converged
    # one cell out of 180: the bound moves by about that cell's log-likelihood, not more
    diff = base_fit.llf - fit.llf
    assert 0.0 < abs(diff) < 15.0
    assert np.abs(fit.coef - base_fit.coef).to_numpy().max() < 0.3
    th, th0 = fit.loadings.to_numpy(), base_fit.loadings.to_numpy()
    assert np.abs(th @ th.T - th0 @ th0.T).max() < 0.3
    assert np.isfinite(fit.fitted().to_numpy()).all()


def test_all_missing_raises(sim):
    com, _ = sim
    Y = com.Y * np.nan
    with pytest.raises(JSDMError):
        jsdm.gllvm(Y, com.X, family="poisson", num_lv=1)


# --- warnings ------------------------------------------------------------------------------
def test_convergence_warning_names_gradient_and_iterations(sim):
    com, _ = sim
    with pytest.warns(ConvergenceWarning) as rec:
        fit = jsdm.gllvm(com, family="poisson", num_lv=2, n_init=1, seed=0, maxiter=3)
    assert not fit.converged
    msgs = [str(w.message) for w in rec if issubclass(w.category, ConvergenceWarning)]
    msg = msgs[0]
    assert "gradient" in msg
    assert re.search(r"\b3 iterations?\b", msg), msg
    assert re.search(r"\d+(\.\d+)?(e[-+]?\d+)?", msg)
    assert fit.n_iter <= 3  # the iteration budget is respected


def test_converged_fit_raises_no_convergence_warning(sim):
    com, _ = sim
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        fit = jsdm.gllvm(com, family="poisson", num_lv=1, n_init=1, seed=0)
    assert fit.converged


# --- parameter counts as R gllvm counts them -----------------------------------------------
def mite_fit(family, num_lv, with_x):
    com = jsdm.datasets.load_mite()
    X = com.X[["SubsDens", "WatrCont"]] if with_x else None
    X = None if X is None else (X - X.mean()) / X.std(ddof=1)
    return quiet_fit(com.Y, X, family=family, num_lv=num_lv, n_init=1, seed=0, maxiter=2)


@pytest.mark.parametrize("family,num_lv,with_x,df", [
    ("poisson", 2, False, 104),
    ("negative_binomial", 2, True, 209),
    ("negative_binomial", 0, True, 140),
    ("negative_binomial", 2, False, 139),
    ("poisson", 2, True, 174),
    ("gaussian", 2, False, 139),
], ids=["poisson-lv2", "nb-lv2-X2", "nb-lv0-X2", "nb-lv2", "poisson-lv2-X2", "gaussian-lv2"])
def test_df_matches_r_gllvm(family, num_lv, with_x, df):
    try:
        jsdm.get_family(family)
    except JSDMError:
        pytest.skip(f"family {family} not registered yet")
    if family == "gaussian":
        com = jsdm.datasets.load_mite()
        fit = quiet_fit(np.log1p(com.Y), family=family, num_lv=num_lv, n_init=1, seed=0, maxiter=2)
    else:
        fit = mite_fit(family, num_lv, with_x)
    assert fit.df == df
    assert fit.nobs == 70 * 35
    assert fit.aic == pytest.approx(-2 * fit.llf + 2 * df)
    assert fit.bic == pytest.approx(-2 * fit.llf + np.log(70 * 35) * df)


@pytest.mark.parametrize("row_effect,extra", [("fixed", N - 1), ("random", 1)])
def test_df_with_row_effects(sim, row_effect, extra):
    com, _ = sim
    fit = quiet_fit(com, family="poisson", num_lv=1, row_effect=row_effect, n_init=1, seed=0,
                    maxiter=2)
    assert fit.df == M * 3 + M * 1 + extra


def test_default_fits_are_deterministic_without_a_seed():
    """Same data, same call, same result, also when no seed is given (randomised Dunn-Smyth
    residuals and jittered starts draw from a fixed default seed)."""
    import warnings

    com, _ = jsdm.simulate_community(40, 6, num_lv=2, family="zip", seed=1, intercept=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = jsdm.gllvm(com, family="zip", num_lv=2)
        b = jsdm.gllvm(com, family="zip", num_lv=2)
    assert a.llf == b.llf and a.state.start_values == b.state.start_values
    np.testing.assert_array_equal(a.loadings, b.loadings)
