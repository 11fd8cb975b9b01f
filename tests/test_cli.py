"""The ``jsdm`` command line: both commands on bundled and written-out CSV data (wide
and long), files written, exit codes, progress, and one-line errors."""
import hashlib
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import jsdm
from jsdm.cli import main
from jsdm.report import SECTIONS

TABLES = ("coefficients.csv", "species.csv", "residual_correlations.csv", "site_scores.csv",
          "loadings.csv", "variance_partition.csv", "diagnostics.csv")
IMG = '<img src="data:image/png;base64,'
ALL_IDS = [sid for sid, _, _ in SECTIONS if sid != "selection"]


def _run_module(*args, timeout=600):
    """``python -m jsdm ARGS`` in a subprocess (no pytest warning filters there)."""
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "jsdm", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _small_community():
    com = jsdm.datasets.load_mite()
    species = list(com.prevalence.sort_values(ascending=False).index[:8])
    return com.subset(sites=list(com.sites[:30]), species=species)


@pytest.fixture(scope="module")
def csvs(tmp_path_factory):
    """Wide (Y, X, traits) and long CSV files written from a small mite subset."""
    d = tmp_path_factory.mktemp("csv")
    com = _small_community()
    com.Y.to_csv(d / "Y.csv", index_label="site")
    com.X.to_csv(d / "X.csv", index_label="site")
    traits = pd.DataFrame({"body_size": np.linspace(0.2, 0.9, com.n_species)}, index=com.species)
    traits.to_csv(d / "T.csv", index_label="species")
    long = com.to_long(response="count")
    long.to_csv(d / "long.csv", index=False)
    return d


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.csv")}


def _check_outputs(out, selection=False, num_lv=2):
    """Every output exists and the report holds each section and its figures
    (coefficients, variance partition, residuals; heatmap with LVs; biplot with 2+ LVs)."""
    for name in ("report.html", "summary.txt", "fit.jsdm", *TABLES):
        if num_lv or name not in ("residual_correlations.csv", "site_scores.csv", "loadings.csv"):
            assert (out / name).is_file(), name
    assert (out / "model_selection.csv").is_file() == selection
    html = (out / "report.html").read_text(encoding="utf-8")
    ids = ALL_IDS + (["selection"] if selection else [])
    for sid in ids:
        assert f'<section id="{sid}">' in html, sid
    assert "could not be produced" not in html
    assert html.count(IMG) == 3 + (num_lv >= 1) + (num_lv >= 2)
    return html


# --- the example ---------------------------------------------------------------------
def test_report_example_mite_via_python_m_jsdm(tmp_path):
    """README's main command, with its defaults (NB, 2 LVs, standardised covariates)."""
    out = tmp_path / "mite"
    res = _run_module("report", "--example", "mite", "--out", out, "--n-init", "1")
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert re.search(r"jsdm: fitted in [\d.]+ s: num_lv=2", res.stderr)
    html = _check_outputs(out)
    assert "negative binomial distribution" in html and "SubsDens, WatrCont" in html
    assert "standardised to mean 0" in html
    fit = jsdm.load(out / "fit.jsdm")
    assert (fit.family.name, fit.num_lv, fit.problem.m, fit.problem.n) == ("negative_binomial", 2, 35, 70)
    coefs = pd.read_csv(out / "coefficients.csv")
    assert list(coefs.columns) == ["block", "species", "term", "estimate", "se", "z", "p", "lower", "upper"]
    assert set(coefs.loc[coefs.block == "coef", "term"]) == {"Intercept", "SubsDens", "WatrCont"}
    assert coefs.loc[coefs.block == "coef", "se"].notna().all()
    pairs = pd.read_csv(out / "residual_correlations.csv")
    assert len(pairs) == 35 * 34 // 2 and {"lower", "upper", "excludes_zero"} <= set(pairs.columns)


def test_report_example_in_process_with_options(tmp_path, capsys):
    out = tmp_path / "p"
    status = main(["report", "--example", "mite", "--out", str(out), "--family", "poisson",
                   "--num-lv", "1", "--seed", "7", "--n-init", "1"])
    assert status == 0
    _check_outputs(out, num_lv=1)
    fit = jsdm.load(out / "fit.jsdm")
    assert (fit.family.name, fit.num_lv, fit.settings["seed"]) == ("poisson", 1, 7)
    assert "random seed 7" in (out / "report.html").read_text()
    err = capsys.readouterr().err
    assert "jsdm: fitting poisson GLLVM with 1 latent variable(s) to 70 sites x 35 species" in err


# --- user files ------------------------------------------------------------------------
def test_fit_wide_csvs_writes_everything_and_reloads(csvs, tmp_path):
    before = _digest(csvs)
    out = tmp_path / "wide"
    status = main(["fit", str(csvs / "Y.csv"), "--covariates", str(csvs / "X.csv"),
                   "--traits", str(csvs / "T.csv"), "--family", "poisson", "--num-lv", "2",
                   "--formula", "~ SubsDens + WatrCont", "--standardise", "--n-init", "1",
                   "--out", str(out), "--quiet", "--title", "My mites"])
    assert status == 0
    html = _check_outputs(out)
    assert "<h1>My mites</h1>" in html and "body_size" in html
    assert _digest(csvs) == before                                  # user data untouched
    fit = jsdm.load(out / "fit.jsdm")
    assert list(fit.species) == list(pd.read_csv(csvs / "Y.csv", index_col=0).columns)
    assert fit.community.trait_names == ["body_size"]
    scores = pd.read_csv(out / "site_scores.csv", index_col=0)
    np.testing.assert_allclose(scores.to_numpy(), fit.lv.to_numpy())
    assert [str(s) for s in scores.index] == list(fit.sites)
    loads = pd.read_csv(out / "loadings.csv", index_col=0)
    assert list(loads.columns) == ["LV1", "LV2"] and list(loads.index) == list(fit.species)
    vp = pd.read_csv(out / "variance_partition.csv", index_col=0)
    np.testing.assert_allclose(vp.sum(axis=1), 1.0, atol=1e-8)
    assert (out / "summary.txt").read_text().strip() == str(fit.summary()).strip()


def test_fit_long_csv_matches_the_wide_fit(csvs, tmp_path):
    wide, long = tmp_path / "w", tmp_path / "l"
    common = ["--family", "poisson", "--num-lv", "1", "--formula", "~ WatrCont", "--n-init", "1",
              "--quiet"]
    assert main(["fit", str(csvs / "Y.csv"), "--covariates", str(csvs / "X.csv"),
                 "--out", str(wide), *common]) == 0
    assert main(["fit", str(csvs / "long.csv"), "--long", "--site", "site", "--species", "species",
                 "--response", "count", "--out", str(long), *common]) == 0
    _check_outputs(long, num_lv=1)
    a, b = jsdm.load(wide / "fit.jsdm"), jsdm.load(long / "fit.jsdm")
    assert list(a.species) == list(b.species) and list(a.sites) == list(b.sites)
    np.testing.assert_allclose(a.llf, b.llf, rtol=1e-8)


def test_fit_with_select_num_lv_and_random_rows(csvs, tmp_path):
    out = tmp_path / "sel"
    status = main(["fit", str(csvs / "Y.csv"), "--covariates", str(csvs / "X.csv"),
                   "--family", "poisson", "--num-lv", "1", "--formula", "~ WatrCont",
                   "--standardise", "--select-num-lv", "--row-effect", "random", "--n-init", "1",
                   "--out", str(out), "--quiet"])
    assert status == 0
    table = pd.read_csv(out / "model_selection.csv", index_col=0)
    assert list(table.index) == [0, 1, 2, 3, 4]
    fit = jsdm.load(out / "fit.jsdm")
    assert fit.num_lv == int(table["aicc"].idxmin()) and fit.row_effect == "random"
    _check_outputs(out, selection=True, num_lv=fit.num_lv)


def test_progress_on_stderr_and_quiet(csvs, tmp_path, capsys):
    args = ["fit", str(csvs / "Y.csv"), "--family", "poisson", "--num-lv", "1", "--n-init", "1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    cap = capsys.readouterr()
    assert "jsdm: fitting poisson GLLVM" in cap.err and "jsdm: wrote" in cap.err
    assert "[jsdm]" in cap.err                                # the engine's progress lines
    assert cap.out == ""
    assert main([*args, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    cap = capsys.readouterr()
    assert "jsdm: fitting" not in cap.err and "[jsdm]" not in cap.err and "jsdm: wrote" not in cap.err


# --- errors ------------------------------------------------------------------------------
def _error(capsys, argv, status=1):
    """Run; the error is one line, the last on stderr (after any progress lines), no traceback;
    with --quiet it is the only line."""
    assert main(argv) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert [e for e in err if "error:" in e] == err[-1:], err
    assert all(e.startswith("jsdm: ") for e in err[:-1]), err
    assert main([*argv, "--quiet"]) == status
    assert capsys.readouterr().err.strip().splitlines() == err[-1:]
    return err[-1]


def test_missing_file(capsys, tmp_path):
    line = _error(capsys, ["fit", str(tmp_path / "nope.csv"), "--family", "poisson", "--num-lv",
                           "1", "--out", str(tmp_path / "o")])
    assert line.startswith("jsdm fit: error:") and "nope.csv" in line and "not found" in line
    assert not (tmp_path / "o").exists()


def test_unreadable_csv(capsys, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\xff\xfe\x00\x81binary\x00junk")
    line = _error(capsys, ["fit", str(bad), "--family", "poisson", "--num-lv", "1",
                           "--out", str(tmp_path / "o")])
    assert "could not read" in line and "bad.csv" in line


def test_unknown_family(capsys, csvs, tmp_path):
    line = _error(capsys, ["fit", str(csvs / "Y.csv"), "--family", "zebra", "--num-lv", "1",
                           "--out", str(tmp_path / "o")])
    assert "unknown family 'zebra'" in line and "poisson" in line


def test_label_mismatch(capsys, csvs, tmp_path):
    X = pd.read_csv(csvs / "X.csv", index_col=0)
    X.index = [f"plot{i}" for i in X.index]
    X.to_csv(tmp_path / "X_other.csv", index_label="site")
    line = _error(capsys, ["fit", str(csvs / "Y.csv"), "--covariates", str(tmp_path / "X_other.csv"),
                           "--family", "poisson", "--num-lv", "1", "--out", str(tmp_path / "o")])
    assert line.startswith("jsdm fit: error:") and "plot" in line


def test_bad_formula(capsys, csvs, tmp_path):
    line = _error(capsys, ["fit", str(csvs / "Y.csv"), "--covariates", str(csvs / "X.csv"),
                           "--family", "poisson", "--num-lv", "1", "--formula", "~ Altitude + ",
                           "--out", str(tmp_path / "o")])
    assert "formula" in line and "Altitude" in line


def test_bad_options_are_usage_errors(capsys, csvs, tmp_path):
    assert main(["fit", str(csvs / "Y.csv"), "--family", "poisson", "--num-lv", "1"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["report", "--example", "nowhere", "--out", str(tmp_path)]) == 2
    capsys.readouterr()
    line = _error(capsys, ["fit", str(csvs / "long.csv"), "--long", "--covariates",
                           str(csvs / "X.csv"), "--family", "poisson", "--num-lv", "1",
                           "--out", str(tmp_path / "o")], status=2)
    assert "--covariates" in line
    (tmp_path / "afile").write_text("x")
    line = _error(capsys, ["report", "--example", "mite", "--out", str(tmp_path / "afile")], status=2)
    assert "is a file" in line


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"jsdm {jsdm.__version__}"
    assert main(["fit", "--help"]) == 0
    assert "--covariates" in capsys.readouterr().out


def test_errors_from_a_subprocess_are_one_line_unless_debug(tmp_path):
    args = ["fit", tmp_path / "missing.csv", "--family", "poisson", "--num-lv", "1",
            "--out", tmp_path / "o"]
    res = _run_module(*args)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing.csv" in lines[0] and "Traceback" not in res.stderr
    res = _run_module(*args, "--debug")
    assert res.returncode != 0 and "Traceback" in res.stderr and "JSDMError" in res.stderr


# --- issue 12: papercuts -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["nbinom2", "nbinom", "negative.binomial", "nb2"])
def test_negative_binomial_aliases_are_understood(name):
    assert jsdm.get_family(name).name == "negative_binomial"


def test_family_help_lists_every_registered_family(capsys):
    from jsdm.families import _REGISTRY

    assert main(["fit", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for cls in set(_REGISTRY.values()):
        assert cls.name in out, cls.name
    assert "--no-standardise" in out and "--prior-sd" in out and "--min-records" in out


def test_select_num_lv_needs_no_num_lv_and_num_lv_alone_is_asked_for(capsys, csvs, tmp_path):
    out = tmp_path / "sel"
    assert main(["fit", str(csvs / "Y.csv"), "--family", "poisson", "--select-num-lv",
                 "--n-init", "1", "--out", str(out), "--quiet"]) == 0
    assert (out / "model_selection.csv").is_file()
    capsys.readouterr()
    line = _error(capsys, ["fit", str(csvs / "Y.csv"), "--family", "poisson", "--out",
                           str(tmp_path / "o")], status=2)
    assert "--num-lv" in line and "--select-num-lv" in line


def test_a_semicolon_file_error_names_sep(capsys, csvs, tmp_path):
    Y = pd.read_csv(csvs / "Y.csv", index_col=0)
    Y.to_csv(tmp_path / "semi.csv", sep=";", index_label="site")
    line = _error(capsys, ["fit", str(tmp_path / "semi.csv"), "--family", "poisson", "--num-lv",
                           "1", "--out", str(tmp_path / "o")])
    assert "--sep ';'" in line
    assert main(["fit", str(tmp_path / "semi.csv"), "--sep", ";", "--family", "poisson",
                 "--num-lv", "1", "--n-init", "1", "--out", str(tmp_path / "ok"), "--quiet"]) == 0


def test_hints_name_flags_not_python_arguments():
    from jsdm.cli import as_flags

    assert as_flags("refit with num_lv=1 and n_init=5, or prior_sd=5.") == \
        "refit with --num-lv 1 and --n-init 5, or --prior-sd 5."
    assert as_flags("give response= and site= columns") == "give --response and --site columns"
    assert as_flags("the variable x_num_lv=3 stays") == "the variable x_num_lv=3 stays"


def test_fit_standardises_by_default_and_says_so(csvs, tmp_path, capsys):
    for flag, std in (([], True), (["--no-standardise"], False)):
        out = tmp_path / f"s{std}"
        assert main(["fit", str(csvs / "Y.csv"), "--covariates", str(csvs / "X.csv"),
                     "--formula", "~ SubsDens + WatrCont", "--family", "poisson", "--num-lv", "1",
                     "--n-init", "1", "--out", str(out), "--quiet", *flag]) == 0
        fit = jsdm.load(out / "fit.jsdm")
        X = fit.problem.X
        assert np.allclose(X.std(0, ddof=1), 1.0) == std
        html = (out / "report.html").read_text()
        assert ("standardised to mean 0" in html) == std
        # advice to standardise appears only where the covariates are not standardised
        assert ("standardise covariates" in html) <= (not std)
    capsys.readouterr()


def test_cli_fits_with_the_penalty_unless_none(csvs, tmp_path):
    for arg, want in (([], 5.0), (["--prior-sd", "none"], None), (["--prior-sd", "2.5"], 2.5)):
        out = tmp_path / f"p{want}"
        assert main(["fit", str(csvs / "Y.csv"), "--family", "poisson", "--num-lv", "1",
                     "--n-init", "1", "--out", str(out), "--quiet", *arg]) == 0
        assert jsdm.load(out / "fit.jsdm").prior_sd == want
    assert main(["fit", str(csvs / "Y.csv"), "--family", "poisson", "--num-lv", "1",
                 "--prior-sd", "-1", "--out", str(tmp_path / "bad")]) == 2
