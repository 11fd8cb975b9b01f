"""Species random effects of a fit: their variances and correlations with standard errors
(``varcorr``, the summary's table) and the fourth-corner coefficients (``fourth_corner``).

The shrunken effects and the plain VarCorr table are the terms' (``ranef_table``,
``varcorr_rows``, collected by :mod:`jsdm.results.ranef`). Here Sigma's sds and
correlations get delta-method SEs from the fit's covariance of the packed parameters (log
sds and correlation parameters) and intervals (log scale for sds, Fisher z for correlations).
"""
import numpy as np
import pandas as pd
from scipy import stats

from ..exceptions import JSDMError


def _terms(fit):
    pred = fit.problem.predictor
    terms = getattr(pred, "species_random_terms", [])
    if not terms:
        raise JSDMError("this fit has no random species effects; fit e.g. "
                        "random_species='x + (1 + x | species)' (wide data) or write the bars in "
                        "an lme4-style formula (long data).")
    return pred, terms


def _names(term):
    return ["(Intercept)" if c == "1" else c for c in term.columns]


def species_coefficients(fit):
    """Species x (Intercept, covariates): beta0 + B + the species random effects' means +
    the community / trait slopes (``fit.coef`` of such models)."""
    pred, P = fit.problem.predictor, fit.state.params
    cols = ["Intercept"] + list(fit.problem.terms)
    C = np.zeros((pred.m, len(cols)))
    C[:, 0] = P.beta0
    if pred.p:
        C[:, 1:] = P.B
    for t, _, _ in getattr(pred, "species_random_terms", []):
        for k, c in enumerate(t.col_index(pred)):
            C[:, 0 if c < 0 else c + 1] += t.get_species(P)[:, k]
    for t in getattr(pred, "global_terms", []):
        if hasattr(t, "slopes"):
            S = t.slopes(pred, P)
            for k, c in enumerate(t.columns):
                C[:, cols.index(c)] += S[:, k]
    return pd.DataFrame(C, index=fit.species, columns=cols)


def _sdcor(term, x, layout):
    vals, labs = term.sdcor(layout.unpack(x))
    return np.array(vals), labs


def varcorr_se(fit, alpha=0.05, se=True):
    """Variances, sds, covariances and correlations of the species random effects.

    Like R's ``as.data.frame(VarCorr(fit))``: one row per (group, var1, var2), var2 None for
    a variance (its ``sdcor`` is the sd), else a covariance (``sdcor`` the correlation).

    Parameters
    ----------
    fit : GLLVMResults
    alpha : float
        Level 1 - alpha of the intervals (sds: Wald on the log scale; correlations: Wald
        on the Fisher-z scale).
    se : bool
        Add ``std_err`` (of sdcor, delta method), ``lower`` and ``upper``.

    Returns
    -------
    DataFrame
        Columns group, var1, var2, vcov, sdcor (and std_err, lower, upper).
    """
    pred, terms = _terms(fit)
    layout = fit.state.layout
    x = layout.pack(fit.state.params)
    rows = []
    cov = None
    if se:
        from .inference import information
        cov = information(fit).cov_packed
    for t, _, _ in terms:
        vals, labs = _sdcor(t, x, layout)
        sel = [layout.slices[f] for f in ("sp_logsd", "sp_corr")]
        idx = np.concatenate([np.arange(s.start, s.stop) for s in sel])
        J = np.zeros((len(vals), len(idx)))
        if se and len(idx):
            for c, k in enumerate(idx):
                h = 1e-6 * max(1.0, abs(x[k]))
                xp, xm = x.copy(), x.copy()
                xp[k] += h
                xm[k] -= h
                J[:, c] = (_sdcor(t, xp, layout)[0][:, 1] - _sdcor(t, xm, layout)[0][:, 1]) / (2 * h)
            C = cov[np.ix_(idx, idx)]
            with np.errstate(invalid="ignore"):
                ses = np.sqrt(np.einsum("ik,kl,il->i", J, C, J))
        else:
            ses = np.full(len(vals), np.nan)
        z = stats.norm.isf(alpha / 2.0)
        for (v, s), (a, b), e in zip(vals, labs, ses):
            row = {"group": t.group, "var1": a, "var2": b, "vcov": v, "sdcor": s}
            if se:
                if b is None:               # sd: interval on the log scale
                    w = z * e / s if s > 0 else np.nan
                    lo, hi = s * np.exp(-w), s * np.exp(w)
                else:                       # correlation: Fisher z
                    zz, w = np.arctanh(np.clip(s, -1 + 1e-15, 1 - 1e-15)), z * e / max(1 - s * s, 1e-15)
                    lo, hi = np.tanh(zz - w), np.tanh(zz + w)
                row.update(std_err=e, lower=lo, upper=hi)
            rows.append(row)
    return pd.DataFrame(rows)


def fourth_corner(fit, se=False, alpha=0.05):
    """The fourth-corner coefficients: covariates x traits.

    The trait interactions x:trait in the community mean of the random slopes on x
    (``x + x:trait + (0 + x | species)``, gllvm's randomX with TR).

    Parameters
    ----------
    fit : GLLVMResults
    se : bool
        Also return standard errors and Wald intervals (long DataFrame).
    alpha : float

    Returns
    -------
    DataFrame
        Covariates x traits (NaN where an interaction is not in the model); with
        ``se=True`` a long table with columns covariate, trait, estimate, std_err, z,
        p_value, lower, upper.
    """
    pred = fit.problem.predictor
    est = fit.params
    rows = []
    for t, _, _ in getattr(pred, "species_random_terms", []):
        names = t.gamma_names(pred)
        for (k, tr), nm in zip(t.mean_terms(pred), names):
            if tr is not None:
                rows.append((_names(t)[k], tr, ("fixef", "", nm)))
    for t in getattr(pred, "global_terms", []):
        if hasattr(t, "fourth_corner_rows"):
            rows += t.fourth_corner_rows(pred)
    if not rows:
        raise JSDMError("this fit has no trait interactions (x:trait); fit e.g. "
                        "fourth_corner='x + x:height' or 'x + x:height + (0 + x | species)'.")
    vals = np.array([est.loc[lab] for _, _, lab in rows])
    if not se:
        df = pd.DataFrame([(a, b, v) for (a, b, _), v in zip(rows, vals)],
                          columns=["covariate", "trait", "estimate"])
        out = df.pivot(index="covariate", columns="trait", values="estimate")
        covs = list(dict.fromkeys(r[0] for r in rows))
        trs = list(dict.fromkeys(r[1] for r in rows))
        return out.loc[covs, trs]
    bse = fit.bse
    ses = np.array([bse.loc[lab] for _, _, lab in rows])
    z = vals / ses
    q = stats.norm.isf(alpha / 2.0)
    return pd.DataFrame({"covariate": [r[0] for r in rows], "trait": [r[1] for r in rows],
                         "estimate": vals, "std_err": ses, "z": z,
                         "p_value": 2.0 * stats.norm.sf(np.abs(z)),
                         "lower": vals - q * ses, "upper": vals + q * ses})
