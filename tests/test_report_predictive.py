"""The report's section on predictive performance and the approximation check; ``jsdm fit --cv``."""
import warnings

import numpy as np
import pandas as pd

import jsdm
from jsdm.cli import main

IMG = '<img src="data:image/png;base64,'


def _small_community():
    com = jsdm.datasets.load_mite()
    species = list(com.prevalence.sort_values(ascending=False).index[:6])
    return com.subset(sites=list(com.sites[:30]), species=species)


def test_report_section_without_and_with_cv(tmp_path):
    com = _small_community()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        fit = jsdm.gllvm(com, family="poisson", num_lv=1, formula="~ scale(WatrCont)", seed=1,
                         n_init=1)
        path = fit.report(tmp_path / "a.html", strict=True)
        html = path.read_text(encoding="utf-8")
        assert '<section id="predictive">' in html
        assert "importance sampling" in html and "Not run" in html
        assert "Pseudo-R<sup>2</sup>" in html and "prediction interval" in html
        cv = jsdm.cross_validate(fit, k=2, n_jobs=1, n_draws=200, conditional=False)
        html2 = fit.report(tmp_path / "b.html", strict=True, cv=cv).read_text(encoding="utf-8")
    assert html2.count(IMG) == html.count(IMG) + 1
    assert "2-fold cross-validation by sites" in html2


def test_fit_command_with_cv(tmp_path):
    d = tmp_path / "csv"
    d.mkdir()
    com = _small_community()
    com.Y.to_csv(d / "Y.csv", index_label="site")
    com.X.to_csv(d / "X.csv", index_label="site")
    out = tmp_path / "out"
    status = main(["fit", str(d / "Y.csv"), "--covariates", str(d / "X.csv"), "--family",
                   "poisson", "--num-lv", "1", "--formula", "~ WatrCont", "--standardise",
                   "--n-init", "1", "--cv", "2", "--out", str(out), "--quiet"])
    assert status == 0
    tab = pd.read_csv(out / "cv.csv", index_col=0)
    assert list(tab.index) == ["num_lv=1", "num_lv=0"]
    assert np.isfinite(tab["lpd"]).all() and "lpd_conditional" in tab.columns
    sp = pd.read_csv(out / "cv_species.csv", index_col=[0, 1])
    assert len(sp) == 2 * 6
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "2-fold cross-validation by sites" in html
    assert main(["fit", str(d / "Y.csv"), "--family", "poisson", "--num-lv", "1", "--cv", "1",
                 "--out", str(tmp_path / "bad"), "--quiet"]) == 2
