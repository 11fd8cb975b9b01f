"""Cross-validation by sites: folds, scores, model comparison, determinism across processes."""
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import jsdm
from jsdm.results import marginal
from jsdm.results.crossval import _auc, _tss, make_folds
from jsdm.results.latent import site_latent

pytestmark = pytest.mark.filterwarnings("ignore::jsdm.DataWarning")

def _fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        return jsdm.gllvm(*args, **kwargs)


@pytest.fixture(scope="module")
def small():
    com, _ = jsdm.simulate_community(36, 5, num_lv=1, family="binomial", n_covariates=1, seed=11,
                                     loading_sd=1.5)
    groups = pd.Series(np.repeat(["a", "b", "c", "d", "e", "f"], 6), index=com.sites)
    com = jsdm.Community(com.Y, com.X.assign(plot=groups))
    fits = {"d0": _fit(com, family="binomial", num_lv=0, formula="~ x1", seed=1),
            "d1": _fit(com, family="binomial", num_lv=1, formula="~ x1", seed=1)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        cv = jsdm.cross_validate(fits, k=3, seed=2, n_jobs=1, n_draws=400)
    return com, fits, cv


def test_folds_are_balanced_deterministic_and_blocked():
    sites = pd.Index([f"s{i}" for i in range(23)])
    f = make_folds(sites, 5, seed=1)
    assert sorted(f.value_counts()) == [4, 4, 5, 5, 5]
    assert f.equals(make_folds(sites, 5, seed=1)) and not f.equals(make_folds(sites, 5, seed=2))
    g = pd.Series(np.repeat(list("abcdefg"), [5, 3, 3, 3, 3, 3, 3]), index=sites)
    fb = make_folds(sites, 3, seed=0, groups=g)
    assert (pd.crosstab(g, fb) > 0).sum(axis=1).max() == 1            # no group split
    assert fb.value_counts().max() - fb.value_counts().min() <= 5
    logo = make_folds(sites, 10, seed=0, groups=g)                       # k >= groups
    assert logo.nunique() == 7
    with pytest.raises(jsdm.JSDMError, match="k=30"):
        make_folds(sites, 30)


def test_auc_and_tss_against_independent_formulas():
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.4).astype(float)
    p = np.clip(0.3 * y + rng.random(200) * 0.7, 0, 1)
    p[:10] = 0.5                                                         # ties
    u = stats.mannwhitneyu(p[y == 1], p[y == 0]).statistic
    assert np.isclose(_auc(y, p), u / ((y == 1).sum() * (y == 0).sum()))
    thr = np.full(200, 0.45)
    sens, spec = np.mean(p[y == 1] >= 0.45), np.mean(p[y == 0] < 0.45)
    assert np.isclose(_tss(y, p, thr), sens + spec - 1)
    assert np.isnan(_auc(np.ones(5), np.linspace(0, 1, 5)))


def test_cross_validation_table_and_scores(small):
    com, fits, cv = small
    tab = cv.table
    assert list(tab.index) == ["d0", "d1"]
    for col in ("lpd", "lpd_se", "lpd_marginal", "lpd_conditional", "auc", "tss", "rmse",
                "lpd_diff", "diff_se", "rank"):
        assert col in tab.columns
    # every site held out exactly once; the table sums the per-site scores
    assert cv.folds.value_counts().sum() == 36 and cv.folds.nunique() == 3
    per_site = cv.sites.groupby("model")["lpd"].sum()
    assert np.allclose(per_site[tab.index], tab["lpd"])
    assert np.isclose(tab["lpd_diff"].max(), 0.0) and (tab["lpd_diff"] <= 0).all()
    # without latent variables the joint, marginal and conditional scores coincide
    assert np.isclose(tab.loc["d0", "lpd"], tab.loc["d0", "lpd_marginal"])
    assert np.isclose(tab.loc["d0", "lpd_conditional"], tab.loc["d0", "lpd_marginal"])
    assert cv.species.loc["d1"].shape[0] == 5
    assert 0.0 <= tab["auc"].min() and tab["auc"].max() <= 1.0
    assert "higher lpd is better" in repr(cv)


def test_fold_scores_match_a_manual_refit(small):
    com, fits, cv = small
    test = (cv.folds == 1).to_numpy()
    train = com.subset(sites=com.sites[~test])
    fit = _fit(train, family="binomial", num_lv=1, formula="~ x1", seed=1)
    sl = site_latent(fit, com.X.loc[com.sites[test]])
    Y = com.Y.to_numpy(dtype=float)[test]
    lp = marginal.log_marginal(sl, Y, np.ones_like(Y)).logp
    got = cv.sites.query("model == 'd1' and fold == 1")["lpd"].to_numpy()
    assert np.allclose(got, lp)


def test_blocked_cross_validation_keeps_groups_together(small):
    com, fits, _ = small
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        cv = fits["d1"].cross_validate(k=3, by="plot", n_jobs=1, conditional=False, n_draws=200)
    g = com.X["plot"]
    assert (pd.crosstab(g, cv.folds) > 0).sum(axis=1).max() == 1
    assert "lpd_conditional" not in cv.table.columns
    with pytest.raises(jsdm.JSDMError, match="not a site covariate"):
        fits["d1"].cross_validate(k=3, by="nope")


def test_parallel_folds_give_the_same_result(small):
    com, fits, _ = small
    kw = dict(k=2, seed=5, n_draws=200, conditional=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        one = jsdm.cross_validate(fits["d1"], n_jobs=1, **kw)
        two = jsdm.cross_validate(fits["d1"], n_jobs=2, **kw)
    pd.testing.assert_frame_equal(one.table, two.table)
    pd.testing.assert_frame_equal(one.sites, two.sites)


def test_cross_validation_refuses_what_it_cannot_score(small):
    com, fits, _ = small
    fixed = _fit(com, family="binomial", num_lv=1, row_effect="fixed", seed=1)
    with pytest.raises(jsdm.JSDMError, match="fixed row effects"):
        jsdm.cross_validate(fixed, k=3)
    other = _fit(com.subset(sites=com.sites[:30]), family="binomial", num_lv=1, seed=1)
    with pytest.raises(jsdm.JSDMError, match="different sites"):
        jsdm.cross_validate([fits["d1"], other], k=3)
    with pytest.raises(jsdm.JSDMError, match="fitted model"):
        jsdm.cross_validate("model", k=3)


def test_cv_plot(small):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, _, cv = small
    ax = cv.plot()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["d0", "d1"][::-1] or \
        len(ax.get_yticklabels()) == 2
    ax2 = cv.plot(metric="auc")
    assert ax2.get_legend() is not None
    with pytest.raises(jsdm.JSDMError, match="metric"):
        cv.plot(metric="nope")
    plt.close("all")
