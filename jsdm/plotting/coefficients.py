"""Forest plots of species-specific covariate slopes."""
import numpy as np
import pandas as pd

from ..exceptions import JSDMError
from ._util import label_fontsize, new_figure, short_label, short_labels, subset_species

#: species per forest panel (about 0.17 inch each: labels stay readable)
PER_PANEL = 40
#: at most this many species per term; beyond, those with the largest |z| are drawn
MAX_SPECIES = 120


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


def _limits(tab):
    """x limits from the estimates and the bulk of the interval ends (long tails are clipped)."""
    if not len(tab):
        return -1.0, 1.0
    est = tab["estimate"].to_numpy()
    lo, hi = tab["lower"].to_numpy(), tab["upper"].to_numpy()
    a, b = min(est.min(), np.quantile(lo, 0.1)), max(est.max(), np.quantile(hi, 0.9))
    a, b = min(a, 0.0), max(b, 0.0)
    pad = 0.06 * max(b - a, 1e-9)
    return a - pad, b + pad


def _forest(ax, tab, term, alpha, xlim=None, rows=None):
    """Draw one forest panel from a coefficient table (finite intervals only)."""
    y = np.arange(len(tab))
    sig = tab["excludes_zero"].to_numpy()
    est = tab["estimate"].to_numpy()
    xlim = _limits(tab) if xlim is None else xlim
    lo = np.clip(tab["lower"].to_numpy(), *xlim)
    hi = np.clip(tab["upper"].to_numpy(), *xlim)
    err = np.vstack([est - lo, hi - est])
    for mask, color, gid in ((sig, "firebrick", "significant"), (~sig, "0.45", "not significant")):
        if mask.any():
            ax.errorbar(est[mask], y[mask], xerr=err[:, mask], fmt="o", ms=3.5,
                        color=color, ecolor=color, elinewidth=1.0, capsize=0, gid=gid,
                        label=f"{100 * (1 - alpha):.0f}% CI {'excludes' if gid == 'significant' else 'includes'} 0")
    for side, ends, marker in ((0, tab["lower"].to_numpy(), "<"), (1, tab["upper"].to_numpy(), ">")):
        cut = ends < xlim[0] if side == 0 else ends > xlim[1]
        if cut.any():
            ax.plot(np.full(cut.sum(), xlim[side]), y[cut], ls="", marker=marker, ms=4,
                    color="0.2", gid="clipped")
    ax.axvline(0.0, color="0.3", lw=0.8, ls="--", gid="zero")
    ax.set_yticks(y, labels=short_labels(list(tab.index)), fontsize=label_fontsize(len(tab), lo=7.0))
    ax.set_ylim(max(rows or 0, len(tab), 1) - 0.3, -0.7)    # first species on top; same row height
    ax.set_xlim(*xlim)
    ax.set_xlabel(f"slope of {short_label(term)}")
    ax.set_title(short_label(term))


def _shown(fit, term, alpha, species, max_species):
    """(table of finite intervals to draw, list of species left out, note)."""
    tab = coefficient_table(fit, term, alpha)
    if species is not None:
        tab = tab.loc[[s for s in tab.index if s in set(fit.species[subset_species(fit, species)])]]
    from ..analysis.diagnostics import species_information

    info = species_information(fit)
    unident = info["no_finite_optimum"].reindex(tab.index).to_numpy()
    finite = np.isfinite(tab[["estimate", "lower", "upper"]]).all(axis=1).to_numpy()
    left = list(tab.index[~finite | unident])
    tab = tab[finite & ~unident]
    note = (f"not shown: {len(left)} species without a finite optimum or interval "
            f"({', '.join(map(str, left[:4]))}{', ...' if len(left) > 4 else ''})" if left else "")
    if len(tab) > max_species:
        z = tab["estimate"] / ((tab["upper"] - tab["lower"]) / 2.0).replace(0.0, np.nan)
        keep = z.abs().sort_values(ascending=False).index[:max_species]
        note = "; ".join(x for x in (note, f"the {max_species} species with the largest |z| of "
                                           f"{len(tab)} shown") if x)
        tab = tab.loc[keep].sort_values("estimate")
    return tab, left, note


def plot_coefficients(fit, term=None, ax=None, *, alpha=0.05, species=None, per_panel=PER_PANEL,
                      max_species=MAX_SPECIES):
    """Forest plot of the species' slopes with (1 - alpha) Wald intervals.

    Species are sorted by their estimate; intervals that exclude zero are red;
    a dashed line marks zero. Intervals come from ``fit.conf_int(alpha)``.
    Only species with finite intervals and a finite optimum
    (:func:`jsdm.analysis.diagnostics.species_information`) are drawn (a note
    names those left out); the x axis covers the estimates and the bulk of
    the intervals, and intervals running past it end in an arrow head
    (gid "clipped"). Long lists are split into panels of ``per_panel``
    species side by side, so every label stays readable.

    Parameters
    ----------
    fit : GLLVMResults
        A fit with covariates.
    term : str, optional
        One covariate term: with ``ax`` draws on it (at most ``per_panel``
        species, the largest |z|); without ``ax``, a Figure with as many
        panels as needed. When None, one row of panels per term in one Figure.
    ax : matplotlib Axes, optional
        Only with ``term``.
    alpha : float
        1 - confidence level of the intervals.
    species : list, optional
        Species to consider (default all), e.g. those with enough information.
    per_panel : int
        Species per panel.
    max_species : int
        At most this many species per term (largest |z| kept).

    Returns
    -------
    matplotlib Figure
        The figure drawn on (with ``ax``: ``ax.figure``). Before jsdm 0.2 a
        call with ``ax`` returned the Axes.
    """
    if not fit.terms:
        raise JSDMError("the model has no covariates, so there are no slopes to plot")
    if ax is not None:
        if term is None:
            raise JSDMError("ax= needs term=; with term=None a Figure with one panel per term is drawn")
        tab, _, note = _shown(fit, term, alpha, species, min(per_panel, max_species))
        _forest(ax, tab, term, alpha)
        if note:
            ax.text(0.0, -0.12, note, transform=ax.transAxes, fontsize=7, color="0.35", gid="note")
        return ax.figure
    terms = list(fit.terms) if term is None else [term]
    shown = [_shown(fit, t, alpha, species, max_species) for t in terms]
    ncol = max(1, max(int(np.ceil(len(tab) / per_panel)) for tab, _, _ in shown))
    rows = max(1, max(int(np.ceil(len(tab) / max(1, np.ceil(len(tab) / per_panel))))
                      for tab, _, _ in shown))
    height = 0.17 * rows + 1.6
    if ncol == 1:                       # short lists: one row with a panel per term
        fig, axs = new_figure(1, len(terms), (4.2 * len(terms), height))
        grid = [[axs[0, k]] for k in range(len(terms))]
    else:                               # long lists: a row per term, split into columns
        fig, axs = new_figure(len(terms), ncol, (4.2 * ncol, height * len(terms)))
        grid = [list(axs[k]) for k in range(len(terms))]
    for (tab, _, note), t, row in zip(shown, terms, grid):
        xlim = _limits(tab)
        n_chunks = max(1, int(np.ceil(len(tab) / per_panel)))
        cuts = np.linspace(0, len(tab), n_chunks + 1).round().astype(int)
        chunks = [tab.iloc[cuts[i]:cuts[i + 1]] for i in range(n_chunks)]
        for k, a in enumerate(row):
            if k < len(chunks) and len(chunks[k]):
                _forest(a, chunks[k], t, alpha, xlim, rows=len(chunks[0]) if ncol > 1 else None)
                if len(chunks) > 1:
                    a.set_title(f"{t} ({k + 1}/{len(chunks)})")
            else:
                a.set_visible(False)
        if note:
            row[0].annotate(note, (0.0, 0.0), xycoords="axes fraction", xytext=(0, -30),
                            textcoords="offset points", fontsize=7, color="0.35", va="top",
                            gid="note")
    grid[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
