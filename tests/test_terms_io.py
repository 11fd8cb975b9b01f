"""Saved fits and the terms architecture: format version 3, and files of versions 1-2 still load.

The ``legacy_v*.jsdm`` files were written by jsdm at commit 5e42c47 (format version
1) and 48eee2b (version 2, issue 13) with ``tests/data/make_legacy_fits.py`` (see
its docstring); they are not produced by the code under test.
"""
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import jsdm
from jsdm.results import io as fio

DATA = Path(__file__).resolve().parent / "data"
LEGACY = sorted(DATA.glob("legacy_v*_*.jsdm"))


def _manifest(path):
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("jsdm.json"))


def test_legacy_files_are_there():
    assert {p.name for p in LEGACY} == {f"legacy_v{v}_{m}.jsdm" for v in (1, 2)
                                        for m in ("randomrow", "fixedrow")}


@pytest.mark.parametrize("path", LEGACY, ids=[p.stem for p in LEGACY])
def test_files_of_earlier_format_versions_load_with_the_same_bound(path, tmp_path):
    man = _manifest(path)
    assert man["format_version"] in (1, 2) and "terms" not in man
    fit = jsdm.load(path)                 # also recomputes the ELBO and compares it
    assert fit.llf == pytest.approx(float(man["summary"]["llf"]), rel=1e-12)
    P = fit.state.params
    assert fit.state.grad.shape == (fit.state.layout.size,)
    if "randomrow" in path.name:
        assert P.L.shape == (30, 3, 3)    # the joint factor: LV1, LV2, then the row effect
        np.testing.assert_array_equal(P.L[:, 2, :2], 0.0)      # what versions 1-2 fitted
        assert fit.row_sigma > 0 and np.all(np.isfinite(P.log_rho))
        assert [t.kind for t in fit.model_terms] == ["intercepts", "lv", "row_random"]
    else:
        assert P.L.shape == (30, 2, 2)
        assert [t.kind for t in fit.model_terms] == ["intercepts", "slopes", "lv", "row_fixed"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        se = fit.bse
    assert se.index.equals(fit.params.index) and np.isfinite(se.to_numpy()).mean() > 0.8
    # saved again, it is a version 3 file listing the terms; it loads unchanged
    out = tmp_path / "again.jsdm"
    fit.save(out)
    man3 = _manifest(out)
    assert man3["format_version"] == fio.FORMAT_VERSION == 3
    assert man3["terms"] == [t.spec() for t in fit.problem.model_terms]
    back = jsdm.load(out)
    assert back.llf == fit.llf
    for name, value in fit.state.params.fields().items():
        np.testing.assert_array_equal(getattr(back.state.params, name), value, err_msg=name)


def test_legacy_random_row_fit_refits_to_a_higher_bound():
    """The joint q can only do better than the version 1-2 optimum it starts from."""
    old = jsdm.load(DATA / "legacy_v1_randomrow.jsdm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new = jsdm.gllvm(old.community, family="nb", num_lv=2, row_effect="random", n_init=1,
                         seed=0)
    assert new.llf >= old.llf - 1e-6
