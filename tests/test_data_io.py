"""CSV readers: wide (+ covariates, traits) and long files, and their errors."""
import numpy as np
import pandas as pd
import pytest

import jsdm
from jsdm import JSDMError


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def wide_files(tmp_path):
    y = write(tmp_path / "counts.csv", "site,sp1,sp2,sp3\n01,3,0,1\n02,0,NA,2\n10,1,1,0\n")
    x = write(tmp_path / "env.csv", "plot,depth,shrub\n10,2.5,Many\n01,1.0,None\n02,0.5,Few\n")
    t = write(tmp_path / "traits.csv", "species,size\nsp3,3.0\nsp1,1.0\nsp2,2.0\n")
    return y, x, t


def test_read_wide_aligns_and_keeps_text_labels(wide_files):
    y, x, t = wide_files
    com = jsdm.read_wide(y, covariates=x, traits=t)
    assert list(com.sites) == ["01", "02", "10"]  # leading zeros kept
    assert list(com.species) == ["sp1", "sp2", "sp3"]
    assert np.isnan(com.Y.loc["02", "sp2"]) and com.Y.loc["01", "sp1"] == 3.0
    assert com.X["depth"].tolist() == [1.0, 0.5, 2.5]
    assert com.X["shrub"].tolist() == ["None", "Few", "Many"]  # "None" is a level, not missing
    assert isinstance(com.X["shrub"].dtype, pd.CategoricalDtype)
    assert com.traits["size"].tolist() == [1.0, 2.0, 3.0]


def test_read_wide_response_only(wide_files):
    com = jsdm.read_wide(str(wide_files[0]))
    assert com.X is None and com.traits is None and com.Y.shape == (3, 3)


def test_read_wide_accepts_utf8_bom(tmp_path):
    y = tmp_path / "bom.csv"
    y.write_bytes("\ufeffsite,Picéa,b\nu,1,2\nv,0,3\n".encode("utf-8"))
    com = jsdm.read_wide(y)
    assert com.sites.name == "site" and list(com.species) == ["Picéa", "b"]


def test_read_wide_semicolon(tmp_path):
    y = write(tmp_path / "y.csv", "id;a;b\nu;1;2\nv;0;3\n")
    assert jsdm.read_wide(y, sep=";").Y.to_numpy().tolist() == [[1, 2], [0, 3]]


def test_read_wide_errors(tmp_path, wide_files):
    y, x, _ = wide_files
    with pytest.raises(JSDMError, match=r"response table file .*nope.csv' is not found"):
        jsdm.read_wide(tmp_path / "nope.csv")
    with pytest.raises(JSDMError, match="covariate file .* is a folder"):
        jsdm.read_wide(y, covariates=tmp_path)
    empty = write(tmp_path / "empty.csv", "")
    with pytest.raises(JSDMError, match="could not read response table file .*empty.csv"):
        jsdm.read_wide(empty)
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81\x82" * 50)
    with pytest.raises(JSDMError, match="could not read.*not UTF-8"):
        jsdm.read_wide(binary)
    one_col = write(tmp_path / "one.csv", "site\nu\nv\n")
    with pytest.raises(JSDMError, match="needs the id column first"):
        jsdm.read_wide(one_col)


def test_read_wide_bad_content_is_reported(tmp_path, wide_files):
    y, _, _ = wide_files
    text = write(tmp_path / "text.csv", "site,a,b\nu,1,few\nv,0,2\n")
    with pytest.raises(JSDMError, match=r"species \['b'\].*'few'"):
        jsdm.read_wide(text)
    x = write(tmp_path / "env2.csv", "site,depth\n01,1\n02,2\n99,3\n")
    with pytest.raises(JSDMError, match=r"in Y but not in X: \['10'\].*in X but not in Y: \['99'\]"):
        jsdm.read_wide(y, covariates=x)
    dup = write(tmp_path / "dup.csv", "site,a,b\nu,1,2\nu,0,2\n")
    with pytest.raises(JSDMError, match=r"duplicated site labels \['u'\]"):
        jsdm.read_wide(dup)


def test_read_long(tmp_path):
    path = write(tmp_path / "long.csv",
                 "plot,taxon,count,habitat,body\n"
                 "1,A,3,bog,1.5\n1,B,0,bog,0.2\n2,A,1,fen,1.5\n2,B,,fen,0.2\n3,B,2,bog,0.2\n")
    com = jsdm.read_long(path, site="plot", species="taxon", response="count")
    assert list(com.sites) == ["1", "2", "3"] and list(com.species) == ["A", "B"]
    assert com.covariates == ["habitat"] and com.trait_names == ["body"]
    assert isinstance(com.X["habitat"].dtype, pd.CategoricalDtype)
    assert np.isnan(com.Y.loc["2", "B"]) and np.isnan(com.Y.loc["3", "A"])


def test_read_long_errors(tmp_path):
    path = write(tmp_path / "long.csv", "site,species,y\nu,a,1\nu,a,2\n")
    with pytest.raises(JSDMError, match="repeat a"):
        jsdm.read_long(path)
    with pytest.raises(JSDMError, match=r"no column\(s\) \['count'\]"):
        jsdm.read_long(path, response="count")
    with pytest.raises(JSDMError, match="not found"):
        jsdm.read_long(tmp_path / "missing.csv")


def test_wide_files_round_trip_through_long_csv(tmp_path, wide_files):
    com = jsdm.read_wide(*wide_files)
    com.to_long().to_csv(tmp_path / "long.csv", index=False)
    back = jsdm.read_long(tmp_path / "long.csv")
    pd.testing.assert_frame_equal(back.Y, com.Y)
    assert back.X["depth"].tolist() == com.X["depth"].tolist()
