"""Bundled data sets: contents, types, and loading from an installed wheel."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jsdm import datasets

ROOT = Path(__file__).resolve().parents[1]


def test_mite():
    com = datasets.load_mite()
    assert (com.n_sites, com.n_species) == (70, 35)
    assert list(com.sites[:3]) == ["1", "2", "3"] and com.sites[-1] == "70"
    assert com.covariates == ["SubsDens", "WatrCont", "Substrate", "Shrub", "Topo"]
    assert com.response_type == "count" and com.missing_fraction == 0.0
    X = com.X
    assert not X.isna().to_numpy().any()
    shrub = X["Shrub"].dtype
    assert shrub.ordered and list(shrub.categories) == ["None", "Few", "Many"]
    assert X["Shrub"].value_counts().to_dict() == {"Few": 26, "Many": 25, "None": 19}
    assert list(X["Topo"].cat.categories) == ["Blanket", "Hummock"]
    assert len(X["Substrate"].cat.categories) == 7
    # values straight from the source file
    assert com.Y.loc["1", "Brachy"] == 17 and com.Y.loc["2", "LCIL"] == 138
    assert X.loc["1", "WatrCont"] == pytest.approx(350.15)
    assert com.Y.to_numpy().sum() == 9800.0  # checked with the csv module


def test_dune():
    com = datasets.load_dune()
    assert (com.n_sites, com.n_species) == (20, 30)
    Y = com.Y.to_numpy()
    assert set(np.unique(Y)) <= set(range(10))
    X = com.X
    assert not X.isna().to_numpy().any()
    assert list(X["Moisture"].cat.categories) == ["1", "2", "4", "5"] and X["Moisture"].cat.ordered
    assert list(X["Use"].cat.categories) == ["Hayfield", "Haypastu", "Pasture"]
    assert list(X["Management"].cat.categories) == ["BF", "HF", "NM", "SF"]
    assert X.loc["14", "A1"] == pytest.approx(9.3) and X.loc["1", "Manure"] == "4"


def test_aravo():
    import csv

    com = datasets.load_aravo()
    assert (com.n_sites, com.n_species) == (75, 82)
    Y = com.Y.to_numpy()
    assert set(np.unique(Y)) == set(range(6))
    assert com.Y.loc["AR07", "Care.rosa"] == 1 and com.Y.loc["AR07", "Care.rupe"] == 3
    with datasets.data_path("aravo.csv").open("r", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))[1:]
    assert Y.sum() == sum(float(v) for r in rows for v in r[1:])         # read independently
    X = com.X
    assert list(X.columns) == ["Aspect", "Slope", "Form", "PhysD", "ZoogD", "Snow"]
    assert X["ZoogD"].cat.ordered and list(X["ZoogD"].cat.categories) == ["no", "some", "high"]
    assert list(X["Form"].cat.categories) == ["1", "2", "3", "4", "5"]
    assert X.loc["AR07", "Snow"] == 140 and X.loc["AR71", "Slope"] == 35
    T = com.traits
    assert T.shape == (82, 9) and T.loc["Agro.rupe", "full_name"] == "Agrostis rupestris All."
    assert T.loc["Alop.alpi", "SLA"] == pytest.approx(15.1)


def test_provenance_is_shipped():
    text = datasets.data_path("PROVENANCE.md").read_text(encoding="utf-8")
    assert "Borcard" in text and "MIT" in text and "nuee" in text
    assert "Choler" in text and "ade4" in text


def _build_wheel(tmp_path):
    """Build a wheel from a copy of the source (the checkout stays clean) or skip."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "jsdm", src / "jsdm", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    dist = tmp_path / "dist"
    errors = []
    for extra in (["--no-build-isolation"], []):  # offline first, then with a build env
        cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(dist)]
        run = subprocess.run(cmd + extra, capture_output=True, text=True, timeout=300)
        wheels = list(dist.glob("jsdm-*.whl"))
        if run.returncode == 0 and wheels:
            return wheels[0]
        errors.append(run.stderr[-400:])
    pytest.skip("could not build a wheel here: " + " | ".join(errors))


def test_data_loads_from_installed_wheel(tmp_path):
    wheel = _build_wheel(tmp_path)
    target = tmp_path / "site"
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                          "--target", str(target), str(wheel)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (target / "jsdm" / "data" / "files").iterdir()) == [
        "PROVENANCE.md", "aravo.csv", "aravo.env.csv", "aravo.traits.csv", "dune.csv",
        "dune.env.csv", "mite.csv", "mite.env.csv"]
    code = ("import jsdm, sys; m = jsdm.datasets.load_mite(); d = jsdm.datasets.load_dune(); "
            "a = jsdm.datasets.load_aravo(); print(jsdm.__file__); "
            "print(m.n_sites, m.n_species, d.n_sites, d.n_species, a.n_sites, a.traits.shape[1])")
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    where, sizes = out.stdout.strip().splitlines()
    assert Path(where).resolve().is_relative_to(target.resolve())  # not the source checkout
    assert sizes == "70 35 20 30 75 9"
