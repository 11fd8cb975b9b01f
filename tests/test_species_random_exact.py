"""Species random effects against exact and reference fits.

- Gaussian identity models with only random species effects: the variational posterior of
  each species' coefficients is exact (its q is the full joint Gaussian), so the ELBO at the
  optimum is the exact ML log-likelihood: checked against statsmodels MixedLM (reml=False),
  and against lme4/glmmTMB on the mite data.
- Poisson and binomial: against glmmTMB (Laplace) fits in ../shared/reference (WAVE2.md).
"""
import json
import warnings

import numpy as np
import pandas as pd
import pytest

import jsdm
from jsdm.model.fit import fit_problem
from jsdm.model.formula import parse_random_species
from jsdm.model.problem import build_problem
from _analysis_helpers import mite_long, reference_dir
from _engine_helpers import common_sd_gaussian

REF = reference_dir()


def _community(seed=1, n=30, m=12):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    b = rng.multivariate_normal([0.5, -0.3], [[1.0, 0.4], [0.4, 0.5]], size=m)
    Y = b[:, 0][None, :] + x[:, None] * b[:, 1][None, :] + rng.normal(0, 0.7, (n, m))
    sites, spp = [f"s{i}" for i in range(n)], [f"sp{j}" for j in range(m)]
    return jsdm.Community(pd.DataFrame(Y, index=sites, columns=spp),
                          pd.DataFrame({"x": x}, index=sites))


MIXEDLM_CASES = {
    # random_species, statsmodels formula, re_formula, free covariance pattern (None: full)
    "correlated": ("x + (1 + x | species)", "y ~ x", "~x", None),
    "intercept": ("(1 | species)", "y ~ 1 + C(species):x", "1", None),
    "independent": ("x + (1 | species) + (0 + x | species)", "y ~ x", "~x", np.eye(2)),
    "slope, mean 0": ("0 + (0 + x | species)", "y ~ 0 + C(species)", "0 + x", None),
}


@pytest.mark.parametrize("case", list(MIXEDLM_CASES))
def test_gaussian_elbo_is_the_exact_mixedlm_loglik(case):
    sm = pytest.importorskip("statsmodels.formula.api")
    from statsmodels.regression.mixed_linear_model import MixedLMParams

    spec, fe, re, free = MIXEDLM_CASES[case]
    com = _community()
    term = parse_random_species(spec)
    prob = build_problem(com, family=common_sd_gaussian(), num_lv=0, formula="~ x",
                         species_random=term)
    st = fit_problem(prob, gtol=1e-6)
    assert st.converged
    long = com.to_long()
    long = long.rename(columns={long.columns[2]: "y"})
    kw = {}
    if free is not None:
        kw["free"] = MixedLMParams.from_components(np.ones(2), free)
    r = sm.mixedlm(fe, long, groups="species", re_formula=re).fit(
        reml=False, method=["lbfgs"], maxiter=5000, gtol=1e-10, **kw)
    assert abs(st.value - r.llf) < 1e-4, (st.value, r.llf)
    P = st.params
    np.testing.assert_allclose(np.exp(P.s).ravel(), np.sqrt(r.scale), rtol=1e-3)
    cov = term.covariance(P)
    np.testing.assert_allclose(cov, np.asarray(r.cov_re), rtol=2e-3, atol=1e-4)
    gamma = dict(zip(term.gamma_names(None), P.sp_gamma))
    for name, val in gamma.items():
        key = "Intercept" if name == "(Intercept)" else name
        assert abs(val - r.fe_params[key]) < 1e-3, name


# --- glmmTMB / lme4 references (mite, long data) ---------------------------------------------
def _ref(name):
    path = REF / name
    if not path.exists():
        pytest.skip("reference fits (../shared/reference) not available")
    return json.loads(path.read_text())["fit"]


def _fit(formula, family):
    long = mite_long()
    long["pa"] = long["pa"].astype(float)
    return jsdm.gllvm(long, formula=formula, family=family, gtol=1e-5)


def _ref_sd(ref, name):
    for v in ref["varcorr"]:
        if v["group"].startswith("species") and name in v["sd"]:
            return v["sd"][name]
    raise KeyError(name)


def _ref_ranef(ref):
    parts = [np.array(v["values"]).reshape(len(v["rownames"]), -1)
             for k, v in ref["ranef"].items() if k.startswith("species") and "values" in v]
    return np.column_stack(parts) if parts else None


CASES = {
    # reference, formula, family, (max ELBO gap below logLik, min), fixef tol (in SEs),
    # sd rel tol, cor abs tol, ranef max abs diff
    "pois_cor": ("wave2_mite_glmmTMB_pois_int_slope_cor.json",
                 "count ~ WatrCont + (1 + WatrCont | species)", "poisson",
                 (0.0, 0.3), 0.01, 0.005, 0.005, 0.15),
    "pois_uncor": ("wave2_mite_glmmTMB_pois_int_slope_uncor.json",
                   "count ~ WatrCont + (1 | species) + (0 + WatrCont | species)", "poisson",
                   (0.0, 0.3), 0.01, 0.005, None, 0.15),
    "pois_slope_sp": ("wave2_mite_glmmTMB_pois_slope_sp.json",
                      "count ~ 0 + species + WatrCont + (0 + WatrCont | species)", "poisson",
                      (0.0, 0.3), 0.01, 0.005, None, 0.1),
    "binom_2slopes": ("wave2_mite_glmmTMB_binom_logit_pa_2slopes.json",
                      "pa ~ WatrCont + SubsDens + (1 + WatrCont + SubsDens | species)", "binomial",
                      (-1.0, 0.0), 0.01, 0.01, 0.005, 0.4),
    "gauss_glmmTMB": ("wave2_mite_glmmTMB_gauss_log1p_int_slope_cor.json",
                      "logy1 ~ WatrCont + (1 + WatrCont | species)", "gaussian1",
                      (-1e-4, 1e-4), 1e-3, 1e-4, 1e-4, 1e-4),
    "gauss_lmer": ("wave2_mite_lmer_gauss_log1p_int_slope_cor.json",
                   "logy1 ~ WatrCont + (1 + WatrCont | species)", "gaussian1",
                   (-1e-4, 1e-4), 1e-3, 1e-4, 1e-4, None),
    "pois_slope_sp_rr2": ("wave2_mite_glmmTMB_pois_slope_sp_rr2.json",
                          "count ~ 0 + species + WatrCont + (0 + WatrCont | species) "
                          "+ rr(0 + species | site, d = 2)", "poisson",
                          (0.0, 8.0), 0.1, 0.05, None, 0.1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_against_glmmtmb_and_lme4(case):
    """Tolerances. Gaussian: the bound is exact, so everything to optimiser precision (lme4 and
    glmmTMB agree to 1e-5 on this fit). Poisson / binomial: glmmTMB's Laplace approximation and
    the exact variational bound are different approximations of the same likelihood; on 70
    sites per species they differ in the variance components by O(0.1-0.5%) (measured 0.01-0.4%),
    the fixed effects by < 0.005 SE and the conditional modes vs variational means of the species
    effects by at most 0.08 (Poisson) and 0.26 (binomial: rare species, skewed posteriors). The
    bound lies 0.10-0.13 nats below the Laplace logLik for Poisson, and 0.47 ABOVE it for the
    binomial model (the ELBO is a lower bound of the exact likelihood, so Laplace underestimates
    there). With two latent variables (rr2) the bound is 6.1 nats below Laplace."""
    name, formula, family, gap, fe_tol, sd_tol, cor_tol, re_tol = CASES[case]
    ref = _ref(name)
    fam = common_sd_gaussian() if family == "gaussian1" else family
    fit = _fit(formula, fam)
    assert fit.state.converged
    assert fit.df == ref["df"]                      # AIC/BIC parameter count = glmmTMB's
    lo, hi = gap
    d = ref["logLik"] - fit.llf
    assert lo <= d <= hi, d
    pred = fit.problem.predictor
    term = pred.species_random_terms[0][0]
    P = fit.state.params
    for k, val in zip(term.gamma_names(pred), P.sp_gamma):
        assert abs(val - ref["fixef"][k]) <= fe_tol * ref["fixef_se"][k], k
    cov = term.covariance(P)
    sd = np.sqrt(np.diag(cov))
    names = ["(Intercept)" if c == "1" else c for c in term.columns]
    for k, nm in enumerate(names):
        assert abs(sd[k] / _ref_sd(ref, nm) - 1.0) <= sd_tol, nm
    if cor_tol is not None:
        cor_ref = np.array(ref["varcorr"][0]["correlation"]["values"])
        cor = cov / np.outer(sd, sd)
        np.testing.assert_allclose(cor, cor_ref, atol=cor_tol)
    vals = _ref_ranef(ref)
    if re_tol is not None and vals is not None:
        dev = P.b_mu - term.mean_design(pred) @ P.sp_gamma
        assert np.abs(dev - vals).max() <= re_tol
    if family == "gaussian1":
        assert abs(float(np.exp(P.s).ravel()[0]) - ref["sigma"]) < 1e-4


def test_standard_errors_summary_ranef_varcorr_and_save_load(tmp_path):
    """SEs of the fixed effects match glmmTMB's (Laplace) to 0.2%; summary shows the random
    effects with SEs; ranef/varcorr have the lme4 shapes; save/load keeps the fit."""
    ref = _ref("wave2_mite_glmmTMB_pois_int_slope_cor.json")
    fit = _fit("count ~ WatrCont + (1 + WatrCont | species)", "poisson")
    se = fit.bse.loc["fixef"]
    for k in ("(Intercept)", "WatrCont"):
        assert abs(se.loc[("", k)] / ref["fixef_se"][k] - 1.0) < 2e-3, k
    assert fit.df == ref["df"]
    vc = fit.varcorr()
    assert list(vc.columns) == ["group", "var1", "var2", "vcov", "sdcor"]
    assert len(vc) == 3 and vc["var2"].isna().sum() == 2
    cor = vc.loc[vc["var2"].notna(), "sdcor"].item()
    assert abs(cor - 0.4255834) < 0.005
    re = fit.ranef()
    assert list(re) == ["species"] and re["species"].shape == (35, 2)
    long = fit.ranef(condsd=True)
    assert list(long.columns) == ["grpvar", "term", "grp", "condval", "condsd"]
    assert (long["condsd"] > 0).all()
    tab = fit.summary().tables["random_effects"]
    assert np.isfinite(tab["std_err"]).all() and (tab["lower"] < tab["sdcor" if "sdcor" in tab
                                                                    else "sd / cor"]).all()
    path = tmp_path / "fit.jsdm"
    fit.save(path)
    back = jsdm.load(path)
    assert abs(back.llf - fit.llf) < 1e-9
    pd.testing.assert_frame_equal(back.varcorr(), vc)


def test_predict_uses_the_species_random_effects():
    """Fitted means = exp(z_i' mu_j) conditional on each (seen) species' effects; new sites too."""
    fit = _fit("count ~ WatrCont + (1 + WatrCont | species)", "poisson")
    P = fit.state.params
    x = fit.problem.X[:, 0]
    eta = P.b_mu[:, 0][None, :] + x[:, None] * P.b_mu[:, 1][None, :]
    np.testing.assert_allclose(fit.predict(type="link", lv="conditional").to_numpy(), eta,
                               rtol=1e-10)
    new = pd.DataFrame({"WatrCont": [0.0, 1.0]}, index=["a", "b"])
    got = fit.predict(new, type="link").to_numpy()
    np.testing.assert_allclose(got[1] - got[0], P.b_mu[:, 1], rtol=1e-10)
    sim = fit.simulate(seed=1)
    assert sim.shape == (70, 35) and abs(np.log(sim.to_numpy().mean() + 1e-9)
                                         - np.log(np.exp(eta).mean())) < 0.2


def _no_slope_variation(seed=3, n=80, m=15):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    b0 = rng.normal(0.5, 0.8, m)
    Y = rng.poisson(np.exp(b0[None, :] + 0.4 * x[:, None]))
    return jsdm.Community(pd.DataFrame(Y, columns=[f"sp{j}" for j in range(m)]),
                          pd.DataFrame({"x": x}))


def test_diagnose_names_a_collapsed_variance_with_the_term_to_drop():
    com = _no_slope_variation()
    with pytest.warns(jsdm.JSDMWarning, match=r"drop \(0 \+ x \| species\)"):
        fit = jsdm.gllvm(com, family="poisson", num_lv=0, random_species="x + (0 + x | species)")
    kinds = [p.kind for p in fit.diagnose(approximation=False).problems]
    assert "species_random_variance" in kinds


def test_anova_between_nested_random_effect_models_flags_the_boundary():
    com = _no_slope_variation()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        big = jsdm.gllvm(com, family="poisson", num_lv=0,
                         random_species="x + (1 + x | species)")
    small = jsdm.gllvm(com, family="poisson", num_lv=0, random_species="x + (1 | species)")
    tab = jsdm.anova(small, big)
    assert tab["df_diff"].iloc[1] == 2 and bool(tab["boundary"].iloc[1])
    assert tab["statistic"].iloc[1] > -1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = jsdm.gllvm(com, family="poisson", num_lv=0, random_species="x + (0 + x | species)")
    with pytest.raises(jsdm.JSDMError, match="not nested"):
        jsdm.anova(small, other)


def test_coef_and_environmental_covariance_include_the_random_slopes():
    """coef() holds each species' own coefficients (as lme4's coef()); the environmental
    covariance implied by the random slopes is that of x_i' b_j across sites."""
    fit = _fit("count ~ WatrCont + (1 + WatrCont | species)", "poisson")
    P = fit.state.params
    C = fit.coef
    np.testing.assert_allclose(C[["Intercept", "WatrCont"]].to_numpy(), P.b_mu, rtol=1e-12)
    x = fit.problem.X[:, 0]
    E = x[:, None] * P.b_mu[:, 1][None, :]
    np.testing.assert_allclose(fit.environmental_covariance().to_numpy(), np.cov(E.T), rtol=1e-10)


ISSUE_FORMULAS = [
    "count ~ WatrCont + (1 | species)",
    "count ~ 0 + species + WatrCont + (0 + WatrCont | species)",
    "count ~ WatrCont + (1 | species) + (0 + WatrCont | species)",
    "count ~ WatrCont + (1 + WatrCont | species)",
    "count ~ WatrCont + (WatrCont || species)",
    "count ~ WatrCont + SubsDens + (1 + WatrCont + SubsDens | species)",
]


@pytest.mark.parametrize("formula", ISSUE_FORMULAS)
def test_every_species_random_formula_parses_prints_and_fits(formula):
    from jsdm.model.formula import parse_formula

    parsed = parse_formula(formula)
    text = str(parsed)
    assert "random species effects" in text and "equivalent wide call" in text
    sr = parsed.species_random
    assert sr is not None and sr.lme4() in text
    fit = _fit(formula, "poisson")
    assert fit.converged
    assert fit.problem.predictor.species_random_terms[0][0] == sr
    # the equivalent wide call gives the same fit
    args = parsed.gllvm_arguments()
    com = jsdm.datasets.load_mite()
    X = com.X[["SubsDens", "WatrCont"]].astype(float)
    X = (X - X.mean()) / X.std()
    wide = jsdm.gllvm(jsdm.Community(com.Y, X), family="poisson", gtol=1e-5, **args)
    assert abs(wide.llf - fit.llf) < 1e-6 * abs(fit.llf)
