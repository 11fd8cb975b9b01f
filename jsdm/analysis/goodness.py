"""Goodness of fit: pseudo-R2, species richness with prediction intervals, joint occurrence.

All three read the model through :func:`jsdm.results.latent.site_latent` and
the public results API.

Pseudo-R2 (``pseudo_r2``)
    ``kind="nakagawa"`` (default): the variance-based R2 of Nakagawa &
    Schielzeth (2013, Methods Ecol. Evol. 4: 133) extended to non-normal
    families by Nakagawa, Johnson & Schielzeth (2017, J. R. Soc. Interface
    14: 20170213), on the link scale, per species:

        marginal    = var_F / (var_F + var_LV + var_row + var_obs)
        conditional = (var_F + var_LV + var_row) / (same total)

    var_F: variance across the fitted sites of the covariate part x_i' beta_j;
    var_LV = theta_j' theta_j (the latent variables' variance, as a random
    effect's); var_row: the random row-effect variance sigma^2 (or the
    variance of the fixed row effects); var_obs: the distribution-specific
    (observation-level) variance of Nakagawa et al. (2017) at the species'
    mean, :func:`jsdm.analysis.associations.family_variance` "observation"
    (probit 1, logit pi^2/3, Poisson log(1 + 1/mu_j), NB log(1 + 1/mu_j + phi_j),
    Gaussian sd_j^2, ...).
    ``kind="tjur"`` (binary data): Tjur's (2009, Am. Stat. 63: 366)
    coefficient of discrimination, mean fitted probability at presences minus
    at absences, with fitted values at the site scores. ``kind="cor"``: the
    squared Pearson correlation between observed and fitted values (at the
    site scores). The overall row is the mean over species.

Species richness (``richness``)
    The number of species present (y > 0) per site, simulated from the model:
    latent variables drawn from their prior (``lv="marginal"``: the
    distribution at a site with these covariates, the right reference for a
    new site or for checking calibration) or from each fitted site's
    variational posterior (``lv="conditional"``), then responses given them.

Joint occurrence (``joint_occurrence``)
    P(y_ij > 0 and y_ik > 0), integrated over the site's latent variables
    (quadrature over the prior for up to 2 latent dimensions, Monte Carlo
    beyond) and averaged over sites; with ``kind="ratio"`` divided by what
    the same marginal probabilities would give independently at each site.
"""
import numpy as np
import pandas as pd

from .._numerics import analysis_rng
from ..exceptions import JSDMError

R2_KINDS = ("nakagawa", "tjur", "cor")


# --- pseudo-R2 ------------------------------------------------------------------------------
def pseudo_r2(fit, kind="nakagawa"):
    """Pseudo-R2 per species and overall (see the module notes for the definitions).

    Parameters
    ----------
    fit : GLLVMResults
    kind : {"nakagawa", "tjur", "cor"}

    Returns
    -------
    DataFrame
        One row per species and a last row "overall" (mean over species).
        "nakagawa": columns ``marginal``, ``conditional`` and the variance
        components ``var_fixed``, ``var_lv``, ``var_row``, ``var_obs``;
        "tjur" / "cor": one column ``r2``. ``attrs["definition"]`` says which.
    """
    if kind not in R2_KINDS:
        raise JSDMError(f"kind must be one of {R2_KINDS}, got {kind!r}")
    if kind == "nakagawa":
        out = _nakagawa(fit)
        definition = ("Nakagawa, Johnson & Schielzeth (2017) R2 on the link scale: marginal = "
                      "covariates, conditional = covariates + latent variables + row effects, "
                      "each over the total including the observation-level variance")
    else:
        out = _fitted_r2(fit, kind)
        definition = ("Tjur's D: mean fitted P(presence) at presences minus at absences"
                      if kind == "tjur" else
                      "squared correlation between observed and fitted values (at the site scores)")
    overall = out.mean(numeric_only=True).rename("overall")
    out = pd.concat([out, overall.to_frame().T])
    out.index.name = "species"
    out.attrs["definition"] = definition
    return out


def _nakagawa(fit):
    from .associations import covariate_part

    var_f = covariate_part(fit).var(ddof=0).to_numpy() if fit.terms else np.zeros(len(fit.species))
    th = np.asarray(fit.loadings, dtype=float)
    var_lv = (th ** 2).sum(1)
    if fit.row_effect == "random":
        var_row = np.full(len(var_f), fit.row_sigma ** 2)
    elif fit.row_effect == "fixed":
        var_row = np.full(len(var_f), float(np.var(fit.row_effects.to_numpy())))
    else:
        var_row = np.zeros(len(var_f))
    var_obs = _obs_variance(fit)
    total = var_f + var_lv + var_row + var_obs
    return pd.DataFrame({"marginal": var_f / total, "conditional": (var_f + var_lv + var_row) / total,
                         "var_fixed": var_f, "var_lv": var_lv, "var_row": var_row,
                         "var_obs": var_obs}, index=fit.species)


def _obs_variance(fit):
    from .associations import family_variance

    return family_variance(fit, nb_variance="observation").to_numpy(dtype=float)


def _fitted_r2(fit, kind):
    Y = np.where(fit.problem.W > 0, fit.problem.Y, np.nan)
    if kind == "tjur":
        if not fit.family.uses_trials or (fit.problem.trials is not None
                                          and np.nanmax(fit.problem.trials) > 1):
            raise JSDMError("Tjur's R2 is for presence/absence (0/1) data; use kind='nakagawa' "
                            "or 'cor'")
        P = fit.fitted().to_numpy()
        vals = [np.nanmean(np.where(Y[:, j] == 1, P[:, j], np.nan))
                - np.nanmean(np.where(Y[:, j] == 0, P[:, j], np.nan)) for j in range(Y.shape[1])]
    else:
        P = fit.fitted().to_numpy()
        vals = []
        for j in range(Y.shape[1]):
            ok = np.isfinite(Y[:, j])
            y, p = Y[ok, j], P[ok, j]
            vals.append(np.corrcoef(y, p)[0, 1] ** 2 if y.std() > 0 and p.std() > 0 else np.nan)
    return pd.DataFrame({"r2": vals}, index=fit.species)


# --- richness -------------------------------------------------------------------------------
def richness(fit, newdata=None, lv="marginal", alpha=None, n_draws=1000, seed=0, offset=None,
             trials=None, *, level=None):
    """Species richness per site (number of species with y > 0) with a prediction interval.

    Parameters
    ----------
    fit : GLLVMResults
    newdata : DataFrame, optional
        New sites' covariates (``lv="marginal"`` only); None: the fitted sites.
    lv : {"marginal", "conditional"}
        Where the latent variables of a site come from (see the module notes).
    alpha : float, optional
        1 - coverage of the central interval (default 0.05).
    n_draws : int
        Simulated tables.
    seed : int
        Seed of the simulation.
    offset : array, optional
        Offset for new sites.
    trials : array, optional
        Binomial trials for new sites.
    level : float, optional
        Deprecated: the coverage; use ``alpha = 1 - level``.

    Returns
    -------
    DataFrame, one row per site
        ``expected`` (mean simulated richness), ``lower``, ``upper`` (central
        interval: the ``alpha / 2`` and ``1 - alpha / 2`` quantiles of the
        simulated richness; whole numbers, so the interval holds a little more
        than ``1 - alpha`` of the model's probability), ``interval_probability``
        (that probability, by simulation); for fitted sites also ``observed``
        and ``inside``. Only species observed at a site count there.
    """
    from ..results.latent import has_presence, site_latent

    if not has_presence(fit.family):
        raise JSDMError(f"richness counts species with y > 0, which needs a family where zero "
                        f"means absence; {fit.family.name!r} has none")
    if lv not in ("marginal", "conditional"):
        raise JSDMError(f"lv must be 'marginal' or 'conditional', got {lv!r}")
    if lv == "conditional" and newdata is not None:
        raise JSDMError("new sites have no posterior for their latent variables: use "
                        "lv='marginal' (or fit.predict_conditional for sites with observed species)")
    from .._deprecation import alpha_from_level

    alpha = alpha_from_level(alpha, level, "richness", stacklevel=2)
    if not 0.0 < alpha < 1.0:
        raise JSDMError(f"alpha (1 - coverage) must be between 0 and 1, got {alpha!r}")
    level = 1.0 - alpha
    sl = site_latent(fit, newdata, offset=offset, trials=trials)
    W = np.broadcast_to(fit.problem.W, sl.F.shape) if newdata is None else np.ones(sl.F.shape)
    R = _simulate_richness(sl, W, lv, int(n_draws), analysis_rng(seed))
    a = (1.0 - level) / 2.0
    lo = np.quantile(R, a, axis=0, method="inverted_cdf")
    hi = np.quantile(R, 1.0 - a, axis=0, method="inverted_cdf")
    out = pd.DataFrame({"expected": R.mean(0), "lower": lo, "upper": hi,
                        "interval_probability": ((R >= lo) & (R <= hi)).mean(0)}, index=sl.sites)
    if newdata is None:
        obs = ((np.where(fit.problem.W > 0, fit.problem.Y, 0.0) > 0) * (W > 0)).sum(1)
        out["observed"] = obs
        out["inside"] = (obs >= out["lower"]) & (obs <= out["upper"])
    out.index.name = "site"
    out.attrs.update(alpha=alpha, level=level, lv=lv, n_draws=int(n_draws))
    return out


def _simulate_richness(sl, W, lv, n_draws, rng, chunk=200):
    """Simulated richness (n_draws, k)."""
    k, r = sl.k, sl.r
    if r and lv == "marginal":
        C = np.broadcast_to(np.linalg.cholesky(sl.prior_cov), (k, r, r))
        mean = np.zeros((k, r))
    elif r:
        C = np.linalg.cholesky(sl.cov + 1e-12 * np.eye(r))
        mean = sl.mean
    out = []
    for start in range(0, n_draws, chunk):
        b = min(chunk, n_draws - start)
        U = (mean + np.einsum("iab,Kib->Kia", C, rng.standard_normal((b, k, r)))) if r else \
            np.zeros((b, k, 0))
        y = sl.sample(sl.eta(U), rng)
        out.append(((y > 0) & (W > 0)).sum(-1))
    return np.concatenate(out, axis=0)


# --- joint occurrence -----------------------------------------------------------------------
def joint_occurrence(fit, newdata=None, kind="probability", n_draws=4000, seed=0, offset=None,
                     trials=None):
    """Pairwise probabilities that two species occur together at a site.

    Parameters
    ----------
    fit : GLLVMResults
    newdata : DataFrame, optional
        Sites to average over (default: the fitted sites).
    kind : {"probability", "ratio"}
        "probability": mean over sites of P(y_ij > 0, y_ik > 0), the diagonal
        holding P(y_ij > 0); "ratio": that divided by the mean over sites of
        P(y_ij > 0) P(y_ik > 0) (1: the species co-occur as often as their
        responses to the covariates predict; above 1: more often).
    n_draws, seed : Monte Carlo over the latent variables when they have more
        than 2 dimensions (quadrature otherwise).
    offset, trials : for new sites.

    Returns
    -------
    DataFrame (m x m), species x species
    """
    from ..results.latent import has_presence, site_latent

    if not has_presence(fit.family):
        raise JSDMError(f"joint occurrence needs a family where zero means absence; "
                        f"{fit.family.name!r} has none")
    if kind not in ("probability", "ratio"):
        raise JSDMError(f"kind must be 'probability' or 'ratio', got {kind!r}")
    sl = site_latent(fit, newdata, offset=offset, trials=trials)
    U, w = _prior_points(sl, n_draws, seed)                            # (K, r), (K,)
    m = sl.m
    joint, indep, single = np.zeros((m, m)), np.zeros((m, m)), np.zeros(m)
    step = max(1, 2_000_000 // max(len(w) * m, 1))
    for start in range(0, sl.k, step):
        rows = slice(start, min(sl.k, start + step))
        sub = sl.rows(rows)
        eta = sub.eta(U if U.shape[1] == 1 else U[:, rows])             # (K, k, m)
        p = 1.0 - sub.prob_zero(eta)
        joint += np.einsum("K,Kij,Kil->jl", w, p, p)
        pm = np.einsum("K,Kij->ij", w, p)
        indep += pm.T @ pm
        single += pm.sum(0)
    joint /= sl.k
    indep /= sl.k
    np.fill_diagonal(joint, single / sl.k)             # a species occurs with itself
    np.fill_diagonal(indep, np.diag(joint) ** 2 / np.maximum(np.diag(joint), 1e-300))
    val = joint if kind == "probability" else joint / indep
    out = pd.DataFrame(val, index=fit.species, columns=fit.species)
    out.attrs["kind"] = kind
    return out


def _prior_points(sl, n_draws, seed, width=7.0, panels=16, nodes=4):
    """Points U (K, 1, r) (or (K, k, r) when the prior differs between sites) and weights w (K,)
    summing to 1 for expectations over u ~ N(0, Sigma_u): a composite Gauss-Legendre product
    rule on +- ``width`` prior sds for r <= 2 (the presence probability can be a near-step in
    u), seeded Monte Carlo beyond."""
    from ..results.marginal import _composite

    r = sl.r
    if r == 0:
        return np.zeros((1, 1, 0)), np.ones(1)
    C = np.linalg.cholesky(sl.prior_cov)
    if r <= 2:
        t, wt = _composite(panels, nodes)
        t, wt = width * t, width * wt * np.exp(-0.5 * (width * t) ** 2) / np.sqrt(2 * np.pi)
        Z = np.stack([g.ravel() for g in np.meshgrid(*([t] * r), indexing="ij")], axis=-1)
        w = np.prod(np.stack(np.meshgrid(*([wt] * r), indexing="ij")), axis=0).ravel()
        w = w / w.sum()
    else:
        Z = analysis_rng(seed).standard_normal((int(n_draws), r))
        w = np.full(int(n_draws), 1.0 / int(n_draws))
    if C.ndim == 2:
        return (Z @ C.T)[:, None, :], w
    return np.einsum("iab,Kb->Kia", C, Z), w
