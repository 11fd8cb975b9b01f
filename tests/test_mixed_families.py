"""Mixed response types in one model: a family per species, latent variables shared.

- num_lv = 0: the mixed model is the separate per-family fits side by side (same ELBO,
  coefficients, dispersions and parameter count);
- the analytic gradient with members of different numbers of nuisance parameters (padded
  entries are not parameters) against finite differences;
- the two-part hurdle (presence columns binomial, abundance columns zero-truncated) against
  statsmodels' HurdleCountModel;
- the bound by importance sampling with scipy densities, recovery with shared latent variables;
- the outputs name each species' family; save/load keeps them; bad mappings are clear errors.
"""
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import jsdm
from jsdm.exceptions import JSDMError
from jsdm.families import Binomial, Mixed, get_family, two_part
from jsdm.model.objective import evaluate
from jsdm.model.problem import build_problem

pytestmark = pytest.mark.filterwarnings("ignore::jsdm.DataWarning")

PBG = ["poisson"] * 3 + ["binomial"] * 2 + ["gaussian"] * 2


def fit_quiet(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error", jsdm.ConvergenceWarning)
        return jsdm.gllvm(*args, **kw)


@pytest.fixture(scope="module")
def pbg0():
    com, truth = jsdm.simulate_community(150, len(PBG), num_lv=0, family=PBG, n_covariates=2, seed=4,
                                         intercept=0.5)
    fams = dict(zip(com.species, PBG))
    return com, fams, fit_quiet(com, family=fams, num_lv=0, n_init=1, seed=0, gtol=1e-6)


def test_num_lv0_equals_the_separate_per_family_fits(pbg0):
    com, fams, fit = pbg0
    total, df = 0.0, 0
    for name in ("poisson", "binomial", "gaussian"):
        cols = [sp for sp in com.species if fams[sp] == name]
        sub = fit_quiet(jsdm.Community(com.Y[cols], com.X), family=name, num_lv=0, n_init=1, seed=0,
                        gtol=1e-6)
        total += sub.llf
        df += sub.df
        np.testing.assert_allclose(fit.coef.loc[cols].to_numpy(), sub.coef.to_numpy(), rtol=1e-5,
                                   atol=1e-6)
        if sub.dispersion is not None:
            np.testing.assert_allclose(fit.dispersion.loc[cols].iloc[:, 0], sub.dispersion, rtol=1e-5)
        else:
            assert fit.dispersion.loc[cols].isna().all().all()
    assert fit.llf == pytest.approx(total, rel=1e-9)
    assert fit.df == df
    assert fit.converged


def test_mixed_members_with_vector_nuisance_equal_separate_fits():
    """zinb (2 nuisance parameters), NB (1), Poisson (0): padded entries are not parameters."""
    fl = ["zinb"] * 2 + ["negative_binomial"] * 2 + ["poisson"] * 2
    com, _ = jsdm.simulate_community(200, 6, num_lv=0, family=fl, n_covariates=1, seed=3,
                                     intercept=1.5)
    fams = dict(zip(com.species, fl))
    fit = fit_quiet(com, family=fams, num_lv=0, n_init=1, seed=0, gtol=1e-6)
    total, df = 0.0, 0
    for name in ("zinb", "negative_binomial", "poisson"):
        cols = [sp for sp in com.species if fams[sp] == name]
        sub = fit_quiet(jsdm.Community(com.Y[cols], com.X), family=name, num_lv=0, n_init=1, seed=0,
                        gtol=1e-6)
        total += sub.llf
        df += sub.df
        if sub.dispersion is not None:
            d = np.asarray(sub.dispersion, dtype=float).reshape(len(cols), -1)
            np.testing.assert_allclose(fit.dispersion.loc[cols].iloc[:, :d.shape[1]], d, rtol=1e-4)
    assert fit.llf == pytest.approx(total, rel=1e-9)
    assert fit.df == df
    assert list(fit.params.loc["dispersion"].index.get_level_values(0).unique()) == list(com.species[:4])
    sp = list(com.species)             # each species' entries labelled by its own family
    assert list(fit.params.loc["dispersion"].index) == [
        (sp[0], "pi"), (sp[0], "phi"), (sp[1], "pi"), (sp[1], "phi"), (sp[2], "phi"), (sp[3], "phi")]


def test_gradient_with_padded_nuisance_parameters_matches_finite_differences():
    from jsdm.model.fit import make_layout

    rng = np.random.default_rng(0)
    n = 7
    Y = pd.DataFrame({"zi": [0, 3, 0, 1, 5, 0, 2], "nb": [1, 0, 4, 2, 0, 7, 1],
                      "po": [2, 1, 0, 3, 1, 0, 2], "ord": [0, 1, 2, 3, 1, 0, 2],
                      "ga": rng.normal(size=n), "bi": [0, 1, 1, 0, 1, 0, 0]}, dtype=float)
    Y.iloc[2, 4] = np.nan
    fams = {"zi": "zinb", "nb": "nb", "po": "poisson", "ord": "ordinal",
            "ga": "gaussian", "bi": Binomial(link="probit")}
    X = pd.DataFrame({"x": rng.normal(size=n)})
    for d, row in ((1, None), (2, "random")):
        prob = build_problem(Y, X, family=fams, num_lv=d, row_effect=row)
        layout = make_layout(prob)
        assert layout.slices["s"].stop - layout.slices["s"].start == 2 + 1 + 2 + 1   # zi, nb, ord, ga
        x = np.random.default_rng(1).normal(0.0, 0.4, layout.size)
        P = layout.unpack(x)
        g = layout.pack_grad(evaluate(prob, P).grad, P)
        num = np.empty_like(x)
        for k in range(x.size):
            h = 1e-5 * max(1.0, abs(x[k]))
            xp, xm = x.copy(), x.copy()
            xp[k] += h
            xm[k] -= h
            num[k] = (evaluate(prob, layout.unpack(xp), grad=False).value
                      - evaluate(prob, layout.unpack(xm), grad=False).value) / (2 * h)
        np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(P.s[~prob.s_free], 0.0)        # padding stays 0


def test_two_part_hurdle_equals_statsmodels_hurdle_count_model():
    """Presence (binomial, cloglog) and abundance (zero-truncated Poisson, NaN at zeros) columns
    with their own covariate effects: at num_lv = 0 this is statsmodels' HurdleCountModel with a
    Poisson zero part (P(y > 0) = 1 - exp(-exp(x'g)))."""
    from statsmodels.discrete.truncated_model import HurdleCountModel

    com, _ = jsdm.simulate_community(200, 3, num_lv=0, family="hurdle_poisson", n_covariates=1,
                                     seed=8, intercept=1.0)
    table, fams = two_part(com.Y, count="truncated_poisson", presence_link="cloglog")
    assert list(table.columns[:2]) == [f"{com.species[0]}:presence", f"{com.species[0]}:abundance"]
    fit = fit_quiet(jsdm.Community(table, com.X), family=fams, num_lv=0, n_init=1, seed=0, gtol=1e-6)
    X = np.column_stack([np.ones(com.n_sites), com.X.to_numpy(dtype=float)])
    prob, P = fit.problem, fit.params_raw
    ev = evaluate(prob, P, grad=False)
    per = (prob.W * prob.family.ell(prob.Y, ev.M, ev.V, P.s, prob.trials).value).sum(0)
    for j, sp in enumerate(com.species):
        y = com.Y[sp].to_numpy(dtype=float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = HurdleCountModel(y, X, dist="poisson", zerodist="poisson").fit(method="newton",
                                                                                  maxiter=300, disp=0)
        assert per[2 * j] + per[2 * j + 1] == pytest.approx(res.llf, rel=1e-7)
        np.testing.assert_allclose(fit.coef.loc[f"{sp}:presence"].to_numpy(), res.params[:2], atol=1e-4)
        np.testing.assert_allclose(fit.coef.loc[f"{sp}:abundance"].to_numpy(), res.params[2:], atol=1e-4)


def _ref_logpdf(fam, y, eta, s):
    """Independent log-densities (scipy.stats) for the members used here."""
    if fam.name == "poisson":
        return stats.poisson.logpmf(y, np.exp(eta))
    if fam.name == "binomial":
        return np.where(y > 0, special.log_expit(eta), special.log_expit(-eta))
    return stats.norm.logpdf(y, eta, np.exp(s))


def test_bound_below_marginal_loglik_by_quadrature_and_importance_sampling():
    from test_engine_families_more import check_bound

    com, _ = jsdm.simulate_community(40, len(PBG), num_lv=1, family=PBG, n_covariates=1, seed=17)
    fit = jsdm.gllvm(com, family=dict(zip(com.species, PBG)), num_lv=1, n_init=1, seed=0)
    prob, P = fit.problem, fit.params_raw
    members = prob.family.members

    def logpdf(i, eta):
        return np.column_stack([_ref_logpdf(f, prob.Y[i, j], eta[:, j], P.s[j, 0])
                                for j, f in enumerate(members)])

    check_bound(fit, logpdf)


def test_recovery_with_shared_latent_variables():
    fl = ["poisson"] * 3 + ["binomial"] * 3 + ["gaussian"] * 3
    com, truth = jsdm.simulate_community(400, 9, num_lv=1, family=fl, n_covariates=1, seed=2,
                                         loading_sd=1.0)
    fit = fit_quiet(com, family=dict(zip(com.species, fl)), num_lv=1, n_init=1, seed=0)
    th, th0 = fit.loadings.to_numpy(), truth.theta.to_numpy()
    assert np.corrcoef((th @ th.T).ravel(), (th0 @ th0.T).ravel())[0, 1] > 0.9
    z = (fit.coef["x1"] - truth.B["x1"]) / fit.bse.loc["coef"].xs("x1", level="term")
    assert np.all(np.abs(z) < 4.0)
    sd = fit.dispersion.iloc[6:, 0]
    np.testing.assert_allclose(sd, truth.dispersion.iloc[6:, 0], rtol=0.15)


def test_outputs_name_each_species_family_and_survive_save_load(pbg0, tmp_path):
    com, fams, fit = pbg0
    assert fit.families.to_dict() == fams
    summ = fit.summary()
    assert summ.families.to_dict() == fams
    text = str(summ)
    assert "Families (per species)" in text and "mixed: poisson x3, binomial x2, gaussian x2" in text
    assert fit.residuals().attrs["families"] == fams
    assert "mixed" in repr(fit)
    path = fit.save(tmp_path / "mixed.jsdm")
    again = jsdm.load(path)
    assert again.llf == fit.llf and again.families.to_dict() == fams and again.df == fit.df
    pd.testing.assert_frame_equal(again.summary().tables["dispersion"], summ.tables["dispersion"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", jsdm.JSDMWarning)       # every section is produced
        out = fit.report(tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text() if out is None or not hasattr(out, "read_text") \
        else out.read_text()
    assert "Family of each species" in html
    # single-family fits: one family throughout, no families table in the summary
    single = jsdm.gllvm(jsdm.Community(com.Y.iloc[:, :3], com.X), family="poisson", num_lv=0,
                        n_init=1, seed=0)
    assert single.summary().families is None and set(single.families) == {"poisson"}


def test_family_mapping_from_a_species_table_column_and_instances():
    com, _ = jsdm.simulate_community(60, 4, num_lv=0, family=["poisson", "poisson", "binomial",
                                                               "binomial"], seed=1)
    traits = pd.DataFrame({"kind": ["poisson", "poisson", "binomial", "binomial"]}, index=com.species)
    fit_a = jsdm.gllvm(com, family=traits["kind"], num_lv=0, n_init=1, seed=0)
    fit_b = jsdm.gllvm(com, family={**traits["kind"].iloc[:2].to_dict(),
                                    com.species[2]: Binomial(), com.species[3]: "bernoulli"},
                       num_lv=0, n_init=1, seed=0)
    assert fit_a.llf == pytest.approx(fit_b.llf, rel=1e-12)
    probit = jsdm.gllvm(com, family={**traits["kind"].iloc[:2].to_dict(),
                                     com.species[2]: Binomial(link="probit"),
                                     com.species[3]: Binomial(link="probit")}, num_lv=0, n_init=1,
                        seed=0)
    assert probit.families.iloc[2] == "binomial(probit)" and probit.llf != fit_a.llf


def test_bad_mappings_are_clear_errors():
    com, _ = jsdm.simulate_community(30, 3, num_lv=0, family="poisson", seed=1)
    sp = list(com.species)
    with pytest.raises(JSDMError, match="no family for 1 species"):
        jsdm.gllvm(com, family={sp[0]: "poisson", sp[1]: "poisson"}, num_lv=0)
    with pytest.raises(JSDMError, match="not in the data"):
        jsdm.gllvm(com, family={**{s: "poisson" for s in sp}, "ghost": "poisson"}, num_lv=0)
    with pytest.raises(JSDMError, match="unknown family 'poison'"):
        jsdm.gllvm(com, family={**{s: "poisson" for s in sp}, sp[0]: "poison"}, num_lv=0)
    with pytest.raises(JSDMError, match="takes each species' link from its family"):
        jsdm.gllvm(com, family={s: "binomial" for s in sp}, link="probit", num_lv=0)
    with pytest.raises(JSDMError, match=rf"species \['{sp[2]}'\] \(binomial\).*0/1"):
        jsdm.gllvm(com, family={sp[0]: "poisson", sp[1]: "poisson", sp[2]: "binomial"}, num_lv=0)
    assert isinstance(get_family({"a": "poisson"}), Mixed)


def test_mixed_with_ordinal_members_equals_separate_fits_with_inference():
    """Ordinal members (cut points in rank space, held entries of unused categories) next to
    NB ones: with num_lv=0 the estimates, standard errors and intervals of every nuisance
    parameter are those of the separate fits."""
    Y = jsdm.datasets.load_dune().Y.astype(float).iloc[:, :8]
    fams = {sp: ("ordinal" if k < 4 else "negative_binomial") for k, sp in enumerate(Y.columns)}
    fit = fit_quiet(Y, family=fams, num_lv=0, n_init=1, seed=0)
    parts = [fit_quiet(Y.iloc[:, :4], family="ordinal", num_lv=0, n_init=1, seed=0),
             fit_quiet(Y.iloc[:, 4:], family="negative_binomial", num_lv=0, n_init=1, seed=0)]
    assert fit.llf == pytest.approx(sum(p.llf for p in parts), rel=1e-9)
    assert fit.df == sum(p.df for p in parts)
    ours = pd.concat([fit.params, fit.bse, fit.conf_int()], axis=1).loc["dispersion"]
    theirs = pd.concat([pd.concat([p.params, p.bse, p.conf_int()], axis=1).loc["dispersion"]
                        for p in parts])
    assert list(ours.index) == list(theirs.index)          # the same entries, the same labels
    # a phi at its lower bound (no overdispersion: Chenalbu) is ~0 in both, the likelihood flat
    bound = (theirs["estimate"] < 1e-6).to_numpy()
    assert bound.sum() <= 1 and (ours["estimate"].to_numpy()[bound] < 1e-6).all()
    np.testing.assert_allclose(ours.to_numpy()[~bound], theirs.to_numpy()[~bound], rtol=2e-3)
    ci = fit.conf_int().loc["dispersion"]
    est = fit.params.loc["dispersion"]
    inside = np.isfinite(est) & np.isfinite(ci["lower"])
    assert inside.sum() > 5
    assert ((ci["lower"] <= est) & (est <= ci["upper"]))[inside].all()


def test_report_of_a_mixed_model_with_latent_variables(tmp_path):
    """Every report section (importance-sampling check, goodness of fit, associations with each
    member's observation-level variance) is produced for a mixed model with latent variables."""
    fl = ["poisson"] * 3 + ["binomial"] * 2 + ["gaussian"] * 2 + ["zinb"] * 2
    com, _ = jsdm.simulate_community(50, len(fl), num_lv=1, family=fl, seed=4, intercept=0.5)
    fit = fit_quiet(com, family=dict(zip(com.species, fl)), num_lv=1, n_init=1, seed=0)
    from jsdm.analysis.associations import family_variance

    var = family_variance(fit, nb_variance="observation")       # each member's own
    assert np.isfinite(var.to_numpy()).all() and (var > 0).all()
    assert var[com.species[3]] == pytest.approx(np.pi ** 2 / 3)        # binomial logit
    with warnings.catch_warnings():
        warnings.simplefilter("error", jsdm.JSDMWarning)
        fit.report(tmp_path / "r.html")
    assert "Family of each species" in (tmp_path / "r.html").read_text()
