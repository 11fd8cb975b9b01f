"""Species association networks: species as nodes, associations as signed, weighted edges."""
import numpy as np
import pandas as pd

from .._numerics import analysis_rng
from ._util import get_ax, label_fontsize


def spring_layout(A, seed=0, iterations=300):
    """Force-directed node positions (Fruchterman & Reingold 1991) for a weighted graph.

    Connected species are pulled together in proportion to the edge weight,
    all species repel, and a weak pull to the centre keeps components close.
    Deterministic for a given ``seed``. Species without edges are not placed
    here (see :func:`plot_network`).

    Parameters
    ----------
    A : ndarray (p, p), symmetric, non-negative weights (0: no edge)

    Returns
    -------
    ndarray (p, 2), coordinates roughly within the unit disc
    """
    p = A.shape[0]
    if p == 1:
        return np.zeros((1, 2))
    rng = analysis_rng(seed)
    ang = 2 * np.pi * np.arange(p) / p
    pos = np.column_stack([np.cos(ang), np.sin(ang)]) + 0.05 * rng.standard_normal((p, 2))
    k = 1.0 / np.sqrt(p)
    W = A / (A.max() if A.max() > 0 else 1.0)
    temp = 0.1
    for _ in range(int(iterations)):
        delta = pos[:, None, :] - pos[None, :, :]
        dist = np.maximum(np.sqrt((delta ** 2).sum(-1)), 1e-3)
        force = k * k / dist - W * dist * dist / k                 # repulsion - attraction
        np.fill_diagonal(force, 0.0)
        disp = (delta / dist[..., None] * force[..., None]).sum(1) - 0.05 * pos
        length = np.maximum(np.sqrt((disp ** 2).sum(-1)), 1e-9)
        pos = pos + disp / length[:, None] * np.minimum(length, temp)[:, None]
        temp *= 0.985
    pos -= np.median(pos, axis=0)
    rad = np.sqrt((pos ** 2).sum(1))
    scale = max(np.quantile(rad, 0.9), 1e-9)      # robust: one far node must not shrink the rest
    pos = pos / scale
    rad = rad / scale
    far = rad > 1.1
    pos[far] *= (1.1 + 0.1 * np.tanh(rad[far] - 1.1))[:, None] / rad[far][:, None]
    return pos


def _circle_order(A):
    """Species order around a circle: average-linkage clustering on 1 - |weight|."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    p = A.shape[0]
    if p < 3:
        return np.arange(p)
    D = 1.0 - np.abs(A) / max(np.abs(A).max(), 1e-12)
    np.fill_diagonal(D, 0.0)
    return leaves_list(linkage(squareform(D, checks=False), "average"))


def plot_network(fit_or_matrix, ax=None, layout="auto", threshold=0.0, labels=True, seed=0,
                 max_width=4.0, **kwargs):
    """Draw species associations as a network.

    Parameters
    ----------
    fit_or_matrix : GLLVMResults or DataFrame (species x species)
        A fit (its sparse partial correlations, ``fit.partial_correlation(**kwargs)``)
        or any symmetric association matrix with species labels.
    ax : matplotlib Axes, optional
    layout : {"auto", "spring", "circle"}
        "spring": force-directed, associated species close together (species
        with no edge go on an outer ring); "circle": all species on a circle in
        clustering order (readable for dense networks); "auto": "spring" when
        at most 15% of the species pairs are connected, else "circle".
    threshold : float
        Edges with |association| <= threshold are not drawn.
    labels : bool
        Label the nodes (font size shrinks with the number of species).
    seed : int
        Seed of the spring layout.
    max_width : float
        Line width of the strongest edge; widths scale with |association|.
    **kwargs
        Passed to ``partial_correlation`` when a fit is given.

    Returns
    -------
    Axes
        Edges red (positive) or blue (negative), as in the association heatmap;
        node size grows with the number of edges. Artists carry gids "edges",
        "nodes", "labels".
    """
    from matplotlib.collections import LineCollection

    from ..exceptions import JSDMError

    if isinstance(fit_or_matrix, pd.DataFrame):
        M = fit_or_matrix
    elif hasattr(fit_or_matrix, "partial_correlation"):
        M = fit_or_matrix.partial_correlation(**kwargs)
    else:
        raise JSDMError("plot_network takes a fitted model or a species x species DataFrame, got "
                        f"{type(fit_or_matrix).__name__}")
    if layout not in ("auto", "spring", "circle"):
        raise JSDMError(f"layout must be 'auto', 'spring' or 'circle', got {layout!r}")
    names = [str(x) for x in M.index]
    V = M.to_numpy(dtype=float).copy()
    np.fill_diagonal(V, 0.0)
    V[~np.isfinite(V)] = 0.0
    V[np.abs(V) <= threshold] = 0.0
    p = len(names)
    deg = (V != 0).sum(1)
    if layout == "auto":
        layout = "spring" if deg.sum() / 2 <= 0.15 * p * (p - 1) / 2 else "circle"
    pos = _positions(V, deg, layout, seed)
    ax = get_ax(ax, figsize=(7.5, 7.5) if p <= 60 else (9.5, 9.5))
    iu = np.argwhere(np.triu(V != 0, 1))
    if len(iu):
        w = np.abs(V[iu[:, 0], iu[:, 1]])
        order = np.argsort(w)                   # strongest drawn last (on top)
        segs = [(pos[i], pos[j]) for i, j in iu[order]]
        col = np.where(V[iu[order, 0], iu[order, 1]] > 0, "#b2182b", "#2166ac")
        lc = LineCollection(segs, linewidths=0.3 + max_width * w[order] / w.max(), colors=col,
                            alpha=0.75, gid="edges", zorder=1)
        ax.add_collection(lc)
    size = 20 + 200 * deg / max(deg.max(), 1)
    ax.scatter(pos[:, 0], pos[:, 1], s=size, c=np.where(deg > 0, "#4d4d4d", "#bdbdbd"),
               edgecolors="white", linewidths=0.5, zorder=2, gid="nodes")
    if labels:
        fs = label_fontsize(p, base=9.0, lo=5.0)
        for (x, y), name in zip(pos, names):
            if layout == "circle":          # labels outside the circle, along the radius
                ang = np.degrees(np.arctan2(y, x))
                flip = 90 < ang % 360 < 270
                ax.annotate(name, (x, y), xytext=(1.06 * x, 1.06 * y), fontsize=fs, zorder=3,
                            rotation=ang + 180 if flip else ang, rotation_mode="anchor",
                            ha="right" if flip else "left", va="center", gid="labels")
            else:
                ax.annotate(name, (x, y), xytext=(3, 3), textcoords="offset points",
                            fontsize=fs, zorder=3, gid="labels")
    n_edges = len(iu)
    what = M.attrs.get("method", "")
    ax.set_title(f"{n_edges} associations among {p} species"
                 + (f" ({'graphical lasso' if what == 'glasso' else what})" if what else ""),
                 fontsize=10, pad=40 if layout == "circle" and labels else 6)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.margins(0.08)
    return ax


def _positions(V, deg, layout, seed):
    p = V.shape[0]
    if layout == "circle":
        order = _circle_order(V)
        ang = 2 * np.pi * np.arange(p) / p
        pos = np.empty((p, 2))
        pos[order] = np.column_stack([np.cos(ang), np.sin(ang)])
        return pos
    pos = np.empty((p, 2))
    con = np.flatnonzero(deg > 0)
    iso = np.flatnonzero(deg == 0)
    if len(con):
        pos[con] = spring_layout(np.abs(V[np.ix_(con, con)]), seed=seed)
    if len(iso):                                # species without edges: an outer ring
        ang = 2 * np.pi * np.arange(len(iso)) / len(iso)
        r = 1.25 if len(con) else 1.0
        pos[iso] = r * np.column_stack([np.cos(ang), np.sin(ang)])
    return pos
