"""Dunn-Smyth residual panels."""
import numpy as np
from scipy import stats

from ._util import label_fontsize, new_figure, readable, robust_limits, short_labels

_PANELS = ("vs linear predictor", "normal Q-Q", "vs site", "vs species", "scale-location")


def _long_residuals(fit, seed):
    """Flattened (residual, linear predictor, site index, species index) of observed cells."""
    R = fit.residuals(kind="dunn-smyth", seed=seed)
    R = R.reindex(index=fit.sites, columns=fit.species)
    eta = fit.linear_predictor().to_numpy()
    r = R.to_numpy(dtype=float)
    n, m = r.shape
    ii, jj = np.meshgrid(np.arange(n), np.arange(m), indexing="ij")
    ok = np.isfinite(r)
    return r[ok], eta[ok], ii[ok], jj[ok]


def _scatter(ax, x, y, gid, **kw):
    return ax.scatter(x, y, s=kw.pop("s", 5), alpha=kw.pop("alpha", 0.45), color=kw.pop("color", "0.25"),
                      linewidths=0, gid=gid, **kw)


def _smooth(ax, x, y, bins=20):
    """Binned means of y against x, as a line (a rough trend)."""
    if len(x) < 2 * bins:
        return
    qs = np.quantile(x, np.linspace(0, 1, bins + 1))
    idx = np.clip(np.searchsorted(qs, x, side="right") - 1, 0, bins - 1)
    cnt = np.bincount(idx, minlength=bins)
    ok = cnt > 0
    mx = np.bincount(idx, x, bins)[ok] / cnt[ok]
    my = np.bincount(idx, y, bins)[ok] / cnt[ok]
    ax.plot(mx, my, color="firebrick", lw=1.2, gid="trend")


def plot_residuals(fit, seed=None, *, figsize=(13.0, 7.5)):
    """Dunn-Smyth (randomised quantile) residual panels as one Figure.

    Panels: residuals against the linear predictor, normal Q-Q plot, against
    the site index, against species (labelled), and scale-location
    (sqrt|r| against the linear predictor). Residuals are conditional on the
    site scores; under the model they are standard normal. Missing cells are
    left out.

    Parameters
    ----------
    fit : GLLVMResults
    seed : int, optional
        Seed of the randomisation (discrete families); same seed, same plot (None: seed 0).
    figsize : (float, float)

    Returns
    -------
    matplotlib Figure with five Axes (titles in the order above)
    """
    r, eta, ii, jj = _long_residuals(fit, seed)
    fig, axs = new_figure(2, 3, figsize)
    axs[1, 2].remove()
    a_eta, a_qq, a_site, a_sp, a_sl = axs[0, 0], axs[0, 1], axs[0, 2], axs[1, 0], axs[1, 1]
    _scatter(a_eta, eta, r, "residuals")
    _smooth(a_eta, eta, r)
    a_eta.set(xlabel="linear predictor", ylabel="Dunn-Smyth residual")
    theo = stats.norm.ppf((np.arange(1, r.size + 1) - 0.5) / r.size)
    _scatter(a_qq, theo, np.sort(r), "residuals")
    lim = [min(theo[0], r.min()), max(theo[-1], r.max())]
    a_qq.plot(lim, lim, color="firebrick", lw=1.0, gid="reference")
    a_qq.set(xlabel="theoretical quantile", ylabel="sample quantile")
    _scatter(a_site, ii + 1, r, "residuals")
    a_site.set(xlabel=f"site index (1..{len(fit.sites)})", ylabel="Dunn-Smyth residual")
    _scatter(a_sp, jj, r, "residuals")
    m = len(fit.species)
    if readable(m):
        a_sp.set_xticks(np.arange(m), labels=short_labels(list(fit.species)), rotation=90,
                        fontsize=label_fontsize(m))
    else:
        a_sp.set_xlabel(f"species index (1..{m}, the fit's order)")
    a_sp.set_ylabel("Dunn-Smyth residual")
    sl = np.sqrt(np.abs(r))
    _scatter(a_sl, eta, sl, "residuals")
    _smooth(a_sl, eta, sl)
    a_sl.set(xlabel="linear predictor", ylabel="sqrt |residual|")
    lo, hi, out = robust_limits(eta)
    for ax in (a_eta, a_sl):            # a few extreme linear predictors must not squash the rest
        ax.set_xlim(lo, hi)
        if out:
            ax.text(0.01, 0.01, f"{out} point(s) beyond the axis", transform=ax.transAxes,
                    fontsize=7, color="0.35", gid="note")
    for ax, title in zip((a_eta, a_qq, a_site, a_sp, a_sl), _PANELS):
        ax.set_title(title)
        if title not in ("normal Q-Q", "scale-location"):
            ax.axhline(0.0, color="0.6", lw=0.8, ls="--", gid="zero")
    fam = getattr(fit.family, "composition", fit.family.name)
    fig.suptitle(f"Dunn-Smyth residuals: {fam}, {len(fit.sites)} sites x {m} species")
    fig.tight_layout()
    return fig
