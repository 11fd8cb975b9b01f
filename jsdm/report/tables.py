"""Tidy tables shared by the HTML report and the command line's CSV output.

Each function takes a fitted model and returns a labelled DataFrame; none
modifies the fit.
"""
import numpy as np
import pandas as pd


def coefficient_table(fit, alpha=0.05):
    """Every model parameter with its Wald standard error, z, p and interval.

    Parameters
    ----------
    fit : GLLVMResults
    alpha : float
        1 - confidence level of the interval.

    Returns
    -------
    DataFrame
        Index (block, species, term) as ``fit.params``; columns estimate, se,
        z, p, lower, upper.
    """
    est = fit.params
    ci = fit.conf_int(alpha=alpha)
    out = pd.DataFrame({"estimate": est, "se": fit.bse.reindex(est.index),
                        "z": fit.tvalues.reindex(est.index), "p": fit.pvalues.reindex(est.index)})
    ci = ci.reindex(est.index)
    out["lower"] = ci.iloc[:, 0].to_numpy()
    out["upper"] = ci.iloc[:, 1].to_numpy()
    return out


def species_table(fit, info=None):
    """Per-species data summary: observed sites, occupied sites, prevalence, informative
    records, mean and max response, and a status (rare, no finite optimum, dispersion at bound).

    Parameters
    ----------
    fit : GLLVMResults
    info : DataFrame, optional
        :func:`jsdm.analysis.diagnostics.species_information` (computed when None).

    Returns
    -------
    DataFrame (m species x 7); counts are integers
    """
    from ..analysis.diagnostics import species_information

    info = species_information(fit) if info is None else info
    Y = pd.DataFrame(np.where(fit.problem.W > 0, fit.problem.Y, np.nan),
                     index=fit.sites, columns=fit.species)
    out = pd.DataFrame({"sites observed": info["sites"].astype(int),
                        "occupied": info["occupied"].astype(int),
                        "prevalence": info["prevalence"],
                        "informative": info["informative"].astype(int),
                        "mean": Y.mean(), "max": Y.max()})
    if np.all(np.mod(out["max"].dropna(), 1) == 0):
        out["max"] = out["max"].astype("Int64") if out["max"].isna().any() else out["max"].astype(int)
    out["status"] = species_status(info)
    return out


def species_status(info):
    """One word (or a few) per species from its information table; "" when all is well."""
    def status(r):
        out = []
        if r["rare"]:
            out.append("rare")
        if r["no_finite_optimum"]:
            out.append("no finite optimum")
        if r["dispersion_at_bound"]:
            out.append("dispersion at bound")
        return ", ".join(out)
    return info.apply(status, axis=1).rename("status")


def covariate_table(fit):
    """Site covariates of the data: type, summary, and whether the model uses them.

    Returns
    -------
    DataFrame indexed by covariate name, or an empty DataFrame without covariates.
    """
    com = fit.community
    X = None if com is None else com.X
    if X is None or X.shape[1] == 0:
        return pd.DataFrame(columns=["type", "summary", "in model"])
    formula = fit.problem.formula or ""
    terms = " ".join(fit.terms)
    rows = {}
    for name, col in X.items():
        used = (str(name) in formula) if formula else (str(name) in terms)
        rows[name] = {"type": _kind(col), "summary": _describe(col), "in model": bool(used)}
    return pd.DataFrame.from_dict(rows, orient="index")


def _kind(col):
    if isinstance(col.dtype, pd.CategoricalDtype):
        return "ordered factor" if col.dtype.ordered else "factor"
    if pd.api.types.is_bool_dtype(col):
        return "logical"
    if pd.api.types.is_numeric_dtype(col):
        return "numeric"
    return "text"


def _describe(col):
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        c = col.astype(float)
        mean, sd = c.mean(), c.std()
        mean = 0.0 if abs(mean) < 1e-10 * max(sd, 1e-300) else mean
        return f"mean {mean:.3g}, sd {sd:.3g}, range {c.min():.3g} to {c.max():.3g}"
    counts = col.value_counts(sort=False)
    levels = [f"{k} ({v})" for k, v in counts.items()]
    more = f", ... ({len(levels)} levels)" if len(levels) > 6 else ""
    return ", ".join(levels[:6]) + more


def fit_statistics(fit):
    """ELBO, df, information criteria and convergence as an ordered list of (label, value)."""
    st = fit.state
    return [("ELBO (variational lower bound of the log-likelihood)", fit.llf),
            ("parameters (df)", fit.df), ("observations (site x species cells)", fit.nobs),
            ("AIC", fit.aic), ("AICc", fit.aicc), ("BIC", fit.bic),
            ("converged (max scaled gradient <= gtol)", bool(fit.converged)),
            ("max scaled gradient |g_k| / sqrt(max(h_k, 1))", fit.scaled_grad),
            ("gtol", fit.settings.get("gtol", float("nan"))), ("max |gradient|", fit.max_grad),
            ("iterations", int(fit.n_iter)), ("fit time (s)", float(st.elapsed)),
            ("starts (ELBO of each)", _starts(st))]


def _starts(st):
    """The starts' ELBOs; a start stopped on its way to an earlier start's optimum says so."""
    joined = list(getattr(st, "start_joined", None) or [])
    joined += [None] * (len(st.start_values) - len(joined))
    return ", ".join(f"{v:.2f}" + ("" if j is None else f" (joined start {j + 1})")
                     for v, j in zip(st.start_values, joined))


def variance_summary(vp):
    """Mean, min and max share per component across species of a variance partition."""
    return pd.DataFrame({"mean share": vp.mean(), "min": vp.min(), "max": vp.max()})
