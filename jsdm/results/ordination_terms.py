"""Outputs of constrained, concurrent and quadratic ordination as labelled tables.

Conventions (docs/ordination_constrained.md):

- **constrained** (``num_rr``): z_i = C' x_i. Reported with site scores of unit
  variance over the sites (uncorrelated) and loadings lower triangular with a
  positive diagonal: (C, theta) -> (C T', theta T^-1), which leaves every
  x_i' C theta_j unchanged. Standard errors by the delta method from the fit's
  covariance (the fit itself pins the anchor species' loadings instead).
- **concurrent** (``num_lv_c``): z_i = C' x_i + e_i, e_i ~ N(0, I); the scale is
  fixed by the residual's prior and the rotation by the lower-triangular loadings,
  so C is reported as estimated.
- **unconstrained** latent variables as ``fit.lv`` / ``fit.loadings``.
"""
import numpy as np
import pandas as pd

from ..model.terms.ordination import (ConcurrentLatentVariables, ReducedRank, lv_design,
                                      standardise_constrained)


def _terms(fit):
    pred = fit.problem.predictor
    rr = next((t for t in pred.terms if isinstance(t, ReducedRank) and t.d), None)
    conc = next((t for t in pred.terms if isinstance(t, ConcurrentLatentVariables)), None)
    return pred, rr, conc


def ordination_type(fit):
    """The kind of ordination fitted, in words: "unconstrained", "constrained",
    "concurrent", or a combination ("concurrent + unconstrained"), with " (quadratic)"
    or " (quadratic, common per LV)" for unimodal responses."""
    pred, rr, conc = _terms(fit)
    parts = []
    if conc is not None:
        parts.append("concurrent")
        if conc.d_u:
            parts.append("unconstrained")
    elif pred.d:
        parts.append("unconstrained")
    if rr is not None:
        parts.append("constrained")
    out = " + ".join(parts) if parts else "none"
    quad = next((t for t in pred.nonlinear_terms if t.kind == "quadratic"), None)
    if quad is not None:
        out += " (quadratic, common per LV)" if quad.mode == "lv" else " (quadratic)"
    return out


def ordination_parts(fit):
    """The set of ordination kinds in the fit ({"unconstrained", "constrained", "concurrent"})
    and whether responses are quadratic: (set, bool)."""
    kind = ordination_type(fit)
    return set(kind.split(" (")[0].split(" + ")) - {"none"}, "(quadratic" in kind


def _rr_standardised(fit, P=None):
    pred, rr, _ = _terms(fit)
    P = fit.state.params if P is None else P
    return standardise_constrained(P.C_rr, P.theta_rr, lv_design(pred))


def canonical_coefficients(fit, se=True):
    """Canonical coefficients of every constrained and concurrent latent variable.

    Parameters
    ----------
    fit : GLLVMResults
    se : bool
        Add standard errors (delta method for the constrained ones, which are
        reported in the standardised convention of the module docstring).

    Returns
    -------
    DataFrame
        Index (covariate, latent variable); columns ``estimate`` and, with ``se``,
        ``std_err``, ``z``, ``lower``, ``upper`` (95% Wald). Empty when the fit has
        no constrained or concurrent latent variables.
    """
    pred, rr, conc = _terms(fit)
    P = fit.state.params
    rows, est, ses = [], [], []
    if conc is not None and conc.d_c:
        names = conc.coord_names(pred)[:conc.d_c]
        cov_se = fit.bse.loc["canonical"] if se else None
        for r, c in enumerate(conc.columns):
            for k in range(conc.d_c):
                rows.append((c, names[k]))
                est.append(P.C_lv[r, k])
                if se:
                    ses.append(float(cov_se.loc[(c, names[k])]))
    if rr is not None:
        Cs, _, _ = _rr_standardised(fit)
        names = rr.names()
        sd = _rr_se(fit, rr) if se else None
        for r, c in enumerate(rr.columns):
            for k in range(rr.d):
                rows.append((c, names[k]))
                est.append(Cs[r, k])
                if se:
                    ses.append(sd[r, k])
    idx = pd.MultiIndex.from_tuples(rows, names=["covariate", "lv"])
    out = pd.DataFrame({"estimate": est}, index=idx)
    if se:
        out["std_err"] = ses
        out["z"] = out["estimate"] / out["std_err"]
        out["lower"] = out["estimate"] - 1.959964 * out["std_err"]
        out["upper"] = out["estimate"] + 1.959964 * out["std_err"]
    return out


def _rr_se(fit, rr):
    """Delta-method SEs (p, d) of the standardised constrained coefficients."""
    pred = fit.problem.predictor
    P = fit.state.params
    params = fit.params
    cov = fit.cov_params()
    names = rr.names()
    keys = [k for k in params.index if k[0] in ("canonical", "loading") and k[2] in names]
    V = cov.loc[keys, keys].to_numpy()
    x0 = params.loc[keys].to_numpy(dtype=float)
    X = lv_design(pred)
    cpos = {(k[1], k[2]): i for i, k in enumerate(keys) if k[0] == "canonical"}
    tpos = {(k[1], k[2]): i for i, k in enumerate(keys) if k[0] == "loading"}
    sp = {s: j for j, s in enumerate(fit.species)}

    def f(x):
        C = P.C_rr.copy()
        th = P.theta_rr.copy()
        for (c, lv), i in cpos.items():
            C[rr.columns.index(c), names.index(lv)] = x[i]
        for (s, lv), i in tpos.items():
            th[sp[s], names.index(lv)] = x[i]
        return standardise_constrained(C, th, X)[0].ravel()

    f0 = f(x0)
    J = np.empty((len(f0), len(x0)))
    for i in range(len(x0)):
        h = 1e-6 * max(1.0, abs(x0[i]))
        xp, xm = x0.copy(), x0.copy()
        xp[i] += h
        xm[i] -= h
        J[:, i] = (f(xp) - f(xm)) / (2 * h)
    var = np.einsum("ik,kl,il->i", J, V, J)
    return np.sqrt(np.maximum(var, 0.0)).reshape(P.C_rr.shape) if np.all(np.isfinite(var)) \
        else np.full(P.C_rr.shape, np.nan)


def ordination_scores(fit):
    """Site scores of every latent variable, sites x LV (DataFrame).

    Concurrent: E_q[z_i] = C' x_i + a_i; unconstrained: a_i; constrained: C' x_i (in
    the standardised convention).
    """
    pred, rr, conc = _terms(fit)
    P = fit.state.params
    cols, parts = [], []
    if pred.d:
        Z = P.a.copy()
        if conc is not None:
            Z[:, :conc.d_c] += lv_design(pred) @ P.C_lv
        parts.append(Z)
        cols += list(fit.lv_names)
    if rr is not None:
        Cs, _, _ = _rr_standardised(fit)
        parts.append(lv_design(pred) @ Cs)
        cols += rr.names()
    Z = np.column_stack(parts) if parts else np.zeros((fit.problem.n, 0))
    return pd.DataFrame(Z, index=fit.sites, columns=cols)


def ordination_loadings(fit):
    """Species loadings of every latent variable, species x LV (DataFrame), matching
    :func:`ordination_scores`."""
    pred, rr, conc = _terms(fit)
    P = fit.state.params
    cols, parts = [], []
    if pred.d:
        parts.append(P.theta)
        cols += list(fit.lv_names)
    if rr is not None:
        _, ths, _ = _rr_standardised(fit)
        parts.append(ths)
        cols += rr.names()
    T = np.column_stack(parts) if parts else np.zeros((fit.problem.m, 0))
    return pd.DataFrame(T, index=fit.species, columns=cols)


def covariate_arrows(fit):
    """Biplot arrows of the ordination covariates: covariate x LV (DataFrame).

    The change of the site scores per standard deviation of each covariate, i.e.
    the canonical coefficients times the covariate's sd over the sites.
    """
    pred, rr, conc = _terms(fit)
    X = lv_design(pred)
    sd = X.std(0)
    parts, names = [], None
    scores = ordination_scores(fit)
    canon = canonical_coefficients(fit, se=False)["estimate"]
    for t in (conc, rr):
        if t is None:
            continue
        names = t.columns
        lvs = (t.coord_names(pred)[:t.d_c] if t is conc else t.names())
        M = np.array([[canon.loc[(c, lv)] for lv in lvs] for c in t.columns]) * sd[:, None]
        parts.append(pd.DataFrame(M, index=list(t.columns), columns=lvs))
    if not parts:
        return pd.DataFrame(index=[], columns=scores.columns)
    out = pd.concat(parts, axis=1).reindex(columns=scores.columns).fillna(0.0)
    return out.loc[list(names)]


# --- quadratic responses ---------------------------------------------------------------------------
def _quadratic(fit):
    from ..model.terms.quadratic import quadratic_term

    return quadratic_term(fit.problem.predictor)


def quadratic_table(fit, se=True):
    """Species optima and tolerances along each latent variable (quadratic responses).

    For eta_ij = ... + theta_jk z_ik - D_jk z_ik^2 the response along latent variable k
    peaks at the optimum u_jk = theta_jk / (2 D_jk) and has tolerance
    t_jk = 1 / sqrt(2 D_jk) (the sd of the Gaussian-shaped curve), both in units of the
    latent variable (prior sd 1), as gllvm's ``optima()`` and ``tolerances()`` (mite,
    Poisson, quadratic = "LV": 0.805 and 0.953 here, 0.807 and 0.953 there). Where D_jk = 0 (a
    monotone response) the optimum and tolerance are infinite (reported as NaN and inf).

    Returns
    -------
    DataFrame
        Index (species, lv); columns D, optimum, tolerance and, with ``se``, their
        delta-method standard errors D_se, optimum_se, tolerance_se.
    """
    term = _quadratic(fit)
    if term is None:
        from ..exceptions import JSDMError
        raise JSDMError("this fit has no quadratic responses; refit with quadratic=True or 'lv'")
    pred = fit.problem.predictor
    P = fit.state.params
    names = list(fit.lv_names)
    D = term.D(pred, P)
    th = P.theta
    with np.errstate(divide="ignore", invalid="ignore"):
        opt = np.where(D > 0, th / (2.0 * D), np.nan)
        tol = np.where(D > 0, 1.0 / np.sqrt(2.0 * D), np.inf)
    idx = pd.MultiIndex.from_product([list(fit.species), names], names=["species", "lv"])
    out = pd.DataFrame({"D": D.ravel(), "optimum": opt.ravel(), "tolerance": tol.ravel()}, index=idx)
    if not se:
        return out
    cov = fit.cov_params()
    labels = set(cov.index)
    dse, ose, tse = [], [], []
    for j, sp in enumerate(fit.species):
        for k, lv in enumerate(names):
            lt = ("loading", sp, lv)
            lq = ("quadratic", sp, lv) if term.mode == "species" else ("quadratic", "all species", lv)
            keys = [key for key in (lt, lq) if key in labels]
            V = cov.loc[keys, keys].to_numpy()
            has_t = lt in labels
            vq = V[-1, -1]
            dse.append(np.sqrt(max(vq, 0.0)))
            if not D[j, k] > 0:
                ose.append(np.nan)
                tse.append(np.nan)
                continue
            Jo = ([1.0 / (2 * D[j, k])] if has_t else []) + [-th[j, k] / (2 * D[j, k] ** 2)]
            Jo = np.array(Jo)
            ose.append(float(np.sqrt(max(Jo @ V @ Jo, 0.0))))
            tse.append(float(np.sqrt(max(vq, 0.0)) * (2.0 * D[j, k]) ** -1.5))
    out["D_se"], out["optimum_se"], out["tolerance_se"] = dse, ose, tse
    return out


def gradient_length(fit):
    """Gradient length (species turnover) per latent variable, a Series.

    The range of the site scores along latent variable k (their variational means)
    in units of the species' median tolerance along k (species with D_jk > 0): the
    analogue of DCA's gradient length in SD units. About 4 or more means that no
    species spans the whole gradient (complete turnover); below about 2, responses
    are close to linear over the sampled range.
    """
    tab = quadratic_table(fit, se=False)
    scores = ordination_scores(fit)
    out = {}
    for lv in fit.lv_names:
        t = tab.xs(lv, level="lv")["tolerance"]
        t = t[np.isfinite(t)]
        z = scores[lv]
        out[lv] = float((z.max() - z.min()) / t.median()) if len(t) else 0.0
    return pd.Series(out, name="gradient_length")
