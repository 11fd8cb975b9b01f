"""Predictions and simulation from a fitted GLLVM.

Two ways to treat the latent variables z_i ~ N(0, I):

- ``lv="conditional"`` (fitted sites only): plug in the site scores (the
  variational means a_i), eta_ij = fixed_ij + a_i' theta_j.
- ``lv="marginal"`` (fitted or new sites): integrate z out. On the link scale
  the mean of eta_ij is the fixed part; on the response scale
  E[y_ij] = E[g^-1(eta_ij)] with eta_ij ~ N(fixed_ij, theta_j' theta_j
  [+ sigma^2 for random row effects]), which is exp(fixed + var / 2) for the
  log link and a Gauss-Hermite integral otherwise. Never z = 0.
"""
import numpy as np
import pandas as pd
from scipy import special, stats

from .._numerics import analysis_rng
from .._numerics import gauss_hermite
from ..exceptions import JSDMError

TYPES = ("link", "response")
LVS = ("conditional", "marginal")
INTERVALS = (None, "confidence", "prediction")
_N_GH = 40

# link function g and its derivative, on the per-trial mean scale
_LINKS = {
    "log": (np.log, lambda mu: 1.0 / mu),
    "identity": (lambda mu: mu, np.ones_like),
    "logit": (special.logit, lambda mu: 1.0 / (mu * (1.0 - mu))),
    "probit": (special.ndtri, lambda mu: 1.0 / stats.norm.pdf(special.ndtri(mu))),
    "cloglog": (lambda mu: np.log(-np.log1p(-mu)), lambda mu: -1.0 / ((1.0 - mu) * np.log1p(-mu))),
}


def _check_choice(name, value, options):
    if value not in options:
        raise JSDMError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")


def new_design(fit, newdata):
    """Design matrix (k, p) for new sites, encoded exactly as the fitted design."""
    prob = fit.problem
    if not isinstance(newdata, pd.DataFrame):
        raise JSDMError("newdata must be a DataFrame of site covariates (one row per new site), "
                        f"got {type(newdata).__name__}")
    if prob.p == 0:
        return np.zeros((len(newdata), 0))
    import formulaic

    Xtrain = fit.community.X
    if prob.formula is None and prob.groups:       # grouping columns are not covariates
        used = {c for g in prob.groups for c in g.split(":")}
        Xtrain = Xtrain.drop(columns=[c for c in Xtrain.columns if str(c) in used])
    formula = prob.formula or "~ " + " + ".join(f"`{c}`" for c in Xtrain.columns)
    rhs = formula.split("~", 1)[1] if "~" in formula else formula
    spec = formulaic.model_matrix("~ " + rhs, Xtrain).model_spec
    try:
        mm = pd.DataFrame(spec.get_model_matrix(newdata, na_action="raise"))
    except Exception as exc:  # formulaic raises many types
        raise JSDMError(f"could not encode newdata with the fitted formula {formula!r}: {exc}. "
                        f"newdata needs the covariates {list(Xtrain.columns)}") from None
    mm = mm.drop(columns=[c for c in mm.columns if c == "Intercept"])
    if tuple(str(c) for c in mm.columns) != tuple(prob.terms):
        raise JSDMError(f"newdata encodes to columns {list(mm.columns)}, the fit used "
                        f"{list(prob.terms)}; give newdata the same covariates and levels")
    return mm.to_numpy(dtype=float)


def new_lv_design(fit, newdata):
    """The ordination design (k, p_lv) of new sites, encoded as ``lv_formula`` encoded the
    fitted sites (constrained / concurrent ordination)."""
    import formulaic

    prob = fit.problem
    rhs = prob.info["lv_formula"].split("~", 1)[-1]
    spec = formulaic.model_matrix("~ " + rhs, fit.community.X).model_spec
    try:
        mm = pd.DataFrame(spec.get_model_matrix(newdata, na_action="raise"))
    except Exception as exc:  # formulaic raises many types
        raise JSDMError(f"could not encode newdata for lv_formula {prob.info['lv_formula']!r}: "
                        f"{exc}") from None
    mm = mm.drop(columns=[c for c in mm.columns if c == "Intercept"])
    if tuple(str(c) for c in mm.columns) != tuple(prob.info["lv_columns"]):
        raise JSDMError(f"newdata encodes to ordination columns {list(mm.columns)}, the fit used "
                        f"{list(prob.info['lv_columns'])}; give newdata the same covariates")
    return mm.to_numpy(dtype=float)


def fixed_part(fit, newdata=None, offset=None, Xlv=None, Xn=None):
    """The part of the linear predictor that is known given the site covariates, (k, m):
    intercepts, covariate slopes, the species random effects' mean part, the offset, the
    covariate part x_i' C theta_j of constrained and concurrent ordination, the grouped site
    effects' means (their q for levels the fit has seen) and, at the fitted sites, fixed row
    effects. ``newdata`` None: the fitted sites (with the fit's offset); else new sites
    (``offset`` theirs; ``Xlv`` and ``Xn`` their ordination and covariate designs, when the
    caller has them already). One function for ``predict`` and ``site_latent``."""
    from ..model.terms.ordination import has_ordination, ordination_fixed_mean

    prob, P = fit.problem, fit.state.params
    if newdata is None:
        F = P.beta0 + (prob.X @ P.B.T if prob.p else 0.0) + _species_random_part(fit, prob.X)
        F = F + (prob.offset if prob.offset is not None else 0.0)
        F = np.broadcast_to(F, (prob.n, prob.m)).astype(float)     # (m,) without covariates
        if prob.row_effect == "fixed":
            F = F + P.alpha[:, None]
        if has_ordination(prob.predictor):      # constrained / concurrent: x_i' C theta_j
            F = F + ordination_fixed_mean(prob.predictor, P)
        return F + group_parts(fit, None)[0][:, None]
    Xn = new_design(fit, newdata) if Xn is None else Xn
    F = np.broadcast_to(P.beta0, (len(newdata), prob.m)) + (Xn @ P.B.T if prob.p else 0.0)
    F = F + _species_random_part(fit, Xn)
    if offset is not None:
        off = np.asarray(offset, dtype=float)
        F = F + (off[:, None] if off.ndim == 1 else off)
    if has_ordination(prob.predictor):
        F = F + ordination_fixed_mean(prob.predictor, P,
                                      new_lv_design(fit, newdata) if Xlv is None else Xlv)
    return np.asarray(F + group_parts(fit, newdata)[0][:, None], dtype=float)


def _setup(fit, newdata, lv, offset, trials, Xn=None, Xlv=None):
    """Fixed part (k, m), LV-score part or None, extra marginal variance (k,), labels, trials
    (``Xn``, ``Xlv``: the new sites' designs, when the caller has them already)."""
    prob, P = fit.problem, fit.state.params
    if newdata is None:
        F = fixed_part(fit)
        extra = np.zeros(prob.n)
        if prob.row_effect == "random" and lv == "conditional":
            F = F + P.alpha[:, None]
        elif prob.row_effect == "random":
            extra += np.exp(2.0 * P.log_sigma)
        scores = P.a @ P.theta.T if (lv == "conditional" and prob.d) else None
        if lv == "conditional":
            for t in prob.predictor.nonlinear_terms:    # quadratic responses: their part of E_q[eta]
                scores = scores + t.moments_extra(prob.predictor, P, slice(None), slice(None))[0]
        else:
            extra = extra + group_parts(fit, None)[1]
        return F, scores, extra, fit.sites, prob.trials if trials is None else trials
    if lv == "conditional":
        raise JSDMError("new sites have no fitted site scores: use lv='marginal' with newdata "
                        "(it integrates over the latent variables)")
    if prob.row_effect == "fixed":
        raise JSDMError("a fit with fixed row effects cannot predict new sites (their effect is "
                        "unknown); refit with row_effect='random' or None")
    F = fixed_part(fit, newdata, offset, Xlv, Xn)
    extra = np.full(len(newdata), np.exp(2.0 * P.log_sigma) if prob.row_effect == "random" else 0.0)
    return F, None, extra + group_parts(fit, newdata)[1], newdata.index, trials


def _marginal_moments(fit, newdata, F, extra, quadratic=True, Xlv=None):
    """(F, var, quad): the marginal linear predictor's mean and variance (k, m) from
    ``_setup``'s fixed part F and extra variance (row and group effects), with the
    quadratic responses' parts when ``quadratic`` (``quadratic_marginal``'s (shift,
    variance), else None, as quad)."""
    var = (fit.state.params.theta ** 2).sum(1)[None, :] + extra[:, None]
    quad = quadratic_marginal(fit, newdata, Xlv) if quadratic else None
    if quad is not None:
        F, var = F + quad[0], quad[1] + extra[:, None]
    return F, var, quad


def group_parts(fit, newdata):
    """Grouped site effects' (mean (k,), variance (k,)) for the fitted sites (newdata None) or
    new ones: conditional on the levels the fit has seen (their q), marginal over unseen
    levels (N(0, sigma^2)). New sites need the grouping columns in ``newdata``."""
    prob, P = fit.problem, fit.state.params
    pred = prob.predictor
    k = prob.n if newdata is None else len(newdata)
    mean, var = np.zeros(k), np.zeros(k)
    for t in pred.group_terms:
        if not hasattr(t, "predict_parts"):
            continue
        labels = None if newdata is None else _group_labels(fit, t, newdata)
        m_, v_ = t.predict_parts(pred, P, labels)
        mean, var = mean + m_, var + v_
    return mean, var


def _group_labels(fit, term, newdata):
    """Level labels of a group term's groupings for new sites (a dict for nested chains)."""
    site_key = str(fit.problem.sites.name or "site")
    names = getattr(term, "chain", (term.group,))
    out = {}
    for name in names:
        cols = name.split(":")
        if cols[-1] == site_key and site_key not in newdata.columns:   # plot:site: new sites
            out[name] = np.array([None] * len(newdata), dtype=object)
            continue
        miss = [c for c in cols if c not in newdata.columns]
        if miss:
            raise JSDMError(f"newdata needs the grouping column(s) {miss} of the grouped site "
                            f"effect (1 | {name}) (levels the fit has seen are predicted from "
                            "their estimated effect, new levels integrated over).")
        if len(cols) == 1:
            out[name] = newdata[cols[0]].to_numpy()
        else:
            lab = newdata[cols[0]].astype(str)
            for c in cols[1:]:
                lab = lab + ":" + newdata[c].astype(str)
            out[name] = lab.to_numpy()
    return out if hasattr(term, "chain") else out[term.group]


def _species_random_part(fit, X):
    """z_i' mu_j of the species random effects (conditional on the fitted species: every
    species of a fit is a seen level) and x_i' (gamma + Gamma t_j) of community slopes, at the
    site design X (k, p); 0.0 without them."""
    pred, P = fit.problem.predictor, fit.state.params
    out = 0.0
    for t, _, _ in getattr(pred, "species_random_terms", []):
        idx = t.col_index(pred)
        Z = np.column_stack([np.ones(len(X)) if c < 0 else X[:, c] for c in idx])
        out = out + Z @ t.get_species(P).T
    for t in getattr(pred, "global_terms", []):        # community slopes, the fourth corner
        if hasattr(t, "slopes"):
            cov = list(pred.covariates)
            Z = X[:, [cov.index(c) for c in t.columns]]
            out = out + Z @ t.slopes(pred, P).T
    return out


def response_mean(family, eta, trials, s):
    """E[y | eta] (k, m); ``s`` matters where the mean depends on it (zero-inflation,
    ordinal cut points) and is ignored by the other families."""
    return family.mean(eta, trials, s=s)


def marginal_mean(family, F, var, s=None):
    """E[g^-1(eta)] per trial for eta ~ N(F, var), arrays of one shape (ordinal: E[y], given s)."""
    if family.link == "log" and not family.mean_uses_dispersion:
        return np.exp(F + 0.5 * var)
    if family.link == "identity":
        return np.asarray(F, dtype=float)
    z, w = gauss_hermite(_N_GH)
    sd = np.sqrt(var)
    out = np.zeros(np.broadcast(F, sd).shape)
    for zk, wk in zip(z, w):
        out += wk * response_mean(family, F + sd * zk, None, s)
    return out


def predict(fit, newdata=None, type=None, lv=None, interval=None, alpha=None, offset=None,
            trials=None, n_draws=1000, seed=None, summary="mean", *, level=None):
    """Predict on the link or response scale for fitted or new sites.

    Parameters
    ----------
    fit : GLLVMResults
        The fitted model.
    newdata : DataFrame (k sites x covariates), optional
        New sites' covariates; None predicts the fitted sites.
    type : {"response", "link"}
        Scale of the prediction: the mean of y (default, the scale of
        ``fit.fitted()``) or the linear predictor. Before jsdm 0.2 the
        default was "link"; leaving ``type`` out gives a FutureWarning saying
        so until a later version.
    lv : {"conditional", "marginal"}, optional
        Default "conditional" for fitted sites, "marginal" (the only choice)
        for new sites. See the module docstring. To predict some species at a
        new site from others observed there, see :func:`predict_conditional`.
    interval : {None, "confidence", "prediction"}
        "confidence" (``lv="marginal"``, summaries "mean" and "median"):
        delta-method interval for the predicted summary from ``cov_params``
        (uncertainty of intercepts, slopes and loadings, and of the row
        effects: a fitted site's fixed alpha_i, or the random row-effect sd,
        which enters the marginal mean on the response scale), built on the
        link scale and transformed back.
        "prediction": central interval of a new response y, from ``n_draws``
        simulated draws (parameters held at their estimates).
    alpha : float
        1 - coverage of the interval (default 0.05: 95% intervals).
    offset : array (k,) or (k, m), optional
        Offset for new sites (fitted sites use the fit's offset).
    trials : array, optional
        Binomial trials for new sites (default: 1, i.e. probabilities).
    n_draws : int
        Monte Carlo draws for prediction intervals.
    seed : int or Generator, optional
        Seed of those draws.
    summary : {"mean", "median", "presence"} or float in (0, 1)
        Which summary of the prediction is returned. With ``lv="marginal"`` the
        latent variables of a site are unknown, so the site's expected response
        mu = E[y | eta] is itself random (eta ~ N(fixed part, theta_j' theta_j
        [+ sigma^2])):

        - "mean" (default): E[y] = E[mu], averaged over the latent variables.
          For the log link this is exp(fixed + v / 2), which is dominated by
          the rare sites with extreme latent values when a species' loadings
          are large (v = theta_j' theta_j of 10 inflates it 150-fold over the
          median); a warning says so when that happens.
        - "median": the median of mu over the latent variables, g^-1(fixed
          part): the expected response at a typical site (half of the sites
          with these covariates expect more, half less).
        - a float q: the q-quantile of mu over the latent variables,
          g^-1(fixed + z_q sd): e.g. 0.1 and 0.9 give the range of expected
          responses across sites with these covariates.
        - "presence": P(y > 0), the predictive probability that the species
          is present (discrete families and Tweedie), integrated over the
          latent variables (for 0/1 data the same as "mean").

        On the link scale "mean" and "median" are both the fixed part. With
        ``lv="conditional"`` (plug-in site scores) only "mean" (E[y | eta])
        and "presence" (P(y > 0 | eta)) exist.
    level : float, optional
        Deprecated: coverage of the interval; use ``alpha = 1 - level``.

    Returns
    -------
    DataFrame
        Without ``interval``: sites x species. With it: long, indexed by
        (site, species), columns ``prediction``, ``lower``, ``upper``.
        ``attrs["summary"]`` names the summary returned.
    """
    from .._deprecation import alpha_from_level

    level = 1.0 - alpha_from_level(alpha, level, "predict", stacklevel=3)
    type = _default_type(type)
    lv = ("conditional" if newdata is None else "marginal") if lv is None else lv
    _check_choice("type", type, TYPES)
    _check_choice("lv", lv, LVS)
    _check_choice("interval", interval, INTERVALS)
    summary = _check_summary(summary, type, lv, fit.family)
    fam, P = fit.problem.family, fit.state.params
    F, scores, extra, sites, tr = _setup(fit, newdata, lv, offset, trials)
    F, var, quad = _marginal_moments(fit, newdata, F, extra, lv == "marginal")
    if lv == "conditional":
        eta = F if scores is None else F + scores
        if summary == "presence":
            pred = 1.0 - fam.cdf(np.zeros(eta.shape), eta, P.s, _full_trials(tr, eta.shape))
        else:
            pred = eta if type == "link" else response_mean(fam, eta, tr, P.s)
    else:
        pred = _marginal_summary(fit, F, var, type, summary, tr)
    pred = pd.DataFrame(pred, index=sites, columns=fit.species)
    pred.attrs["summary"] = _summary_name(summary, type, lv)
    if interval is None:
        return pred
    if interval == "confidence":
        if lv != "marginal":
            raise JSDMError("confidence intervals need lv='marginal' (conditional predictions "
                            "would need the joint uncertainty of the site scores); or use "
                            "interval='prediction'")
        if summary not in ("mean", "median"):
            raise JSDMError(f"confidence intervals are available for summary='mean' or 'median', "
                            f"not {summary!r}")
        pred_ = fit.problem.predictor
        if pred_.group_terms:
            raise JSDMError(
                "confidence intervals of marginal predictions are not available for models with "
                "grouped site effects yet (the means of the levels the fit has seen are "
                "variational, outside the model's covariance); use interval='prediction'")
        conf = _confidence_numeric if _outside_delta_method(pred_) or quad is not None \
            else _confidence
        if summary == "median" and type == "response":
            lo, hi = conf(fit, newdata, F, var, "link", level, None, offset)
            lo, hi = (response_mean(fam, x, tr, P.s) for x in (lo, hi))
        else:
            lo, hi = conf(fit, newdata, F, var, type, level, tr, offset)
    else:
        eta_fn = _eta_sampler(F, scores, var, lv) if quad is None else \
            _quadratic_sampler(fit, newdata, F - quad[0], extra)
        lo, hi = _prediction(fam, eta_fn, P.s, tr, level, n_draws, seed)
    out = pred.stack().rename("prediction").to_frame()
    out["lower"] = np.asarray(lo).ravel()
    out["upper"] = np.asarray(hi).ravel()
    out.index.names = ["site", "species"]
    out.attrs["summary"] = pred.attrs["summary"]
    return out


def _outside_delta_method(pred):
    """The model terms whose parameters the delta method of ``_confidence`` leaves out: it
    takes the species' intercepts, slopes and loadings and the row effects; names of the
    others present in ``pred`` (empty: it covers the model)."""
    from ..model.terms.ordination import has_ordination

    out = []
    if has_ordination(pred):
        out.append("canonical coefficients (constrained or concurrent ordination)")
    if pred.ksr:
        out.append("species random effects")
    if pred.global_terms:
        out.append("community slopes (fourth corner)")
    if pred.group_terms:
        out.append("grouped site effects")
    return out


def _default_type(type):
    """``type`` with the default scale, "response" (a FutureWarning when it was left out)."""
    if type is None:
        import warnings

        warnings.warn("predict() now returns the response scale by default (the scale of "
                      "fitted()); before jsdm 0.2 it returned the link scale. Pass "
                      "type='response' or type='link' to silence this warning.", FutureWarning,
                      stacklevel=4)
        return "response"
    return type
SUMMARIES = ("mean", "median", "presence")
_EXPLODE_VAR = 2.0 * np.log(100.0)      # exp(v / 2) > 100: mean over 100 x the median


def _check_summary(summary, type, lv, family):
    """The validated summary: one of SUMMARIES or a float quantile level."""
    from .latent import has_presence

    if isinstance(summary, str):
        if summary not in SUMMARIES:
            raise JSDMError(f"summary must be one of {', '.join(map(repr, SUMMARIES))} or a "
                            f"quantile level in (0, 1); got {summary!r}")
    elif isinstance(summary, (float, int, np.floating)) and 0.0 < float(summary) < 1.0:
        summary = float(summary)
    else:
        raise JSDMError(f"summary must be 'mean', 'median', 'presence' or a quantile level "
                        f"strictly between 0 and 1; got {summary!r}")
    if summary == "presence":
        if not has_presence(family):
            raise JSDMError(f"summary='presence' (P(y > 0)) needs a family with zeros that mean "
                            f"absence (counts, binomial, ordinal, Tweedie); {family.name!r} has "
                            "none")
        if type == "link":
            raise JSDMError("summary='presence' is a probability on the response scale; use "
                            "type='response'")
    elif lv == "conditional" and summary != "mean":
        raise JSDMError(f"summary={summary!r} describes the spread over unknown latent variables, "
                        "which plug-in site scores do not have; use lv='marginal', or "
                        "summary='mean' / 'presence'")
    return summary


def _summary_name(summary, type, lv):
    if summary == "presence":
        return "P(y > 0)" + (" given the site scores" if lv == "conditional" else
                             ", marginal over the latent variables")
    scale = "linear predictor" if type == "link" else "E[y | eta]"
    if lv == "conditional":
        return f"{scale} at the site scores"
    if summary == "mean":
        return f"mean of {scale} over the latent variables"
    if summary == "median":
        return f"median of {scale} over the latent variables"
    return f"{summary:g} quantile of {scale} over the latent variables"


def _full_trials(tr, shape):
    return None if tr is None else np.broadcast_to(np.asarray(tr, dtype=float), shape)


def _marginal_summary(fit, F, var, type, summary, tr):
    """Summary (k, m) of the marginal prediction (see :func:`predict`)."""
    fam, s = fit.family, fit.state.params.s
    if summary == "presence":
        from .marginal import normal_expectation

        shape = np.broadcast(F, var).shape
        trf = _full_trials(tr, shape)

        def p0(eta):
            with np.errstate(over="ignore", under="ignore"):
                return fam.cdf(np.zeros(shape), eta, s, trf)
        return np.clip(1.0 - normal_expectation(p0, F, np.sqrt(var)), 0.0, 1.0)
    if summary == "mean":
        if type == "link":
            return F
        _warn_exploding(fit, F, var)
        return _scale(marginal_mean(fam, F, var, s), tr)
    zq = 0.0 if summary == "median" else stats.norm.ppf(summary)
    eta = F + zq * np.sqrt(var)
    return eta if type == "link" else response_mean(fam, eta, tr, s)


def _warn_exploding(fit, F, var):
    """Warn when the marginal mean of a log-link species is dominated by extreme sites."""
    import warnings

    from ..exceptions import JSDMWarning

    if fit.family.link != "log":
        return
    big = np.asarray(var).max(0) > _EXPLODE_VAR if np.ndim(var) == 2 else np.asarray(var) > _EXPLODE_VAR
    big = np.broadcast_to(big, (F.shape[1],))
    if big.any():
        names = [str(x) for x in np.asarray(fit.species)[big]]
        ratio = float(np.exp(0.5 * np.max(var)))
        warnings.warn(
            f"the marginal mean E[y] of {len(names)} species ({', '.join(names[:5])}"
            f"{', ...' if len(names) > 5 else ''}) is more than 100 times its median over the "
            f"latent variables (up to {ratio:.3g} times): it is dominated by rare sites with extreme "
            "latent values. For a typical site use summary='median' (or quantiles, e.g. "
            "summary=0.9), or summary='presence' for the probability of presence.",
            JSDMWarning, stacklevel=5)


def _scale(mu, trials):
    return mu if trials is None else mu * np.asarray(trials, dtype=float)


def _model_cov(fit):
    """(cov_packed, species positions (m, 1 + p + d)) of the model parameters."""
    from ..model.hessian import species_positions
    from .inference import information

    info = information(fit)
    pos = species_positions(fit.state.layout)[:, : 1 + fit.problem.p + fit.problem.d]
    return info.cov_packed, pos


def _gather(C, rows, cols):
    """C[rows, cols] with broadcasting; 0 where a position is -1 (a parameter fixed at 0)."""
    ok = (rows >= 0) & (cols >= 0)
    return np.where(ok, C[np.where(rows >= 0, rows, 0), np.where(cols >= 0, cols, 0)], 0.0)


def _row_positions(fit, newdata, k):
    """Packed position (k,) of the row-effect parameter behind each predicted site, or None.

    Fixed row effects (fitted sites): alpha_i (site 0's is fixed at 0: -1). Random
    row effects: log sigma for every site (it sets the marginal variance).
    """
    layout, prob = fit.state.layout, fit.problem
    if prob.row_effect == "fixed" and newdata is None:
        return np.r_[-1, layout.slices["alpha_fixed"].start + np.arange(prob.n - 1)]
    if prob.row_effect == "random":
        return np.full(k, layout.slices["log_sigma"].start)
    return None


def _confidence(fit, newdata, F, var, type, level, trials, offset=None):
    """Delta-method interval (k, m) for the marginal mean.

    The gradient of the mean covers the species' intercepts, slopes and loadings
    and the row effect behind each site (fixed: its alpha_i, with its covariance
    with the species' parameters; random: log sigma, through the marginal
    variance on the response scale).
    """
    prob, P, fam = fit.problem, fit.state.params, fit.problem.family
    _check_response_scale(fam, P, type)
    X = prob.X if newdata is None else new_design(fit, newdata)
    z = stats.norm.isf((1.0 - level) / 2.0)
    C, pos = _model_cov(fit)
    k, p = F.shape[0], prob.p
    Xt = np.column_stack([np.ones(k), X])                              # (k, 1 + p)
    rpos = _row_positions(fit, newdata, k)
    if type == "link":
        G = np.broadcast_to(Xt[:, None, :], (k, prob.m, 1 + p))
        Gr = None if rpos is None or prob.row_effect == "random" else np.ones((k, prob.m))
        se = np.sqrt(_quad_form(C, pos[:, :1 + p], G, rpos, Gr))
        return F - z * se, F + z * se
    h = 1e-5
    mu = marginal_mean(fam, F, var)
    dF = (marginal_mean(fam, F + h, var) - marginal_mean(fam, F - h, var)) / (2 * h)
    hv = h * (1.0 + var)
    dV = (marginal_mean(fam, F, var + hv) - marginal_mean(fam, F, np.maximum(var - hv, 0))) \
        / (var + hv - np.maximum(var - hv, 0))
    G = np.concatenate([dF[:, :, None] * Xt[:, None, :],
                        (2.0 * dV[:, :, None]) * P.theta[None, :, :]], axis=2)   # (k, m, 1+p+d)
    Gr = None
    if rpos is not None:        # d mu / d alpha_i = dF; d mu / d log sigma = dV 2 sigma^2
        Gr = dF if prob.row_effect == "fixed" else dV * (2.0 * np.exp(2.0 * P.log_sigma))
    se_mu = np.sqrt(_quad_form(C, pos, G, rpos, Gr))
    g, dg = _LINKS[fam.link]
    with np.errstate(divide="ignore", invalid="ignore"):
        c, se_c = g(mu), np.abs(dg(mu)) * se_mu
    inv = _inverse_link(fam)
    return _scale(inv(c - z * se_c), trials), _scale(inv(c + z * se_c), trials)


def _check_response_scale(fam, P, type):
    """Refuse response-scale confidence intervals where the mean depends on the dispersion."""
    if type == "response" and (np.ndim(P.s) == 2 or fam.mean_uses_dispersion):
        raise JSDMError(f"confidence intervals on the response scale are not available for family "
                        f"{fam.name!r} (its mean depends on its {fam.dispersion_name} parameters too); "
                        "use type='link', or interval='prediction'")


def _confidence_numeric(fit, newdata, F, var, type, level, trials, offset=None, h=1e-5):
    """Delta-method interval (k, m) for the marginal mean with the gradient in *every* model
    coordinate by central differences: for models whose linear predictor has more than the
    intercepts, slopes, loadings and row effects of ``_confidence`` (canonical coefficients
    of constrained and concurrent ordination, species random effects' means and community
    slopes, quadratic responses' D). The marginal moments (F, var) are recomputed at each
    perturbed parameter vector by the functions ``predict`` uses, so the interval is of
    exactly what ``predict`` returns; on a model both cover it equals ``_confidence``
    (tested). Costs 2 x (model coordinates) evaluations of those moments."""
    import dataclasses

    from ..model.terms.ordination import has_ordination
    from .fitted import GLLVMResults
    from .inference import information

    from ..model.hessian_fd import extended_size

    prob, fam = fit.problem, fit.problem.family
    P0 = fit.state.params
    _check_response_scale(fam, P0, type)

    layout = fit.state.layout
    C = information(fit).cov_packed
    # the packed entries the covariance spans: the model parameters (first in the packed
    # order) and, with species random effects, their species-level q right after them
    midx = np.arange(extended_size(layout))
    x0 = layout.pack(P0)
    Xn = None if newdata is None else new_design(fit, newdata)
    Xlv = new_lv_design(fit, newdata) if newdata is not None and has_ordination(prob.predictor) \
        else None
    proxy = GLLVMResults(prob, fit.state, fit.settings)
    g, dg = _LINKS[fam.link]

    def target(x):
        P = layout.unpack(x)
        object.__setattr__(proxy, "_state", dataclasses.replace(fit.state, params=P))
        Fx, _, extra, _, _ = _setup(proxy, newdata, "marginal", offset, None, Xn, Xlv)
        Fx, vx, _ = _marginal_moments(proxy, newdata, Fx, extra, Xlv=Xlv)
        if type == "link":
            return Fx
        with np.errstate(divide="ignore", invalid="ignore"):
            return g(marginal_mean(fam, Fx, vx))

    f0 = target(x0)
    J = np.empty((f0.size, midx.size))
    for a, i in enumerate(midx):
        step = h * max(1.0, abs(x0[i]))
        xp, xm = x0.copy(), x0.copy()
        xp[i] += step
        xm[i] -= step
        J[:, a] = (target(xp) - target(xm)).ravel() / (2.0 * step)
    bad = ~np.isfinite(np.diag(C))
    Cf = np.where(np.isfinite(C), C, 0.0)
    se = np.sqrt(np.maximum(np.einsum("ia,ab,ib->i", J, Cf, J), 0.0)).reshape(f0.shape)
    touched = (np.abs(J[:, bad]) > 0).any(axis=1).reshape(f0.shape) if bad.any() else False
    se = np.where(touched, np.nan, se)
    z = stats.norm.isf((1.0 - level) / 2.0)
    if type == "link":
        return F - z * se, F + z * se
    c = f0
    inv = _inverse_link(fam)
    return _scale(inv(c - z * se), trials), _scale(inv(c + z * se), trials)


def _quad_form(C, pos, G, rpos=None, Gr=None):
    """Var of sum_a G[i, j, a] phi_ja (+ Gr[i, j] r_i) for each (site i, species j), (k, m)."""
    Cs = _gather(C, pos[:, :, None], pos[:, None, :])                  # (m, q, q)
    var = np.einsum("ija,jab,ijb->ij", G, Cs, G)
    if rpos is not None and Gr is not None:
        Csr = _gather(C, pos[None, :, :], rpos[:, None, None])          # (k, m, q)
        Crr = _gather(C, rpos, rpos)                                     # (k,)
        var = var + 2.0 * Gr * np.einsum("ija,ija->ij", G, Csr) + Gr ** 2 * Crr[:, None]
    return np.maximum(var, 0.0)


def _inverse_link(fam):
    return lambda eta: fam.mean(eta, None)


def _quadratic_parts(fit, newdata, Xlv=None):
    """(term, theta (m, d), D (m, d), c (k, d)) of a fit with quadratic responses (c: the
    covariate part C' x_i of concurrent latent variables at the sites, else 0), or None."""
    prob, P = fit.problem, fit.state.params
    pred = prob.predictor
    from ..model.terms.quadratic import quadratic_term

    term = quadratic_term(pred)
    if term is None:
        return None
    theta = np.asarray(P.theta, dtype=float).reshape(prob.m, prob.d)
    D = np.asarray(term.D(pred, P), dtype=float)
    k = prob.n if newdata is None else len(newdata)
    c = np.zeros((k, prob.d))
    if hasattr(pred.lv, "fixed_scores"):
        if newdata is not None and Xlv is None:
            Xlv = new_lv_design(fit, newdata)
        c = pred.lv.fixed_scores(pred, P) if newdata is None else np.pad(
            Xlv @ P.C_lv, ((0, 0), (0, prob.d - P.C_lv.shape[1])))
    return term, theta, D, c


def quadratic_marginal(fit, newdata, Xlv=None):
    """What quadratic responses change in the marginal linear predictor, z ~ N(0, I):
    (mean shift (k, m), variance (k, m)), or None without them.

    eta = F + z' theta_j - sum_k D_jk (c_ik + z_k)^2 (F holds c' theta_j) has the exact mean
    F - sum_k D_jk (c_ik^2 + 1); its variance is represented as for the engine's term: for a
    log link by v = 2 (log E[e^eta] - E[eta]), so that exp(mean + v / 2) is the exact E[e^eta];
    for other links by Var[eta] (moment matching, an approximation)."""
    parts = _quadratic_parts(fit, newdata, Xlv)
    if parts is None:
        return None
    _, theta, D, c = parts
    shift = -((c ** 2 + 1.0) @ D.T)
    g = theta[None] - 2.0 * D[None] * c[:, None]                          # (k, m, d)
    if fit.problem.family.link == "log":
        K = 1.0 + 2.0 * D                                                 # I + 2 S D, S = I
        var = (g ** 2 / K).sum(-1) - np.log(K).sum(-1) + 2.0 * D.sum(-1)
    else:
        var = (g ** 2).sum(-1) + 2.0 * (D ** 2).sum(-1)
    return shift, np.maximum(var, 0.0)


def _quadratic_sampler(fit, newdata, F, extra):
    """Function rng -> one marginal draw of eta (k, m) with quadratic responses: z ~ N(0, I)
    drawn, the quadratic evaluated exactly (F: the fixed part, holding c' theta_j)."""
    _, theta, D, c = _quadratic_parts(fit, newdata)
    sd = np.sqrt(extra)[:, None]

    def draw(rng):
        z = rng.standard_normal(c.shape)
        return F + z @ theta.T - ((c + z) ** 2) @ D.T + sd * rng.standard_normal((len(c), 1))
    return draw


def _eta_sampler(F, scores, var, lv):
    """Function rng -> one draw of eta (k, m)."""
    if lv == "conditional":
        eta = F if scores is None else F + scores
        return lambda rng: eta
    sd = np.sqrt(var)
    return lambda rng: F + sd * rng.standard_normal(F.shape)


def _prediction(fam, eta_fn, s, trials, level, n_draws, seed):
    """Central Monte Carlo interval of a new response."""
    rng = analysis_rng(seed)
    draws = np.stack([fam.sample(eta_fn(rng), s, trials, rng) for _ in range(int(n_draws))])
    a = (1.0 - level) / 2.0
    return np.quantile(draws, a, axis=0), np.quantile(draws, 1.0 - a, axis=0)


def simulate(fit, n=1, conditional=True, seed=None):
    """Draw response tables from the fitted model.

    Parameters
    ----------
    fit : GLLVMResults
    n : int
        Number of tables.
    conditional : bool
        True: given the fitted site scores (eta = fitted linear predictor).
        False: fresh latent variables z_i ~ N(0, I) (and random row effects
        ~ N(0, sigma^2)) for every table.
    seed : int or Generator, optional

    Returns
    -------
    DataFrame
        n == 1: sites x species. n > 1: rows indexed by (draw, site).
    """
    if int(n) != n or n < 1:
        raise JSDMError(f"n must be a whole number >= 1, got {n!r}")
    rng = np.random.default_rng(seed)
    lv = "conditional" if conditional else "marginal"
    prob, P = fit.problem, fit.state.params
    F, scores, extra, sites, tr = _setup(fit, None, lv, None, None)
    quad = None if conditional else _quadratic_parts(fit, None)
    if not conditional and prob.predictor.group_terms:     # fresh levels are drawn below
        gm, gv = group_parts(fit, None)
        F, extra = F - gm[:, None], np.maximum(extra - gv, 0.0)
    row_sd = np.sqrt(extra)[:, None]
    tables = []
    for _ in range(int(n)):
        if conditional:
            eta = F if scores is None else F + scores
        else:
            z = rng.standard_normal((prob.n, prob.d))
            eta = F + z @ P.theta.T + row_sd * rng.standard_normal((prob.n, 1))
            if quad is not None:            # unimodal responses: - D (c + z)^2
                eta = eta - ((quad[3] + z) ** 2) @ quad[2].T
            for t in prob.predictor.group_terms:         # fresh levels: one draw per level
                if hasattr(t, "draw"):
                    eta = eta + t.draw(prob.predictor, P, rng)[:, None]
        y = prob.family.sample(eta, P.s, tr, rng)
        tables.append(pd.DataFrame(y, index=sites, columns=fit.species))
    if n == 1:
        return tables[0]
    return pd.concat(tables, keys=range(int(n)), names=["draw", "site"])
