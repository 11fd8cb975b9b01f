"""Comparing models by cross-validation (a :class:`jsdm.results.crossval.CVResult`)."""
import numpy as np

from ._util import get_ax

_METRICS = {
    "lpd": ("held-out lpd minus the best model's", True),
    "lpd_marginal": ("held-out log density, species one at a time", True),
    "lpd_conditional": ("held-out log density given the other species", True),
    "auc": ("AUC (mean over species)", True),
    "tss": ("TSS (mean over species)", True),
    "rmse": ("RMSE on the response scale", False),
}


def plot_cv(cv, metric="lpd", ax=None):
    """Models side by side on a cross-validated score.

    For ``metric="lpd"`` each model is drawn at its lpd minus the best model's,
    with +- 2 paired standard errors of that difference (zero for the best; a
    symmetric-log axis when some models are far behind the others);
    the other metrics are drawn as values, with the conditional variant (given
    the other species at the site) next to the marginal one where it exists.

    Parameters
    ----------
    cv : CVResult
    metric : {"lpd", "lpd_marginal", "lpd_conditional", "auc", "tss", "rmse"}
    ax : matplotlib Axes, optional

    Returns
    -------
    Axes
    """
    from ..exceptions import JSDMError

    tab = cv.table
    if metric not in _METRICS or metric not in tab.columns:
        have = [k for k in _METRICS if k in tab.columns]
        raise JSDMError(f"metric must be one of {have}; got {metric!r}")
    label, higher = _METRICS[metric]
    names = list(tab.index)
    ax = get_ax(ax, figsize=(6.5, 0.9 + 0.45 * len(names)))
    y = np.arange(len(names))[::-1]
    if metric == "lpd":
        x, err = tab["lpd_diff"].to_numpy(), 2.0 * tab["diff_se"].to_numpy()
        ax.errorbar(x, y, xerr=err, fmt="o", color="black", capsize=3, gid="cv_lpd")
        ax.axvline(0.0, color="grey", lw=0.8, ls="--")
        spread = np.abs(x - err).max()
        close = np.abs(x) + err
        close = close[close > 0]
        if close.size and spread > 30 * np.median(close):       # far-off models: symlog axis
            ax.set_xscale("symlog", linthresh=float(np.median(close)))
        best = tab["lpd"].idxmax()
        ax.set_title(f"{cv.settings['k']}-fold CV by sites; best: {best}", fontsize=9)
    else:
        ax.plot(tab[metric].to_numpy(), y, "o", color="black", label="marginal", gid="cv_metric")
        cond = {"lpd_marginal": "lpd_conditional", "auc": "auc_conditional",
                "tss": "tss_conditional", "rmse": "rmse_conditional"}.get(metric)
        if cond in tab.columns:
            ax.plot(tab[cond].to_numpy(), y, "s", mfc="none", color="tab:red",
                    label="given the other species", gid="cv_conditional")
            ax.legend(fontsize=8, loc="best")
    ax.set_yticks(y)
    ax.set_yticklabels(names)
    ax.set_xlabel(label + (" (higher is better)" if higher else " (lower is better)"), fontsize=9)
    ax.margins(y=0.25)
    return ax
