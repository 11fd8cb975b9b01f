"""Integrals over a site's latent vector: honest likelihoods, predictive densities, posteriors.

Everything here works on a :class:`jsdm.results.latent.SiteLatent` (the
adapter to the engine) and on response tables ``Y`` (k, m) with observation
weights ``W`` (1 observed, 0 missing). For each site

    p(y_i) = integral of prod_j f(y_ij | F_ij + lambda_j' u)^W_ij  N(u; 0, Sigma_u) du

is computed from a set of points u_ik with log weights ``logw_ik`` such that
integral h(u) N(u; 0, Sigma_u) du ~ sum_k exp(logw_ik) h(u_ik):

- ``"quadrature"``: a tensor composite Gauss-Legendre rule centred and
  scaled on a Gaussian approximation of the site's posterior
  (a composite product rule on a box in the coordinates of that Gaussian),
  for r <= 2 latent dimensions;
- ``"is"``: importance sampling from a multivariate t proposal (``df``
  degrees of freedom) centred on the same Gaussian and widened by ``scale``
  (a factor on its standard deviations); ``n_draws`` draws, seeded.

The Gaussian is the variational posterior q(u_i) of a fitted site, or, at a
new site, the one fitted here (:func:`fit_q`) to the species observed there,
with the model parameters held fixed (the engine's variational problem for
one site). Importance sampling gives an unbiased estimate of p(y_i) with a
Monte Carlo standard error; its log has a small downward bias of order
se^2 / 2.
"""
from dataclasses import dataclass

import numpy as np
from scipy import special

from .._numerics import analysis_rng
from ..exceptions import JSDMError

METHODS = ("auto", "quadrature", "is")
_CELLS = 2_000_000          # sites x points x species per chunk
_LOG_2PI = np.log(2.0 * np.pi)


# --- Gaussian pieces ------------------------------------------------------------------------
def gaussian_kl(mean, cov, prior_cov):
    """KL(N(mean_i, cov_i) || N(0, prior_cov)) per site, (k,)."""
    r = prior_cov.shape[-1]
    if r == 0:
        return np.zeros(mean.shape[0])
    prior_cov = np.broadcast_to(prior_cov, cov.shape)          # (r, r) or per site (k, r, r)
    Pinv = np.linalg.inv(prior_cov)
    tr = np.einsum("iab,iba->i", Pinv, cov)
    quad = np.einsum("ia,iab,ib->i", mean, Pinv, mean)
    logdet_p = np.linalg.slogdet(prior_cov)[1]
    logdet_q = np.linalg.slogdet(cov)[1]
    return 0.5 * (tr + quad - r + logdet_p - logdet_q)


def _moments(sl, mean, cov):
    from .latent import q_moments
    return q_moments(sl, mean, cov)


def site_elbo(sl, Y, W, mean=None, cov=None):
    """Per-site evidence lower bound at q(u_i) = N(mean_i, cov_i) (default: the fit's q), (k,)."""
    mean = sl.mean if mean is None else mean
    cov = sl.cov if cov is None else cov
    M, V = _moments(sl, mean, cov)
    e = sl.ell(Y, M, V)
    return (W * e.value).sum(1) - gaussian_kl(mean, cov, sl.prior_cov)


# --- the variational posterior of one site, with the model held fixed ----------------------
def fit_q(sl, Y, W, maxiter=200, tol=1e-8, start=None):
    """Gaussian variational posterior q(u_i) of each site given its observed responses.

    Maximises the site's ELBO over (mean_i, cov_i) with the model parameters
    fixed: Newton steps in the mean (exact Hessian for fixed cov, since
    d2 ell/dm2 = 2 d ell/dv) with step halving, and the fixed-point update
    cov_i = (Sigma_u^-1 - 2 Lambda' diag(d ell/dv) Lambda)^-1 (d ell/dv
    clipped at 0 from above, as the engine does for its Newton steps).

    ``start``: (mean, cov) to start from (default: the prior).

    Returns
    -------
    (mean (k, r), cov (k, r, r))
    """
    k, r = sl.k, sl.r
    Y = np.where(W > 0, Y, 0.0)
    if r == 0:
        return np.zeros((k, 0)), np.zeros((k, 0, 0))
    if start is None:
        # the prior, narrowed where a species' prior variance of eta is large: with loadings
        # of separated species (lambda' Sigma_u lambda in the hundreds) E[e^eta] at the prior
        # overflows and the first step would be undefined (mite, Poisson, 2 LVs: singular)
        shrink = np.minimum(1.0, 4.0 / np.maximum(
            np.broadcast_to(sl.marginal_variance(), (k, sl.m)).max(1), 1e-300))
        a = np.zeros((k, r))
        A = np.broadcast_to(sl.prior_cov, (k, r, r)) * shrink[:, None, None]
    else:
        a, A = np.array(start[0], dtype=float), np.array(start[1], dtype=float)
    if sl.quad is not None:
        return _laplace_q(sl, Y, W, a, maxiter, tol)
    lam = sl.loadings
    Pinv = np.broadcast_to(np.linalg.inv(sl.prior_cov), (k, r, r))
    val = site_elbo(sl, Y, W, a, A)
    for _ in range(int(maxiter)):
        M, V = _moments(sl, a, A)
        with np.errstate(over="ignore", invalid="ignore"):
            e = sl.ell(Y, M, V)
        gm, gv = _finite(W * e.d_m), np.minimum(_finite(W * e.d_v), 0.0)
        grad = gm @ lam - np.einsum("ia,iab->ib", a, Pinv)
        H = Pinv + np.einsum("ja,ij,jb->iab", lam, -2.0 * gv, lam)
        step = np.linalg.solve(H, grad[..., None])[..., 0]
        a_new, val_new = _halve(sl, Y, W, a, A, step, val)
        M, V = _moments(sl, a_new, A)
        with np.errstate(over="ignore", invalid="ignore"):
            gv = np.minimum(_finite(W * sl.ell(Y, M, V).d_v), 0.0)
        A_new = np.linalg.inv(Pinv + np.einsum("ja,ij,jb->iab", lam, -2.0 * gv, lam))
        val_A = site_elbo(sl, Y, W, a_new, A_new)
        keep = val_A >= val_new - 1e-12 * np.abs(val_new)
        A_upd = np.where(keep[:, None, None], A_new, A)
        change = max(np.abs(a_new - a).max(), np.abs(A_upd - A).max())
        a, A, val = a_new, A_upd, np.where(keep, val_A, val_new)
        if change < tol:
            break
    return a, A


def _finite(x, big=1e150):
    """x with NaN as 0 and infinities clipped to +-big (an overflowing cell then gives a
    large, finite curvature: a short step, not an undefined one)."""
    return np.clip(np.nan_to_num(x, nan=0.0, posinf=big, neginf=-big), -big, big)


def _laplace_q(sl, Y, W, a, maxiter=200, tol=1e-8):
    """Laplace approximation N(mode_i, H_i^-1) of each site's posterior when the linear
    predictor is quadratic in u (unimodal responses), where the linear-model variational
    steps of :func:`fit_q` do not apply. The mode of

        h(u) = sum_j W_ij log f(y_ij | eta_ij(u)) + log N(u; 0, Sigma_u),
        eta_ij(u) = F_ij + lambda_j' u - sum_k D_jk (c_ik + u_k)^2,

    by Newton steps on a curvature that is never indefinite (the parts of the exact Hessian
    that could make it so are dropped from the step, not from the final covariance when
    that is positive definite), each halved until h does not decrease. Only the
    integration points are centred on it: the integrals themselves use the exact model.
    """
    k, r = a.shape
    lam, D = sl.loadings, sl.quad
    Pinv = np.broadcast_to(np.linalg.inv(sl.prior_cov), (k, r, r))
    Wm = np.broadcast_to(W, Y.shape)
    c = 0.0 if sl.quad_center is None else sl.quad_center
    zeros = np.zeros(Y.shape)

    def h(u):
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            ll = np.where(Wm > 0, sl.loglik(Y, sl.eta(u)), 0.0).sum(-1)
            return ll - 0.5 * np.einsum("ia,iab,ib->i", u, Pinv, u)

    def derivs(u):
        e = sl.ell(Y, sl.eta(u), zeros)              # v = 0: d_m = l', 2 d_v = l''
        l1, l2 = Wm * e.d_m, 2.0 * Wm * e.d_v
        g = lam[None] - 2.0 * D[None] * (u + c)[:, None]                 # (k, m, r)
        grad = np.einsum("ij,ija->ia", l1, g) - np.einsum("ia,iab->ib", u, Pinv)
        curv = np.einsum("ij,ija,ijb->iab", -l2, g, g)
        lin = 2.0 * np.einsum("ij,ja->ia", l1, D)                         # -d2 eta / du2 terms
        return grad, curv, lin

    val = h(a)
    for _ in range(int(maxiter)):
        grad, curv, lin = derivs(a)
        safe = Pinv + _psd(curv) + np.einsum("ia,ab->iab", np.maximum(lin, 0.0), np.eye(r))
        step = np.linalg.solve(safe, grad[..., None])[..., 0]
        t = np.ones(k)
        new_a, todo = a.copy(), np.ones(k, dtype=bool)
        for _ in range(30):
            cand = a + t[:, None] * step
            v = h(cand)
            ok = todo & np.isfinite(v) & (v >= val - 1e-12 * np.abs(val))
            new_a[ok], val[ok] = cand[ok], v[ok]
            todo &= ~ok
            if not todo.any():
                break
            t[todo] *= 0.5
        change = np.abs(new_a - a).max()
        a = new_a
        if change < tol:
            break
    _, curv, lin = derivs(a)
    H = Pinv + curv + np.einsum("ia,ab->iab", lin, np.eye(r))
    Hs = Pinv + _psd(curv) + np.einsum("ia,ab->iab", np.maximum(lin, 0.0), np.eye(r))
    pd_ok = np.all(np.linalg.eigvalsh(H) > 1e-10, axis=-1)
    H = np.where(pd_ok[:, None, None], H, Hs)
    return a, np.linalg.inv(H)


def _psd(A):
    """Each symmetric matrix of a batch with its negative eigenvalues set to 0."""
    w, V = np.linalg.eigh(0.5 * (A + np.swapaxes(A, -1, -2)))
    return np.einsum("...ab,...b,...cb->...ac", V, np.maximum(w, 0.0), V)


def _halve(sl, Y, W, a, A, step, val, n_halve=30):
    """a + t step with t = 1, 1/2, ... per site until the ELBO does not decrease."""
    t = np.ones(a.shape[0])
    best_a, best_v = a.copy(), val.copy()
    todo = np.ones(a.shape[0], dtype=bool)
    for _ in range(n_halve):
        cand = a + t[:, None] * step
        with np.errstate(over="ignore", invalid="ignore"):
            v = site_elbo(sl, Y, W, cand, A)
        ok = todo & np.isfinite(v) & (v >= val - 1e-12 * np.abs(val))
        best_a[ok], best_v[ok] = cand[ok], v[ok]
        todo &= ~ok
        if not todo.any():
            break
        t[todo] *= 0.5
    return best_a, best_v


# --- points and weights for integrals over u ----------------------------------------------
@dataclass
class Points:
    """Integration points for k sites: ``U`` (K, k, r) and log weights ``logw`` (K, k)
    such that the integral of h(u) N(u; 0, Sigma_u) is about sum_K exp(logw) h(U)."""

    U: np.ndarray
    logw: np.ndarray
    method: str


def _standardise(U, mean, chol):
    """x with U = mean + chol x, and log |det chol|; U (K, k, r), mean (k, r), chol (k, r, r)."""
    diff = (U - mean)[..., None]                                           # (K, k, r, 1)
    x = np.linalg.solve(np.broadcast_to(chol, diff.shape[:-2] + chol.shape[-2:]), diff)[..., 0]
    return x, np.log(np.abs(np.diagonal(chol, axis1=-2, axis2=-1))).sum(-1)


def _log_normal(U, mean, chol):
    """log N(U; mean, chol chol') for U (K, k, r), mean (k, r), chol (k, r, r): (K, k)."""
    x, logdet = _standardise(U, mean, chol)
    return -0.5 * (x ** 2).sum(-1) - logdet - 0.5 * U.shape[-1] * _LOG_2PI


def _log_prior(U, prior_cov):
    k, r = U.shape[1], U.shape[2]
    C = np.broadcast_to(np.linalg.cholesky(prior_cov), (k, r, r))
    return _log_normal(U, np.zeros((k, r)), C)


QUAD_RULES = {1: (24, 8), 2: (20, 4)}      # (panels, Gauss-Legendre nodes) per dimension
QUAD_WIDTH = 10.0                           # half-width of the box, in widened-q sds


def choose_method(method, r):
    if method not in METHODS:
        raise JSDMError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}")
    if method == "auto":
        return "quadrature" if r <= 2 else "is"
    if method == "quadrature" and r > 2:
        raise JSDMError(f"quadrature over {r} latent dimensions is too costly; use method='is' "
                        "(or 'auto')")
    return method


def n_points(r, method, n_draws):
    """Number of integration points per site."""
    if r == 0:
        return 1
    if choose_method(method, r) == "is":
        return int(n_draws)
    p, g = QUAD_RULES[r]
    return (p * g) ** r


def make_points(sl, mean, cov, method="auto", n_nodes=None, n_draws=1000, seed=None, df=5.0,
                scale=1.5):
    """Integration points around the Gaussians N(mean_i, scale^2 cov_i) (see module notes).

    Quadrature: a product composite Gauss-Legendre rule over a box of
    +- ``QUAD_WIDTH`` in the coordinates x = (scale chol(cov_i))^-1 (u - mean_i)
    (``n_nodes`` = (panels, nodes per panel) overrides ``QUAD_RULES``).
    A composite rule rather than Gauss-Hermite: with binary data and large
    loadings the posterior can be far from Gaussian (likelihoods of single
    records are near-steps in u), which Hermite rules integrate badly.
    """
    k, r = mean.shape
    method = choose_method(method, r)
    if r == 0:
        return Points(np.zeros((1, k, 0)), np.zeros((1, k)), "exact")
    chol = np.linalg.cholesky(cov + 1e-12 * np.eye(r)) * float(scale)
    if method == "quadrature":
        panels, gl = n_nodes or QUAD_RULES[r]
        t, w = _composite(panels, gl)
        t, w = QUAD_WIDTH * t, QUAD_WIDTH * w
        X = np.stack([g.ravel() for g in np.meshgrid(*([t] * r), indexing="ij")], axis=-1)
        logw_x = np.sum(np.log(np.stack(np.meshgrid(*([w] * r), indexing="ij"))), axis=0).ravel()
        U = mean + np.einsum("iab,Kb->Kia", chol, X)                       # (K, k, r)
        logdet = np.log(np.abs(np.diagonal(chol, axis1=-2, axis2=-1))).sum(-1)
        logw = logw_x[:, None] + logdet[None, :] + _log_prior(U, sl.prior_cov)
        return Points(U, logw, "quadrature")
    rng = analysis_rng(seed)
    K = int(n_draws)
    if K < 2:
        raise JSDMError(f"n_draws must be at least 2, got {n_draws!r}")
    X = rng.standard_normal((K, k, r))
    g = rng.chisquare(df, (K, k)) / df
    U = mean + np.einsum("iab,Kib->Kia", chol, X) / np.sqrt(g)[..., None]
    logq = _log_t(U, mean, chol, df)
    logw = _log_prior(U, sl.prior_cov) - logq - np.log(K)
    return Points(U, logw, "is")


def _log_t(U, mean, chol, df):
    """log density of the multivariate t (location mean, scale chol chol', df) at U."""
    r = U.shape[-1]
    x, logdet = _standardise(U, mean, chol)
    d2 = (x ** 2).sum(-1)
    return (special.gammaln(0.5 * (df + r)) - special.gammaln(0.5 * df) - 0.5 * r * np.log(df * np.pi)
            - logdet - 0.5 * (df + r) * np.log1p(d2 / df))


def cell_loglik(sl, Y, W, U):
    """W-masked log f(y_ij | u) at every point U (K, k, r): (K, k, m) (0 where missing)."""
    Y0 = np.where(W > 0, Y, 0.0)
    ll = sl.loglik(Y0, sl.eta(U))
    return np.where(np.broadcast_to(W, Y.shape) > 0, ll, 0.0)


def _chunks(sl, K):
    step = max(1, _CELLS // max(1, K * sl.m))
    for start in range(0, sl.k, step):
        yield slice(start, min(sl.k, start + step))


# --- the log marginal likelihood of each site -----------------------------------------------
@dataclass
class SiteMarginal:
    """Per-site log marginal likelihood estimates.

    Attributes
    ----------
    logp : ndarray (k,)
    se : ndarray (k,)   Monte Carlo standard error of logp (0 for quadrature and exact cases)
    ess : ndarray (k,)  effective sample size of the importance weights (number of points
                        for quadrature)
    method : str
    """

    logp: np.ndarray
    se: np.ndarray
    ess: np.ndarray
    method: str


def _summarise(lw, method):
    """log of the sum of exp(lw) over points, its MC standard error, ESS; lw (K, k)."""
    top = lw.max(0)
    v = np.exp(lw - top)
    s1, s2 = v.sum(0), (v ** 2).sum(0)
    logp = top + np.log(s1)
    K = lw.shape[0]
    ess = s1 ** 2 / s2
    if method == "is" and K > 1:
        rel_var = np.maximum(K * s2 / s1 ** 2 - 1.0, 0.0) * K / (K - 1.0)
        se = np.sqrt(rel_var / K)
    else:
        se = np.zeros_like(logp)
    return logp, se, ess


def log_marginal(sl, Y, W, method="auto", q=None, n_nodes=None, n_draws=1000, seed=None,
                 df=5.0, scale=1.5):
    """log p(y_i) per site at the model's parameters, by quadrature or importance sampling.

    Parameters
    ----------
    sl : SiteLatent
    Y, W : ndarray (k, m)
        Responses and observation weights (1 observed, 0 missing).
    method : {"auto", "quadrature", "is"}
        "auto": quadrature for r <= 2 latent dimensions, else importance sampling.
    q : (mean, cov), optional
        Gaussian to centre the points on (default: the fit's q for fitted
        sites, else :func:`fit_q`).
    n_nodes, n_draws, seed, df, scale
        See :func:`make_points`.

    Returns
    -------
    SiteMarginal
    """
    Y = np.asarray(Y, dtype=float)
    W = np.broadcast_to(np.asarray(W, dtype=float), Y.shape)
    if q is None:
        q = (sl.mean, sl.cov) if sl.mean is not None else fit_q(sl, Y, W)
    method = choose_method(method, sl.r)
    pts = make_points(sl, q[0], q[1], method, n_nodes, n_draws, seed, df, scale)
    lw = np.empty(pts.logw.shape)
    for rows in _chunks(sl, pts.U.shape[0]):
        lw[:, rows] = pts.logw[:, rows] + cell_loglik(sl.rows(rows), Y[rows], W[rows],
                                                      pts.U[:, rows]).sum(-1)
    logp, se, ess = _summarise(lw, pts.method)
    return SiteMarginal(logp, se, ess, pts.method)


# --- one species at a time: 1-D integrals over its linear predictor -------------------------
def cell_marginal(sl, Y, W, n_panels=24, n_gl=8, width=10.0, maxiter=100):
    """log p(y_ij) for each cell, marginal over the site's latent vector, (k, m) (NaN if missing).

    eta_ij ~ N(F_ij, lambda_j' Sigma_u lambda_j), a 1-D integral per cell, done
    by a composite Gauss-Legendre rule (``n_panels`` panels of ``n_gl`` nodes)
    over +- ``width`` standard deviations of a Gaussian approximation of the
    cell's posterior. A composite rule, not Gauss-Hermite: the likelihood of a
    zero under a large loading is almost a step in eta, which Hermite rules
    integrate badly.
    """
    Y = np.asarray(Y, dtype=float)
    W = np.broadcast_to(np.asarray(W, dtype=float), Y.shape)
    if sl.quad is not None:         # eta is not normal: r-dimensional integrals over the prior
        return prior_cells(sl, Y, W)[0]
    Y0 = np.where(W > 0, Y, 0.0)
    sd = np.broadcast_to(np.sqrt(sl.marginal_variance()), sl.F.shape)
    if not np.any(sd > 0):
        out = sl.loglik(Y0, sl.F)
        return np.where(W > 0, out, np.nan)
    a, A = _cell_q(sl, Y0, sd, maxiter)
    t, w = _composite(n_panels, n_gl)
    half = width * np.sqrt(A)
    out = np.full(Y.shape, -np.inf)
    for tk, wk in zip(np.array_split(t, 8), np.array_split(w, 8)):        # bounded temporaries
        X = a + half * tk[:, None, None]                                    # (K, k, m)
        lw = np.log(wk)[:, None, None] + np.log(half) - 0.5 * X ** 2 - 0.5 * _LOG_2PI
        out = np.logaddexp(out, special.logsumexp(lw + sl.loglik(Y0, sl.F + sd * X), axis=0))
    return np.where(W > 0, out, np.nan)


def prior_cells(sl, Y, W, n_draws=2000, seed=0):
    """Per-cell log p(y_ij), E[y_ij] (per trial) and P(y_ij > 0), each (k, m), marginal over
    the site's latent vector: for quadratic responses, whose linear predictor is not normal.

    log p(y_ij) integrates over u around each cell's own posterior (the Laplace
    approximation of :func:`fit_q` with only species j observed; a steep response makes
    that posterior far narrower than the prior); E[y] and P(y > 0) integrate over the prior.
    Both by quadrature for r <= 2, seeded importance sampling beyond. P(y > 0) is NaN for
    families without a zero class."""
    from .latent import has_presence

    Y = np.asarray(Y, dtype=float)
    W = np.broadcast_to(np.asarray(W, dtype=float), Y.shape)
    k, r = sl.k, sl.r
    pts = make_points(sl, np.zeros((k, r)), np.broadcast_to(sl.prior_cov, (k, r, r)),
                      choose_method("auto", r), n_draws=n_draws, seed=seed, scale=1.0)
    lw = pts.logw - special.logsumexp(pts.logw, axis=0)          # weights summing to 1
    lpd, mean, pres = (np.full(Y.shape, np.nan) for _ in range(3))
    Y0 = np.where(W > 0, Y, 0.0)
    presence = has_presence(sl.family)
    for rows in _chunks(sl, pts.U.shape[0]):
        sub = sl.rows(rows)
        eta = sub.eta(pts.U[:, rows])                                # (K, k', m)
        w = np.exp(lw[:, rows])[..., None]
        with np.errstate(over="ignore", under="ignore"):
            mean[rows] = (w * sub.response_mean(eta) / (1.0 if sub.trials is None
                                                         else np.maximum(sub.trials, 1e-300))
                          ).sum(0)
            if presence:
                pres[rows] = np.clip((w * (1.0 - sub.prob_zero(eta))).sum(0), 0.0, 1.0)
    # log p(y_ij): a unimodal response makes a cell's posterior narrow (a steep response) and
    # not Gaussian (two modes, or a ring for r = 2: the two sides of the optimum)
    if r == 1:          # a dense composite rule over the prior: spacing 0.006 prior sds
        pts = make_points(sl, np.zeros((k, 1)), np.broadcast_to(sl.prior_cov, (k, 1, 1)),
                          "quadrature", n_nodes=(400, 8), scale=1.0)
    else:               # one mixture of t proposals per site: its prior and each cell's Laplace q
        ii, jj = np.nonzero(W > 0)
        Wc = np.zeros((len(ii), sl.m))
        Wc[np.arange(len(ii)), jj] = 1.0
        a, A = fit_q(sl.rows(ii), Y0[ii], Wc)
        means = np.zeros((k, sl.m + 1, r))
        covs = np.broadcast_to(sl.prior_cov, (k, r, r))[:, None].repeat(sl.m + 1, axis=1)
        covs[:, 1:] = covs[:, :1] / 1.5 ** 2          # unobserved cells: the prior again
        means[ii, jj + 1], covs[ii, jj + 1] = a, A
        covs[:, 0] /= 1.5 ** 2                          # the prior itself, unwidened
        pts = _mixture(sl, means, covs, max(int(n_draws), 4 * (sl.m + 1)), seed)
    for rows in _chunks(sl, pts.U.shape[0]):
        ll = cell_loglik(sl.rows(rows), Y0[rows], W[rows], pts.U[:, rows])      # (K, k', m)
        lpd[rows] = special.logsumexp(pts.logw[:, rows, None] + ll, axis=0)
    return np.where(W > 0, lpd, np.nan), mean, pres


def normal_expectation(fun, mean, sd, width=8.0, n_panels=24, n_gl=8):
    """E[fun(mean + sd Z)], Z ~ N(0, 1), elementwise, by a composite Gauss-Legendre rule on
    +- ``width`` (robust to near-step integrands such as P(y > 0 | eta) under a wide normal)."""
    t, w = _composite(n_panels, n_gl)
    t, w = width * t, width * w * np.exp(-0.5 * (width * t) ** 2) / np.sqrt(2.0 * np.pi)
    w = w / w.sum()
    mean, sd = np.broadcast_arrays(np.asarray(mean, dtype=float), np.asarray(sd, dtype=float))
    out = np.zeros(mean.shape)
    for tk, wk in zip(t, w):
        out += wk * fun(mean + sd * tk)
    return out


def _composite(n_panels, n_gl):
    """Nodes and weights of a composite Gauss-Legendre rule on [-1, 1]."""
    x, w = np.polynomial.legendre.leggauss(int(n_gl))
    edges = np.linspace(-1.0, 1.0, int(n_panels) + 1)
    h = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    return (mid[:, None] + h[:, None] * x).ravel(), (h[:, None] * w).ravel()


def _cell_q(sl, Y0, sd, maxiter):
    """Per-cell Gaussian N(a, A) approximating the posterior of x in eta = F + sd x, x ~ N(0, 1)."""
    a, A = np.zeros_like(sd), np.ones_like(sd)

    def value(a_, A_):
        e = sl.ell(Y0, sl.F + sd * a_, sd ** 2 * A_)
        return e, e.value - 0.5 * (A_ + a_ ** 2 - 1.0 - np.log(A_))

    e, val = value(a, A)
    for _ in range(int(maxiter)):
        gv = np.minimum(e.d_v, 0.0)
        step = (sd * e.d_m - a) / (1.0 - 2.0 * sd ** 2 * gv)
        t = np.ones_like(a)
        new_a = a.copy()
        todo = np.ones(a.shape, dtype=bool)
        for _ in range(30):
            cand = a + t * step
            with np.errstate(over="ignore", invalid="ignore"):
                _, v = value(cand, A)
            ok = todo & np.isfinite(v) & (v >= val - 1e-12 * np.abs(val))
            new_a[ok] = cand[ok]
            todo &= ~ok
            if not todo.any():
                break
            t[todo] *= 0.5
        e, _ = value(new_a, A)
        new_A = 1.0 / (1.0 - 2.0 * sd ** 2 * np.minimum(e.d_v, 0.0))
        e, val = value(new_a, new_A)
        change = max(np.abs(new_a - a).max(), np.abs(new_A - A).max())
        a, A = new_a, new_A
        if change < 1e-8:
            break
    return a, A


# --- leave-one-species-out: one set of draws for every species -----------------------------
def loo_q(sl, Y, W, q):
    """Variational posteriors of u given y_i without species j, for every site and species.

    Returns (mean (k, m, r), cov (k, m, r, r)): :func:`fit_q` on the k x m
    pseudo-sites (site i with species j masked), started from q (full data).
    """
    k, m, r = sl.k, sl.m, sl.r
    rep = np.repeat(np.arange(k), m)
    Wr = np.repeat(W, m, axis=0).reshape(k, m, m).copy()
    Wr[:, np.arange(m), np.arange(m)] = 0.0
    Wr = Wr.reshape(k * m, m)
    a, A = fit_q(sl.rows(rep), np.repeat(Y, m, axis=0), Wr,
                 start=(np.repeat(q[0], m, axis=0), np.repeat(q[1], m, axis=0)))
    return a.reshape(k, m, r), A.reshape(k, m, r, r)


def mixture_points(sl, Y, W, q, n_draws=1000, seed=None, df=5.0, scale=1.5):
    """Importance-sampling points from an equal mixture of t proposals around q and every
    leave-one-species-out Gaussian (:func:`loo_q`), with mixture (balance-heuristic) weights.

    One set of draws then estimates p(y_i) and every p(y_i without species j)
    without bias, however much one species moves the posterior.
    """
    k, r = q[0].shape
    if r == 0:
        return Points(np.zeros((1, k, 0)), np.zeros((1, k)), "exact")
    lm, lc = loo_q(sl, Y, W, q)
    means = np.concatenate([q[0][:, None], lm], axis=1)                     # (k, C, r)
    covs = np.concatenate([q[1][:, None], lc], axis=1)
    return _mixture(sl, means, covs, n_draws, seed, df, scale)


def _mixture(sl, means, covs, n_draws, seed, df=5.0, scale=1.5):
    """Importance-sampling points from an equal mixture of multivariate t proposals with
    locations ``means`` (k, C, r) and scale matrices ``scale**2 covs`` (k, C, r, r), drawn
    stratified over the components, with balance-heuristic (whole-mixture) weights."""
    k, r = means.shape[0], means.shape[2]
    chols = np.linalg.cholesky(covs + 1e-12 * np.eye(r)) * float(scale)      # (k, C, r, r)
    C, K = means.shape[1], int(n_draws)
    if K < C:
        raise JSDMError(f"n_draws={K} is fewer than the {C} mixture components (species + 1); "
                        "give more draws")
    comp = np.arange(K) % C                                                  # stratified
    rng = analysis_rng(seed)
    X = rng.standard_normal((K, k, r))
    g = rng.chisquare(df, (K, k)) / df
    U = means[:, comp].transpose(1, 0, 2) + np.einsum(
        "Kiab,Kib->Kia", chols[:, comp].transpose(1, 0, 2, 3), X) / np.sqrt(g)[..., None]
    logq = np.stack([_log_t(U, means[:, c], chols[:, c], df) for c in range(C)], axis=-1)
    logg = special.logsumexp(logq, axis=-1) - np.log(C)
    return Points(U, _log_prior(U, sl.prior_cov) - logg - np.log(K), "is")
