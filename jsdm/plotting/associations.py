"""Species association heatmap and variance-partition bars."""
import numpy as np

from ._util import get_ax, label_fontsize, readable, short_label, short_labels, subset_species


def cluster_order(cor):
    """Leaf order of average-linkage clustering on the distance 1 - correlation.

    Parameters
    ----------
    cor : ndarray (m, m)

    Returns
    -------
    ndarray (m,) of positions
    """
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    m = cor.shape[0]
    if m < 3:
        return np.arange(m)
    dist = np.clip(1.0 - np.nan_to_num(cor, nan=0.0), 0.0, 2.0)
    dist = (dist + dist.T) / 2.0
    np.fill_diagonal(dist, 0.0)
    return leaves_list(linkage(squareform(dist, checks=False), method="average", optimal_ordering=True))


def plot_associations(fit, cluster=True, only_significant=False, ax=None, *, alpha=0.05,
                      method="delta", add_family_variance="observation", cmap="RdBu_r",
                      species=None, labels="auto", n_boot=200, seed=None, transform="angle"):
    """Heatmap of residual correlations (lower triangle) with a colour bar.

    Parameters
    ----------
    fit : GLLVMResults
    cluster : bool
        Order species by hierarchical clustering (average linkage on 1 - r);
        otherwise keep the fit's (or ``species``') order.
    only_significant : bool
        Blank out pairs whose (1 - alpha) interval contains 0 (intervals from
        :func:`jsdm.analysis.associations.residual_correlation_intervals` with
        ``method``, ``n_boot``, ``seed`` and ``transform``).
    ax : matplotlib Axes, optional
        Axes to draw on (default: a new figure sized for the species).
    alpha : float
        1 - confidence level of the intervals (with ``only_significant``).
    method : {"delta", "bootstrap"}
        Interval method (with ``only_significant``).
    add_family_variance : {"observation", "lognormal", "trigamma"} or bool
        The association measure (see
        :func:`jsdm.analysis.associations.residual_correlation`); False for
        Theta Theta' alone.
    cmap : str
        Diverging colour map, centred at 0 (limits -1, 1).
    species : list, optional
        Species to show (default all), e.g. those with enough information.
    labels : "auto" or bool
        Species names on the axes; "auto" writes them only when they can be
        read (at most ``READABLE_LABELS`` species).
    n_boot : int
        Bootstrap refits (``method="bootstrap"``).
    seed : int, optional
        Seed of the bootstrap.
    transform : {"angle", "fisher", "none"}
        Scale of the delta-method interval.

    Returns
    -------
    matplotlib Axes (its image has gid "associations"; ``ax.species_order``
    holds the species in the order drawn)
    """
    from ..analysis import associations as assoc

    R = assoc.residual_correlation(fit, add_family_variance=add_family_variance)
    pos = subset_species(fit, species)
    vals = R.to_numpy()[np.ix_(pos, pos)].copy()
    if only_significant:
        ci = assoc.residual_correlation_intervals(fit, alpha=alpha, method=method,
                                                  add_family_variance=add_family_variance,
                                                  n_boot=n_boot, seed=seed, transform=transform)
        keep = ((ci.lower.to_numpy() > 0) | (ci.upper.to_numpy() < 0))[np.ix_(pos, pos)]
        np.fill_diagonal(keep, True)
        vals[~keep] = np.nan
    base = R.to_numpy()[np.ix_(pos, pos)]
    order = cluster_order(base) if cluster else np.arange(len(pos))
    vals = vals[np.ix_(order, order)]
    vals[np.triu_indices_from(vals, 1)] = np.nan
    names = R.index[pos][order]
    m = len(names)
    ax = get_ax(ax, (0.18 * m + 2.5, 0.16 * m + 2.0))
    img = ax.imshow(np.ma.masked_invalid(vals), cmap=cmap, vmin=-1.0, vmax=1.0,
                    interpolation="nearest", aspect="equal")
    img.set_gid("associations")
    if readable(m, labels):
        fs = label_fontsize(m)
        shown = short_labels(list(names))
        ax.set_xticks(np.arange(m), labels=shown, rotation=90, fontsize=fs)
        ax.set_yticks(np.arange(m), labels=shown, fontsize=fs)
    else:
        ticks = np.arange(0, m, max(1, int(np.ceil(m / 10.0))))
        ax.set_xticks(ticks, labels=[str(t + 1) for t in ticks])
        ax.set_yticks(ticks, labels=[str(t + 1) for t in ticks])
        ax.set_xlabel(f"species 1..{m} in clustering order (names in the table)")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    what = "Theta Theta' correlation" if assoc._measure(add_family_variance) is None else "residual correlation"
    ax.figure.colorbar(img, ax=ax, shrink=0.7, label=what)
    title = "Residual correlations"
    ax.set_title(title + (f" (interval excludes 0, {100 * (1 - alpha):.0f}%)" if only_significant else ""))
    ax.species_order = list(names)
    return ax


def plot_variance_partition(fit, ax=None, *, groups=None, sort=False, colors=None, species=None,
                            labels="auto"):
    """Stacked bars per species: share of linear-predictor variance by component.

    Parameters
    ----------
    fit : GLLVMResults
    ax : matplotlib Axes, optional
    groups : None, "terms" or dict
        Covariate grouping (see :func:`jsdm.analysis.associations.variance_partition`).
    sort : bool
        Order species by the share of the first component.
    colors : list of colours, optional
    species : list, optional
        Species to show (default all).
    labels : "auto" or bool
        Species names under the bars; "auto" only when readable.

    Returns
    -------
    matplotlib Axes (one bar container per component, labelled, in ``ax.containers``)
    """
    import matplotlib.pyplot as plt

    from ..analysis.associations import variance_partition

    vp = variance_partition(fit, groups=groups)
    if species is not None:
        vp = vp.iloc[subset_species(fit, species)]
    if sort and vp.shape[1]:
        vp = vp.sort_values(vp.columns[0], ascending=False)
    m = vp.shape[0]
    ax = get_ax(ax, (min(14.0, max(6.0, 0.22 * m + 2.0)), 4.5))
    colors = colors or plt.get_cmap("tab10").colors
    x = np.arange(m)
    bottom = np.zeros(m)
    for k, comp in enumerate(vp.columns):
        h = vp[comp].fillna(0.0).to_numpy()
        ax.bar(x, h, bottom=bottom, width=0.85, color=colors[k % len(colors)], label=short_label(comp),
               edgecolor="white", linewidth=0.3, gid=str(comp))
        bottom += h
    if readable(m, labels):
        ax.set_xticks(x, labels=short_labels(list(vp.index)), rotation=90, fontsize=label_fontsize(m))
    else:
        ax.set_xticks([])
        ax.set_xlabel(f"{m} species" + (" (sorted)" if sort else ""))
    ax.set_xlim(-0.6, m - 0.4)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of linear-predictor variance")
    ax.set_title("Variance partitioning")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return ax
