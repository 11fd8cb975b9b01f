"""Random effects of a fit in the tables lme4 / glmmTMB users know: ``ranef`` and ``varcorr``.

Shared by every random-effect term (grouped site effects, the site effects
``(1 | site)``, species random effects): a term that has random effects implements

- ``ranef_table(ctx, P)`` -> {grouping: DataFrame}: one row per level, one column per
  variable ("(Intercept)", a covariate), the variational means (the VA's
  predictions, the counterpart of lme4's conditional modes), and a matching DataFrame
  of variational sds as ``ranef_sd_table(ctx, P)`` (same shape);
- ``varcorr_rows(ctx, P)`` -> list of (group, var1, var2, vcov, sdcor): a variance row
  has var2 None, vcov the variance and sdcor the sd; a covariance row has both
  variables, vcov the covariance and sdcor the correlation (as R's
  ``as.data.frame(VarCorr(fit))``).

This module collects them; ``GLLVMResults.ranef`` and ``GLLVMResults.varcorr`` call it.
"""
import pandas as pd

VARCORR_COLUMNS = ["group", "var1", "var2", "vcov", "sdcor"]


def _terms(fit):
    pred = fit.problem.predictor
    return pred, [t for t in pred.terms if hasattr(t, "ranef_table") and t.active(pred)]


def ranef(fit, condsd=False):
    """Predicted random effects per grouping.

    Parameters
    ----------
    fit : GLLVMResults
    condsd : bool
        False: a dict {grouping: DataFrame (levels x variables)} of the variational means.
        True: one tidy DataFrame with columns grpvar, term, grp, condval, condsd (R's
        ``as.data.frame(ranef(fit, condVar = TRUE))``), condsd the variational sd.

    Returns
    -------
    dict of DataFrame, or DataFrame
    """
    pred, terms = _terms(fit)
    P = fit.state.params
    means = {}
    sds = {}
    for t in terms:
        means.update(t.ranef_table(pred, P))
        sds.update(t.ranef_sd_table(pred, P))
    if not condsd:
        return means
    rows = []
    for g, tab in means.items():
        sd = sds.get(g)
        for var in tab.columns:
            for lev in tab.index:
                rows.append((g, var, lev, float(tab.at[lev, var]),
                             float(sd.at[lev, var]) if sd is not None else float("nan")))
    return pd.DataFrame(rows, columns=["grpvar", "term", "grp", "condval", "condsd"])


def varcorr(fit):
    """Variances and correlations of the random effects: one row per (group, var1, var2).

    Returns
    -------
    DataFrame with columns group, var1, var2, vcov, sdcor (see the module docstring).
    """
    pred, terms = _terms(fit)
    P = fit.state.params
    rows = [r for t in terms if hasattr(t, "varcorr_rows") for r in t.varcorr_rows(pred, P)]
    return pd.DataFrame(rows, columns=VARCORR_COLUMNS)
