"""Forest plots of species-specific covariate slopes."""
import numpy as np
import pandas as pd

from ..exceptions import JSDMError
from ._util import get_ax, label_fontsize, new_figure, short_label, short_labels


def coefficient_table(fit, term, alpha=0.05):
    """Slopes of one term across species with Wald intervals, sorted by estimate.

    Parameters
    ----------
    fit : GLLVMResults
    term : str
        A design column (one of ``fit.terms``).
    alpha : float

    Returns
    -------
    DataFrame indexed by species with columns estimate, lower, upper, excludes_zero
    """
    if term not in fit.terms:
        raise JSDMError(f"unknown term {term!r}; the model's covariate terms are {list(fit.terms)}")
    ci = fit.conf_int(alpha=alpha)
    est = fit.params
    sel = [("coef", sp, term) for sp in fit.species]
    lo_hi = ci.loc[sel].to_numpy(dtype=float)
    tab = pd.DataFrame({"estimate": est.loc[sel].to_numpy(dtype=float),
                        "lower": lo_hi[:, 0], "upper": lo_hi[:, 1]}, index=fit.species)
    tab["excludes_zero"] = (tab["lower"] > 0) | (tab["upper"] < 0)
    return tab.sort_values("estimate")


def _forest(ax, tab, term, alpha):
    """Draw one forest panel from a coefficient table."""
    y = np.arange(len(tab))
    sig = tab["excludes_zero"].to_numpy()
    err = np.vstack([tab["estimate"] - tab["lower"], tab["upper"] - tab["estimate"]])
    err = np.where(np.isfinite(err), err, 0.0)
    for mask, color, gid in ((sig, "firebrick", "significant"), (~sig, "0.45", "not significant")):
        if mask.any():
            ax.errorbar(tab["estimate"].to_numpy()[mask], y[mask], xerr=err[:, mask], fmt="o", ms=3.5,
                        color=color, ecolor=color, elinewidth=1.0, capsize=0, gid=gid,
                        label=f"{100 * (1 - alpha):.0f}% CI {'excludes' if gid == 'significant' else 'includes'} 0")
    ax.axvline(0.0, color="0.3", lw=0.8, ls="--", gid="zero")
    ax.set_yticks(y, labels=short_labels(list(tab.index)), fontsize=label_fontsize(len(tab)))
    ax.set_ylim(-0.7, len(tab) - 0.3)
    ax.set_xlabel(f"slope of {short_label(term)}")
    ax.set_title(short_label(term))


def plot_coefficients(fit, term=None, ax=None, *, alpha=0.05):
    """Forest plot of the species' slopes with (1 - alpha) Wald intervals.

    Species are sorted by their estimate; intervals that exclude zero are red;
    a dashed line marks zero. Intervals come from ``fit.conf_int(alpha)``.

    Parameters
    ----------
    fit : GLLVMResults
        A fit with covariates.
    term : str, optional
        One covariate term: draws on ``ax`` and returns the Axes. When None,
        one panel per term in one Figure, which is returned.
    ax : matplotlib Axes, optional
        Only with ``term``.
    alpha : float

    Returns
    -------
    matplotlib Axes (``term`` given) or Figure (one Axes per term)
    """
    if not fit.terms:
        raise JSDMError("the model has no covariates, so there are no slopes to plot")
    if term is not None:
        ax = get_ax(ax, (5.0, 0.16 * len(fit.species) + 1.5))
        _forest(ax, coefficient_table(fit, term, alpha), term, alpha)
        return ax
    if ax is not None:
        raise JSDMError("ax= needs term=; with term=None a Figure with one panel per term is drawn")
    p = len(fit.terms)
    fig, axs = new_figure(1, p, (4.2 * p, 0.16 * len(fit.species) + 1.8))
    for k, t in enumerate(fit.terms):
        _forest(axs[0, k], coefficient_table(fit, t, alpha), t, alpha)
    axs[0, 0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
