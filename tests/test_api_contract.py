"""The public API's promises: immutable fits, one meaning per argument name, explicit
signatures on the fitted object, notebook display, and imports that point downward."""
import ast
import dataclasses
import inspect
import pickle
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import jsdm  # noqa: E402
from jsdm import GLLVMResults  # noqa: E402

from _analysis_helpers import fit_mite_poisson  # noqa: E402

PACKAGE = Path(jsdm.__file__).parent


@pytest.fixture(scope="module")
def fit():
    return fit_mite_poisson()


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --- immutability -------------------------------------------------------------------------
def test_arrays_of_a_fit_are_read_only(fit):
    P = fit.state.params
    for name in ("beta0", "B", "theta", "a", "L"):
        with pytest.raises(ValueError, match="read-only"):
            getattr(P, name)[(0,) * getattr(P, name).ndim] = 1.0
    for name in ("Y", "X", "W"):
        arr = getattr(fit.problem, name)
        with pytest.raises(ValueError, match="read-only"):
            arr[(0,) * arr.ndim] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        fit.lv_cov[0, 0, 0] = 1.0


def test_records_of_a_fit_refuse_assignment(fit):
    with pytest.raises(AttributeError, match="read-only"):
        fit.state.params.theta = np.zeros((2, 2))
    with pytest.raises(AttributeError, match="read-only"):
        fit.state.converged = False
    with pytest.raises(AttributeError, match="read-only"):
        fit.problem = None
    with pytest.raises(AttributeError, match="read-only"):
        fit.new_attribute = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.problem.Y = None
    settings = fit.settings
    settings["seed"] = 12345
    assert fit.settings.get("seed") != 12345


def test_copies_of_the_records_are_ordinary_and_the_fit_is_unchanged(fit):
    before = fit.llf
    P = fit.state.params.copy()
    P.theta[0, 0] += 1.0                      # a copy is writable ...
    state = dataclasses.replace(fit.state, params=P)
    state.n_iter = 0                          # ... and so is a replaced state
    other = GLLVMResults(fit.problem, state, fit.settings)
    assert other.loadings.iloc[0, 0] == pytest.approx(fit.loadings.iloc[0, 0] + 1.0)
    assert fit.llf == before and fit.state.params.theta[0, 0] != P.theta[0, 0]
    with pytest.raises(AttributeError):       # and the new result is sealed in turn
        other.state.n_iter = 1


def test_derived_statistics_are_cached_once_and_handed_out_as_copies(fit):
    coef = fit.coef
    coef.iloc[0, 0] = 1e6
    assert fit.coef.iloc[0, 0] != 1e6
    _ = fit.params
    first = fit.__dict__["_cached_params"]         # computed once ...
    again = fit.params
    assert fit.__dict__["_cached_params"] is first  # ... and not again
    assert again is not first and again.equals(first)


def test_a_fit_pickles_and_stays_sealed(fit):
    back = pickle.loads(pickle.dumps(fit))
    pd.testing.assert_frame_equal(back.coef, fit.coef)
    with pytest.raises(AttributeError):
        back.state.params.theta = None
    with pytest.raises(ValueError):
        back.state.params.theta[0, 0] = 0.0


def test_fitting_leaves_nothing_in_the_problem():
    com = jsdm.datasets.load_mite()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        nb = jsdm.gllvm(com, family="negative_binomial", num_lv=1, n_init=1,
                        formula="~ scale(WatrCont)")
    assert not [k for k in nb.problem.info if "cache" in k]
    from jsdm.model import objective
    assert nb.problem not in objective._ELL_CACHES


# --- one meaning per name -------------------------------------------------------------------
def test_ordination_exponent_and_its_deprecated_name(fit):
    new = fit.ordination(exponent=0.3)
    with pytest.warns(FutureWarning, match="exponent"):
        old = fit.ordination(alpha=0.3)
    pd.testing.assert_frame_equal(old.sites, new.sites)
    with pytest.warns(FutureWarning, match="exponent"):
        assert old.alpha == 0.3
    assert new.exponent == 0.3


def test_plot_ordination_alpha_is_one_minus_coverage(fit):
    from jsdm.plotting import ordination as po

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)      # the new spellings are silent
        fit.plot_ordination(ellipses=True, alpha=0.1, exponent=0.4)
        assert po._old_alpha(True, 0.4, 0.1, None) == (0.4, 0.1)
    with pytest.warns(FutureWarning, match="exponent"):   # old meaning: no ellipses asked for
        assert po._old_alpha(False, 0.5, 0.3, None) == (0.3, 0.05)
    with pytest.warns(FutureWarning, match="alpha"):
        exponent, alpha = po._old_alpha(True, 0.5, None, 0.9)
    assert exponent == 0.5 and alpha == pytest.approx(0.1)


def _alpha_or_level(func):
    params = inspect.signature(func).parameters
    return {"alpha" in params, "level" in params}


def test_alpha_means_one_minus_confidence_everywhere():
    """Every public function with a confidence level calls it alpha (level= only as deprecated)."""
    from jsdm import analysis, plotting, report, results  # noqa: F401
    import jsdm.analysis.associations as assoc
    import jsdm.analysis.goodness as good
    import jsdm.results.inference as inf
    import jsdm.results.predict as pred
    import jsdm.results.summary as summ

    for func in (assoc.association_table, assoc.residual_correlation_intervals, inf.conf_int,
                 good.richness,
                 summ.summary, pred.predict, plotting.plot_associations, plotting.plot_coefficients,
                 plotting.plot_ordination, report.write_report, GLLVMResults.conf_int,
                 GLLVMResults.predict, GLLVMResults.predict_interval, GLLVMResults.summary,
                 GLLVMResults.plot_ordination, GLLVMResults.association_table, GLLVMResults.report):
        params = inspect.signature(func).parameters
        assert "alpha" in params, func
        if "level" in params:
            assert params["level"].default is None, f"{func.__qualname__}: level is only the old name"


def test_methods_return_one_type_whatever_their_arguments(fit):
    assert isinstance(fit.plot_coefficients(), matplotlib.figure.Figure)
    _, ax = plt.subplots()
    assert isinstance(fit.plot_coefficients(term="WatrCont", ax=ax), matplotlib.figure.Figure)
    for kwargs in ({}, {"lv": "marginal"}, {"type": "link"}):
        out = fit.predict(type=kwargs.pop("type", "response"), **kwargs)
        assert out.shape == (len(fit.sites), len(fit.species))
    assert list(fit.predict_interval(interval="prediction", n_draws=20, seed=1).columns) == \
        ["prediction", "lower", "upper"]


# --- explicit signatures on the fitted object -------------------------------------------------
DELEGATES = {
    "summary": "jsdm.results.summary:summary",
    "diagnose": "jsdm.analysis.diagnostics:diagnose",
    "predict": "jsdm.results.predict:predict",
    "simulate": "jsdm.results.predict:simulate",
    "residuals": "jsdm.results.residuals:residuals",
    "conf_int": "jsdm.results.inference:conf_int",
    "residual_covariance": "jsdm.analysis.associations:residual_covariance",
    "residual_correlation": "jsdm.analysis.associations:residual_correlation",
    "residual_trace": "jsdm.analysis.associations:residual_trace",
    "environmental_covariance": "jsdm.analysis.associations:environmental_covariance",
    "environmental_correlation": "jsdm.analysis.associations:environmental_correlation",
    "variance_partition": "jsdm.analysis.associations:variance_partition",
    "association_table": "jsdm.analysis.associations:association_table",
    "ordination": "jsdm.analysis.ordination:ordination",
    "plot_ordination": "jsdm.plotting:plot_ordination",
    "plot_associations": "jsdm.plotting:plot_associations",
    "plot_residuals": "jsdm.plotting:plot_residuals",
    "plot_coefficients": "jsdm.plotting:plot_coefficients",
    "plot_variance_partition": "jsdm.plotting:plot_variance_partition",
    "report": "jsdm.report:write_report",
    "save": "jsdm.results.io:save",
}


def _resolve(path):
    import importlib

    mod, name = path.split(":")
    return getattr(importlib.import_module(mod), name)


@pytest.mark.parametrize("method", sorted(DELEGATES))
def test_fitted_methods_spell_out_the_arguments_of_the_function_they_call(method):
    """Same names, kinds and defaults as the function behind the method (minus ``fit``)."""
    ours = list(inspect.signature(getattr(GLLVMResults, method)).parameters.values())[1:]
    theirs = list(inspect.signature(_resolve(DELEGATES[method])).parameters.values())[1:]
    assert [(p.name, p.kind, p.default) for p in ours] == \
        [(p.name, p.kind, p.default) for p in theirs]


def test_no_public_method_of_the_fit_takes_bare_kwargs():
    for name, member in inspect.getmembers(GLLVMResults):
        if name.startswith("_") or not callable(member):
            continue
        kinds = {p.kind for p in inspect.signature(member).parameters.values()}
        assert inspect.Parameter.VAR_KEYWORD not in kinds, f"GLLVMResults.{name} takes **kwargs"


# --- notebook display -------------------------------------------------------------------------
def test_fit_and_summary_render_as_html(fit):
    html = fit._repr_html_()
    assert "<table>" in html and "poisson" in html and f"{fit.llf:.3f}" in html
    assert "converged" in html
    s = fit.summary()
    assert "<table" in s._repr_html_() and "Coefficients" in s._repr_html_()
    assert isinstance(s.coefficients, pd.DataFrame)


# --- layers ---------------------------------------------------------------------------------
#: modules that still refit through the top-level API from inside results/ (issues 16 and 17);
#: their refits belong beside jsdm/selection.py
PENDING_CYCLES = {"results/crossval.py"}


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield node.level, node.module or "", [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield 0, a.name, []


@pytest.mark.parametrize("layer", ["data", "families", "model", "optim", "results", "analysis",
                                   "plotting", "report"])
def test_no_layer_imports_the_top_level_api(layer):
    """results -> api -> results was a cycle; model selection now lives in jsdm/selection.py."""
    bad = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        if rel in PENDING_CYCLES:
            continue
        for level, module, names in _imports(path):
            parent = module if level == 0 else ("." * level) + module
            top = {"jsdm.api", "jsdm.selection", "..api", "..selection", "...api", "...selection"}
            if parent in top or (parent in ("..", "jsdm") and {"api", "selection", "gllvm"} & set(names)):
                bad.append(f"{rel}: from {parent} import {', '.join(names)}")
    assert not bad, "imports of the top-level API from a lower layer:\n" + "\n".join(bad)


def test_select_num_lv_lives_above_the_fitter():
    from jsdm import selection

    assert jsdm.select_num_lv is selection.select_num_lv
    assert not hasattr(jsdm.results.anova, "select_num_lv")
