"""The report's rules (issue 12) on the shapes of the real data sets it failed on.

Shapes (tests/_shapes.py): spider-like 28 x 12 NB with one latent variable and
8 species at the dispersion floor; Barro-Colorado-like 50 x 225 NB with 40%
singletons and 2 LVs; aravo presence/absence (real, 75 x 82; skipped when
../shared/data/aravo is absent); a presence/absence community with a perfectly
separated species and a singleton, fitted without a penalty.

Rules checked:
- no association row with a one-point interval (+-1.00 [1.00, 1.00]) among the
  headline pairs, and a warning when num_lv = 1;
- no species below the information threshold (a singleton above all) in the
  headline tables, the heatmap or the biplot's labels;
- no number wider than a table cell (no 60-digit intervals);
- dispersions at the bound said in words and counted the same by the fit-time
  warning, diagnose() and the report; large coefficients likewise;
- plot axes limited to finite, identified estimates.
"""
import html as htmlmod
import re
import warnings

import numpy as np
import pytest

import jsdm
from _shapes import aravo_available, aravo_pa, bci_like, separated_pa, spider_like
from jsdm.analysis.diagnostics import MIN_RECORDS, informative_records
from jsdm.report import write_report

pytestmark = pytest.mark.filterwarnings("ignore::jsdm.exceptions.JSDMWarning")


def _fit(make, prior_sd=5.0):
    com, kw = make()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = jsdm.gllvm(com, seed=1, n_init=1, prior_sd=prior_sd, **kw)
    return fit, [str(w.message) for w in caught]


def _report(fit, path):
    write_report(fit, path, strict=True)
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def spider(tmp_path_factory):
    fit, warned = _fit(spider_like)
    return fit, warned, _report(fit, tmp_path_factory.mktemp("sp") / "r.html")


@pytest.fixture(scope="module")
def bci(tmp_path_factory):
    fit, warned = _fit(bci_like)
    return fit, warned, _report(fit, tmp_path_factory.mktemp("bci") / "r.html")


@pytest.fixture(scope="module")
def separated(tmp_path_factory):
    fit, warned = _fit(separated_pa, prior_sd=None)
    return fit, warned, _report(fit, tmp_path_factory.mktemp("sep") / "r.html")


@pytest.fixture(scope="module")
def aravo(tmp_path_factory):
    if not aravo_available():
        pytest.skip("aravo data not found (../shared/data/aravo)")
    fit, warned = _fit(aravo_pa)
    return fit, warned, _report(fit, tmp_path_factory.mktemp("ar") / "r.html")


CASES = ["spider", "bci", "separated", "aravo"]


@pytest.fixture(params=CASES)
def case(request):
    return request.getfixturevalue(request.param)


def _section(text, sid):
    m = re.search(rf'<section id="{sid}">(.*?)</section>', text, re.S)
    assert m, sid
    return m.group(1)


def _tables(body):
    """Each <table> as a list of rows of cell texts (tags stripped, entities decoded)."""
    out = []
    for tab in re.findall(r"<table.*?</table>", body, re.S):
        rows = []
        for tr in re.findall(r"<tr.*?</tr>", tab, re.S):
            cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", tr, re.S)
            rows.append([htmlmod.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells])
        out.append(rows)
    return out


def _headline_pairs(text):
    """Rows (species 1, species 2, 'estimate [interval]') of the strongest-pairs table."""
    body = _section(text, "associations")
    for rows in _tables(body):
        if rows and "estimate [interval]" in rows[0]:
            h = rows[0]
            i1, i2, ie = h.index("species 1"), h.index("species 2"), h.index("estimate [interval]")
            return [(r[i1], r[i2], r[ie]) for r in rows[1:]]
    return []


def _poor_species(fit):
    info = informative_records(fit)
    return set(map(str, fit.species[info < MIN_RECORDS]))


def test_no_one_point_interval_is_presented_as_a_finding(case):
    fit, _, text = case
    pairs = _headline_pairs(text)
    if fit.num_lv:
        assert pairs, "no strongest-pairs table"
    for _, _, cell in pairs:
        est, lo, hi = map(float, re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", cell)[:3])
        assert hi - lo > 0, cell
        assert not (abs(est) == 1.0 and lo == hi), cell


def test_one_latent_variable_is_warned_about_and_gives_no_plus_minus_one(spider):
    fit, _, text = spider
    assert fit.num_lv == 1
    assert "Warning: one latent variable" in _section(text, "associations")
    assert "One latent variable" in _section(text, "careful")
    with pytest.warns(jsdm.JSDMWarning, match="one latent variable"):
        tab = fit.association_table()
    assert (tab["estimate"].abs() < 0.999).all()
    pure = fit.residual_correlation(add_family_variance=False).to_numpy()
    assert np.allclose(np.abs(pure), 1.0)          # what the old default showed


def test_no_rare_species_in_headline_tables_heatmap_or_labels(case):
    fit, _, text = case
    poor = _poor_species(fit)
    singletons = set(map(str, fit.species[(fit.community.Y > 0).sum().to_numpy() == 1]))
    assert singletons <= poor
    for a, b, _ in _headline_pairs(text):
        assert a not in poor and b not in poor, (a, b)
    coef = _tables(_section(text, "coefficients"))[0]
    shown = [r[0] for r in coef[1:]]
    assert shown and not set(shown) & poor
    if fit.num_lv:
        heat = [t for t in _tables(_section(text, "associations")) if t and t[0][:2] == ["#", "species"]]
        if heat:
            assert not {r[1] for r in heat[0][1:]} & poor
    if fit.num_lv >= 2:
        info = jsdm.analysis.diagnostics.species_information(fit)
        import matplotlib.pyplot as plt

        ax = fit.plot_ordination(species=list(info.index[info["headline"]]))
        labels = {t.get_text() for t in ax.texts if t.get_gid() == "species"}
        plt.close(ax.figure)
        assert labels and not labels & poor


def test_bci_shape_has_many_singletons_and_none_in_headlines(bci):
    fit, _, text = bci
    single = int(((fit.community.Y > 0).sum() == 1).sum())
    assert single == 90
    assert f"species seen at one site only</td><td>{single}</td>" in text
    assert "species with fewer than 5 informative records" in _section(text, "careful")


NUMBER = re.compile(r"-?\d[\d.]*(?:e[+-]?\d+)?")


def test_no_number_wider_than_a_cell(case):
    _, _, text = case
    for rows in _tables(text):
        for r in rows[1:]:
            for cell in r:
                for tok in NUMBER.findall(cell):
                    assert len(tok) <= 9, (tok, cell)
                if NUMBER.fullmatch(cell.replace("&minus;", "-")):
                    assert len(cell) <= 10, cell
    assert "nan" not in text.replace("span", "").lower().split("<style>")[0]


def test_dispersion_at_bound_is_explained_and_counted_alike(spider):
    fit, warned, text = spider
    diag = fit.diagnose()
    prob = next(p for p in diag.problems if p.kind == "dispersion_at_bound")
    n = len(prob.parameters)
    assert n >= 6                                    # 8 species were simulated as Poisson
    assert any(w.startswith(prob.message) for w in warned)       # fit-time warning, same count
    assert prob.message in htmlmod.unescape(_section(text, "careful"))
    assert "indistinguishable from Poisson" in _section(text, "model")
    coef = _section(text, "coefficients")
    assert coef.count(">at bound<") >= n


def test_large_coefficient_counts_agree_everywhere(separated):
    fit, warned, text = separated
    diag = fit.diagnose()
    prob = next(p for p in diag.problems if p.kind == "large_coefficient")
    assert "sep" in {lab[1] for lab in prob.parameters}
    assert sum(w.startswith(prob.message) for w in warned) == 1
    assert prob.message in htmlmod.unescape(text)
    assert text.count(htmlmod.escape(prob.message)) == 2          # careful box and model section
    assert fit.diagnose() is diag                                  # one diagnosis per fit


def test_separated_species_are_left_out_of_headlines_and_axes(separated):
    fit, _, text = separated
    for a, b, _ in _headline_pairs(text):
        assert "sep" not in (a, b) and "single" not in (a, b)
    assert "without a finite optimum (sep" in htmlmod.unescape(_section(text, "coefficients"))
    import matplotlib.pyplot as plt

    fig = fit.plot_coefficients()
    lo, hi = fig.axes[0].get_xlim()
    plt.close(fig)
    assert abs(fit.coef.loc["sep", "x1"]) > 50 and -20 < lo and hi < 20
    fig = fit.plot_residuals(seed=1)
    assert fig.axes[0].get_xlim()[0] > -100          # the separated species' -1000s are clipped
    plt.close(fig)


def test_aravo_penalised_has_finite_estimates(aravo):
    fit, _, text = aravo
    assert np.abs(fit.linear_predictor().to_numpy()).max() < 60
    assert "penalised (prior_sd = 5)" in _section(text, "careful")
    assert "species whose slopes or loadings are set mainly by the penalty" in text
