"""Heatmap of the fourth-corner coefficients (covariates x traits)."""
import numpy as np

from ._util import get_ax


def plot_fourth_corner(fit, ax=None, alpha=0.05, cmap="RdBu_r"):
    """Covariates x traits heatmap of the fourth-corner coefficients, cells whose Wald interval
    at level 1 - ``alpha`` excludes 0 marked with an asterisk.

    Parameters
    ----------
    fit : GLLVMResults
        A fit with trait interactions in the means of its random slopes.
    ax : matplotlib Axes, optional
    alpha : float
    cmap : str

    Returns
    -------
    matplotlib Axes
        The image carries ``gid="fourth_corner"``, the marks ``gid="significant"``.
    """
    tab = fit.fourth_corner(se=True, alpha=alpha)
    est = tab.pivot(index="covariate", columns="trait", values="estimate")
    sig = tab.assign(s=(tab["lower"] > 0) | (tab["upper"] < 0)).pivot(
        index="covariate", columns="trait", values="s")
    covs = list(dict.fromkeys(tab["covariate"]))
    trs = list(dict.fromkeys(tab["trait"]))
    est, sig = est.loc[covs, trs], sig.loc[covs, trs]
    own = ax is None
    # room for the labels, the colour bar and the title (the cells alone were too small
    # for them: a 2 x 2 table cut its covariate names and title)
    ax = get_ax(ax, figsize=(3.8 + 0.9 * len(trs), 2.4 + 0.6 * len(covs)))
    if own:
        ax.figure.set_layout_engine("constrained")
    vals = est.to_numpy(dtype=float)
    lim = np.nanmax(np.abs(vals)) if np.isfinite(vals).any() else 1.0
    im = ax.imshow(vals, cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
    im.set_gid("fourth_corner")
    ax.set_xticks(range(len(trs)), trs)
    ax.set_yticks(range(len(covs)), covs)
    ax.set_xlabel("species trait")
    ax.set_ylabel("site covariate")
    for i in range(len(covs)):
        for j in range(len(trs)):
            if sig.iloc[i, j] is True or sig.iloc[i, j] == True:  # noqa: E712 (object dtype)
                ax.text(j, i, "*", ha="center", va="center", fontsize=14, gid="significant")
    ax.figure.colorbar(im, ax=ax, label="fourth-corner coefficient")
    ax.set_title(f"Fourth corner (* : {100 * (1 - alpha):g}% interval excludes 0)")
    return ax
