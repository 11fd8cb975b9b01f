"""Species associations read off a fitted GLLVM.

Residual (latent) associations
------------------------------
With ``eta_ij = ... + z_i' theta_j`` and ``z_i ~ N(0, I_d)``, the latent part
of the linear predictor has the species x species covariance ``Theta Theta'``
(rank ``d``, invariant to rotating the latent variables). Its correlation
matrix is the species association matrix. Optionally a family term is added
to the diagonal (:func:`family_variance`), which reads the model as a latent
normal on the link scale; it shrinks the correlations towards zero and is
what R gllvm's ``getResidualCor`` reports for negative binomial and binomial.

Environmental associations
--------------------------
The covariance across the observed sites of the covariate part
``x_i' beta_j`` of the linear predictor, between species.

Intervals
---------
Every residual correlation gets a Wald interval by the delta method from the
loading (and, with a family term, dispersion) block of ``fit.cov_params()``,
with the analytic gradient of ``cor(Theta Theta')`` in theta. The interval is
built for the angle ``arccos(r)`` between the two species' loading vectors and
mapped back (default ``transform="angle"``): by simulation (bench/
coverage_correlations.py, docs/coverage_correlations.png) its 95% coverage
is 0.945 (Poisson) and 0.939 (NB) at n=200, m=12, d=2, flat across |r|,
where Fisher's z under-covers strong correlations (0.87 / 0.84 for
|r| > 0.9) and the plain scale under-covers everywhere (0.90). With
``method="bootstrap"``: percentile intervals from a parametric bootstrap
(simulate from the fitted model with fresh latent variables, refit from the
estimates, recompute the correlations; rotation invariant, so no sign or
rotation matching is needed); it is slower and covered 0.91-0.93 with 50
refits.
"""
import warnings
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from .._numerics import analysis_rng
from ..exceptions import ConvergenceWarning, JSDMError, JSDMWarning

_NB_VARIANCE = ("lognormal", "trigamma")
#: the family terms ``add_family_variance`` accepts (besides False/None and True = "lognormal")
FAMILY_TERMS = ("observation", "lognormal", "trigamma")
#: the association measure of correlations, tables, heatmaps and the report
DEFAULT_MEASURE = "observation"
_GH_NODES = 20


# --- residual covariance -------------------------------------------------------------
def _theta(fit):
    """Loadings as an array (m, d)."""
    return np.asarray(fit.loadings, dtype=float)


def _measure(add_family_variance):
    """The family term asked for: None (pure Theta Theta') or one of FAMILY_TERMS."""
    if add_family_variance is False or add_family_variance is None:
        return None
    if add_family_variance is True:
        return "lognormal"
    if isinstance(add_family_variance, str) and add_family_variance in FAMILY_TERMS:
        return add_family_variance
    raise JSDMError("add_family_variance must be False (Theta Theta' alone), 'observation' (the "
                    "default for correlations), True or 'lognormal' (R gllvm's getResidualCor), "
                    f"or 'trigamma'; got {add_family_variance!r}")


def _species_arrays(fit):
    """(theta (m, d), beta0 (m,), B (m, p), s) of the fit, as arrays."""
    P = fit.state.params
    return (np.asarray(P.theta, dtype=float), np.asarray(P.beta0, dtype=float),
            np.asarray(P.B, dtype=float), P.s)


def species_mean(fit, beta0=None, B=None, theta=None, s=None):
    """Mean response of each species over its observed sites, latent variables integrated out.

    ``mean_i E[y_ij]`` with ``eta_ij ~ N(fixed_ij, theta_j' theta_j [+ sigma^2])``
    (the marginal mean: exact for log links, 20-node Gauss-Hermite otherwise).
    Optional arrays replace the fit's species parameters (for derivatives).

    Returns
    -------
    ndarray (m,)
    """
    on_cluster = getattr(fit, "_cluster_species_mean", None)    # a cluster fit: summed by chunk
    if on_cluster is not None:
        return on_cluster(beta0, B, theta, s)
    prob, fam = fit.problem, fit.family
    t0, b0, B0, s0 = _species_arrays(fit)
    theta = t0 if theta is None else theta
    beta0, B = (b0 if beta0 is None else beta0), (B0 if B is None else B)
    s = s0 if s is None else s
    F = np.broadcast_to(beta0, (prob.n, prob.m)).copy()
    if prob.p:
        F += prob.X @ B.T
    if prob.offset is not None:
        F += prob.offset
    if fit.row_effects is not None:
        F += fit.row_effects.to_numpy()[:, None]
    v = (theta ** 2).sum(1) + (fit.row_sigma ** 2 if fit.row_effect == "random" else 0.0)
    W = prob.W
    with np.errstate(over="ignore", invalid="ignore"):
        if fam.link == "log" and not fam.mean_uses_dispersion:
            mu = fam.mean(F + 0.5 * v, None, s)
        else:
            x, w = np.polynomial.hermite_e.hermegauss(_GH_NODES)
            w = w / w.sum()
            mu = sum(wk * fam.mean(F + xk * np.sqrt(v), prob.trials, s) for xk, wk in zip(x, w))
        return (W * mu).sum(0) / np.maximum(W.sum(0), 1.0)


def _observation_term(fit, beta0=None, B=None, theta=None, s=None):
    """Nakagawa et al.'s observation-level variance per species at its mean (m,)."""
    fam = fit.family
    if fam.link_residual_variance:
        return np.full(len(fit.species), float(fam.link_residual_variance))
    s = fit.state.params.s if s is None else s
    mu = species_mean(fit, beta0, B, theta, s)
    prob = fit.problem
    tr = None                          # the species' mean number of trials (beta-binomial)
    if prob.trials is not None:
        obs = np.broadcast_to(prob.W > 0, prob.trials.shape)
        tr = np.where(obs, prob.trials, 0.0).sum(0) / np.maximum(obs.sum(0), 1)
    return np.asarray(fam.observation_variance(mu, s, tr), dtype=float)


def _gllvm_term(fit, kind, disp=None):
    """R gllvm's getResidualCor diagonal term per species (m,) (``kind`` lognormal/trigamma)."""
    fam, m = fit.family, len(fit.species)
    disp = fit.dispersion if disp is None else disp
    if disp is not None:                # (m,), or (m, q) for a vector per species
        disp = np.asarray(disp, dtype=float)
    vals = fam.link_variance(disp, m, method=kind)
    return np.broadcast_to(np.asarray(vals, dtype=float), (m,))


def family_variance(fit, nb_variance="lognormal"):
    """Link-scale variance of the observation-level residual, per species.

    What is added to the diagonal of the residual covariance when
    ``add_family_variance`` is asked for. ``nb_variance`` names the term (the
    argument keeps its old name; it applies to every family):

    ``"observation"`` (the default of :func:`residual_correlation`): the
    distribution-specific variance of Nakagawa, Johnson & Schielzeth (2017),
    :meth:`jsdm.families.Family.observation_variance` at the species' mean
    response (latent variables integrated out):

    ========================  =========================================
    binomial, probit link     1 (latent standard normal)
    binomial, logit link      pi^2 / 3 (latent standard logistic)
    binomial, cloglog link    pi^2 / 6 (latent standard Gumbel)
    ordinal                   as binomial, by link
    Poisson                   log(1 + 1 / mu_j)
    negative binomial         log(1 + 1 / mu_j + phi_j)
    gamma, Tweedie, ZIP       log(1 + Var(y) / mu_j^2)
    gaussian (identity)       sd_j^2
    ========================  =========================================

    ``"lognormal"`` (R gllvm's ``getResidualCor``): NB log(1 + phi_j), binomial
    and gaussian as above, Poisson 0 (then a one-LV Poisson model gives
    correlations of +-1). ``"trigamma"``: NB trigamma(1 / phi_j), the exact
    variance of log g for the gamma mixing variable g (mean 1, variance
    phi_j); otherwise as "lognormal".

    Parameters
    ----------
    fit : GLLVMResults
    nb_variance : {"observation", "lognormal", "trigamma"}

    Returns
    -------
    Series, length m (species)
    """
    kind = _measure(nb_variance)
    if kind is None:
        raise JSDMError(f"nb_variance must be one of {FAMILY_TERMS}, got {nb_variance!r}")
    vals = _observation_term(fit) if kind == "observation" else _gllvm_term(fit, kind)
    return pd.Series(vals, index=fit.species, name="family_variance")


def _family_diag(fit, add_family_variance):
    """Diagonal addition (m,) for the ``add_family_variance`` argument."""
    kind = _measure(add_family_variance)
    if kind is None:
        return np.zeros(len(fit.species))
    return family_variance(fit, nb_variance=kind).to_numpy()


def residual_covariance(fit, add_family_variance=False):
    """Residual (latent) covariance ``Theta Theta'`` between species on the link scale.

    Parameters
    ----------
    fit : GLLVMResults
    add_family_variance : bool or {"observation", "lognormal", "trigamma"}
        Add the family's link-scale observation-level variance on the diagonal
        (see :func:`family_variance`); True means "lognormal" (R gllvm).
        Default False: the model's rank-d covariance ``Theta Theta'`` alone.

    Returns
    -------
    DataFrame (m, m), species x species
    """
    th = _theta(fit)
    cov = th @ th.T
    cov[np.diag_indices_from(cov)] += _family_diag(fit, add_family_variance)
    return pd.DataFrame(cov, index=fit.species, columns=fit.species)


def _cov2cor(cov):
    """Correlation from covariance; rows with zero variance give NaN (unit diagonal kept)."""
    sd = np.sqrt(np.diag(cov))
    with np.errstate(invalid="ignore", divide="ignore"):
        cor = cov / np.outer(sd, sd)
    np.fill_diagonal(cor, 1.0)
    return np.clip(cor, -1.0, 1.0)


def residual_correlation(fit, add_family_variance=DEFAULT_MEASURE):
    """Residual correlation between species: ``cov2cor(Theta Theta' + family term)``.

    By default (``"observation"``) each species' observation-level variance on
    the link scale (:func:`family_variance`) is added to the diagonal, so that
    a correlation is that of the species' latent link-scale responses *with*
    their own noise: ``r_jk = theta_j' theta_k / sqrt((|theta_j|^2 +
    sigma_j^2) (|theta_k|^2 + sigma_k^2))``. It is near zero unless both
    species carry a strong latent signal, and means something at low rank:
    with one latent variable it is ``+- R_j R_k`` (R_j^2 the share of species
    j's link-scale variance on the latent variable) instead of +-1 for every
    pair. ``add_family_variance=False`` gives ``cov2cor(Theta Theta')``, the
    cosine of the angle between two species' loadings: exactly +-1 for every
    pair when num_lv = 1, and piling up at +-1 when num_lv is small
    relative to the number of species (docs/associations.md).

    Symmetric with a unit diagonal and invariant to rotations of the latent
    variables. A species with all-zero loadings (and no family term) has NaN
    correlations.

    Parameters
    ----------
    fit : GLLVMResults
    add_family_variance : {"observation", "lognormal", "trigamma"} or bool
        See :func:`family_variance`; False for Theta Theta' alone, True for
        R gllvm's ``getResidualCor`` ("lognormal").

    Returns
    -------
    DataFrame (m, m), species x species
    """
    cov = residual_covariance(fit, add_family_variance).to_numpy()
    return pd.DataFrame(_cov2cor(cov), index=fit.species, columns=fit.species)


def residual_trace(fit, add_family_variance=False):
    """Trace of the residual covariance and its share per latent variable.

    The trace of ``Theta Theta'`` splits as the column sums of squared loadings
    (as R gllvm's ``getResidualCov()$var.q``); the ``principal`` column splits it
    instead along the principal axes (eigenvalues of ``Theta' Theta``), which is
    invariant to rotations of the latent variables.

    Parameters
    ----------
    fit : GLLVMResults
    add_family_variance : bool or {"observation", "lognormal", "trigamma"}
        When set, a row ``family`` holds the sum of the family terms.

    Returns
    -------
    DataFrame with rows LV1..LVd[, family], total and columns
    ``variance``, ``share``, ``principal``, ``principal_share``
    """
    th = _theta(fit)
    per_lv = (th ** 2).sum(0)
    principal = np.sort(np.linalg.eigvalsh(th.T @ th))[::-1] if th.size else np.zeros(0)
    rows, var, pri = list(fit.lv_names), list(per_lv), list(principal)
    if add_family_variance:
        rows.append("family")
        fam = float(_family_diag(fit, add_family_variance).sum())
        var.append(fam)
        pri.append(fam)
    total = float(np.sum(var))
    out = pd.DataFrame({"variance": var + [total], "principal": pri + [total]}, index=rows + ["total"])
    with np.errstate(invalid="ignore", divide="ignore"):
        out["share"] = out["variance"] / total
        out["principal_share"] = out["principal"] / total
    return out[["variance", "share", "principal", "principal_share"]]


# --- environmental associations and variance partitioning ------------------------------
def _term_columns(fit, terms):
    """Column positions of ``terms`` (None: all) in the design."""
    all_terms = list(fit.terms)
    if terms is None:
        return list(range(len(all_terms)))
    terms = [terms] if isinstance(terms, str) else list(terms)
    bad = [t for t in terms if t not in all_terms]
    if bad:
        raise JSDMError(f"unknown covariate terms {bad}; the model's terms are {all_terms}")
    return [all_terms.index(t) for t in terms]


def covariate_part(fit, terms=None):
    """Covariate part of the linear predictor ``x_i' beta_j`` (sites x species).

    Parameters
    ----------
    fit : GLLVMResults
    terms : str or list of str, optional
        Design columns to include (default: all).

    Returns
    -------
    DataFrame (n, m)
    """
    cols = _term_columns(fit, terms)
    X = np.asarray(fit.problem.X, dtype=float)[:, cols]
    B = fit.coef[[fit.terms[c] for c in cols]].to_numpy(dtype=float)
    return pd.DataFrame(X @ B.T, index=fit.sites, columns=fit.species)


def environmental_covariance(fit, terms=None):
    """Covariance across sites of the covariate part ``x_i' beta_j`` between species.

    Parameters
    ----------
    fit : GLLVMResults
    terms : str or list of str, optional
        Restrict to these design columns (default: all covariates).

    Returns
    -------
    DataFrame (m, m), species x species (sample covariance, divisor n - 1)
    """
    E = covariate_part(fit, terms).to_numpy()
    Ec = E - E.mean(0)
    cov = Ec.T @ Ec / max(E.shape[0] - 1, 1)
    return pd.DataFrame(cov, index=fit.species, columns=fit.species)


def environmental_correlation(fit, terms=None):
    """Correlation across sites of the covariate parts of two species' linear predictors.

    Raises JSDMError for a model without covariates. Species whose covariate
    part is constant get NaN correlations.

    Returns
    -------
    DataFrame (m, m), species x species
    """
    if not fit.terms:
        raise JSDMError("the model has no covariates, so there are no environmental "
                        "correlations; refit with formula= or X=")
    cov = environmental_covariance(fit, terms).to_numpy()
    return pd.DataFrame(_cov2cor(cov), index=fit.species, columns=fit.species)


def _covariate_groups(fit, groups):
    """Mapping component name -> list of terms."""
    if not fit.terms:
        return {}
    if groups is None:
        return {"covariates": list(fit.terms)}
    if groups == "terms":
        return {t: [t] for t in fit.terms}
    if not isinstance(groups, dict):
        raise JSDMError(f"groups must be None, 'terms' or a dict name -> list of terms; got {groups!r}")
    out = {k: ([v] if isinstance(v, str) else list(v)) for k, v in groups.items()}
    used = [t for v in out.values() for t in v]
    _term_columns(fit, used)
    rest = [t for t in fit.terms if t not in used]
    if rest:
        out["other covariates"] = rest
    return out


def variance_partition(fit, groups=None, normalize=True):
    """Share of each species' linear-predictor variance by component.

    Components: covariates (all together, each term with ``groups="terms"``, or
    named groups of terms), latent variables, row effects and grouped site effects
    (one column per grouping, ``(1 | plot)``, its sigma^2). Covariate parts
    use the sample variance of ``x_i' beta_j`` across the sites; the latent
    part is the model-implied ``theta_j' theta_j`` (the diagonal of the
    residual covariance, z ~ N(0, I)); row effects use ``sigma^2`` when random
    and the variance of the site effects across sites when fixed. Covariances
    between components are ignored, so the shares sum to 1.

    Parameters
    ----------
    fit : GLLVMResults
    groups : None, "terms" or dict name -> list of terms
        How covariate terms are grouped (terms left out form "other covariates").
    normalize : bool
        Return shares (rows sum to 1) rather than variances.

    Returns
    -------
    DataFrame (m, components), species x components
    """
    out = {}
    for name, terms in _covariate_groups(fit, groups).items():
        out[name] = covariate_part(fit, terms).var(axis=0, ddof=1).to_numpy()
    if fit.num_lv:
        out["latent variables"] = (_theta(fit) ** 2).sum(1)
    if fit.row_effect == "random":
        out["row effect"] = np.full(len(fit.species), fit.row_sigma ** 2)
    elif fit.row_effect == "fixed":
        out["row effect"] = np.full(len(fit.species), float(np.var(fit.row_effects, ddof=1)))
    pred = fit.problem.predictor             # grouped site effects (1 | plot): sigma^2 each
    for t in pred.group_terms:
        for g, _, _, var, _ in t.varcorr_rows(pred, fit.state.params):
            out[f"(1 | {g})"] = np.full(len(fit.species), float(var))
    df = pd.DataFrame(out, index=fit.species)
    if normalize and df.shape[1]:
        tot = df.sum(axis=1).replace(0.0, np.nan)
        df = df.div(tot, axis=0)
    return df


# --- intervals for residual correlations -------------------------------------------------
@dataclass
class CorrelationIntervals:
    """Residual correlations with interval bounds (each a species x species DataFrame).

    Attributes
    ----------
    estimate, lower, upper, se : DataFrame (m, m)
        Point estimate, interval bounds and standard error (delta method on the
        correlation scale, or the bootstrap standard deviation).
    method : str
        "delta" or "bootstrap".
    alpha : float
        1 - confidence level.
    info : dict
        Method details (bootstrap: replicates used, non-converged refits).
    """

    estimate: pd.DataFrame
    lower: pd.DataFrame
    upper: pd.DataFrame
    se: pd.DataFrame
    method: str
    alpha: float
    info: dict


def _diag_parts(fit, kind):
    """Each species' parameters u_j that the diagonal D_j = |theta_j|^2 + sigma_j^2 depends on.

    Returns (labels, u (m, q), D(u) -> (m,)): labels are the (block, term)
    of ``fit.params`` in u's columns (loadings first, then intercept and
    slopes, then a scalar dispersion on its reported scale).
    """
    theta, beta0, B, s = _species_arrays(fit)
    d, p = theta.shape[1], B.shape[1]
    fam = fit.family
    scalar_disp = fit.dispersion is not None and np.ndim(s) == 1
    labels = [("loading", lv) for lv in fit.lv_names] + [("coef", t) for t in ["Intercept", *fit.terms]]
    cols = [theta, beta0[:, None], B]
    if scalar_disp:
        labels.append(("dispersion", fit.dispersion.name))
        cols.append(np.asarray(fit.dispersion, dtype=float)[:, None])
    u0 = np.column_stack(cols)

    def D(u):
        th = u[:, :d]
        if kind is None:
            term = 0.0
        elif kind == "observation":
            sj = fam.dispersion_param(u[:, -1]) if scalar_disp else s
            term = _observation_term(fit, u[:, d], u[:, d + 1:d + 1 + p], th, sj)
        else:
            term = _gllvm_term(fit, kind, u[:, -1] if scalar_disp else None)
        return (th ** 2).sum(1) + term

    return labels, u0, D


def _jacobian(D, u0, disp_col):
    """Central differences dD_j/du_j (m, q), every species at once (D is species-separable)."""
    J = np.zeros(u0.shape)
    for c in range(u0.shape[1]):
        x = u0[:, c]
        h = 1e-4 * np.abs(x) if c == disp_col else 1e-6 * np.maximum(1.0, np.abs(x))
        h = np.where(h > 0, h, 1e-10)
        up, dn = u0.copy(), u0.copy()
        up[:, c] += h
        dn[:, c] -= h
        with np.errstate(all="ignore"):
            J[:, c] = (D(up) - D(dn)) / (2.0 * h)
    return np.nan_to_num(J)


def _species_param_cov(fit, labels):
    """Covariance (m, q, m, q) of each species' parameters u_j (``labels``) from cov_params.

    Entries not in ``fit.cov_params()`` (loadings fixed at zero) are 0.
    """
    C = fit.cov_params()
    m, q = len(fit.species), len(labels)
    sp_pos = {sp: j for j, sp in enumerate(fit.species)}
    lab_pos = {lab: k for k, lab in enumerate(labels)}
    if "loading" not in set(C.index.get_level_values(0)):
        raise JSDMError("fit.cov_params() has no 'loading' block; cannot form intervals")
    keep, slot = [], []
    for r, (blk, sp, term) in enumerate(C.index):
        k = lab_pos.get((blk, term))
        if k is not None and sp in sp_pos:
            keep.append(r)
            slot.append(sp_pos[sp] * q + k)
    S = np.zeros((m * q, m * q))
    S[np.ix_(slot, slot)] = np.asarray(C.to_numpy(dtype=float))[np.ix_(keep, keep)]
    return S.reshape(m, q, m, q)


def _delta_se(fit, add_family_variance):
    """Delta-method standard errors (m, m) of the residual correlations.

    r_jk = theta_j' theta_k / sqrt(D_j D_k): the gradient in species j's
    parameters is theta_k / sqrt(D_j D_k) (loading slots) - r_jk dD_j/du_j /
    (2 D_j); dD/du by central differences (D is separable by species), so every
    family term (observation, lognormal, trigamma) is covered.
    """
    kind = _measure(add_family_variance)
    th = _theta(fit)
    d = th.shape[1]
    labels, u0, D = _diag_parts(fit, kind)
    disp_col = len(labels) - 1 if labels[-1][0] == "dispersion" else -1
    J = _jacobian(D, u0, disp_col)
    used = np.r_[np.arange(d), d + np.flatnonzero(np.abs(J[:, d:]).max(0) > 0)]
    labels, J = [labels[k] for k in used], J[:, used]
    diag = D(u0)
    r = residual_correlation(fit, add_family_variance).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.sqrt(np.outer(diag, diag))
        G = -0.5 * (r / diag[:, None])[:, :, None] * J[:, None, :]       # (j, k, q)
        G[:, :, :d] += th[None, :, :] / s[:, :, None]
    G = np.nan_to_num(G)
    S = _species_param_cov(fit, labels)
    Sd = np.einsum("jajb->jab", S)
    H = np.swapaxes(G, 0, 1)  # H[j, k] = dr_jk/du_k
    var = (np.einsum("jka,jab,jkb->jk", G, Sd, G) + np.einsum("jka,kab,jkb->jk", H, Sd, H)
           + 2.0 * np.einsum("jka,jakb,jkb->jk", G, S, H))
    se = np.sqrt(np.clip(var, 0.0, None))
    np.fill_diagonal(se, 0.0)
    return se


_TRANSFORMS = ("angle", "fisher", "none")


def wald_interval(r, se, alpha, transform="angle"):
    """Wald interval for correlations on a transformed scale, mapped back into [-1, 1].

    Parameters
    ----------
    r, se : ndarray
        Correlations and their delta-method standard errors (same shape).
    alpha : float
    transform : {"angle", "fisher", "none"}
        "angle": phi = arccos(r), se_phi = se / sqrt(1 - r^2), interval clipped to
        [0, pi]. A residual correlation is the cosine of the angle between two
        species' loading vectors (augmented by the family term when added), and
        with isotropic estimation noise the angle's SE does not depend on the
        angle. "fisher": z = atanh(r), se_z = se / (1 - r^2). "none": r +- q se,
        clipped to [-1, 1].

    Returns
    -------
    lower, upper : ndarray
    """
    if transform not in _TRANSFORMS:
        raise JSDMError(f"transform must be one of {_TRANSFORMS}, got {transform!r}")
    q = stats.norm.ppf(1.0 - alpha / 2.0)
    r = np.asarray(r, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        rc = np.clip(r, -1.0 + 1e-12, 1.0 - 1e-12)
        if transform == "angle":
            phi, sp = np.arccos(rc), se / np.sqrt(1.0 - rc ** 2)
            lo, hi = np.cos(np.minimum(phi + q * sp, np.pi)), np.cos(np.maximum(phi - q * sp, 0.0))
        elif transform == "fisher":
            z, sz = np.arctanh(rc), se / (1.0 - rc ** 2)
            lo, hi = np.tanh(z - q * sz), np.tanh(z + q * sz)
        else:
            lo, hi = np.clip(r - q * se, -1.0, 1.0), np.clip(r + q * se, -1.0, 1.0)
    flat = se == 0          # exactly determined (e.g. d = 1 or the diagonal); NaN se stays NaN
    lo[flat], hi[flat] = r[flat], r[flat]
    return lo, hi


def _draw_response(fit, rng):
    """Responses simulated from the fitted model with fresh z_i ~ N(0, I) (and row effects)."""
    from ..model.objective import fixed_part

    prob, P = fit.problem, fit.state.params
    eta = fixed_part(prob, P)
    if prob.row_effect == "random":
        eta += (rng.normal(0.0, fit.row_sigma, prob.n) - P.alpha)[:, None]
    if prob.d:
        eta += rng.standard_normal((prob.n, prob.d)) @ P.theta.T
    Y = np.asarray(prob.family.sample(eta, P.s, prob.trials, rng), dtype=float)
    return np.where(prob.W > 0, Y, 0.0)


def _bootstrap_correlations(fit, n_boot, seed, add_family_variance):
    """Array (n_boot, m, m) of residual correlations from parametric-bootstrap refits."""

    from ..model.fit import fit_problem
    from ..results.fitted import GLLVMResults

    rng = analysis_rng(seed)
    opts = {k: fit.settings[k] for k in ("maxiter", "gtol") if k in fit.settings}
    draws, n_bad, n_fail = [], 0, 0
    for _ in range(int(n_boot)):
        prob_b = replace(fit.problem, Y=_draw_response(fit, rng))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                state = fit_problem(prob_b, n_init=1, start=fit.state.params.copy(), **opts)
        except (np.linalg.LinAlgError, FloatingPointError, ValueError):
            n_fail += 1
            continue
        n_bad += not state.converged
        res = GLLVMResults(prob_b, state, fit.settings)
        draws.append(residual_correlation(res, add_family_variance).to_numpy())
    if n_fail:
        warnings.warn(f"{n_fail} of {n_boot} bootstrap refits failed and were left out",
                      ConvergenceWarning, stacklevel=3)
    if not draws:
        raise JSDMError("every bootstrap refit failed; use method='delta'")
    info = {"n_boot": len(draws), "not_converged": int(n_bad), "failed": n_fail, "seed": seed}
    return np.array(draws), info


def residual_correlation_intervals(fit, alpha=0.05, method="delta", add_family_variance=DEFAULT_MEASURE,
                                   n_boot=200, seed=None, transform="angle"):
    """Residual correlations with (1 - alpha) intervals for every species pair.

    Parameters
    ----------
    fit : GLLVMResults
    alpha : float
        1 - confidence level.
    method : {"delta", "bootstrap"}
        "delta": Wald interval with the delta-method standard error from the
        loading (and, with a family term, dispersion) block of
        ``fit.cov_params()``, on the scale given by ``transform``.
        "bootstrap": percentile interval from ``n_boot`` parametric-bootstrap
        refits (seeded by ``seed``), each started at the estimates; failed
        refits are left out with a ConvergenceWarning.
    add_family_variance : {"observation", "lognormal", "trigamma"} or bool
        See :func:`residual_correlation` (default "observation").
    n_boot, seed : int
        Bootstrap replicates and seed (``method="bootstrap"``).
    transform : {"angle", "fisher", "none"}
        Scale of the delta-method interval (see :func:`wald_interval`); "angle"
        had the best coverage in simulation (module docstring).

    Returns
    -------
    CorrelationIntervals
    """
    if not 0.0 < alpha < 1.0:
        raise JSDMError(f"alpha must be in (0, 1), got {alpha!r}")
    r = residual_correlation(fit, add_family_variance).to_numpy()
    info = {}
    if method == "delta":
        se = _delta_se(fit, add_family_variance)
        lo, hi = wald_interval(r, se, alpha, transform)
    elif method == "bootstrap":
        draws, info = _bootstrap_correlations(fit, n_boot, seed, add_family_variance)
        lo, hi = np.nanquantile(draws, [alpha / 2.0, 1.0 - alpha / 2.0], axis=0)
        se = np.nanstd(draws, axis=0, ddof=1)
    else:
        raise JSDMError(f"method must be 'delta' or 'bootstrap', got {method!r}")
    frame = lambda a: pd.DataFrame(a, index=fit.species, columns=fit.species)  # noqa: E731
    return CorrelationIntervals(frame(r), frame(lo), frame(hi), frame(se), method, alpha, info)


RANK_ONE_WARNING = (
    "with one latent variable every residual association is the product of two species' "
    "loadings: all species lie on one axis, each pair is positive or negative by the signs of "
    "its loadings, and Theta Theta' correlations are +-1 by construction. The table shows the "
    "'observation' measure (the share of each species' link-scale variance on the latent "
    "variable enters), which is not +-1, but no pair-specific association can be read from a "
    "rank-1 model: fit num_lv >= 2 (compare with jsdm.anova) before interpreting pairs")


def association_table(fit, alpha=0.05, method="delta", add_family_variance=DEFAULT_MEASURE,
                      min_records=None, n_boot=200, seed=None, transform="angle"):
    """Tidy table of species pairs: residual correlation, interval, prevalences, headline flag.

    Parameters
    ----------
    fit : GLLVMResults
    alpha : float
        1 - confidence level.
    method : {"delta", "bootstrap"}
        See :func:`residual_correlation_intervals`.
    add_family_variance : {"observation", "lognormal", "trigamma"} or bool
        The association measure (see :func:`residual_correlation`).
    min_records : int, optional
        Informative records a species needs for ``headline`` (default
        :data:`jsdm.analysis.diagnostics.MIN_RECORDS`).
    n_boot : int
        Bootstrap refits (``method="bootstrap"``).
    seed : int, optional
        Seed of the bootstrap.
    transform : {"angle", "fisher", "none"}
        Scale of the delta-method interval (see :func:`wald_interval`).

    Returns
    -------
    DataFrame with m (m - 1) / 2 rows and columns species_1, species_2,
    estimate, se, lower, upper, excludes_zero, prevalence_1, prevalence_2,
    headline; sorted by |estimate|, largest first. ``headline`` is True when
    both species have enough information and a finite optimum
    (:func:`jsdm.analysis.diagnostics.species_information`) and the interval
    is not a single point (a correlation fixed by the model's rank, not by the
    data). ``attrs`` hold the method, alpha, the measure and min_records.

    Warns
    -----
    JSDMWarning
        When the model has one latent variable (:data:`RANK_ONE_WARNING`).
    """
    from .diagnostics import MIN_RECORDS, species_information

    if fit.num_lv == 1:
        warnings.warn(RANK_ONE_WARNING, JSDMWarning, stacklevel=2)
    ci = residual_correlation_intervals(fit, alpha=alpha, method=method,
                                        add_family_variance=add_family_variance,
                                        n_boot=n_boot, seed=seed, transform=transform)
    j, k = np.triu_indices(len(fit.species), 1)
    sp = np.asarray(fit.species)
    info = species_information(fit, min_records=MIN_RECORDS if min_records is None else min_records)
    prev, ok = info["prevalence"].to_numpy(), info["headline"].to_numpy()
    tab = pd.DataFrame({
        "species_1": sp[j], "species_2": sp[k],
        "estimate": ci.estimate.to_numpy()[j, k], "se": ci.se.to_numpy()[j, k],
        "lower": ci.lower.to_numpy()[j, k], "upper": ci.upper.to_numpy()[j, k],
    })
    tab["excludes_zero"] = (tab["lower"] > 0) | (tab["upper"] < 0)
    tab["prevalence_1"], tab["prevalence_2"] = prev[j], prev[k]
    point = ~(tab["upper"] - tab["lower"] > 1e-9)
    tab["headline"] = ok[j] & ok[k] & ~point.to_numpy()
    order = np.argsort(-np.abs(tab["estimate"].to_numpy()), kind="stable")
    tab = tab.iloc[order].reset_index(drop=True)
    tab.attrs.update(method=method, alpha=alpha, measure=_measure(add_family_variance) or "theta",
                     min_records=info.attrs["min_records"], **ci.info)
    return tab


class _ChunkView:
    """What ``species_mean`` reads of a fit, for one chunk of sites of a cluster fit."""

    def __init__(self, chunk, P, row_sigma):
        self.problem, self.family = chunk.prob, chunk.prob.family
        self.state = type("State", (), {"params": P})()
        self.row_effect = chunk.prob.row_effect
        self.row_sigma = row_sigma
        alpha = getattr(P, "alpha", None)
        self.row_effects = None if alpha is None else pd.Series(alpha)


def _chunk_species_mean(chunk, P, args, row_sigma):
    """Worker task of a cluster fit: one chunk's sums for ``species_mean`` (its mean
    times the number of observed sites, and that number), summed by the driver."""
    view = _ChunkView(chunk, P, row_sigma)
    w = np.broadcast_to(chunk.prob.W, chunk.prob.Y.shape).sum(0)
    return species_mean(view, *args) * np.maximum(w, 1.0), w
