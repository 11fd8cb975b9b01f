"""The per-site latent model of a fit: the one place that reads the engine's internals.

Everything in :mod:`jsdm.results.marginal` (importance-sampled likelihood,
predictive densities, conditional prediction), cross-validation, richness and
joint occurrence is written against :class:`SiteLatent`, never against the
engine's parameter containers. A GLLVM is, site by site,

    eta_i = F_i + Lambda u_i,    u_i ~ N(0, Sigma_u),    y_ij | u_i ~ f(. | eta_ij) independently

with ``F_i`` the fixed part of the linear predictor (offset, intercepts,
covariate effects, fixed row effects), ``u_i`` the site's latent vector (the
d latent variables, plus a random row effect when there is one), ``Lambda``
its loadings on each species' linear predictor (theta_j, and 1 for the row
effect) and ``Sigma_u`` its prior covariance (I_d, sigma^2). For fitted sites
the variational posterior q(u_i) = N(mean_i, cov_i) comes along.

With quadratic (unimodal) responses the linear predictor is quadratic in u,

    eta_i = F_i + Lambda u_i - D (c_i + u_i)^2

(``quad`` holds D_jk >= 0, zero for the row effect; ``quad_center`` the covariate part
c_i = C' x_i of concurrent latent variables, else 0), so eta is not normal under q:
``q_moments`` gives its exact mean and the variance the families see (the same
closed forms as the engine's quadratic term).

Terms whose random effects are shared *between* sites (species random effects,
grouped site effects) enter F at their estimates (conditional on the fitted species
and on the levels the fit has seen); at a new site in a level the fit has not seen,
that level's effect is one more latent coordinate (``"group"``) with its prior variance.

When the engine changes (new terms: grouped site effects, species random
effects), :func:`site_latent` is what changes; the rest reads only the fields
and methods below.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from ..exceptions import JSDMError


@dataclass(frozen=True, eq=False)
class SiteLatent:
    """One Gaussian latent vector per site and the fixed part of the linear predictor.

    Attributes
    ----------
    F : ndarray (k, m)
        Fixed part of the linear predictor at the k sites.
    loadings : ndarray (m, r)
        Loadings of the site's latent vector u_i on each species' linear predictor.
    prior_cov : ndarray (r, r) or (k, r, r)
        Prior covariance of u_i (per site when a coordinate's prior differs between sites,
        e.g. grouped site effects of seen and unseen levels).
    mean, cov : ndarray (k, r), (k, r, r), or None
        Variational posterior q(u_i) of fitted sites (None for new sites).
    family : Family
    s : ndarray or None
        The family's unconstrained dispersion parameters (per species).
    trials : ndarray (k, m) or None
        Binomial trials (None: 1).
    sites, species : Index
    latent_names : list of str
        Names of the r components of u_i (LV1, ..., and "row" for a random row effect).
    """

    F: np.ndarray
    loadings: np.ndarray
    prior_cov: np.ndarray
    mean: Optional[np.ndarray]
    cov: Optional[np.ndarray]
    family: object
    s: Optional[np.ndarray]
    trials: Optional[np.ndarray]
    sites: pd.Index
    species: pd.Index
    latent_names: tuple
    quad: Optional[np.ndarray] = None
    quad_center: Optional[np.ndarray] = None

    @property
    def k(self):
        return self.F.shape[0]

    @property
    def m(self):
        return self.F.shape[1]

    @property
    def r(self):
        return self.loadings.shape[1]

    def rows(self, rows):
        """The same model restricted to the sites ``rows`` (slice, index array or mask)."""
        pick = (lambda a: None if a is None else a[rows])
        prior = self.prior_cov if self.prior_cov.ndim == 2 else self.prior_cov[rows]
        return SiteLatent(self.F[rows], self.loadings, prior, pick(self.mean),
                          pick(self.cov), self.family, self.s, pick(self.trials),
                          self.sites[rows], self.species, self.latent_names, self.quad,
                          pick(self.quad_center))

    # --- the linear predictor -----------------------------------------------------------
    def eta(self, U):
        """Linear predictor at latent values ``U`` (..., k, r) -> (..., k, m)."""
        U = np.asarray(U)
        eta = self.F + U @ self.loadings.T
        if self.quad is not None:
            Uc = U if self.quad_center is None else U + self.quad_center
            eta = eta - (Uc * Uc) @ self.quad.T
        return eta

    def marginal_variance(self):
        """Prior variance of each species' linear predictor, diag(Lambda Sigma_u Lambda'): (m,),
        or (k, m) when the prior differs between sites (linear models; with quadratic
        responses see :meth:`prior_moments`)."""
        return np.einsum("ja,...ab,jb->...j", self.loadings, self.prior_cov, self.loadings)

    def prior_moments(self):
        """Mean and variance (k, m) of the linear predictor with u at its prior (the
        variance the families see: exact for linear models, see ``q_moments``)."""
        k, r = self.k, self.r
        return q_moments(self, np.zeros((k, r)), np.broadcast_to(self.prior_cov, (k, r, r)))

    # --- the response distribution, bound to the dispersion and trials -------------------
    def _tr(self, shape):
        return None if self.trials is None else np.broadcast_to(self.trials, shape)

    def loglik(self, y, eta):
        """log f(y | eta) cell-wise; ``eta`` (..., k, m), ``y`` (k, m) broadcasting along it."""
        eta = np.asarray(eta, dtype=float)
        y = np.broadcast_to(y, eta.shape)
        with np.errstate(over="ignore", under="ignore"):
            return self.family.loglik(y, eta, self.s, self._tr(eta.shape))

    def ell(self, y, m, v):
        """E[log f(y | eta)], eta ~ N(m, v), with its m- and v-derivatives (a family ELL)."""
        return self.family.ell(y, m, v, self.s, self.trials)

    def response_mean(self, eta):
        """E[y | eta] on the response scale (counts out of ``trials`` for the binomial)."""
        eta = np.asarray(eta, dtype=float)
        with np.errstate(over="ignore"):
            return self.family.mean(eta, self._tr(eta.shape), s=self.s)

    def prob_zero(self, eta):
        """P(y = 0 | eta)."""
        eta = np.asarray(eta, dtype=float)
        with np.errstate(over="ignore", under="ignore"):
            return self.family.cdf(np.zeros(eta.shape), eta, self.s, self._tr(eta.shape))

    def sample(self, eta, rng):
        """One draw of y given eta (shape of eta)."""
        eta = np.asarray(eta, dtype=float)
        return self.family.sample(eta, self.s, self._tr(eta.shape), rng)


def q_moments(sl, mean, cov):
    """Mean and variance (k, m) of each site's linear predictor under u_i ~ N(mean_i, cov_i).

    Linear in u: eta ~ N(F + Lambda mean, Lambda cov Lambda'). Quadratic responses
    (``sl.quad``), per cell with b = lambda_j, D = diag(D_j), mu = c_i + mean_i, S = cov_i,
    g = b - 2 D mu: E[eta] = F + b' mean - mu' D mu - tr(D S) exactly, and the variance is

    - log link: v = 2 (log E[e^eta] - E[eta]) = g' (S^-1 + 2 D)^-1 g - log det(I + 2 S D)
      + 2 tr(D S), so that a normal with (E[eta], v) has the exact E[e^eta] (the Poisson
      ELBO is then exact, other log-link families approximate);
    - other links: Var[eta] = g' S g + 2 tr(D S D S) (moment matching).

    These are the engine's closed forms (``jsdm/model/terms/quadratic.py``), so the
    per-site ELBO here equals the fit's.
    """
    lam = sl.loadings
    mean = np.asarray(mean, dtype=float)
    cov = np.asarray(cov, dtype=float)
    M = sl.F + mean @ lam.T
    if sl.quad is None:
        V = np.einsum("ja,iab,jb->ij", lam, cov, lam)
        return M, np.maximum(V, 0.0)
    D = sl.quad                                                         # (m, r)
    mu = mean if sl.quad_center is None else mean + sl.quad_center      # (k, r)
    dS = np.diagonal(cov, axis1=1, axis2=2)                             # (k, r)
    M = M - (mu ** 2 + dS) @ D.T
    g = lam[None] - 2.0 * D[None] * mu[:, None]                         # (k, m, r)
    if getattr(sl.family, "link", None) == "log":
        r = D.shape[1]
        K = np.eye(r) + 2.0 * cov[:, None] * D[None, :, None, :]         # I + 2 S D, (k, m, r, r)
        MS = np.linalg.solve(K, np.broadcast_to(cov[:, None], K.shape))  # (S^-1 + 2 D)^-1
        V = (np.einsum("ija,ijab,ijb->ij", g, MS, g) - np.linalg.slogdet(K)[1]
             + 2.0 * dS @ D.T)
    else:
        V = (np.einsum("ija,iab,ijb->ij", g, cov, g)
             + 2.0 * np.einsum("ja,iab,jb,iab->ij", D, cov, D, cov))
    return M, np.maximum(V, 0.0)


def has_presence(family):
    """True when 'presence' (y > 0) is a meaningful event for the family."""
    return bool(getattr(family, "discrete", False) or getattr(family, "zero_atom", False))


def site_latent(fit, newdata=None, offset=None, trials=None):
    """The per-site latent model of ``fit`` at its fitted sites or at new sites.

    This function is the adapter between the engine's parameter containers and
    everything built on the marginal (latent-variable-integrated) model.

    Parameters
    ----------
    fit : GLLVMResults
    newdata : DataFrame (k sites x covariates), optional
        New sites; None gives the fitted sites with their variational posteriors.
        A fit without covariates accepts a DataFrame with no columns (its index
        names the new sites).
    offset : array (k,) or (k, m), optional
        Offset at new sites.
    trials : array broadcastable to (k, m), optional
        Binomial trials at new sites (default 1).

    Returns
    -------
    SiteLatent

    Raises
    ------
    JSDMError
        New sites for a fit with fixed row effects (their effect is unknown).
    """
    prob, P = fit.problem, fit.state.params
    pred = prob.predictor
    d = prob.d
    random_row = prob.row_effect == "random"
    names = tuple(fit.lv_names) + (("row",) if random_row else ())
    lam = np.asarray(P.theta, dtype=float).reshape(prob.m, d)
    prior = np.eye(d)
    if random_row:
        lam = np.column_stack([lam, np.ones(prob.m)])
        prior = np.zeros((d + 1, d + 1))
        prior[:d, :d] = np.eye(d)
        prior[d, d] = np.exp(2.0 * P.log_sigma)
    r = lam.shape[1]
    s = None if P.s is None else np.asarray(P.s, dtype=float)
    quad = _quadratic_coefficients(pred, P, r)
    from .predict import fixed_part, group_parts
    if newdata is None:
        F = fixed_part(fit)
        mean, cov = _q_fitted(prob, P, random_row)
        center = None
        if quad is not None and hasattr(pred.lv, "fixed_scores"):
            center = _pad(pred.lv.fixed_scores(pred, P), r)
        return SiteLatent(F, lam, prior, mean, cov, prob.family, s, prob.trials, prob.sites,
                          prob.species, names, quad, center)
    if prob.row_effect == "fixed":
        raise JSDMError("a fit with fixed row effects cannot describe new sites (their effect is "
                        "unknown); refit with row_effect='random' or None")
    if not isinstance(newdata, pd.DataFrame):
        raise JSDMError("newdata must be a DataFrame of site covariates (one row per new site), "
                        f"got {type(newdata).__name__}")
    k = len(newdata)
    from ..model.terms.ordination import has_ordination
    center, Xlv = None, None
    if has_ordination(pred):
        from .predict import new_lv_design
        Xlv = new_lv_design(fit, newdata)
        if quad is not None and hasattr(pred.lv, "fixed_scores"):     # concurrent: C' x_i
            center = _pad(Xlv @ P.C_lv, r)
    F = fixed_part(fit, newdata, offset, Xlv)
    gv = group_parts(fit, newdata)[1]
    if np.any(gv > 0):
        # the grouped site effects at these sites: N(mu_g, s_g^2) for a level the fit has seen,
        # N(0, sigma^2) for a new one; one more latent coordinate, its variance per site
        names = names + ("group",)
        lam = np.column_stack([lam, np.ones(prob.m)])
        prior = np.broadcast_to(np.pad(prior, ((0, 1), (0, 1))), (k, r + 1, r + 1)).copy()
        prior[:, r, r] = np.maximum(gv, 1e-12)
        quad = None if quad is None else np.pad(quad, ((0, 0), (0, 1)))
        center = None if center is None else np.pad(center, ((0, 0), (0, 1)))
    tr = None if trials is None else np.broadcast_to(np.asarray(trials, dtype=float),
                                                     (k, prob.m)).copy()
    return SiteLatent(F, lam, prior, None, None, prob.family, s, tr, newdata.index,
                      prob.species, names, quad, center)


def _pad(A, r):
    """(k, c) -> (k, r) with zero columns added on the right."""
    return np.pad(np.asarray(A, dtype=float), ((0, 0), (0, r - A.shape[1])))


def _quadratic_coefficients(pred, P, r):
    """D (m, r) of the quadratic-response term (zeros beyond its latent variables), or None."""
    from ..model.terms.quadratic import quadratic_term

    term = quadratic_term(pred)
    if term is None:
        return None
    D = np.asarray(term.D(pred, P), dtype=float)
    return _pad(D, r)


def _q_fitted(prob, P, random_row):
    """Each site's variational q over (z_i[, alpha_i]): one joint Gaussian (the site block of
    ``prob.predictor``: latent variables first, then the random row effect)."""
    pred = prob.predictor
    r = prob.d + int(random_row)
    if pred.kr != r:
        raise JSDMError(f"site_latent knows latent variables and random row effects; this model's "
                        f"site block has {pred.kr} random coordinates ({pred.coord_names()})")
    mean = np.array(pred.site_means(P)[:, :r], dtype=float).reshape(prob.n, r)
    cov = P.L @ np.swapaxes(P.L, 1, 2) if r else np.zeros((prob.n, 0, 0))
    return mean, cov
