"""lme4/glmmTMB formula syntax on long data: parsing, translation, identical fits, errors."""
import warnings

import numpy as np
import pandas as pd
import pytest

import jsdm
from jsdm.exceptions import JSDMError
from jsdm.model.formula import ParsedFormula, is_lme4_formula, parse_formula, translate_call

RR1 = "rr(0 + species | site, d = 1)"


def quiet_fit(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        return jsdm.gllvm(*args, family="poisson", n_init=1, seed=1, **kw)


def assert_same_fit(a, b):
    assert a.llf == b.llf
    pd.testing.assert_frame_equal(a.coef, b.coef)
    if a.num_lv:
        pd.testing.assert_frame_equal(a.loadings, b.loadings)
    assert a.problem.formula == b.problem.formula
    assert (a.num_lv, a.row_effect) == (b.num_lv, b.row_effect)


@pytest.fixture(scope="module")
def mite():
    com = jsdm.datasets.load_mite()
    return com, com.to_long(response="count")


@pytest.fixture(scope="module")
def sim():
    com, _ = jsdm.simulate_community(25, 6, num_lv=1, family="poisson", n_covariates=2, seed=7,
                                     intercept=0.5)
    return com, com.to_long(response="abund")


# --- parsing -------------------------------------------------------------------------------
def test_parse_returns_the_pieces():
    p = parse_formula("count ~ species + species:soil_dry + rr(0 + species | site, d = 2)")
    assert isinstance(p, ParsedFormula)
    assert (p.response, p.slopes, p.num_lv, p.row_effect, p.offsets) == (
        "count", ("soil_dry",), 2, None, ())
    assert p.site_formula == "~ soil_dry"
    assert p.gllvm_arguments() == {"formula": "~ soil_dry", "num_lv": 2, "row_effect": None}
    text = str(p)
    assert "species:soil_dry" in text and "num_lv=2" in text and "formula='~ soil_dry'" in text


@pytest.mark.parametrize("formula", [
    "count ~ species + species:x + rr(0 + species | site, d = 2)",
    "count~species+species:x+rr(0+species|site,d=2)",
    "  count  ~\n  species +\tspecies : x\n + rr( 0 + species |site , d=2 )  ",
    "count ~ 0 + species + x:species + rr(species + 0 | site, 2)",
    "count ~ species - 1 + species:x + rr(species - 1 | site, d = 2L)",
    "count ~ -1 + species + species:x + rr(0 + species | site)",
    "count ~ species/x + rr(0 + species | site)",
    "count ~ species*x + rr(species | site, d = 2)",
    "`count` ~ `species` + species:`x` + rr(0 + species | `site`, d = 2)",
])
def test_spellings_and_whitespace_give_the_same_translation(formula):
    p = parse_formula(formula)
    assert (p.response, p.gllvm_arguments()) == (
        "count", {"formula": "~ x", "num_lv": 2, "row_effect": None})


def test_species_times_x_records_the_absorbed_shared_slope():
    p = parse_formula("y ~ species*x")
    assert p.absorbed == ("x",) and p.slopes == ("x",)
    assert "absorbed" in str(p)


def test_site_effects_and_offsets_and_functions():
    p = parse_formula("y ~ species + species:log(WatrCont) + species:I(x**2) + (1 | site)"
                      " + offset(log(effort))")
    assert p.slopes == ("log(WatrCont)", "I(x ** 2)")
    assert (p.row_effect, p.num_lv, p.offsets) == ("random", 0, ("log(effort)",))
    assert parse_formula("y ~ 0 + species + site").row_effect == "fixed"
    assert parse_formula("y ~ species + species:x:z").slopes == ("x:z",)


def test_custom_id_column_names():
    p = parse_formula("n ~ taxon + taxon:temp + rr(0 + taxon | plot, d = 3) + (1 | plot)",
                      site="plot", species="taxon")
    assert p.gllvm_arguments() == {"formula": "~ temp", "num_lv": 3, "row_effect": "random"}


@pytest.mark.parametrize("formula, expected", [
    ("~ SubsDens + WatrCont", False), ("~ species_richness + x", False), (None, False),
    ("y ~ x", True), ("~ x + (1 | site)", True), ("~ species + species:x", True),
    ("~ `species`:x", True),
])
def test_is_lme4_formula(formula, expected):
    assert is_lme4_formula(formula) is expected


# --- identical fits ---------------------------------------------------------------------------
def test_mite_long_formula_equals_wide_call(mite):
    com, long = mite
    a = quiet_fit(long, formula="count ~ species + species:SubsDens + species:WatrCont"
                                " + rr(0 + species | site, d = 2)")
    b = quiet_fit(com, formula="~ SubsDens + WatrCont", num_lv=2)
    assert_same_fit(a, b)
    assert list(a.coef.columns) == ["Intercept", "SubsDens", "WatrCont"]
    assert a.settings["formula"].startswith("count ~ species")
    assert a.settings["site_formula"] == "~ SubsDens + WatrCont"
    assert b.settings["formula"] == "~ SubsDens + WatrCont" and "site_formula" not in b.settings


def test_mite_categorical_covariate_and_random_site_effects(mite):
    com, long = mite
    a = quiet_fit(long, formula="count ~ 0 + species + species:Topo + (1 | site) + "
                                "rr(0 + species | site, d = 1)")
    b = quiet_fit(com, formula="~ Topo", num_lv=1, row_effect="random")
    assert_same_fit(a, b)
    assert any("Topo" in str(c) for c in a.coef.columns)


def test_community_input_equals_long_input(mite):
    com, long = mite
    f = "count ~ species + species:WatrCont + " + RR1
    assert_same_fit(quiet_fit(com, formula=f), quiet_fit(long, formula=f))


def test_simulated_community_with_fixed_site_effects(sim):
    com, long = sim
    a = quiet_fit(long, formula="abund ~ species + site + species:x1")
    b = quiet_fit(com, formula="~ x1", num_lv=0, row_effect="fixed")
    assert_same_fit(a, b)


def test_simulated_community_with_cell_offset(sim):
    com, long = sim
    rng = np.random.default_rng(0)
    long = long.assign(effort=rng.uniform(0.5, 2.0, len(long)), noise=rng.normal(size=len(long)))
    a = quiet_fit(long, formula="abund ~ species + species:x1 + species:x2 + offset(log(effort))"
                                " + " + RR1)
    off = np.log(long.pivot(index="site", columns="species", values="effort")
                 .loc[com.sites, com.species].to_numpy())
    b = quiet_fit(com, formula="~ x1 + x2", num_lv=1, offset=off)
    assert_same_fit(a, b)
    c = quiet_fit(com, formula="~ x1 + x2", num_lv=1)
    assert a.llf != c.llf       # the offset is really used


def test_site_level_offset_from_long_table(sim):
    com, long = sim
    effort = pd.Series(np.linspace(1, 3, com.n_sites), index=com.sites)
    long = long.assign(effort=effort.loc[long["site"]].to_numpy())
    a = quiet_fit(long, formula="abund ~ species + offset(log(effort)) + " + RR1)
    b = quiet_fit(com.Y, num_lv=1, offset=np.log(effort.to_numpy()))   # no covariates
    assert_same_fit(a, b)


def test_one_sided_formula_with_response_argument(sim):
    com, long = sim
    a = quiet_fit(long, formula="~ species + species:x1", response="abund")
    b = quiet_fit(com, formula="~ x1", num_lv=0)
    assert_same_fit(a, b)


def test_custom_id_column_names_fit(sim):
    com, long = sim
    renamed = long.rename(columns={"site": "plot", "species": "taxon"})
    a = quiet_fit(renamed, formula="abund ~ taxon + taxon:x1 + rr(0 + taxon | plot, d = 1)",
                  site="plot", species="taxon")
    b = quiet_fit(com, formula="~ x1", num_lv=1)
    assert_same_fit(a, b)


def test_agreeing_explicit_arguments_are_accepted(sim):
    com, long = sim
    a = quiet_fit(long, formula="abund ~ species + (1 | site) + " + RR1, num_lv=1,
                  row_effect="random", response="abund", site="site", species="species")
    assert (a.num_lv, a.row_effect) == (1, "random")


def test_user_dataframe_is_not_modified(sim):
    _, long = sim
    long = long.assign(effort=np.linspace(1, 2, len(long)))
    before = long.copy(deep=True)
    quiet_fit(long, formula="abund ~ species + species:x1 + offset(log(effort)) + " + RR1)
    pd.testing.assert_frame_equal(long, before)
    assert list(long.dtypes) == list(before.dtypes)


def test_translate_call_returns_the_wide_call(sim):
    com, long = sim
    data, X, args = translate_call(long, None, "abund ~ species + species:x2 + (1 | site)")
    assert X is None and data.Y.equals(com.Y)
    assert args == {"formula": "~ x2", "num_lv": 0, "row_effect": "random", "offset": None,
                    "response": None, "site": None, "species": None, "site_effects": None}
    assert data.covariates == ["x2"]


def test_settings_formula_survives_save_and_load(sim, tmp_path):
    _, long = sim
    f = "abund ~ species + species:x1 + " + RR1
    fit = quiet_fit(long, formula=f)
    back = jsdm.load(jsdm.results.io.save(fit, tmp_path / "fit.jsdm"))
    assert back.settings["formula"] == f and back.problem.formula == "~ x1"


# --- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("formula, words", [
    ("y ~ species + (1 | site:b)", ["(1 | site:b)", "involves"]),
    ("y ~ species + species:x + (0 + x | species)", ["(0 + x | species)", "random species slopes",
                                                   "species:x", "not identified"]),
    ("y ~ species + (1 | species)", ["random species intercepts"]),
    ("y ~ species + (1 + species | site)", ["(1 + species | site)", "no intercept"]),
    ("y ~ species + (0 + x | site)", ["random slopes by site"]),
    ("y ~ species + (1 || site)", ["double-bar"]),
    ("y ~ species + diag(0 + species | site)", ["diag()", "not supported yet"]),
    ("y ~ species + us(0 + species | site)", ["us()", "not supported yet"]),
    ("y ~ species + ou(times + 0 | site)", ["ou()", "not supported yet"]),
    ("y ~ species + rr(0 + species | plot, d = 2)", ["rr(0 + species | plot, d = 2)", "site"]),
    ("y ~ species + rr(0 + x | site)", ["rr(0 + species | site, d = k)"]),
    ("y ~ species + rr(0 + species | site, d = 0)", ["whole number >= 1"]),
    ("y ~ species + rr(0 + species | site, rank = 2)", ["no argument 'rank'"]),
    ("y ~ species + rr(0 + species | site) + rr(0 + species | site)", ["only one rr()"]),
    ("y ~ species + site + (1 | site)", ["both a fixed term and (1 | site)"]),
    ("y ~ species + (1 | site) + (1|site)", ["given twice"]),
    ("y ~ species + species:site", ["interactions with site"]),
    ("y ~ species:x", ["no species term", "0 + species"]),
    ("y ~ species + 1 | site", ["must stand alone in brackets"]),
    ("y ~ species + species:(1 | site)", ["must stand alone in brackets"]),
    ("y ~ species - (1 | site)", ["cannot be subtracted"]),
    ("y ~ species - offset(e)", ["cannot be subtracted"]),
    ("cbind(s, f) ~ species", ["one response column", "trials="]),
    ("y ~ species + log(x", ["unbalanced"]),
    ("y ~ species +", ["trailing"]),
    ("y ~ ", ["no terms"]),
    ("y ~ a ~ b", ["more than one '~'"]),
])
def test_unsupported_terms_raise_naming_the_term(formula, words):
    with pytest.raises(JSDMError) as err:
        parse_formula(formula)
    msg = str(err.value)
    for w in words:
        assert w in msg, (w, msg)


def test_unsupported_error_lists_what_is_supported():
    with pytest.raises(JSDMError, match=r"Supported: .*\(1 \| site\).*rr\(0 \+ species"):
        parse_formula("y ~ species + (x | plot)")


@pytest.mark.parametrize("kw, words", [
    (dict(num_lv=3), ["num_lv=3", "num_lv=1", "rr(0 + species | site, d = k)"]),
    (dict(num_lv=True), ["num_lv=True"]),
    (dict(row_effect="fixed"), ["row_effect='fixed'", "row_effect=None", "(1 | site)"]),
    (dict(response="other"), ["response='other'", "'abund'"]),
    (dict(X=pd.DataFrame({"x": [1.0]})), ["X= cannot be combined"]),
])
def test_contradicting_arguments_raise(sim, kw, words):
    _, long = sim
    with pytest.raises(JSDMError) as err:
        jsdm.gllvm(long, formula="abund ~ species + " + RR1, **kw)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_no_rr_term_means_no_latent_variables_and_num_lv_must_agree(sim):
    _, long = sim
    with pytest.raises(JSDMError, match="num_lv=2 contradicts .* num_lv=0"):
        jsdm.gllvm(long, formula="abund ~ species + species:x1", num_lv=2)


def test_offset_given_twice_raises(sim):
    _, long = sim
    long = long.assign(effort=1.0)
    with pytest.raises(JSDMError, match="offset is given twice"):
        jsdm.gllvm(long, formula="abund ~ species + offset(log(effort))", offset=np.zeros(25))


def test_offset_not_finite_names_rows(sim):
    _, long = sim
    long = long.assign(effort=np.r_[0.0, np.ones(len(long) - 1)])
    with pytest.raises(JSDMError, match=r"offset log\(effort\) is missing or infinite.*site01"):
        jsdm.gllvm(long, formula="abund ~ species + offset(log(effort))")


def test_offset_expression_that_cannot_be_evaluated(sim):
    _, long = sim
    with pytest.raises(JSDMError, match=r"could not evaluate offset\(log\(nothere\)\)"):
        jsdm.gllvm(long, formula="abund ~ species + offset(log(nothere))")


def test_slope_covariate_must_be_constant_within_site(sim):
    _, long = sim
    long = long.assign(cellvar=np.arange(len(long), dtype=float))
    with pytest.raises(JSDMError, match="species:cellvar needs 'cellvar' to be a site covariate"):
        jsdm.gllvm(long, formula="abund ~ species + species:cellvar")


def test_unknown_columns_are_named(sim):
    _, long = sim
    with pytest.raises(JSDMError, match="species:nothere names no column"):
        jsdm.gllvm(long, formula="abund ~ species + species:nothere")
    with pytest.raises(JSDMError, match=r"no column\(s\) \['count'\]"):
        jsdm.gllvm(long, formula="count ~ species")
    with pytest.raises(JSDMError, match="names no response"):
        jsdm.gllvm(long, formula="~ species")


def test_wide_table_with_lme4_formula_says_long_is_needed(sim):
    com, _ = sim
    with pytest.raises(JSDMError, match="needs a long table"):
        jsdm.gllvm(com.Y, formula="abund ~ species + species:x1")


def test_wide_path_is_unchanged(sim):
    com, _ = sim
    fit = quiet_fit(com, formula="~ x1")
    assert fit.num_lv == 2 and fit.settings["num_lv"] == 2
    assert fit.settings["formula"] == "~ x1" and "site_formula" not in fit.settings


def test_with_rank_rewrites_or_drops_the_rr_term():
    from jsdm.model.formula import parse_formula, with_rank

    f = "y ~ 0 + species + species:WatrCont + rr(0 + species | site, d = 2) + (1 | site)"
    assert parse_formula(with_rank(f, 3)).num_lv == 3
    assert parse_formula(with_rank(f, 0)).num_lv == 0
    assert parse_formula(with_rank(f, 0)).row_effect == "random"
    assert parse_formula(with_rank("y ~ species", 1)).num_lv == 1


def test_select_num_lv_accepts_an_lme4_formula():
    import warnings

    long = jsdm.datasets.load_mite().to_long()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        sel = jsdm.select_num_lv(long, formula="y ~ species + rr(0 + species | site, d = 2)",
                                 num_lv=[0, 1], family="poisson", n_init=1, seed=1)
    assert list(sel.table.index) == [0, 1]
    assert sel.fits[1].num_lv == 1 and sel.fits[0].num_lv == 0
    assert sel.table.loc[1, "llf"] > sel.table.loc[0, "llf"]
