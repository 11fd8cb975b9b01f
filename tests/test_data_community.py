"""Community construction: alignment by label, validation of bad input, helpers."""
import warnings

import numpy as np
import pandas as pd
import pytest

import jsdm
from jsdm import Community, DataWarning, JSDMError


def make(Y, X=None, traits=None):
    """Build without letting DataWarnings through (tests of warnings use pytest.warns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return Community(Y, X, traits)


# --- alignment and copies ------------------------------------------------------
def test_rows_of_x_and_traits_are_aligned_by_label(toy_tables):
    Y, X, T = toy_tables
    com = make(Y, X, T)
    assert list(com.sites) == ["s4", "s2", "s3", "s1"]
    assert list(com.X.index) == list(com.sites)
    assert com.X.loc["s4", "temp"] == 4.0 and com.X["temp"].iloc[0] == 4.0
    assert list(com.traits.index) == ["b", "a", "c"]
    assert com.traits["size"].tolist() == [3.0, 2.0, 1.0]
    assert com.X["soil"].dtype == X["soil"].dtype
    assert com.traits["guild"].dtype == T["guild"].dtype


def test_properties(toy_tables):
    Y, X, T = toy_tables
    com = make(Y, X, T)
    assert (com.n_sites, com.n_species) == (4, 3)
    assert list(com.species) == ["b", "a", "c"]
    assert com.covariates == ["soil", "temp", "grazed", "n_visits"]
    assert com.trait_names == ["size", "guild"]
    assert com.Y.dtypes.eq("float64").all()
    assert com.sites.name == "site" and com.species.name == "species"
    assert com.missing_fraction == pytest.approx(3 / 12)
    assert com.response_type == "count"


@pytest.mark.filterwarnings("ignore::jsdm.exceptions.DataWarning")
def test_user_frames_are_not_modified(toy_tables):
    Y, X, T = toy_tables
    before = [t.copy(deep=True) for t in (Y, X, T)]
    com = make(Y, X, T)
    y = com.Y
    y.iloc[0, 0] = 99.0  # a copy: does not reach the community either
    make(Y, X, T).drop_empty(verbose=False)
    com.subset(sites=["s1", "s2"])
    for new, old in zip((Y, X, T), before):
        pd.testing.assert_frame_equal(new, old)
        assert new.index.name is None
    assert com.Y.iloc[0, 0] == 1.0


def test_series_x_and_integer_labels():
    Y = pd.DataFrame([[1, 2], [3, 0]], index=[2, 1], columns=["a", "b"])
    com = make(Y, pd.Series([0.5, 0.7], index=[1, 2], name="depth"))
    assert com.covariates == ["depth"]
    assert com.X["depth"].tolist() == [0.7, 0.5]


def test_nullable_and_bool_responses_become_float():
    Y = pd.DataFrame({"a": pd.array([1, None, 0], dtype="Int64"), "b": [True, False, True]})
    com = make(Y)
    assert np.isnan(com.Y.loc[1, "a"]) and com.Y["b"].tolist() == [1.0, 0.0, 1.0]


def test_response_type():
    assert make(pd.DataFrame({"a": [0, 1, np.nan], "b": [1, 1, 0]})).response_type == "binary"
    assert make(pd.DataFrame({"a": [0.5, 1.0], "b": [1, 2]})).response_type == "continuous"
    assert make(pd.DataFrame({"a": [-1, 1], "b": [1, 2]})).response_type == "continuous"


def test_repr_summarises(toy_tables):
    Y, X, T = toy_tables
    text = repr(make(Y, X, T))
    assert "4 sites x 3 species" in text
    assert "soil, temp, grazed, n_visits" in text and "size, guild" in text
    assert "25.0% missing" in text and "prevalence: min" in text


# --- bad input ------------------------------------------------------------------
@pytest.mark.parametrize("where", ["Y rows", "Y columns", "X rows", "traits rows"])
def test_duplicated_labels_are_named(toy_tables, where):
    Y, X, T = toy_tables
    if where == "Y rows":
        Y = Y.set_axis(["s1", "s2", "s1", "s3"], axis=0)
    elif where == "Y columns":
        Y = Y.set_axis(["a", "b", "a"], axis=1)
    elif where == "X rows":
        X = pd.concat([X, X.iloc[[1]]])
    else:
        T = pd.concat([T, T.iloc[[0]]])
    with pytest.raises(JSDMError, match=where + r".*duplicated .*labels \['(s1|a|s2|c)'\]"):
        make(Y, X, T)


def test_missing_label_is_an_error():
    Y = pd.DataFrame([[1, 2], [3, 0]], index=["x", np.nan], columns=["a", "b"])
    with pytest.raises(JSDMError, match="missing"):
        make(Y)


def test_misaligned_sites_name_both_sides(toy_tables):
    Y, X, T = toy_tables
    X = X.rename(index={"s3": "s9"})
    with pytest.raises(JSDMError) as err:
        make(Y, X, T)
    msg = str(err.value)
    assert "in Y but not in X: ['s3']" in msg and "in X but not in Y: ['s9']" in msg


def test_misaligned_species_in_traits(toy_tables):
    Y, X, T = toy_tables
    with pytest.raises(JSDMError, match=r"species labels in Y but not in traits: \['b'\]"):
        make(Y, X, T.drop(index="b"))


def test_label_type_mismatch_gets_a_hint():
    Y = pd.DataFrame([[1, 2], [3, 0]], index=["1", "2"], columns=["a", "b"])
    X = pd.DataFrame({"t": [1.0, 2.0]}, index=[1, 2])
    with pytest.raises(JSDMError, match="astype\\(str\\)"):
        make(Y, X)


def test_non_numeric_response_names_species_and_value():
    Y = pd.DataFrame({"a": [1, 2], "b": ["3", "many"]})
    with pytest.raises(JSDMError, match=r"species \['b'\].*'many'.*pd.to_numeric"):
        make(Y)


def test_categorical_response_is_rejected():
    Y = pd.DataFrame({"a": pd.Categorical(["lo", "hi"]), "b": [1, 2]})
    with pytest.raises(JSDMError, match=r"\['a'\]"):
        make(Y)


def test_inf_response_names_the_cell():
    Y = pd.DataFrame({"a": [1.0, np.inf], "b": [0.0, 2.0]}, index=["u", "v"])
    with pytest.raises(JSDMError, match=r"infinite.*\('v', 'a'\)"):
        make(Y)


def test_inf_covariate_names_the_site():
    Y = pd.DataFrame({"a": [1.0, 3.0], "b": [0.0, 2.0]}, index=["u", "v"])
    with pytest.raises(JSDMError, match=r"'t' is infinite at sites \['u'\]"):
        make(Y, pd.DataFrame({"t": [-np.inf, 1.0]}, index=["u", "v"]))


def test_non_dataframe_input_is_rejected():
    with pytest.raises(JSDMError, match="DataFrame"):
        Community(np.ones((3, 2)))


def test_name_shared_by_covariate_and_trait(toy_tables):
    Y, X, T = toy_tables
    with pytest.raises(JSDMError, match="both as site covariates and as traits"):
        make(Y, X, T.rename(columns={"size": "temp"}))


def test_empty_species_and_sites_warn_and_are_kept():
    Y = pd.DataFrame({"a": [1, 0, 2], "b": [0, 0, np.nan], "c": [np.nan] * 3, "d": [3, 0, 1]},
                     index=["u", "v", "w"])
    with pytest.warns(DataWarning, match=r"species .*\['b', 'c'\].*sites .*\['v'\].*drop_empty"):
        com = Community(Y)
    assert com.n_species == 4 and com.n_sites == 3
    assert list(com.empty()["species"]) == ["b", "c"]


def test_missing_covariates_warn():
    Y = pd.DataFrame({"a": [1, 2], "b": [3, 4]}, index=["u", "v"])
    with pytest.warns(DataWarning, match=r"\['t'\].*sites \['v'\]"):
        Community(Y, pd.DataFrame({"t": [1.0, np.nan]}, index=["u", "v"]))


def test_clean_data_raises_no_warning(toy_tables):
    Y, X, T = toy_tables
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Community(Y, X, T)


# --- helpers ----------------------------------------------------------------------
def test_drop_empty_returns_new_object_and_reports(capsys):
    Y = pd.DataFrame({"a": [1, 0, 2], "b": [0, 0, 0], "c": [2, 0, 1]}, index=["u", "v", "w"])
    X = pd.DataFrame({"t": [1.0, 2.0, 3.0]}, index=["w", "v", "u"])
    com = make(Y, X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = com.drop_empty()
    assert out.dropped == {"species": ["b"], "sites": ["v"]}
    assert "dropped 1 species ['b'] and 1 sites ['v']" in capsys.readouterr().out
    assert list(out.species) == ["a", "c"] and list(out.sites) == ["u", "w"]
    assert out.X["t"].tolist() == [3.0, 1.0]
    assert com.n_species == 3 and com.n_sites == 3


@pytest.mark.filterwarnings("ignore::jsdm.exceptions.DataWarning")
def test_subset_by_labels_and_mask(toy_tables):
    Y, X, T = toy_tables
    com = make(Y, X, T)
    sub = make(Y, X, T).subset(sites=["s1", "s3"], species=["c", "b"])
    assert list(sub.sites) == ["s1", "s3"] and list(sub.species) == ["c", "b"]
    assert sub.Y.loc["s1", "b"] == 3.0 and sub.traits["size"].tolist() == [1.0, 3.0]
    masked = com.subset(species=np.asarray(com.species != "a"))
    assert list(masked.species) == ["b", "c"]
    with pytest.raises(JSDMError, match=r"unknown site labels \['nope'\]"):
        com.subset(sites=["s1", "nope"])


def test_prevalence_ignores_missing_cells(toy_tables):
    Y, X, T = toy_tables
    prev = make(Y, X, T).prevalence
    assert prev.to_dict() == pytest.approx({"b": 2 / 3, "a": 2 / 3, "c": 2 / 3})
    assert make(pd.DataFrame({"a": [np.nan, np.nan], "b": [1, 0]})).prevalence.isna().tolist() == [
        True, False]


def test_equals(toy_tables):
    Y, X, T = toy_tables
    assert make(Y, X, T).equals(make(Y, X, T))
    assert not make(Y, X, T).equals(make(Y, X))
    assert not make(Y, X, T).equals(make(Y.fillna(0), X, T))
    assert not make(Y, X, T).equals("not a community")


def test_exported_at_top_level():
    assert jsdm.Community is Community
    assert callable(jsdm.read_wide) and callable(jsdm.read_long)
    assert jsdm.datasets.simulate_community is jsdm.simulate_community


def test_empty_table_is_an_error():
    with pytest.raises(JSDMError, match=r"shape \(0, 2\)"):
        Community(pd.DataFrame(columns=["a", "b"], dtype=float))
