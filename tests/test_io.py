"""Saving and loading fits: open format (JSON + .npy in one zip), exact round trips,
versioning, clear errors."""
import io
import json
import warnings
import zipfile

import numpy as np
import pandas as pd
import pytest

import jsdm
from jsdm.exceptions import JSDMError
from jsdm.results import io as fio


def _quiet_fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        return jsdm.gllvm(*args, **kwargs)


def _small_mite(n_sites=30, n_species=8):
    """A small mite community with standardised numeric covariates (all covariate dtypes kept)."""
    com = jsdm.datasets.load_mite()
    species = list(com.prevalence.sort_values(ascending=False).index[:n_species])
    com = com.subset(sites=list(com.sites[:n_sites]), species=species)
    X = com.X
    for c in ("SubsDens", "WatrCont"):
        X[c] = (X[c] - X[c].mean()) / X[c].std()
    return jsdm.Community(com.Y, X)


@pytest.fixture(scope="module")
def fit():
    """NB fit with a categorical covariate in the formula (all mite covariates kept)."""
    return _quiet_fit(_small_mite(), family="nb", num_lv=2, formula="~ WatrCont + Topo",
                      seed=3, n_init=1)


@pytest.fixture(scope="module")
def fit_rows():
    """Poisson fit with random row effects, missing cells, traits and integer labels."""
    rng = np.random.default_rng(0)
    site_effect = np.exp(rng.normal(0.0, 0.5, (25, 1)))
    Y = pd.DataFrame(rng.poisson(3.0 * site_effect, (25, 5)).astype(float), index=np.arange(100, 125),
                     columns=[f"sp {k} <&>" for k in range(5)])
    Y.iloc[2, 1] = np.nan
    Y.iloc[7, 4] = np.nan
    X = pd.DataFrame({"x": rng.normal(size=25), "grazed": rng.random(25) > 0.5,
                      "n": rng.integers(0, 5, 25)}, index=Y.index)
    traits = pd.DataFrame({"size": rng.normal(size=5), "guild": pd.Categorical(list("ababa"))},
                          index=Y.columns)
    com = jsdm.Community(Y, X, traits)
    return _quiet_fit(com, family="poisson", num_lv=1, formula="~ x", row_effect="random",
                      seed=1, n_init=1)


@pytest.fixture
def saved(fit, tmp_path):
    path = tmp_path / "fit.jsdm"
    fit.save(path)
    return path


def _same_params(a, b):
    for name in ("beta0", "B", "theta", "a", "L", "s", "alpha", "log_rho"):
        x, y = getattr(a.state.params, name), getattr(b.state.params, name)
        assert (x is None) == (y is None), name
        if x is not None:
            np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.state.params.log_sigma == b.state.params.log_sigma


def test_round_trip_restores_problem_state_and_settings(fit, saved):
    back = jsdm.load(saved)
    assert isinstance(back, jsdm.GLLVMResults)
    _same_params(fit, back)
    for name in ("Y", "W", "X"):
        np.testing.assert_array_equal(getattr(fit.problem, name), getattr(back.problem, name))
    assert back.problem.offset is None and back.problem.trials is None
    assert back.sites.equals(fit.sites) and back.species.equals(fit.species)
    assert back.sites.dtype == fit.sites.dtype and back.sites.name == fit.sites.name
    assert back.terms == fit.terms and isinstance(back.problem.terms, tuple)
    assert (back.family.name, back.family.link) == ("negative_binomial", "log")
    assert (back.num_lv, back.row_effect, back.problem.formula) == (2, None, "~ WatrCont + Topo")
    st, bst = fit.state, back.state
    assert (bst.value, bst.converged, bst.n_iter, bst.n_eval, bst.message, bst.elapsed) == (
        st.value, st.converged, st.n_iter, st.n_eval, st.message, st.elapsed)
    np.testing.assert_array_equal(bst.grad, st.grad)
    assert bst.start_values == st.start_values
    pd.testing.assert_frame_equal(back.history, fit.history)     # NaN-aware, dtypes kept
    assert [type(v) for v in bst.history[0]] == [type(v) for v in st.history[0]]
    assert bst.layout.size == st.layout.size
    assert back.settings == fit.settings
    assert (back.llf, back.df, back.aic, back.bic) == (fit.llf, fit.df, fit.aic, fit.bic)


def test_round_trip_restores_community_tables_with_dtypes(fit, saved):
    back = jsdm.load(saved)
    assert back.community.equals(fit.community)
    shrub = back.community.X["Shrub"].dtype
    assert isinstance(shrub, pd.CategoricalDtype) and shrub.ordered
    assert list(shrub.categories) == ["None", "Few", "Many"]


def test_reloaded_fit_gives_same_summary_and_predictions(fit, saved):
    back = jsdm.load(saved)
    assert str(back.summary()) == str(fit.summary())
    pd.testing.assert_frame_equal(back.predict(type="response"), fit.predict(type="response"))
    new = fit.community.X.iloc[:4]
    pd.testing.assert_frame_equal(back.predict(new, type="link"), fit.predict(new, type="link"))
    pd.testing.assert_frame_equal(back.loadings, fit.loadings)
    pd.testing.assert_frame_equal(back.residual_correlation(), fit.residual_correlation())


def test_round_trip_with_row_effects_missing_cells_traits_and_odd_labels(fit_rows, tmp_path):
    path = fit_rows.save(tmp_path / "rows.jsdm")
    back = jsdm.load(path)
    _same_params(fit_rows, back)
    assert back.community.equals(fit_rows.community)
    assert back.sites.dtype == fit_rows.sites.dtype and list(back.species) == list(fit_rows.species)
    np.testing.assert_array_equal(back.problem.W, fit_rows.problem.W)
    assert back.row_sigma == fit_rows.row_sigma
    pd.testing.assert_frame_equal(back.fitted(), fit_rows.fitted())
    assert str(back.summary()) == str(fit_rows.summary())


def test_round_trip_keeps_offsets_and_trials(tmp_path):
    rng = np.random.default_rng(5)
    Y = pd.DataFrame(rng.binomial(4, 0.4, (15, 3)).astype(float), columns=list("abc"))
    Y.index = [f"s{i}" for i in range(15)]
    trials = np.full((15, 3), 4.0)
    f = _quiet_fit(Y, family="binomial", num_lv=1, trials=trials, offset=rng.normal(size=15) * 0.1,
                   seed=2, n_init=1)
    back = jsdm.load(f.save(tmp_path / "b.jsdm"))
    np.testing.assert_array_equal(back.problem.trials, f.problem.trials)
    np.testing.assert_array_equal(back.problem.offset, f.problem.offset)
    pd.testing.assert_frame_equal(back.fitted(), f.fitted())


def test_file_is_open_json_and_npy_without_pickle(fit, saved):
    with zipfile.ZipFile(saved) as zf:
        names = zf.namelist()
        manifest = json.loads(zf.read("jsdm.json"))
        arrays = {n: np.lib.format.read_array(io.BytesIO(zf.read(n)), allow_pickle=False)
                  for n in names if n.endswith(".npy")}
    assert set(names) == {"jsdm.json", "checksums.json", *arrays}
    listed = json.loads(zf_read(saved, "checksums.json"))["members"]
    assert set(listed) == {"jsdm.json", *arrays}
    assert manifest["format"] == "jsdm-fit" and manifest["format_version"] == fio.FORMAT_VERSION
    assert manifest["jsdm_version"] == jsdm.__version__
    assert all(a.dtype != object for a in arrays.values())
    np.testing.assert_array_equal(arrays["state/params/theta.npy"], fit.state.params.theta)
    with np.load(saved, allow_pickle=False) as npz:      # also a valid .npz
        np.testing.assert_array_equal(npz["problem/Y"], fit.problem.Y)


def test_saving_does_not_change_the_fit(fit, tmp_path):
    before = fit.state.params.copy()
    Y = fit.community.Y
    fit.save(tmp_path / "again.jsdm")
    np.testing.assert_array_equal(before.theta, fit.state.params.theta)
    pd.testing.assert_frame_equal(Y, fit.community.Y)


def zf_read(path, name):
    with zipfile.ZipFile(path) as zf:
        return zf.read(name)


def _rewrite_manifest(path, change):
    """Edit the manifest and write consistent checksums (as a newer jsdm would)."""
    from jsdm.results._archive import checksum_record

    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist() if n != "checksums.json"}
    manifest = json.loads(members["jsdm.json"])
    change(manifest)
    members["jsdm.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
        zf.writestr("checksums.json", checksum_record(members))


def test_newer_format_version_is_a_clear_error(saved):
    _rewrite_manifest(saved, lambda m: m.update(format_version=fio.FORMAT_VERSION + 1,
                                                jsdm_version="9.9"))
    with pytest.raises(JSDMError, match=rf"format version {fio.FORMAT_VERSION + 1} .*jsdm 9\.9.*Upgrade jsdm"):
        jsdm.load(saved)


@pytest.mark.parametrize("content", [b"site,a\n1,2\n", b""], ids=["csv", "empty"])
def test_non_fit_files_are_refused(tmp_path, content):
    path = tmp_path / "x.jsdm"
    path.write_bytes(content)
    with pytest.raises(JSDMError, match="not a readable jsdm fit file"):
        jsdm.load(path)


def test_zip_without_manifest_or_with_wrong_format_is_refused(saved, tmp_path):
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("data.txt", "hello")
    with pytest.raises(JSDMError, match="no jsdm.json inside"):
        jsdm.load(other)
    _rewrite_manifest(saved, lambda m: m.update(format="something-else"))
    with pytest.raises(JSDMError, match="not a jsdm fit file"):
        jsdm.load(saved)


def test_missing_file_and_missing_folder(fit, tmp_path):
    with pytest.raises(JSDMError, match="not found"):
        jsdm.load(tmp_path / "nope.jsdm")
    with pytest.raises(JSDMError, match="does not exist"):
        fit.save(tmp_path / "no" / "such" / "folder" / "f.jsdm")
