"""Bad input through the API (issue 13): every case of the issue, as it was reported.

Each case either gives the right answer (labelled offsets matched by label, covariate
names kept literally, labels that survive a CSV round trip) or a JSDMError that names
the argument, columns or cells and says what to do. docs/robustness.md lists them.
"""
import warnings

import numpy as np
import pandas as pd
import pytest

import jsdm
from jsdm.exceptions import JSDMError
from jsdm.model.problem import build_problem

N, M = 20, 4


def _tables(seed=0):
    rng = np.random.default_rng(seed)
    Y = pd.DataFrame(rng.poisson(2.0, (N, M)).astype(float), index=[f"s{i:02d}" for i in range(N)],
                     columns=[f"sp{j}" for j in range(M)])
    X = pd.DataFrame({"x": rng.normal(size=N), "z": rng.normal(size=N)}, index=Y.index)
    return Y, X


def _fit(*args, **kwargs):
    kwargs.setdefault("n_init", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        return jsdm.gllvm(*args, **kwargs)


def _problem(Y, X=None, family="poisson", **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        return build_problem(Y, X, family=family, **kwargs)


# --- offsets and trials ---------------------------------------------------------------------
def test_offset_series_is_matched_by_label_not_position():
    Y, X = _tables()
    off = pd.Series(np.linspace(-0.5, 0.5, N), index=Y.index)
    by_label = _fit(Y, X, num_lv=1, offset=off, seed=1)
    reversed_ = _fit(Y, X, num_lv=1, offset=off.iloc[::-1], seed=1)
    as_array = _fit(Y, X, num_lv=1, offset=off.to_numpy(), seed=1)
    assert by_label.llf == reversed_.llf == as_array.llf
    np.testing.assert_array_equal(by_label.problem.offset, reversed_.problem.offset)


def test_offset_frame_and_species_series_are_matched_by_label():
    Y, _ = _tables()
    rng = np.random.default_rng(1)
    full = pd.DataFrame(rng.normal(size=(N, M)), index=Y.index, columns=Y.columns)
    shuffled = full.sample(frac=1.0, random_state=3)[list(reversed(Y.columns))]
    np.testing.assert_array_equal(_problem(Y, offset=shuffled).offset, full.to_numpy())
    per_species = pd.Series([0.1, 0.2, 0.3, 0.4], index=list(reversed(Y.columns)))
    got = _problem(Y, offset=per_species).offset
    np.testing.assert_array_equal(got, np.tile([0.4, 0.3, 0.2, 0.1], (N, 1)))
    trials = pd.Series(np.arange(1, N + 1, dtype=float), index=Y.index[::-1])
    Yb = (Y > 0).astype(float)
    np.testing.assert_array_equal(_problem(Yb, family="binomial", trials=trials).trials[:, 0],
                                  np.arange(N, 0, -1))


def _bad_shapes():
    n, m = N, M
    Y, _ = _tables()
    return [
        ("n+1", np.zeros(n + 1), r"has 21 values but there are 20 sites"),
        ("m", np.zeros(m), r"has 4 values but there are 20 sites.*one value per species pass shape \(1, 4\)"),
        ("m_by_n", np.zeros((m, n)), r"has shape \(4, 20\).*looks transposed"),
        ("n+1_by_m", np.zeros((n + 1, m)), r"has shape \(21, 4\)"),
        ("3d", np.zeros((n, m, 1)), r"has 3 dimensions"),
        ("text", ["a"] * n, r"must hold numbers"),
        ("series_positions", pd.Series(np.zeros(n)), r"neither the sites nor the species.*to_numpy"),
        ("series_other_labels", pd.Series(np.zeros(n), index=[f"t{i}" for i in range(n)]),
         r"sites without a value \['s00'"),
        ("series_repeated", pd.Series(np.zeros(n), index=["s00"] * n), r"repeated labels"),
        ("frame_transposed", pd.DataFrame(np.zeros((m, n)), index=Y.columns, columns=Y.index),
         r"species as rows and sites as columns"),
        ("frame_missing_site", pd.DataFrame(np.zeros((n - 1, m)), index=Y.index[1:], columns=Y.columns),
         r"sites without a row \['s00'\]"),
    ]


@pytest.mark.parametrize("name", ["offset", "trials"])
@pytest.mark.parametrize("value,pattern", [c[1:] for c in _bad_shapes()], ids=[c[0] for c in _bad_shapes()])
def test_offset_and_trials_shapes_are_checked_naming_the_argument(name, value, pattern):
    Y, _ = _tables()
    Yb = (Y > 0).astype(float)
    with pytest.raises(JSDMError, match=rf"{name}=.*" + pattern.replace("offset", name)):
        _problem(Yb, family="binomial", **{name: value})


def test_nan_offset_is_refused_naming_the_cells_but_allowed_where_y_is_missing():
    Y, X = _tables()
    off = np.zeros(N)
    off[3] = np.nan
    with pytest.raises(JSDMError, match=r"offset= is missing or infinite at 4 observed cell.*'s03', 'sp0'"):
        _fit(Y, X, num_lv=1, offset=off)
    Ym = Y.copy()
    Ym.iloc[3, :] = np.nan
    full = np.zeros((N, M))
    full[3, :] = np.nan
    full[5, 1] = np.inf
    with pytest.raises(JSDMError, match=r"'s05', 'sp1', inf"):
        _problem(Ym, offset=full)
    full[5, 1] = 0.0
    assert np.isfinite(_problem(Ym, offset=full).offset).all()


# --- covariate names --------------------------------------------------------------------------
ODD_NAMES = ["1", "0", "-1", "a+b", "log(x)", "x:y", "C(x)", "a b", "`q`", "x[1]", "I(x)",
             "y ~ x", "0 + x", "é", 7]


@pytest.mark.parametrize("name", ODD_NAMES, ids=[repr(n) for n in ODD_NAMES])
def test_covariate_names_that_look_like_formula_syntax_are_kept_literally(name):
    Y, X = _tables()
    Xr = X.rename(columns={"z": name})
    prob = _problem(Y, Xr)
    assert prob.terms == ("x", str(name))
    np.testing.assert_array_equal(prob.X, X.to_numpy())


def test_a_covariate_named_intercept_is_refused_with_the_reason():
    Y, X = _tables()
    with pytest.raises(JSDMError, match=r"covariate named 'Intercept' would be confused with the "
                                        r"species intercepts.*rename"):
        _fit(Y, X.rename(columns={"z": "Intercept"}), num_lv=1)
    with pytest.raises(JSDMError, match="'Intercept'"):
        _problem(Y, X.rename(columns={"z": "Intercept"}), formula="~ x + `Intercept`")


def test_backticked_names_in_a_formula_are_taken_literally():
    Y, X = _tables()
    Xr = X.rename(columns={"z": "1"})
    prob = _problem(Y, Xr, formula="~ x + `1`")
    assert prob.terms == ("x", "1")
    np.testing.assert_array_equal(prob.X[:, 1], X["z"].to_numpy())
    prob = _problem(Y, X.rename(columns={"z": "soil pH"}), formula="~ scale(`soil pH`)")
    assert prob.terms == ("scale(soil pH)",)


def test_design_column_name_clashes_are_refused():
    Y, X = _tables()
    X2 = pd.DataFrame({"g[T.b]": X["x"], "g": pd.Categorical(np.resize(["a", "b"], N))},
                      index=X.index)
    with pytest.raises(JSDMError, match=r"several columns named \['g\[T.b\]'\]"):
        _problem(Y, X2)


# --- rank-deficient designs -----------------------------------------------------------------
def _rank_cases():
    Y, X = _tables()
    g = pd.Categorical(np.resize(["a", "b"], N), categories=["a", "b", "c"])
    return [
        ("constant", X.assign(c=1.0), None, r"'c' is constant across sites"),
        ("collinear", X.assign(w=2 * X["x"] - X["z"]), None, r"'w' = 2 \* 'x' - 1 \* 'z'"),
        ("duplicate", X.assign(x2=X["x"]), None, r"'x2' = 1 \* 'x'"),
        ("unused_level", X.assign(g=g), None, r"'g\[T.c\]' is zero at every site"),
        ("no_intercept_dummies", X.assign(g=pd.Categorical(np.resize(["a", "b"], N))), "~ g - 1",
         r"'g\[b\]' = 1 - 1 \* 'g\[a\]'"),
        ("more_columns_than_sites", pd.DataFrame(np.random.default_rng(2).normal(size=(N, N)),
                                                 index=X.index, columns=[f"v{k}" for k in range(N)]),
         None, r"20 sites for 21 coefficients"),
    ]


@pytest.mark.parametrize("X,formula,pattern", [c[1:] for c in _rank_cases()],
                         ids=[c[0] for c in _rank_cases()])
def test_rank_deficient_designs_are_refused_before_fitting_naming_the_columns(X, formula, pattern):
    Y, _ = _tables()
    with pytest.raises(JSDMError, match=r"rank deficient.*" + pattern):
        _fit(Y, X, num_lv=1, formula=formula)


def test_nearly_but_not_exactly_collinear_covariates_are_accepted():
    Y, X = _tables()
    rng = np.random.default_rng(4)
    prob = _problem(Y, X.assign(w=X["x"] + 1e-3 * rng.normal(size=N)))
    assert prob.terms == ("x", "z", "w")


# --- response scale ---------------------------------------------------------------------------
def _gaussian(scale, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame((rng.normal(size=(30, 3)) + 3.0) * scale,
                        index=[f"s{i}" for i in range(30)], columns=list("abc"))


@pytest.mark.parametrize("family,Y,pattern", [
    ("gaussian", _gaussian(1e300), r"responses as large as .*e\+300 .* Y / 1e"),
    ("gaussian", _gaussian(1e8), r"standard deviations .* outside the range .* Y / 1e8"),
    ("gaussian", _gaussian(1e-300), r"standard deviations .* Y \* 1e300"),
    ("poisson", (_gaussian(1.0).abs() * 1e16).round(), r"responses as large as"),
], ids=["gaussian_1e300", "gaussian_sd_1e8", "gaussian_sd_1e-300", "counts_1e16"])
def test_responses_beyond_the_engines_range_are_refused_with_the_rescaling(family, Y, pattern):
    with pytest.raises(JSDMError, match=pattern):
        _fit(Y, family=family, num_lv=1)


def test_gaussian_responses_in_ordinary_units_fit():
    fit = _fit(_gaussian(1e3), family="gaussian", num_lv=1, seed=1)
    assert np.isfinite(fit.llf)
    assert np.all((fit.dispersion > 100) & (fit.dispersion < 2e3))


# --- options ------------------------------------------------------------------------------------
@pytest.mark.parametrize("option,value,pattern", [
    ("num_lv", True, r"num_lv must be a whole number >= 0.*True of type bool"),
    ("num_lv", 1.5, "num_lv must be"), ("num_lv", -1, "num_lv must be"), ("num_lv", "2", "num_lv must be"),
    ("n_init", 0, r"n_init .* >= 1, got 0"), ("n_init", -3, "n_init"), ("n_init", True, "n_init"),
    ("n_init", 2.0, "n_init"),
    ("gtol", -1, r"gtol .* positive finite number.*got -1"), ("gtol", 0.0, "gtol"),
    ("gtol", float("nan"), "gtol"), ("gtol", float("inf"), "gtol"), ("gtol", "1e-3", "gtol"),
    ("maxiter", 0, "maxiter"), ("maxiter", 10.5, "maxiter"),
    ("seed", -1, "seed"), ("seed", 1.5, "seed"), ("seed", "a", "seed"),
])
def test_options_that_cannot_mean_what_they_say_are_refused(option, value, pattern):
    Y, X = _tables()
    kwargs = {"num_lv": 1, option: value}
    with pytest.raises(JSDMError, match=pattern):
        jsdm.gllvm(Y, X, **kwargs)


# --- tables and labels ----------------------------------------------------------------------------
def test_multiindex_tables_are_refused_with_the_fix():
    Y, X = _tables()
    Ym = Y.copy()
    Ym.columns = pd.MultiIndex.from_tuples([("g", c) for c in Y.columns])
    with pytest.raises(JSDMError, match=r"Y columns have 2 levels.*'_'.join"):
        _fit(Ym, num_lv=1)
    Ym = Y.copy()
    Ym.index = pd.MultiIndex.from_tuples([("plot", s) for s in Y.index])
    with pytest.raises(JSDMError, match=r"Y rows have 2 levels"):
        jsdm.Community(Ym)
    Xm = X.copy()
    Xm.columns = pd.MultiIndex.from_tuples([("env", c) for c in X.columns])
    with pytest.raises(JSDMError, match=r"X columns have 2 levels"):
        jsdm.Community(Y, Xm)


@pytest.mark.parametrize("column,pattern", [
    (["1", "2", "0"] * 6 + ["1", "1"], r"e\.g\. \['1', '2', '0'\].*text that looks like numbers"),
    ([1, True, 0] * 6 + [1, 0], r"e\.g\. \[True\].*True/False mixed with numbers"),
    (pd.Categorical([1, 2] * 10), r"e\.g\. a pandas Categorical with levels \[1, 2\]"),
    (["1,5", "n.d.", "2"] * 6 + ["1", "1"], r"e\.g\. \['1,5', 'n\.d\.', '2', \.\.\. \(4 in all\)\]"),
], ids=["numeric_strings", "booleans", "categorical", "text"])
def test_non_numeric_responses_show_the_offending_values(column, pattern):
    Y, _ = _tables()
    Yb = Y.astype(object)
    Yb["sp1"] = pd.Series(column, index=Y.index, dtype=object) if not isinstance(
        column, pd.Categorical) else column
    with pytest.raises(JSDMError, match=r"species \['sp1'\] have non-numeric values \(" + pattern):
        jsdm.Community(Yb)


@pytest.mark.parametrize("label", ["", " ", "\r", "\n", "a\tb", "x\x00", "\u00a0"],
                         ids=["empty", "space", "CR", "LF", "tab", "NUL", "nbsp"])
@pytest.mark.parametrize("where", ["site", "species", "covariate"])
def test_labels_that_cannot_survive_a_csv_file_are_refused_on_the_way_in(label, where):
    Y, X = _tables()
    if where == "site":
        Y = Y.rename(index={"s03": label})
        X = X.rename(index={"s03": label})
    elif where == "species":
        Y = Y.rename(columns={"sp1": label})
    else:
        X = X.rename(columns={"z": label})
    with pytest.raises(JSDMError, match=r"empty or blank|control characters"):
        jsdm.Community(Y, X)


ODD_LABELS = ["a,b", '"q"', "'", "é ü", "01", " lead", "trail ", "#1", "NA", "null", "None",
              "1e5", "-", "a;b", "[x]"]


def test_labels_accepted_on_the_way_in_survive_a_pandas_csv_round_trip(tmp_path):
    Y, X = _tables()
    k = len(ODD_LABELS)
    Y.index = ODD_LABELS + [f"s{i}" for i in range(N - k)]
    X.index = Y.index
    Y.columns = ODD_LABELS[:M]
    X.columns = ["a,b", "NA"]
    com = jsdm.Community(Y, X)
    com.Y.to_csv(tmp_path / "y.csv")
    com.X.to_csv(tmp_path / "x.csv")
    back = jsdm.read_wide(tmp_path / "y.csv", covariates=tmp_path / "x.csv")
    assert list(back.sites) == list(com.sites)
    assert list(back.species) == list(com.species)
    assert list(back.covariates) == list(com.covariates)
    np.testing.assert_array_equal(back.Y.to_numpy(), com.Y.to_numpy())
    np.testing.assert_array_equal(back.X.to_numpy(), com.X.to_numpy())


@pytest.mark.parametrize("label", ["", "\r"], ids=["empty", "CR"])
def test_the_issues_to_csv_read_wide_round_trip_cases(tmp_path, label):
    """pandas writes a site '' as an empty cell and a site '\\r' unquoted: read_wide refuses
    both (they used to come back as a missing label, or as site '0.0' with a NaN cell)."""
    Y, _ = _tables()
    Y = Y.rename(index={"s03": label})
    Y.to_csv(tmp_path / "y.csv")
    with pytest.raises(JSDMError, match=r"missing \(NaN; an empty cell|lone carriage return"):
        jsdm.read_wide(tmp_path / "y.csv")
    Y.T.to_csv(tmp_path / "t.csv")          # the label as a column name in the header
    with pytest.raises(JSDMError, match=r"have no name|lone carriage return"):
        jsdm.read_wide(tmp_path / "t.csv")


def test_text_covariate_that_mostly_holds_numbers_warns_in_the_api():
    Y, X = _tables()
    Xt = X.astype({"x": object})
    Xt.loc["s03", "x"] = "n.d."
    with pytest.warns(jsdm.DataWarning, match=r"column 'x' of X holds numbers but also text at 1 "
                                              r"site\(s\) \[\"s03: 'n.d.'\"\].*pd.to_numeric"):
        jsdm.Community(Y, Xt)


# --- reproducibility ------------------------------------------------------------------------------
def test_same_data_and_call_give_the_same_fit_bit_for_bit_without_a_seed():
    Y, X = _tables()
    a = _fit(Y, X, num_lv=2, n_init=3)
    b = _fit(Y, X, num_lv=2, n_init=3)
    for f in ("beta0", "B", "theta", "a", "L"):
        np.testing.assert_array_equal(getattr(a.state.params, f), getattr(b.state.params, f))
    assert a.llf == b.llf and a.state.start_values == b.state.start_values
    assert a.settings["seed"] == 0                          # reports say which seed was used
    c = _fit(Y, X, num_lv=2, n_init=3, seed=12345)        # other starts on request
    assert c.state.start_values != a.state.start_values


def test_converged_is_the_scaled_gradient_test_as_documented():
    Y, X = _tables()
    fit = _fit(Y, X, num_lv=1, seed=1)
    assert fit.converged == (fit.scaled_grad <= fit.settings["gtol"])
    assert "curvature-scaled gradient" in jsdm.gllvm.__doc__
    assert "max |gradient| <= gtol" not in jsdm.gllvm.__doc__
    assert "Max scaled gradient" in str(fit.summary())


def test_nullable_offsets_with_pd_na_are_reported_as_missing():
    Y, _ = _tables()
    off = pd.Series(np.zeros(N), index=Y.index).astype("Float64")
    off.iloc[2] = pd.NA
    with pytest.raises(JSDMError, match=r"offset= is missing or infinite at 4 observed cell.*'s02'"):
        _problem(Y, offset=off)


def test_the_formula_docs_example_runs_as_written_without_a_seed():
    """docs/formula.md asserts fit.llf == wide.llf with no seed: true because fits are
    deterministic by default (it could fail before issue 13)."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "formula.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    assert "assert fit.llf == wide.llf" in code and not re.search(r"seed\s*=\s*\d", code)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        exec(compile(code, "docs/formula.md", "exec"), {})


@pytest.mark.parametrize("family", ["poisson", "negative_binomial", "gaussian"])
def test_trials_refused_for_families_without_trials(family):
    """trials= with a family that has no number of trials was ignored silently; now refused."""
    Y = pd.DataFrame([[1, 0], [2, 1], [0, 3], [1, 1]], index=list("abcd"), columns=["s1", "s2"])
    with pytest.raises(JSDMError, match="trials= was given"):
        jsdm.gllvm(Y, family=family, num_lv=0, trials=5)
