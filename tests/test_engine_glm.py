"""num_lv = 0 is m independent GLMs: compare with statsmodels species by species.

The ELBO with no latent variables (and no random row effects) is the exact
log-likelihood, so per-species log-likelihoods must agree with statsmodels to
1e-6 relative, and the coefficients (and NB / Gaussian dispersions) to the
optimiser's tolerance. Missing cells (NaN) are included: statsmodels sees the
observed rows of each species only.
"""
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.discrete.discrete_model import NegativeBinomial as SMNegativeBinomial

import jsdm
from jsdm.exceptions import JSDMError
from jsdm.families import get_family
from jsdm.model.objective import evaluate

pytestmark = pytest.mark.filterwarnings("ignore::jsdm.DataWarning")

N_SITES, N_SPECIES = 120, 5
LLF_RTOL = 1e-6
COEF_RTOL, COEF_ATOL = 1e-4, 1e-5

# (id, family, link, trials)
CASES = [
    ("poisson", "poisson", None, None),
    ("binomial-logit", "binomial", "logit", None),
    ("binomial-probit", "binomial", "probit", None),
    ("binomial-logit-trials5", "binomial", "logit", 5),
    ("binomial-probit-trials5", "binomial", "probit", 5),
    ("gaussian", "gaussian", None, None),
    ("nb", "negative_binomial", None, None),
]


def family_or_skip(name, link):
    try:
        return get_family(name, link=link)
    except JSDMError as exc:
        pytest.skip(f"family {name!r} (link {link!r}) not available yet: {exc}")


def community(name, link, trials, seed=11, missing=0.05):
    """Simulated community (2 covariates) with a few NaN cells."""
    kw = {}
    if name == "negative_binomial":
        kw = dict(intercept=1.0, dispersion=np.linspace(0.3, 1.5, N_SPECIES))
    if name == "gaussian":
        kw = dict(dispersion=np.linspace(0.5, 2.0, N_SPECIES))
    com, _ = jsdm.simulate_community(N_SITES, N_SPECIES, num_lv=0, family=name, link=link,
                                     n_covariates=2, seed=seed, trials=trials, **kw)
    Y = com.Y.copy()
    rng = np.random.default_rng(seed + 1)
    Y = Y.mask(rng.random(Y.shape) < missing)
    return jsdm.Community(Y, com.X)


def fit_jsdm(com, name, link, trials, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", jsdm.ConvergenceWarning)
        return jsdm.gllvm(com, family=name, link=link, num_lv=0, trials=trials, n_init=1,
                          seed=0, gtol=1e-5, **kw)


def per_species_llf(fit):
    """Per-species sum over observed sites of E_q[log f] (= log f, since v = 0)."""
    prob, P = fit.problem, fit.params_raw
    ev = evaluate(prob, P, grad=False)
    e = prob.family.ell(prob.Y, ev.M, ev.V, P.s, prob.trials)
    return (prob.W * e.value).sum(0)


def statsmodels_fit(y, X, name, link, trials):
    """(llf, coefficients [const, slopes], dispersion or None) for one species."""
    Xc = sm.add_constant(X, has_constant="add")
    if name == "negative_binomial":
        start = sm.GLM(y, Xc, family=sm.families.Poisson()).fit().params
        res = SMNegativeBinomial(y, Xc, loglike_method="nb2").fit(
            start_params=np.append(start, 0.5), method="newton", maxiter=200, tol=1e-12, disp=0)
        assert res.mle_retvals["converged"]
        return res.llf, res.params[:-1], res.params[-1]
    if name == "poisson":
        fam = sm.families.Poisson()
    elif name == "gaussian":
        fam = sm.families.Gaussian()
    else:
        lk = {"logit": sm.families.links.Logit(), "probit": sm.families.links.Probit()}[link]
        fam = sm.families.Binomial(link=lk)
        if trials is not None:
            y = np.column_stack([y, trials - y])
    res = sm.GLM(y, Xc, family=fam).fit(tol=1e-13, maxiter=200)
    disp = None
    if name == "gaussian":   # statsmodels' llf uses the ML scale ssr / nobs
        disp = np.sqrt(np.sum(res.resid_response ** 2) / res.nobs)
    return res.llf, res.params, disp


@pytest.mark.parametrize("cid,name,link,trials", CASES, ids=[c[0] for c in CASES])
def test_num_lv0_equals_statsmodels_per_species(cid, name, link, trials):
    family_or_skip(name, link)
    com = community(name, link, trials)
    fit = fit_jsdm(com, name, link, trials)
    llf_ours = per_species_llf(fit)
    assert fit.llf == pytest.approx(llf_ours.sum(), rel=1e-12)
    X = com.X.to_numpy(dtype=float)
    for j, sp in enumerate(com.species):
        y = com.Y[sp].to_numpy(dtype=float)
        obs = np.isfinite(y)
        llf_sm, coef_sm, disp_sm = statsmodels_fit(y[obs], X[obs], name, link, trials)
        assert llf_ours[j] == pytest.approx(llf_sm, rel=LLF_RTOL), f"llf of species {sp}"
        np.testing.assert_allclose(fit.coef.loc[sp].to_numpy(), coef_sm, rtol=COEF_RTOL,
                                   atol=COEF_ATOL, err_msg=f"coefficients of species {sp}")
        if disp_sm is not None:
            assert fit.dispersion[sp] == pytest.approx(disp_sm, rel=1e-4), f"dispersion of {sp}"
    assert fit.nobs == int(np.isfinite(com.Y.to_numpy(dtype=float)).sum())


def test_poisson_offset_equals_statsmodels():
    com = community("poisson", None, None, seed=21, missing=0.0)
    off = np.random.default_rng(3).normal(0.0, 0.5, com.n_sites)
    fit = fit_jsdm(com, "poisson", None, None, offset=off)
    llf_ours = per_species_llf(fit)
    Xc = sm.add_constant(com.X.to_numpy(dtype=float))
    for j, sp in enumerate(com.species):
        res = sm.GLM(com.Y[sp].to_numpy(dtype=float), Xc, family=sm.families.Poisson(),
                     offset=off).fit(tol=1e-13)
        assert llf_ours[j] == pytest.approx(res.llf, rel=LLF_RTOL)
        np.testing.assert_allclose(fit.coef.loc[sp].to_numpy(), res.params, rtol=COEF_RTOL,
                                   atol=COEF_ATOL)


ROW_CASES = [("poisson", "poisson", None, None), ("binomial-logit-trials20", "binomial", "logit", 20)]


@pytest.mark.filterwarnings("ignore:The design matrix is rank-deficient")
@pytest.mark.parametrize("cid,name,link,trials", ROW_CASES, ids=[c[0] for c in ROW_CASES])
def test_fixed_row_effects_num_lv0_equals_one_joint_glm(cid, name, link, trials):
    """Fixed site effects couple the species: compare with one GLM on the long table
    (species intercepts and slopes, site dummies with the first site as reference;
    rank-deficient with a site covariate, so statsmodels picks one solution)."""
    family_or_skip(name, link)
    n, m = 30, 6
    com, _ = jsdm.simulate_community(n, m, num_lv=0, family=name, link=link, n_covariates=1,
                                     seed=5, trials=trials,
                                     intercept=1.0 if name == "poisson" else None)
    Yw = com.Y.to_numpy(dtype=float)
    assert (Yw.sum(1) > 0).all() and (trials is None or (Yw.sum(1) < trials * m).all())
    fit = fit_jsdm(com, name, link, trials, row_effect="fixed")
    y = Yw.ravel()                                      # site-major
    x = np.repeat(com.X.to_numpy(dtype=float)[:, 0], m)
    sp = np.tile(np.arange(m), n)
    site = np.repeat(np.arange(n), m)
    D = np.column_stack([(sp == j) * 1.0 for j in range(m)]
                        + [(sp == j) * x for j in range(m)]
                        + [(site == i) * 1.0 for i in range(1, n)])
    if name == "poisson":
        fam = sm.families.Poisson()
    else:
        fam = sm.families.Binomial(link=sm.families.links.Logit())
        y = np.column_stack([y, trials - y])
    res = sm.GLM(y, D, family=fam).fit(tol=1e-13, maxiter=200)
    assert fit.llf == pytest.approx(res.llf, rel=LLF_RTOL)
    # site effects absorb any common slope on a site covariate, so compare the identified
    # quantities: the linear predictor and slope contrasts between species
    eta_sm = D @ res.params
    np.testing.assert_allclose(fit.linear_predictor().to_numpy().ravel(), eta_sm, rtol=1e-4,
                               atol=1e-4)
    b = fit.coef["x1"].to_numpy()
    np.testing.assert_allclose(b - b[0], res.params[m:2 * m] - res.params[m], atol=1e-4)


def test_num_lv0_has_no_site_scores():
    com = community("poisson", None, None, missing=0.0)
    fit = fit_jsdm(com, "poisson", None, None)
    assert fit.num_lv == 0
    assert fit.loadings.shape == (N_SPECIES, 0)
    assert fit.lv.shape == (N_SITES, 0)
    assert isinstance(fit.coef, pd.DataFrame) and list(fit.coef.columns) == ["Intercept", "x1", "x2"]
