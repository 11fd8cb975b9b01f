"""The honest likelihood: the marginal log-likelihood at the fitted parameters by importance sampling.

The ELBO (``fit.llf``) is a lower bound of the log-likelihood
log p(Y) = sum_i log integral p(y_i | u) N(u; 0, Sigma_u) du. Its gap to the
log-likelihood is, site by site, the KL divergence of the variational
posterior q(u_i) from the true posterior of the site's latent vector: how good
the variational approximation is. :func:`loglik_is` estimates log p(y_i) by
importance sampling with a proposal built from q(u_i): a multivariate t
(``df`` degrees of freedom) with q's mean and q's covariance widened by
``scale`` on the standard-deviation scale, so that its tails are heavier
than the posterior's and the weights have finite variance.

The estimate of p(y_i) is unbiased; the reported log-likelihood is the sum of
the logs, with a Monte Carlo standard error from the delta method
(se_i = sd(w) / (sqrt(K) mean(w)) for K weights w) and a downward bias of
about se_i^2 / 2 per site, negligible when the SE is small. The per-site
effective sample size (sum w)^2 / sum w^2 says whether the proposal was
adequate: an ESS far below the number of draws means the estimate, and its SE,
should not be trusted.
"""
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..exceptions import JSDMError
from . import marginal
from .latent import site_latent


@dataclass
class LoglikIS:
    """Result of :func:`loglik_is`.

    Attributes
    ----------
    value : float
        Importance-sampling estimate of the marginal log-likelihood at the fitted parameters.
    se : float
        Its Monte Carlo standard error.
    elbo : float
        The ELBO (``fit.llf``).
    sites : DataFrame
        One row per site: ``loglik``, ``se``, ``elbo``, ``gap`` (loglik - elbo)
        and ``ess`` (effective sample size of the weights).
    n_draws, seed, df, scale : the call's settings
    """

    value: float
    se: float
    elbo: float
    sites: pd.DataFrame
    n_draws: int
    seed: object
    df: float
    scale: float

    @property
    def gap(self):
        """Estimated log-likelihood minus the ELBO (>= 0 up to Monte Carlo error)."""
        return self.value - self.elbo

    @property
    def min_ess(self):
        """Smallest effective sample size of the importance weights over the sites."""
        return float(self.sites["ess"].min()) if len(self.sites) else float("nan")

    def __float__(self):
        return float(self.value)

    def __repr__(self):
        return (f"LoglikIS(value={self.value:.3f}, se={self.se:.3f}, elbo={self.elbo:.3f}, "
                f"gap={self.gap:.3f}, n_draws={self.n_draws}, min_ess={self.min_ess:.0f})")

    def to_frame(self):
        """One-row summary.

        Returns
        -------
        DataFrame, shape (1, 8)
            loglik_is, se, elbo, gap, gap_per_site, max_site_gap, min_ess, n_draws.
        """
        return pd.DataFrame([{"loglik_is": self.value, "se": self.se, "elbo": self.elbo,
                              "gap": self.gap, "gap_per_site": self.gap / max(len(self.sites), 1),
                              "max_site_gap": float(self.sites["gap"].max()),
                              "min_ess": self.min_ess, "n_draws": self.n_draws}])


def not_per_site(fit):
    """Why the fit's marginal likelihood is not a product of per-site integrals ('' when it
    is): random effects shared between sites (species random effects integrate over all
    sites at once; a grouped site effect is one draw for all the sites of its level)."""
    pred = fit.problem.predictor
    why = []
    if getattr(pred, "species_random_terms", None):
        why.append("its species random effects are shared by all sites")
    if getattr(pred, "group_terms", None):
        why.append("its grouped site effects are shared by the sites of each level")
    return " and ".join(why)


def loglik_is(fit, n_draws=1000, seed=0, df=5.0, scale=1.5):
    """Importance-sampling estimate of the marginal log-likelihood at the fitted parameters.

    Parameters
    ----------
    fit : GLLVMResults
    n_draws : int
        Draws per site.
    seed : int or None
        Seed of the draws (the default 0 makes the call deterministic).
    df : float
        Degrees of freedom of the multivariate t proposal.
    scale : float
        Widening of the proposal: its scale matrix is ``scale**2`` times q's covariance.

    Returns
    -------
    LoglikIS
        ``.value``, ``.se``, ``.elbo``, ``.gap`` and per-site ``.sites``.

    Notes
    -----
    A model with no latent dimension (``num_lv=0`` and no random row effect)
    has an exact likelihood: the estimate equals the ELBO and its SE is 0.
    """
    why = not_per_site(fit)
    if why:
        raise JSDMError(f"loglik_is integrates each site's latent variables separately, but {why}: "
                        "the marginal likelihood does not split into per-site integrals, so this "
                        "estimate is not available for it (its ELBO is still a lower bound of "
                        "the log-likelihood; compare such models by cross-validation)")
    if int(n_draws) != n_draws or n_draws < 2:
        raise JSDMError(f"n_draws must be a whole number >= 2, got {n_draws!r}")
    if not (np.isfinite(df) and df > 0) or not (np.isfinite(scale) and scale > 0):
        raise JSDMError(f"df and scale must be positive numbers, got df={df!r}, scale={scale!r}")
    sl = site_latent(fit)
    Y = fit.problem.Y
    W = np.broadcast_to(fit.problem.W, Y.shape)
    res = marginal.log_marginal(sl, Y, W, method="is", n_draws=int(n_draws), seed=seed, df=df,
                                scale=scale)
    elbo_i = marginal.site_elbo(sl, Y, W)
    sites = pd.DataFrame({"loglik": res.logp, "se": res.se, "elbo": elbo_i,
                          "gap": res.logp - elbo_i, "ess": res.ess}, index=fit.sites)
    return LoglikIS(float(res.logp.sum()), float(np.sqrt((res.se ** 2).sum())), float(fit.llf),
                    sites, int(n_draws), seed, float(df), float(scale))
