"""Every plot renders under Agg with the right points, labels and panels (asserted on artists)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import jsdm  # noqa: E402
from jsdm import plotting  # noqa: E402
from jsdm.analysis import associations as A  # noqa: E402
from jsdm.plotting.associations import cluster_order  # noqa: E402

from _analysis_helpers import fit_mite_poisson, quiet_fit  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def mite_poisson():
    return fit_mite_poisson()


@pytest.fixture(scope="module")
def mite_nocov():
    com = jsdm.datasets.load_mite()
    return quiet_fit(com, family="poisson", num_lv=2, seed=1, formula="~ 1")


@pytest.fixture(scope="module")
def with_missing():
    com, _ = jsdm.simulate_community(40, 8, 2, "poisson", 1, seed=5)
    Y = com.Y.copy()
    Y.iloc[[0, 3, 7], [1, 2, 2]] = np.nan
    return quiet_fit(Y, com.X, family="poisson", num_lv=2, seed=1)


def _by_gid(ax, gid, kind=None):
    return [a for a in ax.get_children() if a.get_gid() == gid and (kind is None or isinstance(a, kind))]


def _texts(ax, gid):
    return [t.get_text() for t in _by_gid(ax, gid, matplotlib.text.Text)]


# --- ordination -----------------------------------------------------------------------
def test_ordination_biplot(mite_nocov):
    fit = mite_nocov
    ax = plotting.plot_ordination(fit)
    (sites,) = _by_gid(ax, "sites")
    assert sites.get_offsets().shape == (len(fit.sites), 2)
    assert sorted(_texts(ax, "species")) == sorted(map(str, fit.species))
    assert len(_by_gid(ax, "species", matplotlib.patches.FancyArrowPatch)) == len(fit.species)
    share = fit.ordination().share
    assert ax.get_xlabel() == f"LV1 ({100 * share.iloc[0]:.1f}%)"
    assert ax.get_ylabel() == f"LV2 ({100 * share.iloc[1]:.1f}%)"
    np.testing.assert_allclose(sites.get_offsets(), fit.ordination().sites.to_numpy())
    assert _by_gid(ax, "ellipse") == []


def test_ordination_sites_only_with_ellipses_and_colour(mite_nocov):
    fit = mite_nocov
    _, ax0 = plt.subplots()
    ax = plotting.plot_ordination(fit, biplot=False, ellipses=True, color="WatrCont", ax=ax0)
    assert ax is ax0
    assert _texts(ax, "species") == []
    ell = _by_gid(ax, "ellipse")
    assert len(ell) == len(fit.sites)
    assert len(ax.figure.axes) == 2                      # the colour bar
    (sites,) = _by_gid(ax, "sites")
    np.testing.assert_allclose(sites.get_array(), fit.community.X["WatrCont"].to_numpy())
    # ellipse axes follow the rotated variational covariances (95% of a chi2 with 2 df)
    o = fit.ordination()
    big = np.sqrt(np.linalg.eigvalsh(o.site_cov[0])[-1] * 5.991464547107979) * 2
    assert max(ell[0].width, ell[0].height) == pytest.approx(big, rel=1e-6)


def test_ordination_groups_and_covariate_arrows(mite_nocov):
    fit = mite_nocov
    ax = plotting.plot_ordination(fit, color="Topo", covariate_arrows=True, site_labels=True)
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["Blanket", "Hummock"]
    assert sorted(_texts(ax, "covariate")) == sorted(fit.ordination().covariates.index)
    assert sorted(_texts(ax, "site_label")) == sorted(f" {s}" for s in fit.sites)
    (sites,) = _by_gid(ax, "sites")
    colors = sites.get_facecolors()
    topo = fit.community.X["Topo"].to_numpy()
    assert len({tuple(c) for c in colors[topo == topo[0]]}) == 1
    assert len({tuple(c) for c in colors}) == 2
    with pytest.raises(jsdm.JSDMError, match="not a site covariate"):
        plotting.plot_ordination(fit, color="pH")


def test_ordination_from_the_result_method(mite_poisson):
    ax = mite_poisson.plot_ordination(biplot=True, scaling="species")
    assert _by_gid(ax, "sites")[0].get_offsets().shape[0] == len(mite_poisson.sites)
    assert "species" in ax.get_title()


# --- associations --------------------------------------------------------------------------
def test_association_heatmap(mite_poisson):
    fit = mite_poisson
    m = len(fit.species)
    ax = plotting.plot_associations(fit)
    (img,) = _by_gid(ax, "associations")
    arr = img.get_array()
    assert arr.shape == (m, m)
    iu = np.triu_indices(m, 1)
    assert arr.mask[iu].all() and not arr.mask[np.tril_indices(m)].any()
    assert img.get_clim() == (-1.0, 1.0)
    assert img.get_cmap().name == "RdBu_r"
    assert len(ax.figure.axes) == 2                      # colour bar
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert sorted(labels) == sorted(map(str, fit.species))
    assert labels == [t.get_text() for t in ax.get_yticklabels()]
    R = fit.residual_correlation().loc[labels, labels].to_numpy()
    np.testing.assert_allclose(arr.data[np.tril_indices(m)], R[np.tril_indices(m)])
    order = cluster_order(fit.residual_correlation().to_numpy())
    assert labels == [str(fit.species[i]) for i in order]


def test_association_heatmap_unclustered_and_significant_only(mite_poisson):
    fit = mite_poisson
    ax = plotting.plot_associations(fit, cluster=False, only_significant=True)
    assert [t.get_text() for t in ax.get_xticklabels()] == list(map(str, fit.species))
    arr = _by_gid(ax, "associations")[0].get_array()
    tab = A.association_table(fit)
    shown = int((~arr.mask).sum()) - len(fit.species)     # lower triangle less the diagonal
    assert shown == int(tab.excludes_zero.sum())
    assert "excludes 0" in ax.get_title()


def test_cluster_order_groups_correlated_species():
    block = np.kron(np.eye(2), np.ones((3, 3))) * 0.9 + np.eye(6) * 0.1
    perm = np.array([0, 3, 1, 4, 2, 5])
    order = cluster_order(block[np.ix_(perm, perm)])
    groups = (perm[order] >= 3).astype(int)
    assert np.count_nonzero(np.diff(groups)) == 1        # one block after the other


# --- residuals -------------------------------------------------------------------------------
def test_residual_panels(with_missing):
    fit = with_missing
    fig = plotting.plot_residuals(fit, seed=3)
    assert len(fig.axes) == 5
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["vs linear predictor", "normal Q-Q", "vs site", "vs species", "scale-location"]
    for ax in fig.axes:
        (pts,) = _by_gid(ax, "residuals")
        assert pts.get_offsets().shape == (fit.nobs, 2)  # missing cells left out
    sp_ax = fig.axes[3]
    assert [t.get_text() for t in sp_ax.get_xticklabels()] == list(map(str, fit.species))
    r = fit.residuals(kind="dunn-smyth", seed=3).to_numpy()
    qq = _by_gid(fig.axes[1], "residuals")[0].get_offsets()
    np.testing.assert_allclose(qq[:, 1], np.sort(r[np.isfinite(r)]))
    again = plotting.plot_residuals(fit, seed=3)
    np.testing.assert_array_equal(_by_gid(again.axes[0], "residuals")[0].get_offsets(),
                                  _by_gid(fig.axes[0], "residuals")[0].get_offsets())
    other = plotting.plot_residuals(fit, seed=4)
    assert not np.array_equal(_by_gid(other.axes[0], "residuals")[0].get_offsets(),
                              _by_gid(fig.axes[0], "residuals")[0].get_offsets())


# --- coefficients ----------------------------------------------------------------------------
def _forest_points(ax):
    pts = []
    for gid in ("significant", "not significant"):
        for c in ax.containers:
            if c.get_label().startswith("95%") and c.lines[0].get_gid() == gid:
                pts.append(np.asarray(c.lines[0].get_xydata()))
    return np.vstack(pts)


def test_coefficient_forest_plot(mite_poisson):
    fit = mite_poisson
    fig = plotting.plot_coefficients(fit)
    assert len(fig.axes) == len(fit.terms) == 2
    for ax, term in zip(fig.axes, fit.terms):
        assert ax.get_title() == term
        labels = [t.get_text() for t in ax.get_yticklabels()]
        expected = fit.coef[term].sort_values().index
        assert labels == list(map(str, expected))         # sorted by estimate
        pts = _forest_points(ax)
        assert pts.shape == (len(fit.species), 2)
        est = fit.coef[term].loc[[fit.species[0]]].iloc[0]
        assert est in pts[:, 0]
        assert _by_gid(ax, "zero")[0].get_xdata()[0] == 0.0


def test_coefficient_single_term_on_given_axes(mite_poisson):
    _, ax0 = plt.subplots()
    fig = mite_poisson.plot_coefficients(term="WatrCont", ax=ax0)
    assert fig is ax0.figure                       # plot_coefficients always returns the Figure
    ax = ax0
    assert _forest_points(ax).shape[0] == len(mite_poisson.species)
    with pytest.raises(jsdm.JSDMError, match="unknown term"):
        plotting.plot_coefficients(mite_poisson, term="pH")


def test_coefficients_need_covariates(mite_nocov):
    with pytest.raises(jsdm.JSDMError, match="no covariates"):
        plotting.plot_coefficients(mite_nocov)


# --- variance partitioning -------------------------------------------------------------------
def test_variance_partition_bars(mite_poisson):
    fit = mite_poisson
    ax = plotting.plot_variance_partition(fit, groups="terms")
    vp = fit.variance_partition(groups="terms")
    assert len(ax.containers) == vp.shape[1] == 3
    heights = np.array([[b.get_height() for b in c] for c in ax.containers])
    assert heights.shape == (3, len(fit.species))
    np.testing.assert_allclose(heights.sum(axis=0), 1.0)
    np.testing.assert_allclose(heights.T, vp.to_numpy())
    assert [t.get_text() for t in ax.get_xticklabels()] == list(map(str, fit.species))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(vp.columns)
    srt = plotting.plot_variance_partition(fit, sort=True)
    first = [b.get_height() for b in srt.containers[0]]
    assert np.all(np.diff(first) <= 0)
