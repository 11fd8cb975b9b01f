"""Plots of constrained, concurrent and quadratic ordination.

- :func:`plot_constrained` : sites and species on principal axes of the whole latent
  part (constrained scores C'x_i, concurrent C'x_i + a_i, unconstrained a_i), with the
  same rotation and biplot scaling as :func:`jsdm.plotting.ordination.plot_ordination`,
  and covariate arrows: the change of the site scores per sd of each covariate
  (canonical coefficients times the covariate's sd), mapped to the same axes.
- :func:`plot_optima` : quadratic responses, in the fitted latent variables' own axes
  (a rotation would change the model): sites as points, species at their optima.
- :func:`plot_response_curves` : each species' expected response along one latent
  variable (the others at 0).
"""
import numpy as np
import pandas as pd

from ..exceptions import JSDMError
from ._util import get_ax, short_labels, subset_species
from .ordination import _draw_arrows, _draw_sites, _draw_species, _radius, _site_colors


def plot_constrained(fit, ax=None, *, axes=(0, 1), scaling="symmetric", exponent=0.5, color=None,
                     biplot=True, covariate_arrows=True, species=None, label_species="auto",
                     species_scale="auto"):
    """Biplot of a constrained or concurrent ordination with covariate arrows.

    Parameters
    ----------
    fit : GLLVMResults
        With ``num_rr`` or ``num_lv_c`` (and at least two latent dimensions in all).
    ax : matplotlib Axes, optional
    axes : (int, int)
        Principal axes to show (0-based).
    scaling, exponent : as in ``fit.plot_ordination``.
    color : str or array-like, optional
        Site covariate (name) or values to colour the sites.
    biplot : bool
        Draw species arrows.
    covariate_arrows : bool
        Draw the ordination covariates' arrows (scaled to the sites' extent; their
        relative lengths and directions are the model's).
    species, label_species, species_scale : as in ``fit.plot_ordination``.

    Returns
    -------
    matplotlib Axes
    """
    from ..analysis.ordination import _resolve_exponent, principal_axes
    from ..results.ordination_terms import covariate_arrows as arrows_of

    Z = fit.ordination_scores
    T = fit.ordination_loadings
    if Z.shape[1] < 2:
        raise JSDMError(f"an ordination plot needs at least 2 latent dimensions; this fit has "
                        f"{Z.shape[1]} ({fit.ordination_type})")
    al = _resolve_exponent(scaling, exponent)
    Ts, Tp, s = principal_axes(Z.to_numpy(), T.to_numpy(), al)
    names = [f"Axis{k + 1}" for k in range(Z.shape[1])]
    sites = Z.to_numpy() @ Ts
    i, j = axes
    ax = get_ax(ax, (7.0, 6.0))
    xy = sites[:, [i, j]]
    col, categorical = _site_colors(fit, color)
    cname = color if isinstance(color, str) else (getattr(color, "name", None) or "group")
    _draw_sites(ax, xy, col, categorical, str(cname))
    if biplot:
        sp = pd.DataFrame(T.to_numpy() @ Tp, index=fit.species, columns=names)
        sp = sp.iloc[subset_species(fit, species)]
        _draw_species(ax, sp.iloc[:, [i, j]], _radius(xy), species_scale, label_species)
    if covariate_arrows:
        A = arrows_of(fit)
        if len(A):
            a = A.to_numpy() @ Ts
            a = a[:, [i, j]]
            a = a * (0.9 * _radius(xy) / max(_radius(a), 1e-12))
            _draw_arrows(ax, a, A.index, "navy", "covariate", fontsize=8)
    share = s ** 2 / np.sum(s ** 2)
    ax.axhline(0, color="0.8", lw=0.6, zorder=0)
    ax.axvline(0, color="0.8", lw=0.6, zorder=0)
    ax.set_xlabel(f"{names[i]} ({100 * share[i]:.0f}%)")
    ax.set_ylabel(f"{names[j]} ({100 * share[j]:.0f}%)")
    ax.set_title(f"Ordination: {fit.ordination_type}")
    ax.autoscale_view()
    return ax


def plot_optima(fit, ax=None, *, axes=(0, 1), color=None, species=None, tolerances=True):
    """Quadratic ordination: sites and species optima in the latent variables' own axes.

    Species whose response along a shown axis is monotone (D = 0, no optimum) or whose
    optimum lies beyond twice the sites' range are left out (a note counts them).
    With ``tolerances``, each species' optimum carries an ellipse of +- 1 tolerance.

    Returns
    -------
    matplotlib Axes
    """
    from matplotlib.patches import Ellipse

    Z = fit.ordination_scores
    d = len(fit.lv_names)
    if d < 1:
        raise JSDMError("this fit has no latent variables")
    i, j = axes if d >= 2 else (0, 0)
    ax = get_ax(ax, (7.0, 6.0))
    names = list(fit.lv_names)
    xy = Z[[names[i], names[j]]].to_numpy()
    col, categorical = _site_colors(fit, color)
    cname = color if isinstance(color, str) else (getattr(color, "name", None) or "group")
    _draw_sites(ax, xy, col, categorical, str(cname))
    opt, tol = fit.optima, fit.tolerances
    keep = subset_species(fit, species)
    o = opt.iloc[keep][[names[i], names[j]]]
    t = tol.iloc[keep][[names[i], names[j]]]
    lim = 2.0 * np.abs(xy).max(0)
    ok = np.isfinite(o).all(axis=1) & (o.abs() <= lim).all(axis=1)
    ax.scatter(o[ok].iloc[:, 0], o[ok].iloc[:, 1], marker="^", color="firebrick", s=30, zorder=4,
               gid="optima")
    for (x, y), name in zip(o[ok].to_numpy(), short_labels(list(o[ok].index))):
        ax.text(x, y, f" {name}", fontsize=7, color="firebrick", gid="species_label")
    if tolerances:
        for (x, y), (tx, ty) in zip(o[ok].to_numpy(), t[ok].to_numpy()):
            ax.add_patch(Ellipse((x, y), 2 * tx, 2 * ty, fill=False, lw=0.5, color="firebrick",
                                 alpha=0.4, gid="tolerance"))
    dropped = int((~ok).sum())
    if dropped:
        ax.text(0.99, 0.01, f"{dropped} species without an optimum in range not drawn",
                transform=ax.transAxes, ha="right", fontsize=7, color="0.35", gid="note")
    ax.set_xlabel(names[i])
    ax.set_ylabel(names[j])
    ax.set_title(f"Species optima ({fit.ordination_type})")
    ax.autoscale_view()
    return ax


def plot_response_curves(fit, lv=0, species=None, ax=None, n_points=200, scale="response"):
    """Expected response of each species along one latent variable (the others at 0).

    Parameters
    ----------
    fit : GLLVMResults
        A fit with latent variables (quadratic responses give bell-shaped curves).
    lv : int or str
        The latent variable (index or name).
    species : list, optional
        Species to draw (default: all up to 20, else the 20 with the largest peaks).
    n_points : int
        Grid points over the range of the site scores (extended by 10%).
    scale : {"response", "link"}
        Expected response (the family's mean at the curve's linear predictor, covariates
        at 0) or the linear predictor itself.

    Returns
    -------
    matplotlib Axes
    """
    names = list(fit.lv_names)
    k = names.index(lv) if isinstance(lv, str) else int(lv)
    if not 0 <= k < len(names):
        raise JSDMError(f"lv={lv!r}: the fit's latent variables are {names}")
    P = fit.state.params
    z = fit.ordination_scores[names[k]].to_numpy()
    pad = 0.1 * (z.max() - z.min() + 1e-9)
    grid = np.linspace(z.min() - pad, z.max() + pad, n_points)
    quad = getattr(P, "D_q", None)
    D = np.zeros(len(fit.species)) if quad is None else np.broadcast_to(
        np.asarray(quad, dtype=float), P.theta.shape)[:, k]
    eta = P.beta0[None, :] + np.outer(grid, P.theta[:, k]) - np.outer(grid ** 2, D)
    if scale == "response":
        val = np.asarray(fit.family.mean(eta, None, s=P.s), dtype=float)
    elif scale == "link":
        val = eta
    else:
        raise JSDMError(f"scale must be 'response' or 'link', got {scale!r}")
    if species is None:
        idx = np.argsort(-val.max(0))[:20] if len(fit.species) > 20 else np.arange(len(fit.species))
    else:
        idx = subset_species(fit, species)
    ax = get_ax(ax, (7.0, 4.5))
    for jj, name in zip(idx, short_labels([fit.species[j] for j in idx])):
        ax.plot(grid, val[:, jj], lw=1.0, label=name, gid="curve")
    ax.plot(z, np.zeros_like(z) + np.nanmin(val[:, idx]), "|", color="0.4", ms=6, gid="sites")
    ax.set_xlabel(names[k])
    ax.set_ylabel("expected response" if scale == "response" else "linear predictor")
    ax.set_title(f"Response curves along {names[k]}")
    if len(idx) <= 20:
        ax.legend(fontsize=6, ncol=2, loc="best")
    return ax
