"""diagnose(): each problem flagged on data built to cause it, quiet on a clean fit."""
from dataclasses import replace
import warnings

import numpy as np
import pandas as pd
import pytest

import jsdm
from jsdm.analysis.diagnostics import Diagnosis, quick_checks, warn_quick_checks
from jsdm.model.objective import evaluate
from jsdm.results.fitted import GLLVMResults
from _engine_helpers import fit_with_copied_column


def _quiet_fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        return jsdm.gllvm(*args, **kwargs)


def _kinds(diag):
    return [p.kind for p in diag.problems]


@pytest.fixture(scope="module")
def clean():
    com, _ = jsdm.simulate_community(100, 10, num_lv=2, family="poisson", n_covariates=2, seed=11, intercept=1.0)
    return com, _quiet_fit(com, family="poisson", num_lv=2, seed=1, n_init=1)


def test_clean_simulated_fit_is_quiet(clean):
    com, fit = clean
    diag = fit.diagnose()
    assert isinstance(diag, Diagnosis)
    assert diag.ok, str(diag)
    assert "No problems found" in str(diag)
    assert diag.to_frame().empty
    assert quick_checks(fit) == []


def test_badly_scaled_covariate_is_named(clean):
    com, _ = clean
    X = com.X.copy()
    X["x1"] = X["x1"] * 1e4
    fit = _quiet_fit(jsdm.Community(com.Y, X), family="poisson", num_lv=2, seed=1, n_init=1)
    diag = fit.diagnose()
    prob = next(p for p in diag.problems if p.kind == "covariate_scaling")
    assert prob.parameters == ["x1"] and "standardise" in prob.remedy
    with pytest.warns(jsdm.DataWarning, match="x1"):
        warn_quick_checks(fit)


def test_collapsed_latent_variables_with_too_many_lvs():
    com, _ = jsdm.simulate_community(60, 10, num_lv=0, family="poisson", n_covariates=1, seed=3,
                                     intercept=3.0, intercept_sd=0.5)
    fit = _quiet_fit(com, family="poisson", num_lv=2, seed=1, n_init=1)
    diag = fit.diagnose()
    prob = next(p for p in diag.problems if p.kind == "collapsed_lv")
    assert "LV2" in prob.parameters and "num_lv" in prob.remedy
    assert not diag.ok


def test_species_with_one_nonzero_record(clean):
    com, _ = clean
    Y = com.Y.copy()
    Y["sp04"] = 0.0
    Y.iloc[5, Y.columns.get_loc("sp04")] = 2.0
    fit = _quiet_fit(jsdm.Community(Y, com.X), family="poisson", num_lv=2, seed=1, n_init=1)
    prob = next(p for p in fit.diagnose().problems if p.kind == "sparse_species")
    assert prob.parameters == ["sp04"]
    assert "1 informative record" in prob.evidence


def test_separation_gives_large_coefficient(clean):
    com, _ = clean
    Y = (com.Y > 0).astype(float)
    Y["sp01"] = (com.X["x1"] > 0).astype(float)          # completely separated by x1
    keep = [c for c in Y.columns if 0.1 < Y[c].mean() < 0.9]
    fit = _quiet_fit(jsdm.Community(Y[keep], com.X), family="binomial", num_lv=1, seed=1, n_init=1)
    diag = fit.diagnose()
    prob = next(p for p in diag.problems if p.kind == "large_coefficient")
    assert any(lab[1] == "sp01" for lab in prob.parameters)
    assert all(lab[1] == "sp01" for lab in prob.parameters if lab[0] == "coef")
    assert "separation" in prob.remedy


def test_non_convergence_is_reported_with_parameters(clean):
    com, fit = clean
    # a fit stopped early: the optimum with two slopes moved away, as after maxiter=5
    P = fit.state.params.copy()
    P.B[2, 0] += 0.5
    P.B[7, 1] -= 0.5
    g = fit.state.layout.pack_grad(evaluate(fit.problem, P).grad, P)
    state = replace(fit.state, params=P, grad=g, converged=False, n_iter=5)
    early = GLLVMResults(fit.problem, state, fit.settings)
    prob = next(p for p in early.diagnose().problems if p.kind == "convergence")
    assert ("coef", "sp03", "x1") in prob.parameters or ("coef", "sp08", "x2") in prob.parameters
    assert "maxiter" in prob.remedy


def test_maxiter_stop_is_flagged_when_the_engine_stops_early(clean):
    com, _ = clean
    fit = _quiet_fit(com, family="poisson", num_lv=2, seed=1, n_init=1, maxiter=5, gtol=1e-9)
    assert not fit.converged
    assert "convergence" in _kinds(fit.diagnose(hessian=False))


def test_unidentified_parameters_flag_the_hessian(clean):
    com, _ = clean
    fit = fit_with_copied_column(com, "x1", family="poisson", num_lv=1, seed=1, n_init=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # diagnose() itself must not warn
        diag = fit.diagnose()
    prob = next(p for p in diag.problems if p.kind == "hessian")
    assert any(lab[2] == "x1copy" for lab in prob.parameters)
    assert "NaN" in prob.evidence


def test_near_zero_random_row_variance(clean):
    com, _ = clean
    fit = _quiet_fit(com, family="poisson", num_lv=1, seed=1, n_init=1, row_effect="random")
    P = fit.state.params.copy()
    P.log_sigma = np.log(1e-3)
    small = GLLVMResults(fit.problem, replace(fit.state, params=P), fit.settings)
    prob = next(p for p in quick_checks(small) if p.kind == "row_variance")
    assert "row_effect=None" in prob.remedy


def test_report_text_lists_evidence_and_remedy(clean):
    com, _ = clean
    Y = com.Y.copy()
    Y["sp04"] = 0.0
    Y.iloc[5, Y.columns.get_loc("sp04")] = 2.0
    X = com.X.copy()
    X["x2"] = X["x2"] * 50.0
    fit = _quiet_fit(jsdm.Community(Y, X), family="poisson", num_lv=2, seed=1, n_init=1)
    diag = fit.diagnose(hessian=False)
    text = str(diag)
    assert {"covariate_scaling", "sparse_species"} <= set(_kinds(diag))
    assert text.count("evidence:") == len(diag.problems) == text.count("remedy:")
    frame = diag.to_frame()
    assert list(frame.columns) == ["kind", "message", "evidence", "remedy", "parameters"]
    assert "Hessian: not checked" in text


def test_degenerate_dispersion_with_fixed_row_effects_is_explained():
    """Gaussian + fixed row effects: the site effects can reproduce one species exactly, its sd
    drifts to 0 and the likelihood is unbounded; the warning says so and what to do."""
    com = jsdm.datasets.load_mite()
    y = np.log1p(com.Y.astype(float))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        fit = jsdm.gllvm(y, family="gaussian", num_lv=2, row_effect="fixed", n_init=1, seed=0,
                         maxiter=1500)
    msgs = [str(w.message) for w in rec if "residual variance" in str(w.message)]
    assert len(msgs) == 1 and "row_effect='random'" in msgs[0] and "sd = " in msgs[0]
    kinds = [p.kind for p in fit.diagnose(hessian=False).problems]
    assert "degenerate_dispersion" in kinds


def test_degenerate_dispersion_check_is_quiet_on_a_sound_fit():
    from jsdm.analysis.diagnostics import check_degenerate_dispersion

    com, _ = jsdm.simulate_community(60, 6, num_lv=1, family="gaussian", seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        fit = jsdm.gllvm(com, family="gaussian", num_lv=1, n_init=1, seed=0)
    assert check_degenerate_dispersion(fit) == []
    P = fit.state.params.copy()
    P.s[2] = -12.0                                  # sd 6e-6 against data sd ~1
    fit = GLLVMResults(fit.problem, replace(fit.state, params=P), fit.settings)
    probs = check_degenerate_dispersion(fit)
    assert len(probs) == 1 and probs[0].parameters == [("dispersion", fit.species[2], "sd")]


def test_species_information_and_informative_records():
    from jsdm.analysis.diagnostics import informative_records, species_information

    rng = np.random.default_rng(3)
    Y = pd.DataFrame((rng.random((40, 6)) < 0.5).astype(float), columns=list("abcdef"))
    Y["g"] = 0.0
    Y.loc[3, "g"] = 1.0                    # seen once
    Y["h"] = 1.0
    Y.loc[[0, 1], "h"] = 0.0               # absent twice: 2 informative records
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = jsdm.gllvm(Y, family="binomial", num_lv=1, seed=1, n_init=1, prior_sd=5)
    info = informative_records(fit)
    assert info[list(fit.species).index("g")] == 1 and info[list(fit.species).index("h")] == 2
    tab = species_information(fit)
    assert tab.loc["g", "rare"] and tab.loc["h", "rare"] and not tab.loc["a", "rare"]
    assert not tab.loc["g", "headline"] and tab.loc["a", "headline"]
    assert tab.loc["g", "occupied"] == 1 and tab.loc["h", "prevalence"] == pytest.approx(38 / 40)
    assert species_information(fit, min_records=30).loc["a", "rare"]


def test_starts_that_end_at_different_optima_are_reported(clean):
    """diagnose() says when the starts' final ELBOs differ by more than the tolerance."""
    from jsdm.analysis.diagnostics import START_TOL, check_starts

    _, fit = clean
    best = fit.llf

    def with_starts(values):
        return GLLVMResults(fit.problem, replace(fit.state, start_values=list(values)), fit.settings)

    assert check_starts(with_starts([best])) == []                              # one start: silent
    assert check_starts(with_starts([best, best - 0.5 * START_TOL, best])) == []  # optimiser noise
    apart = with_starts([best - 0.3, best, best - 4.2])
    probs = check_starts(apart)
    assert len(probs) == 1 and probs[0].kind == "starts"
    assert "2 of 3 starts" in probs[0].message and f"{best - 4.2:.4f}" in probs[0].evidence
    assert "n_init=10" in probs[0].remedy
    assert "starts" in [p.kind for p in apart.diagnose(hessian=False).problems]
    with pytest.warns(jsdm.JSDMWarning, match="starts ended more than"):
        warn_quick_checks(apart)
    failed = check_starts(with_starts([best, -np.inf, best]))       # a start that broke down
    assert len(failed) == 1 and "1 of 3 starts failed numerically" in failed[0].message


def test_a_start_that_fails_numerically_leaves_the_others(monkeypatch):
    """A start whose Newton step meets a singular matrix is recorded as failed (-inf) and the
    fit keeps the best of the others; when every start fails, a JSDMError says what to try.
    (Found by bench/bench_starts.py: dune cover classes, Tweedie, seed 1001, n_init=5: a
    jittered start's site precisions reached 1e26 and the whole fit stopped with LinAlgError.)"""
    import jsdm.model.fit as engine

    com, _ = jsdm.simulate_community(30, 5, num_lv=1, family="poisson", seed=2)
    real = engine._run_start
    calls = []

    def second_fails(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise np.linalg.LinAlgError("Singular matrix")
        return real(*args, **kw)

    monkeypatch.setattr(engine, "_run_start", second_fails)
    fit = jsdm.gllvm(com, family="poisson", num_lv=1, n_init=3, seed=0)
    vals = fit.state.start_values
    assert len(vals) == 3 and vals[1] == -np.inf and np.isfinite(vals[0]) and np.isfinite(vals[2])
    assert fit.llf == max(vals[0], vals[2])
    assert "starts" in [p.kind for p in fit.diagnose(hessian=False).problems]

    def always_fails(*args, **kw):
        raise np.linalg.LinAlgError("Singular matrix")

    monkeypatch.setattr(engine, "_run_start", always_fails)
    with pytest.raises(jsdm.JSDMError, match="every start of the fit failed numerically"):
        jsdm.gllvm(com, family="poisson", num_lv=1, n_init=2, seed=0)


def test_precision_at_its_upper_bound_is_reported():
    """Cover classes divided by 10 are a lattice: a beta precision can grow without bound for a
    species with few distinct values (its values reproduced exactly). diagnose() names those
    species; a beta fit to simulated continuous data has none."""
    from jsdm.analysis.diagnostics import check_dispersion_at_ceiling

    cover = jsdm.datasets.load_dune().Y.astype(float) / 10.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = jsdm.gllvm(cover, family="beta_hurdle", num_lv=2, seed=1, n_init=1)
    probs = check_dispersion_at_ceiling(fit)
    assert len(probs) == 1 and "unbounded" in probs[0].message
    flagged = {sp for _, sp, term in probs[0].parameters if term == "phi"}
    distinct = cover.apply(lambda c: c[c > 0].nunique())
    assert flagged and distinct[list(flagged)].max() <= 4                # few distinct values
    assert distinct[list(flagged)].mean() < distinct.drop(list(flagged)).mean()
    assert fit.params.loc[("dispersion", sorted(flagged)[0], "phi")] > 1e5
    assert "dispersion_at_ceiling" in [p.kind for p in fit.diagnose(hessian=False).problems]
    com, _ = jsdm.simulate_community(80, 5, num_lv=1, family="beta", seed=2)
    assert check_dispersion_at_ceiling(jsdm.gllvm(com, family="beta", num_lv=1, seed=0)) == []
