"""Wide <-> long: exact round trips and the bad inputs of the long form."""
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jsdm import Community, DataWarning, JSDMError


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return fn(*args, **kwargs)


def assert_same(a, b):
    """Communities equal in labels, order, values, NaN positions and dtypes."""
    for x, y in ((a.Y, b.Y), (a.X, b.X), (a.traits, b.traits)):
        if x is None or y is None:
            assert x is None and y is None
            continue
        pd.testing.assert_frame_equal(x, y, check_exact=True)
        assert x.index.dtype == y.index.dtype and x.columns.dtype == y.columns.dtype
    assert a.equals(b)


# --- to_long -------------------------------------------------------------------------
def test_to_long_columns_order_and_values(toy_tables):
    com = quiet(Community, *toy_tables)
    long = com.to_long()
    assert list(long.columns) == ["site", "species", "y", "soil", "temp", "grazed", "n_visits",
                                  "size", "guild"]
    assert len(long) == 12 - 3  # three NaN cells dropped
    assert list(long["site"].cat.categories) == ["s4", "s2", "s3", "s1"]
    row = long[(long["site"] == "s1") & (long["species"] == "b")].iloc[0]
    assert row["y"] == 3.0 and row["temp"] == 1.5 and row["size"] == 3.0 and row["soil"] == "wet"
    assert long["soil"].dtype == com.X["soil"].dtype
    assert long["grazed"].dtype == bool and long["n_visits"].dtype == np.int64
    assert not long["y"].isna().any()


def test_to_long_keeps_nan_cells_when_asked(toy_tables):
    com = quiet(Community, *toy_tables)
    long = com.to_long(response="count", dropna=False)
    assert len(long) == 12 and long["count"].isna().sum() == 3
    assert long["site"].astype(str).tolist()[:3] == ["s4"] * 3  # site-major
    assert long["species"].astype(str).tolist()[:3] == ["b", "a", "c"]


def test_to_long_name_clash_is_an_error():
    Y = pd.DataFrame({"a": [1, 2], "b": [0, 3]})
    com = Community(Y, pd.DataFrame({"y": [1.0, 2.0]}))
    with pytest.raises(JSDMError, match="same name as the response column"):
        com.to_long()
    assert "y" in com.to_long(response="abundance").columns


# --- round trips ----------------------------------------------------------------------
@pytest.mark.parametrize("dropna", [True, False], ids=["dropna", "keepna"])
def test_round_trip_is_exact(toy_tables, dropna):
    com = quiet(Community, *toy_tables)
    back = Community.from_long(com.to_long(dropna=dropna))
    assert_same(com, back)


def test_round_trip_integer_labels_and_text_covariate():
    Y = pd.DataFrame([[1, np.nan, 0], [2, 3, 4]], index=[10, 3], columns=[7, 2, 5])
    X = pd.DataFrame({"habitat": pd.array(["bog", "fen"], dtype="str"), "ph": [4.1, 5.0]},
                     index=[3, 10])
    com = Community(Y, X)
    for dropna in (True, False):
        assert_same(com, Community.from_long(com.to_long(dropna=dropna)))


def test_round_trip_without_covariates():
    com = Community(pd.DataFrame({"a": [1, 0, np.nan], "b": [2, 2, 1]}, index=["u", "v", "w"]))
    back = Community.from_long(com.to_long())
    assert_same(com, back)
    assert back.X is None and back.traits is None


def test_round_trip_of_mite():
    from jsdm import datasets
    com = datasets.load_mite()
    assert_same(com, Community.from_long(com.to_long()))


def test_all_missing_species_keeps_its_label_after_dropna():
    Y = pd.DataFrame({"a": [1.0, 2.0], "b": [np.nan, np.nan], "c": [0.0, 3.0]}, index=["u", "v"])
    com = quiet(Community, Y)
    back = quiet(Community.from_long, com.to_long(dropna=True))
    assert list(back.species) == ["a", "b", "c"]
    assert_same(com, back)


def _frames(draw_nan):
    """Strategy for small wide tables: (Y, X, traits) with NaN cells and categoricals."""
    @st.composite
    def build(draw):
        n = draw(st.integers(1, 5))
        m = draw(st.integers(1, 4))
        cells = st.one_of(st.integers(0, 9).map(float), st.just(np.nan)) if draw_nan else \
            st.integers(0, 9).map(float)
        vals = draw(st.lists(cells, min_size=n * m, max_size=n * m))
        sites = draw(st.lists(st.text("abcxyz", min_size=1, max_size=3), min_size=n,
                              max_size=n, unique=True))
        spp = draw(st.lists(st.integers(0, 50), min_size=m, max_size=m, unique=True))
        Y = pd.DataFrame(np.array(vals).reshape(n, m), index=sites, columns=spp)
        perm = draw(st.permutations(range(n)))
        levels = ["lo", "mid", "hi"]
        X = pd.DataFrame({
            "g": pd.Categorical(draw(st.lists(st.sampled_from(levels), min_size=n, max_size=n)),
                                categories=levels, ordered=True),
            "t": draw(st.lists(st.floats(-5, 5, allow_nan=False), min_size=n, max_size=n)),
        }, index=sites).iloc[list(perm)]
        traits = pd.DataFrame({"w": draw(st.lists(st.integers(-3, 3), min_size=m, max_size=m))},
                              index=spp)
        return Y, X, traits
    return build()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_frames(draw_nan=True))
def test_round_trip_property_keepna(tables):
    com = quiet(Community, *tables)
    back = quiet(Community.from_long, com.to_long(dropna=False), covariates=["g", "t"],
                 traits=["w"])
    assert_same(com, back)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_frames(draw_nan=False))
def test_round_trip_property_dropna_values(tables):
    com = quiet(Community, *tables)
    back = quiet(Community.from_long, com.to_long(dropna=True), covariates=["g", "t"],
                 traits=["w"])
    assert_same(com, back)


# --- from_long ---------------------------------------------------------------------------
def long_table():
    return pd.DataFrame({
        "plot": ["p1", "p1", "p2", "p2", "p3"],
        "taxon": ["A", "B", "A", "B", "B"],
        "n": [3, 0, 1, 4, 2],
        "elev": [100.0, 100.0, 250.0, 250.0, 80.0],
        "mass": [1.2, 0.4, 1.2, 0.4, 0.4],
    })


def test_from_long_classifies_and_fills_absent_cells_with_nan():
    df = long_table()
    before = df.copy()
    com = Community.from_long(df, site="plot", species="taxon", response="n")
    pd.testing.assert_frame_equal(df, before)
    assert com.covariates == ["elev"] and com.trait_names == ["mass"]
    assert list(com.sites) == ["p1", "p2", "p3"] and list(com.species) == ["A", "B"]
    assert np.isnan(com.Y.loc["p3", "A"])  # absent: missing, not zero
    assert com.Y.loc["p1", "B"] == 0.0
    assert com.X["elev"].tolist() == [100.0, 250.0, 80.0]


def test_explicit_columns_are_checked():
    df = long_table()
    with pytest.raises(JSDMError, match=r"site covariate 'mass' takes different values within "
                                        r"plot \['p1', 'p2'\]"):
        Community.from_long(df, site="plot", species="taxon", response="n", covariates=["mass"])
    with pytest.raises(JSDMError, match="'nope' is not a column"):
        Community.from_long(df, site="plot", species="taxon", response="n", traits=["nope"])


def test_covariate_varying_within_site_is_an_error():
    df = long_table()
    df.loc[1, "elev"] = 101.0  # p1 has two elevations; elev also varies within species
    with pytest.raises(JSDMError, match=r"'elev' varies within sites \(e.g. \['p1'\]\)"):
        Community.from_long(df, site="plot", species="taxon", response="n")
    with pytest.raises(JSDMError, match=r"'elev' takes different values within plot \['p1'\]"):
        Community.from_long(df, site="plot", species="taxon", response="n", covariates=["elev"])


def test_column_constant_within_both_becomes_covariate_with_warning():
    df = long_table().assign(year=2020)
    with pytest.warns(DataWarning, match=r"\['year'\].*kept as site covariates"):
        com = Community.from_long(df, site="plot", species="taxon", response="n")
    assert "year" in com.covariates and "year" not in com.trait_names
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        com = Community.from_long(df, site="plot", species="taxon", response="n",
                                  traits=["year"])
    assert "year" in com.trait_names


def test_duplicated_cells_are_an_error():
    df = pd.concat([long_table(), long_table().iloc[[2]]], ignore_index=True)
    with pytest.raises(JSDMError, match=r"repeat a \(plot, taxon\) pair.*\('p2', 'A'\).*groupby"):
        Community.from_long(df, site="plot", species="taxon", response="n")


def test_non_numeric_response_in_long_form():
    df = long_table().astype({"n": object})
    df.loc[3, "n"] = "lots"
    with pytest.raises(JSDMError, match=r"\('p2', 'B', 'lots'\)"):
        Community.from_long(df, site="plot", species="taxon", response="n")


def test_missing_columns_and_labels():
    df = long_table()
    with pytest.raises(JSDMError, match=r"no column\(s\) \['site', 'species', 'y'\]"):
        Community.from_long(df)
    df.loc[2, "plot"] = None
    with pytest.raises(JSDMError, match=r"site column 'plot' is missing \(NaN\) in rows \[2\]"):
        Community.from_long(df, site="plot", species="taxon", response="n")
