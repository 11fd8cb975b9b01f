"""The command line under abuse (issue 13): files that pandas would read silently wrong,
the output folder (checked first, never half-written, never mixed with an earlier run),
numeric options, and very long labels. docs/robustness.md lists the cases."""
import re

import numpy as np
import pandas as pd
import pytest

import jsdm
from jsdm import cli
from jsdm.cli import OUTPUT_FILES, main

N = 25


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("csv")
    rng = np.random.default_rng(0)
    sites = [f"s{i:02d}" for i in range(N)]
    Y = pd.DataFrame(rng.poisson(2, (N, 4)), index=sites, columns=["sp01", "sp02", "sp03", "sp04"])
    Y.to_csv(d / "y.csv", index_label="site")
    Y.set_axis(["sp01", "sp02", "sp01", "sp03"], axis=1).to_csv(d / "dup.csv", index_label="site")
    Y.to_csv(d / "y_semi.csv", sep=";", index_label="site")
    X = pd.DataFrame({"temp": np.round(rng.normal(10, 2, N), 2), "soil": rng.normal(size=N).round(2)},
                     index=sites)
    X.to_csv(d / "x.csv", index_label="site")
    X.to_csv(d / "x_comma.csv", sep=";", decimal=",", index_label="site")
    Xb = X.astype({"temp": object})
    Xb.loc["s03", "temp"] = "n.d."
    Xb.to_csv(d / "x_nd.csv", index_label="site")
    X.rename(columns={"soil": "Intercept"}).to_csv(d / "x_int.csv", index_label="site")
    X.assign(c=1.0).to_csv(d / "x_const.csv", index_label="site")
    return d


BASE = ["--family", "poisson", "--num-lv", "1", "--n-init", "1", "--quiet"]


def _run(capsys, argv):
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return status, " ".join(err.split())


def _no_fit(monkeypatch):
    """Make any fit fail loudly: checks that must come first are seen before fitting."""
    def boom(*args, **kwargs):
        raise AssertionError("the model was fitted before the output folder was checked")
    monkeypatch.setattr(cli, "_fit", boom)


# --- files pandas would read silently wrong ---------------------------------------------------
def test_duplicated_species_columns_are_caught_when_reading_the_header(capsys, files, tmp_path):
    status, err = _run(capsys, ["fit", files / "dup.csv", *BASE, "--out", tmp_path / "o"])
    assert status == 1
    assert "the header repeats the column name(s) ['sp01']" in err
    assert not (tmp_path / "o").exists()


def test_a_numeric_covariate_with_a_bad_cell_is_reported_by_column_and_cell(capsys, files, tmp_path):
    status, err = _run(capsys, ["fit", files / "y.csv", "--covariates", files / "x_nd.csv", *BASE,
                                "--out", tmp_path / "o"])
    assert status == 1
    assert "column 'temp' of covariate file" in err and "s03: 'n.d.'" in err
    assert "--na-values n.d." in err and "--categorical temp" in err
    status, err = _run(capsys, ["fit", files / "y.csv", "--covariates", files / "x_nd.csv", *BASE,
                                "--na-values", "n.d.", "--out", tmp_path / "o"])
    assert status == 1 and "covariates ['temp'] are missing at sites ['s03']" in err


def test_decimal_commas_are_reported_and_read_with_decimal(capsys, files, tmp_path):
    args = ["fit", files / "y_semi.csv", "--sep", ";", "--covariates", files / "x_comma.csv", *BASE]
    status, err = _run(capsys, [*args, "--out", tmp_path / "a"])
    assert status == 1 and "numbers written with decimal commas" in err and "--decimal ," in err
    status, err = _run(capsys, [*args, "--decimal", ",", "--out", tmp_path / "b"])
    assert status == 0, err
    coefs = pd.read_csv(tmp_path / "b" / "coefficients.csv")
    assert set(coefs.loc[coefs["block"] == "coef", "term"]) == {"Intercept", "temp", "soil"}


@pytest.mark.parametrize("xfile,pattern", [
    ("x_int.csv", "a covariate named 'Intercept' would be confused with the species intercepts"),
    ("x_const.csv", "'c' is constant across sites"),
], ids=["intercept", "constant"])
def test_covariates_that_used_to_vanish_or_fit_unidentified_are_refused(capsys, files, tmp_path,
                                                                        xfile, pattern):
    status, err = _run(capsys, ["fit", files / "y.csv", "--covariates", files / xfile, *BASE,
                                "--out", tmp_path / "o"])
    assert status == 1 and pattern in err


@pytest.mark.parametrize("value", ["-3", "0", "two"])
def test_n_init_must_be_a_positive_whole_number(capsys, files, tmp_path, value):
    status, err = _run(capsys, ["fit", files / "y.csv", "--family", "poisson", "--num-lv", "1",
                                "--n-init", value, "--out", tmp_path / "o"])
    assert status == 2 and f"argument --n-init: must be a whole number >= 1, got '{value}'" in err


# --- the output folder -------------------------------------------------------------------------
def test_a_non_empty_out_folder_is_refused_before_fitting(capsys, files, tmp_path, monkeypatch):
    out = tmp_path / "o"
    out.mkdir()
    (out / "model_selection.csv").write_text("earlier run")
    _no_fit(monkeypatch)
    status, err = _run(capsys, ["fit", files / "y.csv", *BASE, "--out", out])
    assert status == 2 and "is not empty" in err and "--overwrite" in err
    assert (out / "model_selection.csv").read_text() == "earlier run"


def test_overwrite_replaces_an_earlier_run_without_leaving_stale_files(capsys, files, tmp_path):
    out = tmp_path / "o"
    assert _run(capsys, ["fit", files / "y.csv", *BASE, "--out", out])[0] == 0
    (out / "model_selection.csv").write_text("stale, from an earlier --select-num-lv run")
    first = (out / "fit.jsdm").read_bytes()
    status, err = _run(capsys, ["fit", files / "y.csv", *BASE, "--num-lv", "0", "--overwrite",
                                "--out", out])
    assert status == 0, err
    names = {p.name for p in out.iterdir()}
    assert "model_selection.csv" not in names and "loadings.csv" not in names
    assert names <= set(OUTPUT_FILES)
    assert jsdm.load(out / "fit.jsdm").num_lv == 0 and (out / "fit.jsdm").read_bytes() != first
    assert [p.name for p in tmp_path.iterdir()] == ["o"]          # no temporary folders left


def test_overwrite_never_replaces_a_folder_holding_other_files(capsys, files, tmp_path, monkeypatch):
    out = tmp_path / "o"
    out.mkdir()
    (out / "my_data.csv").write_text("precious")
    _no_fit(monkeypatch)
    status, err = _run(capsys, ["fit", files / "y.csv", *BASE, "--overwrite", "--out", out])
    assert status == 2 and "holds files that jsdm did not write (['my_data.csv'])" in err
    assert (out / "my_data.csv").read_text() == "precious"


def test_an_unwritable_out_is_found_before_fitting(capsys, files, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    _no_fit(monkeypatch)
    status, err = _run(capsys, ["fit", files / "y.csv", *BASE, "--out", tmp_path / "afile" / "sub"])
    assert status == 1 and "cannot write the outputs to --out" in err


@pytest.mark.parametrize("exc,status", [(KeyboardInterrupt, 130), (RuntimeError("disk full"), 3)],
                         ids=["interrupted", "failed"])
def test_an_interrupted_run_leaves_no_half_written_folder(capsys, files, tmp_path, monkeypatch,
                                                          exc, status):
    out = tmp_path / "o"

    def fail(*args, **kwargs):
        raise exc
    monkeypatch.setattr("jsdm.report.write_report", fail)
    assert _run(capsys, ["fit", files / "y.csv", *BASE, "--out", out])[0] == status
    assert list(tmp_path.iterdir()) == []                     # nothing that looks complete
    monkeypatch.undo()
    assert _run(capsys, ["fit", files / "y.csv", *BASE, "--out", out])[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr("jsdm.report.write_report", fail)
    assert _run(capsys, ["fit", files / "y.csv", *BASE, "--overwrite", "--out", out])[0] == status
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before     # earlier run intact
    assert [p.name for p in tmp_path.iterdir()] == ["o"]


# --- very long labels --------------------------------------------------------------------------
def test_very_long_labels_are_shortened_in_figures_and_kept_in_tables(capsys, tmp_path):
    rng = np.random.default_rng(1)
    species = [f"sp{j}_" + "abcdefghij" * 500 for j in range(4)]          # 5,000+ characters
    sites = [f"site{i}_" + "x" * 5000 for i in range(N)]
    pd.DataFrame(rng.poisson(2, (N, 4)), index=sites, columns=species).to_csv(tmp_path / "y.csv")
    pd.DataFrame({"t" + "e" * 5000: rng.normal(size=N)}, index=sites).to_csv(tmp_path / "x.csv")
    status, err = _run(capsys, ["fit", tmp_path / "y.csv", "--covariates", tmp_path / "x.csv",
                                "--family", "poisson", "--num-lv", "2", "--n-init", "1", "--quiet",
                                "--out", tmp_path / "o"])
    assert status == 0, err
    html = (tmp_path / "o" / "report.html").read_text(encoding="utf-8")
    assert species[0] in html                                   # full labels in the tables
    assert "could not be produced" not in html
    coefs = pd.read_csv(tmp_path / "o" / "coefficients.csv")
    assert set(coefs["species"]) == set(species)


def test_every_text_drawn_in_a_figure_is_short(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    rng = np.random.default_rng(2)
    long = "L" * 3000
    Y = pd.DataFrame(rng.poisson(2, (N, 5)).astype(float), index=[f"{long}{i}" for i in range(N)],
                     columns=[f"{long}{j}" for j in range(5)])
    X = pd.DataFrame({f"{long}x": rng.normal(size=N),
                      f"{long}g": pd.Categorical(np.resize([f"{long}a", f"{long}b"], N))}, index=Y.index)
    fit = jsdm.gllvm(Y, X, num_lv=2, n_init=1, checks=False, formula=f"~ `{long}x`")
    figures = [fit.plot_ordination(color=f"{long}g", site_labels=True, covariate_arrows=True).figure,
               fit.plot_ordination(color=f"{long}x").figure,
               fit.plot_associations().figure, fit.plot_coefficients(),
               fit.plot_variance_partition().figure, fit.plot_residuals()]
    for fig in figures:
        texts = [t.get_text() for t in fig.findobj(Text)]
        assert max(map(len, texts)) <= 80, max(texts, key=len)[:100]
        plt.close(fig)
    ticks = [t.get_text() for t in figures[2].axes[0].get_xticklabels()]
    assert len(set(ticks)) == 5 and all(re.fullmatch(r"L+\u2026L*\d", t) for t in ticks)


def test_categorical_reads_a_numeric_code_as_a_factor_and_unknown_names_are_refused(files, tmp_path):
    X = pd.read_csv(files / "x.csv", index_col=0).assign(plot=np.resize([1, 2, 3], N))
    X.to_csv(tmp_path / "x.csv")
    com = jsdm.read_wide(files / "y.csv", covariates=tmp_path / "x.csv", categorical=["plot"])
    assert isinstance(com.X["plot"].dtype, pd.CategoricalDtype)
    assert pd.api.types.is_float_dtype(com.X["temp"])
    with pytest.raises(jsdm.JSDMError, match=r"categorical= names column\(s\) \['plto'\]"):
        jsdm.read_wide(files / "y.csv", covariates=tmp_path / "x.csv", categorical=["plto"])
