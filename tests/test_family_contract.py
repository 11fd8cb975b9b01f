"""Family names are not hard-coded outside ``jsdm/families/`` (issue 14): the layers above
ask the family. A new family is one file registered in ``jsdm.families``."""
import re
from pathlib import Path

import numpy as np
import pytest

from jsdm.families import _REGISTRY, Family, get_family

PKG = Path(__file__).resolve().parents[1] / "jsdm"
NAMES = sorted({cls.name for cls in _REGISTRY.values()})


def test_no_family_name_dispatch_outside_families():
    """No ``family.name ==`` and no family name compared, listed or used as a dict key in
    code outside families/ (default arguments such as ``family="poisson"`` are fine)."""
    lit = r"""["'](?:%s)["']""" % "|".join(map(re.escape, NAMES))
    pattern = re.compile(rf"(==|!=)\s*{lit}|{lit}\s*(==|!=)|\bin\s*[(\[{{][^)\]}}]*{lit}|{lit}\s*:")
    hits = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).as_posix()
        if rel.startswith("families/"):
            continue
        text = path.read_text()
        code = re.sub(r'"""(?:.|\n)*?"""', "", text)            # docstrings
        for k, line in enumerate(code.splitlines()):
            line = line.split("#")[0]
            if re.search(r"family\.name\s*(==|!=|in\b)", line):
                hits.append(f"{rel}: {line.strip()}")
            elif pattern.search(line):
                hits.append(f"{rel}: {line.strip()}")
    assert not hits, "family names hard-coded outside jsdm/families/:\n" + "\n".join(hits)


@pytest.mark.parametrize("name", sorted({c.name for c in _REGISTRY.values()}))
def test_every_family_answers_the_questions_the_layers_ask(name):
    fam = get_family(name)
    m = 3
    y = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]])
    if name in ("beta", "ordered_beta", "beta_hurdle"):
        y = np.array([[0.2, 0.5, 0.7], [0.4, 0.3, 0.9]])
    if name in ("gamma",):
        y = y + 0.5
    assert isinstance(fam.describe(), str) and fam.describe()
    disp = None
    if fam.has_dispersion and fam.n_dispersion(y) is None:
        disp = np.full(m, fam.default_dispersion if fam.default_dispersion else 1.0)
    v = fam.link_variance(disp, m)
    assert np.shape(v) == (m,) and np.all(np.asarray(v) >= 0)
    info = fam.informative_records(y)
    assert info is None or np.shape(info) == (m,)
    assert isinstance(fam.dispersion_can_vanish, bool)
    assert isinstance(fam.dispersion_is_response_sd, bool)
    tr = np.full((2, 2), 3.0) if fam.uses_trials else None
    fam.check_y(np.full((2, 2), fam.missing_fill), tr)      # the fill value is a valid response
    s0 = fam.start_intercept(y, np.ones_like(y))
    assert np.shape(s0) == (m,) and np.all(np.isfinite(s0))
    size = fam.size(disp) if disp is not None else None
    assert size is None or np.shape(size) == (m,)


def test_a_family_defined_outside_the_package_needs_no_edits_elsewhere():
    """A subclass with its own answers is used as given (nothing looks up its name)."""
    from jsdm.families.poisson import Poisson

    class Counted(Poisson):
        name = "counted_poisson"
        description = "a test family"
        link_residual_variance = 0.25

    fam = Counted()
    assert fam.describe() == "a test family"
    np.testing.assert_array_equal(fam.link_variance(None, 4), np.full(4, 0.25))
    assert isinstance(fam, Family)
