"""The HTML report: every section, embedded PNG figures, escaping, well-formed HTML,
selection table, diagnostics in words, failing sections, and the shared tables."""
import base64
import html.parser
import re
import warnings

import numpy as np
import pandas as pd
import pytest

import jsdm
import jsdm.analysis.diagnostics
from jsdm.exceptions import JSDMError, JSDMWarning
from jsdm.report import SECTIONS, write_report
from jsdm.report.tables import coefficient_table, covariate_table, species_table

ODD = "Sp <b>&amp; \"x\""        # a species label that must be escaped everywhere
IMG_RE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
VOID = {"meta", "img", "br", "hr", "input", "link"}


def _quiet_fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        return jsdm.gllvm(*args, **kwargs)


def _community():
    """30 mite sites x 8 common species, covariates standardised, one odd species label."""
    com = jsdm.datasets.load_mite()
    species = list(com.prevalence.sort_values(ascending=False).index[:8])
    com = com.subset(sites=list(com.sites[:30]), species=species)
    X, Y = com.X, com.Y
    for c in ("SubsDens", "WatrCont"):
        X[c] = (X[c] - X[c].mean()) / X[c].std()
    Y = Y.rename(columns={species[0]: ODD})
    return jsdm.Community(Y, X)


@pytest.fixture(scope="module")
def selection():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        return jsdm.select_num_lv(_community(), num_lv=range(0, 3), family="poisson",
                                  formula="~ SubsDens + WatrCont", seed=1, n_init=1)


@pytest.fixture(scope="module")
def fit(selection):
    return selection.fits[2]


@pytest.fixture(scope="module")
def report(fit, selection, tmp_path_factory):
    path = tmp_path_factory.mktemp("rep") / "report.html"
    write_report(fit, path, select_table=selection.table, title="Test <report>",
                 notes=["Covariates were standardised."], strict=True)
    return path.read_text(encoding="utf-8")


class _TagChecker(html.parser.HTMLParser):
    """Collects ids and checks that every opened tag is closed in order."""

    def __init__(self):
        super().__init__()
        self.stack, self.ids, self.errors = [], [], []

    def handle_starttag(self, tag, attrs):
        self.ids += [v for k, v in attrs if k == "id"]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append((tag, list(self.stack[-3:])))
        else:
            self.stack.pop()


def _section(text, sid):
    match = re.search(rf'<section id="{sid}">(.*?)</section>', text, re.S)
    assert match, f"section {sid!r} missing"
    return match.group(1)


def test_every_section_is_present_in_order_with_navigation(report):
    checker = _TagChecker()
    checker.feed(report)
    ids = [sid for sid, _, _ in SECTIONS]
    assert [i for i in checker.ids if i in ids] == ids
    for sid, heading, _ in SECTIONS:
        assert f'<a href="#{sid}">' in report
        assert f"<h2>{heading}</h2>" in _section(report, sid)
    assert "could not be produced" not in report


def test_html_is_well_formed_and_self_contained(report):
    checker = _TagChecker()
    checker.feed(report)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    assert report.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in report
    assert "<script" not in report and not re.search(r'(src|href)="(https?:|file:|/)', report)


def test_figures_are_embedded_pngs_in_the_right_sections(report):
    for sid in ("coefficients", "associations", "ordination", "variance", "residuals"):
        imgs = IMG_RE.findall(_section(report, sid))
        assert len(imgs) == 1, sid
        png = base64.b64decode(imgs[0])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert len(IMG_RE.findall(report)) == 5


def test_labels_are_escaped(report):
    assert ODD not in report
    assert "Sp &lt;b&gt;&amp;amp; &quot;x&quot;" in report
    assert "<title>Test &lt;report&gt;</title>" in report


def test_data_section_reports_sites_species_prevalence_covariates(report, fit):
    body = _section(report, "data")
    assert "<td>sites</td><td>30</td>" in body and "<td>species</td><td>8</td>" in body
    prev = species_table(fit)["prevalence"]
    assert f"median {prev.median():.2f}" in body
    for name in ("SubsDens", "WatrCont", "Substrate", "Shrub", "Topo"):
        assert f">{name}<" in body
    assert "Covariates were standardised." in body


def test_model_section_states_fit_and_diagnostics_in_words(report, fit):
    body = _section(report, "model")
    assert f"{fit.llf:.1f}" in body and f"{fit.aicc:.1f}" in body
    if fit.diagnose().ok:
        assert "No problems found." in body
    else:
        assert "What to do:" in body


def test_selection_table_marks_the_best_model(report, selection):
    body = _section(report, "selection")
    best = selection.table["aicc"].idxmin()
    rows = re.findall(r'<tr class="best"><td class="l">(\d+)</td>', body)
    assert rows == [str(best)]
    assert body.count("<tr") == len(selection.table) + 1


def test_coefficient_table_bolds_intervals_that_exclude_zero(report, fit):
    body = _section(report, "coefficients")
    tab = coefficient_table(fit).xs("coef", level="block")
    tab = tab[tab.index.get_level_values("term") != "Intercept"]       # slopes only
    head = jsdm.analysis.diagnostics.species_information(fit)["headline"]
    tab = tab[head.reindex(tab.index.get_level_values("species")).to_numpy()]
    n_sig = int(((tab["lower"] > 0) | (tab["upper"] < 0)).sum())
    assert body.split("<details>")[0].count("<b>") == n_sig
    for sp in fit.species.drop(ODD):
        assert f">{sp}<" in body


def test_associations_list_pairs_with_intervals(report, fit):
    body = _section(report, "associations")
    tab = fit.association_table()
    good = tab[tab["headline"]]
    n_ex = int(good["excludes_zero"].sum())
    assert f"{n_ex} of {len(good)} pairs of species with enough information" in body
    assert "<th>estimate [interval]</th>" in body and "<th>prev. 1</th>" in body
    assert "rank-2 model can and cannot show" in body


def test_methods_paragraph_is_citable(report, fit):
    body = _section(report, "methods")
    for text in ("generalized linear latent variable model", "8 species at 30 sites",
                 "Poisson distribution", "exact variational lower bound", f"jsdm {jsdm.__version__}",
                 "random seed 1", "SubsDens, WatrCont", "2 latent variables",
                 "number of latent variables was chosen by AICc", "Covariates were standardised."):
        assert text in body, text


def test_without_selection_table_the_section_is_left_out(fit, tmp_path):
    text = write_report(fit, tmp_path / "r.html", strict=True).read_text()
    assert 'id="selection"' not in text and 'href="#selection"' not in text
    assert "was chosen by" not in text


def test_fit_report_delegates_and_leaves_the_fit_alone(fit, tmp_path):
    theta = fit.loadings.copy()
    path = fit.report(tmp_path / "d.html", title="Delegated")
    assert path.is_file() and "<h1>Delegated</h1>" in path.read_text()
    pd.testing.assert_frame_equal(theta, fit.loadings)


def test_model_without_latent_variables(selection, tmp_path):
    text = write_report(selection.fits[0], tmp_path / "r0.html", strict=True).read_text()
    for sid in ("associations", "ordination"):
        assert "no latent variables" in _section(text, sid)
    assert len(IMG_RE.findall(text)) == 3
    assert "could not be produced" not in text


def test_unconverged_fit_is_reported_as_such(tmp_path):
    bad = _quiet_fit(_community(), family="poisson", num_lv=2, formula="~ SubsDens + WatrCont",
                     seed=1, n_init=1, maxiter=2)
    assert not bad.converged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        text = write_report(bad, tmp_path / "bad.html").read_text()
    assert "did NOT converge" in _section(text, "methods")
    model = _section(text, "model")
    assert "Diagnostics found problems" in model and "What to do:" in model


def test_a_failing_section_becomes_a_note_unless_strict(fit, tmp_path, monkeypatch):
    import jsdm.plotting

    def broken(*args, **kwargs):
        raise RuntimeError("no residuals today")

    monkeypatch.setattr(jsdm.plotting, "plot_residuals", broken)
    with pytest.warns(JSDMWarning, match="'Residuals' could not be produced"):
        text = write_report(fit, tmp_path / "n.html").read_text()
    assert "no residuals today" in _section(text, "residuals")
    assert "could not be produced" not in _section(text, "methods")
    with pytest.raises(RuntimeError, match="no residuals today"):
        write_report(fit, tmp_path / "s.html", strict=True)


def test_missing_output_folder_is_a_clear_error(fit, tmp_path):
    with pytest.raises(JSDMError, match="does not exist"):
        write_report(fit, tmp_path / "missing" / "r.html")


def test_shared_tables(fit):
    tab = coefficient_table(fit)
    assert list(tab.columns) == ["estimate", "se", "z", "p", "lower", "upper"]
    assert tab.index.equals(fit.params.index)
    np.testing.assert_allclose(tab["se"], fit.bse.reindex(tab.index))
    ok = tab["se"].notna()
    np.testing.assert_allclose(tab["z"][ok], (tab["estimate"] / tab["se"])[ok], rtol=1e-10)
    cov = covariate_table(fit)
    assert cov.loc["SubsDens", "in model"] and not cov.loc["Substrate", "in model"]
    assert cov.loc["Shrub", "type"] == "ordered factor"
    sp = species_table(fit)
    assert list(sp.index) == list(fit.species) and (sp["prevalence"] <= 1).all()


def test_numbers_for_people():
    from jsdm.report.html import fixed, interval, num, prevalence

    assert num(20658.77) == "20659" and num(123456.0) == "1.2e5" and num(0.000123) == "1.2e-4"
    assert num(0.0456) == "0.046" and num(1.234) == "1.23" and num(70) == "70"
    assert num(float("nan")) == "&ndash;" and num(-0.0) == "0"
    assert fixed(-0.004) == "0.00" and fixed(12.345) == "12.3" and fixed(2.5e6) == "2.5e6"
    assert interval(1.0, float("nan"), 2.0) == "1.00 [&ndash;]"
    assert interval(-19306.04, -15477.61, 14756.4) == "-19306 [-15478, 14756]"
    assert prevalence(0.4) == "0.40"
