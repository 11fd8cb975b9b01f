"""Ordination biplot of a fitted GLLVM."""
import numpy as np
import pandas as pd
from scipy import stats

from ..exceptions import JSDMError
from ._util import get_ax, short_label, short_labels, subset_species


def _site_colors(fit, color):
    """(values, is_categorical) aligned with the sites, or (None, False)."""
    if color is None:
        return None, False
    if isinstance(color, str):
        X = getattr(fit.community, "X", None)
        if X is None or color not in X.columns:
            avail = [] if X is None else list(X.columns)
            raise JSDMError(f"color={color!r} is not a site covariate; available: {avail}")
        color = X[color]
    col = pd.Series(color) if not isinstance(color, pd.Series) else color
    if isinstance(color, pd.Series) and col.index.isin(fit.sites).all() and len(col) >= len(fit.sites):
        col = col.reindex(fit.sites)
    elif len(col) != len(fit.sites):
        raise JSDMError(f"color has {len(col)} values for {len(fit.sites)} sites")
    numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    return col, not numeric


def _draw_sites(ax, xy, col, categorical, cname):
    """Scatter the sites; colour bar or legend for the colouring variable."""
    kw = dict(s=22, edgecolor="white", linewidth=0.4, zorder=3, gid="sites")
    if col is None:
        return ax.scatter(xy[:, 0], xy[:, 1], color="0.35", **kw)
    if not categorical:
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=col.to_numpy(float), cmap="viridis", **kw)
        ax.figure.colorbar(sc, ax=ax, label=short_label(cname), shrink=0.8)
        return sc
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    cat = col.astype("category")
    cmap = plt.get_cmap("tab10" if len(cat.cat.categories) <= 10 else "tab20")
    colors = [cmap(c % cmap.N) for c in cat.cat.codes]
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=colors, **kw)
    levels = short_labels(list(cat.cat.categories))
    handles = [Line2D([], [], marker="o", ls="", color=cmap(k % cmap.N), label=lev)
               for k, lev in enumerate(levels)]
    ax.legend(handles=handles, title=short_label(cname), fontsize=7, title_fontsize=8, loc="best")
    return sc


def _draw_ellipses(ax, xy, cov, level):
    """Prediction ellipses of the site scores from their (2 x 2) variational covariances."""
    from matplotlib.patches import Ellipse

    r = np.sqrt(stats.chi2.ppf(level, df=2))
    vals, vecs = np.linalg.eigh(cov)
    for (x, y), w, v in zip(xy, vals, vecs):
        ang = np.degrees(np.arctan2(v[1, 1], v[0, 1]))
        w = np.sqrt(np.clip(w, 0.0, None))
        ax.add_patch(Ellipse((x, y), 2 * r * w[1], 2 * r * w[0], angle=ang, fill=False,
                             lw=0.6, color="0.55", alpha=0.7, gid="ellipse"))


def _draw_arrows(ax, xy, names, color, gid, fontsize=7, label=None):
    """Arrows from the origin, with a text label at the tips where ``label`` (bool array) is set."""
    from matplotlib.patches import FancyArrowPatch

    label = np.ones(len(xy), bool) if label is None else np.asarray(label, bool)
    for (x, y), name, lab in zip(xy, short_labels(list(names)), label):
        ax.add_artist(FancyArrowPatch((0, 0), (x, y), arrowstyle="->", mutation_scale=8,
                                      color=color if lab else "0.7", lw=0.8 if lab else 0.5,
                                      alpha=0.8, gid=gid if lab else gid + "_unlabelled"))
        if lab:
            t = ax.text(x * 1.06, y * 1.06, name, color=color, fontsize=fontsize,
                        ha="left" if x >= 0 else "right", va="bottom" if y >= 0 else "top")
            t.set_gid(gid)
    ax.update_datalim(np.vstack([np.asarray(xy) * 1.2, [[0.0, 0.0]]]))


#: biplots label every species up to this many, else the ``TOP_LABELS`` longest arrows
LABEL_ALL = 40
TOP_LABELS = 25


def _draw_species(ax, scores, site_radius, species_scale, label_species):
    """Species arrows, scaled for display (the factor is written on the plot)."""
    sp = scores.to_numpy()
    f = 0.9 * site_radius / _radius(sp) if species_scale == "auto" else float(species_scale)
    m = len(sp)
    if label_species == "auto":
        label_species = m if m <= LABEL_ALL else TOP_LABELS
    k = m if label_species is True else (0 if label_species is False else int(label_species))
    label = np.zeros(m, bool)
    label[np.argsort(-np.linalg.norm(sp, axis=1))[:k]] = True
    _draw_arrows(ax, sp * f, scores.index, "firebrick", "species", label=label)
    notes = []
    if not np.isclose(f, 1.0):
        notes.append(f"species scores x {f:.2g}")
    if k < m:
        notes.append(f"{k} of {m} species labelled (longest arrows)")
    if notes:
        ax.text(0.01, 0.01, "; ".join(notes), transform=ax.transAxes,
                fontsize=7, color="firebrick", gid="note")


def _radius(xy):
    return float(np.max(np.linalg.norm(xy, axis=1))) if len(xy) else 1.0


def _old_alpha(ellipses, exponent, alpha, level):
    """(exponent, alpha) from a call that may use ``alpha`` in its pre-0.2 meaning (the exponent)."""
    import warnings

    from .._deprecation import alpha_from_level

    if alpha is not None and level is None and (not ellipses or alpha >= 0.5):
        if not ellipses:        # alpha only matters for ellipses: the caller meant the exponent
            warnings.warn("plot_ordination(alpha=...) as the biplot exponent is deprecated; use "
                          "exponent=... (alpha is 1 - coverage of the ellipses, as everywhere "
                          "in jsdm)", FutureWarning, stacklevel=4)
            return alpha, 0.05
        warnings.warn(f"plot_ordination(alpha={alpha!r}) draws {100 * (1 - alpha):.0f}% ellipses: "
                      "alpha is 1 - coverage; the biplot exponent is now exponent=...",
                      FutureWarning, stacklevel=4)
    return exponent, alpha_from_level(alpha, level, "plot_ordination", stacklevel=4)


def plot_ordination(fit, biplot=True, color=None, ellipses=False, ax=None, *, axes=(0, 1),
                    scaling="symmetric", exponent=0.5, species_scale="auto", covariate_arrows=False,
                    alpha=None, site_labels=False, species=None, label_species="auto", level=None):
    """Ordination plot: sites as points, species as labelled arrows (a biplot).

    Parameters
    ----------
    fit : GLLVMResults
        A fit with at least two latent variables.
    biplot : bool
        Draw species as arrows labelled with their names.
    color : str, Series or array-like, optional
        Site covariate name, or values per site (Series indexed by site or in
        site order); numeric gives a colour bar, categorical a legend.
    ellipses : bool
        Draw (1 - ``alpha``) prediction ellipses of the site scores from their
        variational covariances.
    ax : matplotlib Axes, optional
        Axes to draw on (default: a new figure).
    axes : (int, int)
        Principal axes to show (0-based).
    scaling : {"symmetric", "sites", "species"}
        Biplot scaling (see :func:`jsdm.analysis.ordination.ordination`).
    exponent : float in [0, 1]
        Exponent of the singular values given to the site scores with
        ``scaling="symmetric"`` (0.5: the symmetric biplot).
    species_scale : "auto" or float
        Factor applied to species scores for display; "auto" scales the
        longest arrow to 90% of the farthest site (noted on the plot).
    covariate_arrows : bool
        Arrows for the correlations of site covariates with the site scores.
    alpha : float, optional
        1 - coverage of the ellipses (default 0.05: 95% ellipses). Before
        jsdm 0.2 ``alpha`` was the biplot exponent: a call that passes
        ``alpha`` without ``ellipses=True`` is read that way, with a
        FutureWarning.
    site_labels : bool
        Write site names next to the points.
    species : list, optional
        Species drawn as arrows (default: all but those with a slope or loading
        beyond 10 on the link scale, i.e. without a finite optimum, whose
        scores would set the scale of the plot; a note says how many).
    label_species : "auto", bool or int
        Species named at their arrow: "auto" names all up to 40 species, else
        the 25 with the longest arrows (the others are thin grey arrows); an
        int names that many.
    level : float, optional
        Deprecated: coverage of the ellipses; use ``alpha = 1 - level``.

    Returns
    -------
    matplotlib Axes
    """
    from ..analysis.ordination import ordination

    exponent, alpha = _old_alpha(ellipses, exponent, alpha, level)
    if fit.num_lv < 2:
        raise JSDMError(f"an ordination plot needs num_lv >= 2; this fit has num_lv={fit.num_lv}")
    o = ordination(fit, scaling=scaling, exponent=exponent, covariates=covariate_arrows)
    i, j = axes
    ax = get_ax(ax, (7.0, 6.0))
    xy = o.sites.iloc[:, [i, j]].to_numpy()
    col, categorical = _site_colors(fit, color)
    cname = color if isinstance(color, str) else (getattr(color, "name", None) or "group")
    _draw_sites(ax, xy, col, categorical, str(cname))
    if ellipses:
        _draw_ellipses(ax, xy, o.site_cov[:, [i, j]][:, :, [i, j]], 1.0 - alpha)
    if site_labels:
        for (x, y), name in zip(xy, short_labels(list(o.sites.index))):
            ax.text(x, y, f" {name}", fontsize=6, color="0.3", gid="site_label")
    if biplot:
        if species is None:     # species without a finite optimum would set the scale
            from ..analysis.diagnostics import large_coefficient_species

            bad = set(large_coefficient_species(fit))
            species = [s for s in fit.species if s not in bad]
            if bad:
                ax.text(0.99, 0.01, f"{len(bad)} species without a finite optimum not drawn",
                        transform=ax.transAxes, ha="right", fontsize=7, color="0.35", gid="note")
        sp = o.species.iloc[subset_species(fit, species)]
        _draw_species(ax, sp.iloc[:, [i, j]], _radius(xy), species_scale, label_species)
    if covariate_arrows and o.covariates is not None:
        cov = o.covariates.iloc[:, [i, j]].to_numpy() * _radius(xy)
        _draw_arrows(ax, cov, o.covariates.index, "navy", "covariate", fontsize=8)
    ax.axhline(0, color="0.8", lw=0.6, zorder=0)
    ax.axvline(0, color="0.8", lw=0.6, zorder=0)
    ax.set_xlabel(o.axis_labels[i])
    ax.set_ylabel(o.axis_labels[j])
    ax.set_title(f"Ordination ({o.scaling} scaling)")
    ax.autoscale_view()
    return ax
