"""Prediction at new sites given some species observed there, and the scores of held-out sites.

At a new site i with covariates x_i, the species observed there (y_iO) say
something about the site's latent variables: their posterior is

    p(u | y_iO) proportional to prod_{j in O} f(y_ij | F_ij + lambda_j' u) N(u; 0, Sigma_u),

and every other species is predicted by averaging over it,

    E[y_ik | y_iO] = integral E[y_ik | eta_ik(u)] p(u | y_iO) du.

Residual associations are what makes this differ from the marginal
prediction: a species loading like the observed ones is predicted up or down
with them (imputation, detection gaps in eDNA or survey data). The integrals
use the points of :mod:`jsdm.results.marginal` (adaptive Gauss-Hermite
quadrature for up to 2 latent dimensions, importance sampling beyond), so the
posterior is the model's exact one, not the variational approximation.
"""
import numpy as np
import pandas as pd
from scipy import special, stats

from ..exceptions import JSDMError
from . import marginal
from .latent import has_presence, site_latent


# --- inputs ---------------------------------------------------------------------------------
def observed_table(fit, observed, sites=None, trials=None):
    """(Y, W) arrays (k, m) in the fit's species order from a table of observed responses.

    Species missing from ``observed`` and NaN cells are unobserved (W = 0).
    """
    if not isinstance(observed, pd.DataFrame):
        raise JSDMError("observed must be a DataFrame (sites x species) of the responses seen at "
                        f"the new sites, NaN where not observed; got {type(observed).__name__}")
    unknown = [c for c in observed.columns if c not in set(fit.species)]
    if unknown:
        raise JSDMError(f"observed has species the model does not know: {unknown[:5]}; its "
                        f"columns must be among the fitted species ({len(fit.species)})")
    if sites is not None and not observed.index.equals(sites):
        raise JSDMError("observed and newdata must have the same site labels in the same order "
                        f"(observed: {list(observed.index[:3])}..., newdata: {list(sites[:3])}...)")
    try:
        Yd = observed.reindex(columns=fit.species).astype(float)
    except (TypeError, ValueError) as exc:
        raise JSDMError(f"observed must hold numbers (NaN where not observed): {exc}") from None
    Y = Yd.to_numpy()
    fit.family.check_y(Y, None if trials is None else np.broadcast_to(
        np.asarray(trials, dtype=float), Y.shape))
    W = np.isfinite(Y).astype(float)
    return np.where(W > 0, Y, 0.0), W


def _new_sites(fit, newdata, observed):
    if newdata is None:
        if fit.problem.p:
            raise JSDMError(f"the model has covariates ({', '.join(fit.terms)}): give newdata with "
                            "their values at the new sites")
        return pd.DataFrame(index=observed.index)
    return newdata


# --- posterior weights ----------------------------------------------------------------------
def posterior(sl, Y, W, method="auto", n_nodes=None, n_draws=2000, seed=0):
    """Points, per-cell log-likelihoods and log weights of the posterior of u at each site.

    Returns
    -------
    (Points, LL (K, k, m), lw (K, k)) with lw = log prior weight + sum_j LL:
    exp(lw) / sum_K exp(lw) are the posterior weights; logsumexp(lw) = log p(y_iO).
    """
    q = marginal.fit_q(sl, Y, W)
    pts = marginal.make_points(sl, q[0], q[1], method, n_nodes, n_draws, seed)
    LL = marginal.cell_loglik(sl, Y, W, pts.U)
    return pts, LL, pts.logw + LL.sum(-1)


def _softmax(lw, axis=0):
    return np.exp(lw - special.logsumexp(lw, axis=axis, keepdims=True))


def _weighted_summary(sl, pts, wts, type, summary):
    """Posterior summary (k, m) of each species' prediction from weights ``wts`` (K, k[, m])."""
    eta = sl.eta(pts.U)                                                   # (K, k, m)
    w = wts if wts.ndim == 3 else wts[..., None]
    if summary == "presence":
        return np.clip((w * (1.0 - sl.prob_zero(eta))).sum(0), 0.0, 1.0)
    if summary == "mean" and type == "response":
        return (w * sl.response_mean(eta)).sum(0)
    mean = (w * eta).sum(0)
    if summary == "mean":
        return mean
    sd = np.sqrt(np.maximum((w * (eta - mean) ** 2).sum(0), 0.0))
    zq = 0.0 if summary == "median" else stats.norm.ppf(summary)
    out = mean + zq * sd
    return out if type == "link" else sl.response_mean(out)


def predict_conditional(fit, newdata, observed, type="response", summary="mean", offset=None,
                        trials=None, method="auto", n_draws=2000, seed=0):
    """Predict every species at new sites given the species observed there.

    Parameters
    ----------
    fit : GLLVMResults
    newdata : DataFrame (k sites x covariates) or None
        Covariates of the new sites (None only for a model without covariates;
        the sites are then those of ``observed``).
    observed : DataFrame (k sites x species)
        Responses seen at the new sites (same site labels as ``newdata``), NaN
        where a species was not observed; species absent from the columns
        count as not observed.
    type : {"response", "link"}
    summary : {"mean", "median", "presence"} or float in (0, 1)
        - "mean": the posterior predictive mean E[y_ij | observed] (or, on the
          link scale, the posterior mean of eta_ij);
        - "presence": P(y_ij > 0 | observed) (discrete families, Tweedie);
        - "median" / a quantile level q: of the site's expected response
          g^-1(eta_ij), from a normal approximation to the posterior of eta_ij
          (its posterior mean and sd).
    offset, trials : as for :func:`jsdm.results.predict.predict`
    method : {"auto", "quadrature", "is"}
        How the posterior of the site's latent vector is integrated: "auto"
        uses adaptive Gauss-Hermite quadrature for up to two latent dimensions
        (exact to ~1e-6), importance sampling beyond.
    n_draws, seed : importance-sampling size and seed (default 0: deterministic).

    Returns
    -------
    DataFrame (k sites x m species)
        Predictions for every species given the observed ones; the observed
        species' own columns are their predictions given all observed
        species, themselves included. ``attrs``: ``"summary"`` (which summary),
        ``"observed"`` (k x m boolean DataFrame) and ``"loglik_observed"``
        (Series: log p(observed responses) at each site, marginal over the
        latent variables).

    Notes
    -----
    A site with nothing observed gets the marginal prediction (the posterior is
    the prior). Model parameters are held at their estimates.
    """
    from .predict import TYPES, _check_choice, _check_summary, _summary_name

    _check_choice("type", type, TYPES)
    summary = _check_summary(summary, type, "marginal", fit.family)
    newdata = _new_sites(fit, newdata, observed)
    sl = site_latent(fit, newdata, offset=offset, trials=trials)
    Y, W = observed_table(fit, observed, newdata.index, trials)
    out = np.empty((sl.k, sl.m))
    logp = np.empty(sl.k)
    for rows in marginal._chunks(sl, _n_points(sl, method, n_draws)):
        sub = sl.rows(rows)
        pts, _, lw = posterior(sub, Y[rows], W[rows], method, None, n_draws, _seed(seed, rows))
        out[rows] = _weighted_summary(sub, pts, _softmax(lw), type, summary)
        logp[rows] = special.logsumexp(lw, axis=0)
    res = pd.DataFrame(out, index=newdata.index, columns=fit.species)
    name = _summary_name(summary, type, "marginal").replace("over the latent variables",
                                                              "given the observed species")
    res.attrs.update(summary=name,
                     observed=pd.DataFrame(W > 0, index=newdata.index, columns=fit.species),
                     loglik_observed=pd.Series(logp, index=newdata.index, name="loglik"))
    return res


def _n_points(sl, method, n_draws):
    return max(marginal.n_points(sl.r, method, n_draws), int(n_draws))


def _seed(seed, rows):
    """Per-chunk seed (deterministic for a given call)."""
    if seed is None:
        return None
    return np.random.SeedSequence([int(seed), int(rows.start)])


# --- scores of held-out sites ---------------------------------------------------------------
def score_sites(sl, Y, W, method="auto", n_draws=1000, seed=0, conditional=True):
    """Predictive scores and predictions of held-out sites under a fitted model.

    Parameters
    ----------
    sl : SiteLatent
        The fitted model at the held-out sites (``site_latent(fit, newdata)``).
    Y, W : ndarray (k, m)
        Held-out responses and observation weights.
    conditional : bool
        Also score each species given the other species at the site.

    Returns
    -------
    dict of arrays
        ``lpd`` (k,): log p(y_i), joint over species and marginal over the
        latent variables; ``lpd_se`` (k,): its Monte Carlo SE (0 by quadrature);
        ``lpd_cell`` (k, m): log p(y_ij) one species at a time;
        ``mean``, ``presence`` (k, m): marginal predictions (E[y], P(y > 0) or
        None); with ``conditional``: ``lpd_cond`` (k, m): log p(y_ij | y_i,-j),
        ``mean_cond``, ``presence_cond``: predictions given the other species.
    """
    from .predict import marginal_mean

    k, m = Y.shape
    pres = has_presence(sl.family)
    if sl.quad is None:
        var = np.broadcast_to(sl.marginal_variance(), (k, m)).copy()
        out = {"lpd_cell": marginal.cell_marginal(sl, Y, W)}
        mu = marginal_mean(sl.family, sl.F, var, sl.s)
        out["presence"] = _marginal_presence(sl, var) if pres else None
    else:           # quadratic responses: eta is not normal, integrals over the prior of u
        lpd, mu, p1 = marginal.prior_cells(sl, Y, W, n_draws=max(int(n_draws), 2000), seed=seed)
        out = {"lpd_cell": lpd, "presence": p1 if pres else None}
    out["mean"] = mu if sl.trials is None else mu * sl.trials
    keys = ["lpd", "lpd_se"] + (["lpd_cond", "mean_cond"] + (["presence_cond"] if pres else [])
                                if conditional else [])
    for key in keys:
        out[key] = np.full((k,) if key.startswith("lpd") and key != "lpd_cond" else (k, m), np.nan)
    for rows in marginal._chunks(sl, _n_points(sl, method, n_draws)):
        _score_chunk(sl.rows(rows), Y[rows], W[rows], method, n_draws, _seed(seed, rows),
                     conditional, pres, rows, out)
    return out


def _score_chunk(sl, Y, W, method, n_draws, seed, conditional, pres, rows, out):
    pts, LL, lw = posterior(sl, Y, W, method, None, n_draws, seed)
    logp, se, _ = marginal._summarise(lw, pts.method)
    out["lpd"][rows], out["lpd_se"][rows] = logp, se
    if not conditional:
        return
    if pts.method != "exact":       # one set of draws serving every leave-one-species-out posterior
        q = marginal.fit_q(sl, Y, W)
        pts = marginal.mixture_points(sl, Y, W, q, max(int(n_draws), 4 * (sl.m + 1)), seed)
        LL = marginal.cell_loglik(sl, Y, W, pts.U)
    lw = pts.logw + LL.sum(-1)
    lp = special.logsumexp(lw, axis=0)
    lw_j = lw[..., None] - LL                                            # (K, k, m): without j
    lp_j = special.logsumexp(lw_j, axis=0)
    out["lpd_cond"][rows] = np.where(W > 0, lp[:, None] - lp_j, np.nan)
    w_j = np.exp(lw_j - lp_j)
    eta = sl.eta(pts.U)
    out["mean_cond"][rows] = (w_j * sl.response_mean(eta)).sum(0)
    if pres:
        out["presence_cond"][rows] = np.clip((w_j * (1.0 - sl.prob_zero(eta))).sum(0), 0, 1)


def _marginal_presence(sl, var):
    p0 = marginal.normal_expectation(sl.prob_zero, sl.F, np.sqrt(var))
    return np.clip(1.0 - p0, 0.0, 1.0)
