"""Starting values: per-species GLMs, then an SVD of their Dunn-Smyth residuals."""
import numpy as np

from .._numerics import safe_solve

from . import penalty
from .blocks import dispersion_step, hold_fixed
from .objective import weighted
from .params import S_BOUNDS, Params
from .residuals import dunn_smyth

_MAX_STEP = 5.0


def glm_start(prob, n_iter=25, tol=1e-7, max_sites=1000):
    """Independent per-species GLMs (no latent variables, no row effects), batched Newton.

    Only starting values: with more than ``max_sites`` sites (or more than about
    500,000 cells, but never fewer than 200 sites) they are fitted on an evenly
    spaced subset of sites (deterministic, so fits stay reproducible); the full
    fit refines everything.

    Returns ``(b, s)``: b (m, 1 + p) intercepts and slopes, s (m,), (m, q) or None.
    """
    keep = min(prob.n, max_sites, max(200, 500_000 // max(prob.m, 1)))
    rows = np.unique(np.linspace(0, prob.n - 1, keep).round().astype(int))
    fam, Y, W = prob.family, prob.Y[rows], prob.W[rows]
    Xt = np.column_stack([np.ones(len(rows)), prob.X[rows]])
    off = 0.0 if prob.offset is None else prob.offset[rows]
    trials = None if prob.trials is None else prob.trials[rows]
    b = np.zeros((prob.m, Xt.shape[1]))
    b[:, 0] = _intercept_guess(fam, Y, W, trials)
    s = None
    if fam.has_dispersion:
        s = np.zeros(prob.s_shape)
        guess = getattr(fam, "dispersion_start", None)
        if guess is not None:
            mu0 = fam.mean(np.broadcast_to(b[:, 0], Y.shape), trials)
            kw = {} if s.ndim == 1 else {"n_dispersion": prob.n_disp}   # K from all the data
            g = guess(np.where(W > 0, Y, np.nan), mu0, **kw)
            if g is not None:
                s = np.clip(np.asarray(g, dtype=float), -10, 10)
    zero_v = np.zeros_like(Y)

    pen = penalty.species_curvature(prob)            # penalty (prior_sd): (beta0, B) part
    pen = None if pen is None else pen[:Xt.shape[1]]

    def loglik(b, s, order=1):
        e = fam.ell(Y, Xt @ b.T + off, zero_v, s, trials, order=order)
        ll = (W * e.value).sum(0)
        return (ll, e) if pen is None else (ll - 0.5 * (b * b) @ pen, e)

    ll, e = loglik(b, s)
    for _ in range(n_iter):
        if s is not None:       # second derivatives in s only where the step is taken
            ll, e = loglik(b, s, order=2)
        Gm, Gv = W * e.d_m, W * e.d_v
        g = Gm.T @ Xt
        H = np.einsum("ik,ij,il->jkl", Xt, 2.0 * Gv, Xt)
        H -= 1e-8 * np.eye(Xt.shape[1])
        if pen is not None:
            g, H = g - b * pen, H - np.diag(pen)
        step = -safe_solve(H, g)
        step = np.clip(step, -_MAX_STEP, _MAX_STEP)
        snew = s
        if s is not None:
            if not fam.shared_dispersion:     # a shared one keeps its pooled start here
                gs, gss = weighted(W, e.d_s).sum(0), weighted(W, e.d_ss).sum(0)
                ds = dispersion_step(*hold_fixed(gs, gss, prob.s_free), 0.5)
                snew = np.clip(s + np.clip(ds, -2, 2), *S_BOUNDS)
        b, s, ll_new, e = _accept(loglik, b, s, step, snew, ll)
        if np.max(np.abs(ll_new - ll)) < tol * (1 + np.abs(ll).max()):
            ll = ll_new
            break
        ll = ll_new
    return b, s


def _accept(loglik, b, s, step, snew, ll):
    """Per-species step halving: keep each species' step only where it improves."""
    frac = np.ones(b.shape[0])
    fs = (lambda f: f) if s is None or s.ndim == 1 else (lambda f: f[:, None])
    if s is not None and s.shape[0] != b.shape[0]:      # shared by all species: not stepped here
        fs, snew = (lambda f: 0.0), s
    for _ in range(8):
        bt = b + frac[:, None] * step
        st = None if s is None else s + fs(frac) * (snew - s)
        llt, e = loglik(bt, st)
        bad = ~(llt >= ll - 1e-10)
        if not bad.any():
            return bt, st, llt, e
        frac = np.where(bad, frac * 0.5, frac)
    frac = np.where(bad, 0.0, frac)
    bt = b + frac[:, None] * step
    st = None if s is None else s + fs(frac) * (snew - s)
    llt, e = loglik(bt, st)
    return bt, st, llt, e


def _intercept_guess(fam, Y, W, trials):
    parts = getattr(fam, "parts", None)                 # a mixed model: each family on its columns
    if parts is not None:
        out = np.empty(Y.shape[1])
        for member, cols in parts:
            out[cols] = _intercept_guess(member, Y[:, cols], W[:, cols],
                                         None if trials is None else trials[:, cols])
        return out
    own = getattr(fam, "intercept_start", None)        # a family's own start, where it has one
    if own is not None:
        return own(Y, W, trials)
    ybar = (W * Y).sum(0) / np.maximum(W.sum(0), 1)
    if fam.name == "binomial":
        nt = 1.0 if trials is None else (W * trials).sum(0) / np.maximum(W.sum(0), 1)
        pbar = np.clip(ybar / nt, 0.02, 0.98)
        from scipy import special
        return special.logit(pbar) if fam.link == "logit" else special.ndtri(pbar) \
            if fam.link == "probit" else np.log(-np.log1p(-pbar))
    if fam.link == "log":
        return np.log(np.maximum(ybar, 0.05))
    if fam.name == "ordinal":       # P(lowest category) = F(tau_1 - eta) with tau_1 = 0
        from scipy import special
        p0 = np.clip((W * (fam.ranks(Y) == 0)).sum(0) / np.maximum(W.sum(0), 1), 0.02, 0.98)
        return -special.ndtri(p0) if fam.link == "probit" else -special.logit(p0)
    return ybar


def lv_start(prob, b, s, rng, jitter=0.0):
    """Latent-variable means and loadings from the leading factors of Dunn-Smyth residuals."""
    n, d = prob.n, prob.d
    Xt = np.column_stack([np.ones(n), prob.X])
    eta = Xt @ b.T + (0.0 if prob.offset is None else prob.offset)
    y = np.where(prob.W > 0, prob.Y, np.nan)
    R = dunn_smyth(prob.family, y, eta, s, prob.trials, rng)
    R = np.where(np.isnan(R), 0.0, R)
    if jitter:
        R = R + jitter * rng.standard_normal(R.shape)
    R -= R.mean(0)
    a, theta = _leading_factors(R, d)
    return lower_triangularise(a, theta)


def _leading_factors(R, d):
    """a (n, d) with unit-variance columns and theta (m, d) with a theta' the best rank-d fit to R.

    From the eigenvectors of the m x m Gram matrix R'R (cheaper than a full SVD
    when n >> m, and only d components are needed).
    """
    n = R.shape[0]
    lam, V = np.linalg.eigh(R.T @ R)
    lam, V = lam[::-1][:d], V[:, ::-1][:, :d]
    sv = np.sqrt(np.maximum(lam, 1e-12))
    U = (R @ V) / sv
    return U * np.sqrt(n), (V * sv) / np.sqrt(n)


def triangular_rotation(theta):
    """Orthogonal Q (d, d) such that theta @ Q is lower triangular in its first d rows with a
    non-negative diagonal (QR factorisation of the top block's transpose, signs fixed)."""
    d = theta.shape[1]
    Q, R = np.linalg.qr(theta[:d].T)      # theta_top' = Q R  ->  theta_top Q = R'
    sign = np.sign(np.diag(R))
    sign[sign == 0] = 1.0
    return Q * sign


def lower_triangularise(a, theta):
    """Rotate (a, theta) so theta is lower triangular with positive diagonal; a theta' unchanged."""
    if theta.shape[1] == 0:
        return a, theta
    Q = triangular_rotation(theta)
    return a @ Q, np.tril(theta @ Q)


def initial_params(prob, rng, jitter=0.0, glm=None):
    """Complete starting Params for one start."""
    b, s = glm if glm is not None else glm_start(prob)
    n, m, d = prob.n, prob.m, prob.d
    if d:
        a, theta = lv_start(prob, b, s, rng, jitter)
    else:
        a, theta = np.zeros((n, 0)), np.zeros((m, 0))
    L = np.broadcast_to(np.eye(d) * 0.5, (n, d, d)).copy()
    P = Params(beta0=b[:, 0].copy(), B=b[:, 1:].copy(), theta=theta, a=a, L=L,
               s=None if s is None else s.copy())
    if prob.row_effect == "fixed":
        P.alpha = np.zeros(n)
    elif prob.row_effect == "random":
        P.alpha = np.zeros(n)
        P.log_sigma = np.log(0.5)
        P.log_rho = np.full(n, np.log(0.3))
    return P
