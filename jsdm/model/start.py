"""Starting values: per-species GLMs, then an SVD of their Dunn-Smyth residuals."""
import numpy as np

from .._numerics import safe_solve

from .params import S_BOUNDS, Params
from .residuals import dunn_smyth

_MAX_STEP = 5.0


def glm_start(prob, n_iter=50, tol=1e-8):
    """Independent per-species GLMs (no latent variables, no row effects), batched Newton.

    Returns ``(b, s)``: b (m, 1 + p) intercepts and slopes, s (m,) or None.
    """
    fam, Y, W = prob.family, prob.Y, prob.W
    Xt = np.column_stack([np.ones(prob.n), prob.X])
    off = 0.0 if prob.offset is None else prob.offset
    b = np.zeros((prob.m, Xt.shape[1]))
    b[:, 0] = _intercept_guess(prob)
    s = None
    if fam.has_dispersion:
        s = np.zeros(prob.m)
        guess = getattr(fam, "dispersion_start", None)
        if guess is not None:
            mu0 = fam.mean(np.broadcast_to(b[:, 0], Y.shape), prob.trials)
            g = guess(np.where(W > 0, Y, np.nan), mu0)
            if g is not None:
                s = np.clip(np.asarray(g, dtype=float), -10, 10)
    zero_v = np.zeros_like(Y)

    def loglik(b, s):
        e = fam.ell(Y, Xt @ b.T + off, zero_v, s, prob.trials, order=2)
        return (W * e.value).sum(0), e

    ll, e = loglik(b, s)
    for _ in range(n_iter):
        Gm, Gv = W * e.d_m, W * e.d_v
        g = Gm.T @ Xt
        H = np.einsum("ik,ij,il->jkl", Xt, 2.0 * Gv, Xt)
        H -= 1e-8 * np.eye(Xt.shape[1])
        step = -safe_solve(H, g)
        step = np.clip(step, -_MAX_STEP, _MAX_STEP)
        snew = s
        if s is not None:
            gs, gss = (W * e.d_s).sum(0), (W * e.d_ss).sum(0)
            ds = np.where(gss < 0, -gs / np.minimum(gss, -1e-12), np.sign(gs) * 0.5)
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
    for _ in range(8):
        bt = b + frac[:, None] * step
        st = None if s is None else s + frac * (snew - s)
        llt, e = loglik(bt, st)
        bad = ~(llt >= ll - 1e-10)
        if not bad.any():
            return bt, st, llt, e
        frac = np.where(bad, frac * 0.5, frac)
    frac = np.where(bad, 0.0, frac)
    bt = b + frac[:, None] * step
    st = None if s is None else s + frac * (snew - s)
    llt, e = loglik(bt, st)
    return bt, st, llt, e


def _intercept_guess(prob):
    fam, Y, W = prob.family, prob.Y, prob.W
    ybar = (W * Y).sum(0) / np.maximum(W.sum(0), 1)
    if fam.name == "binomial":
        nt = 1.0 if prob.trials is None else (W * prob.trials).sum(0) / np.maximum(W.sum(0), 1)
        pbar = np.clip(ybar / nt, 0.02, 0.98)
        from scipy import special
        return special.logit(pbar) if fam.link == "logit" else special.ndtri(pbar) \
            if fam.link == "probit" else np.log(-np.log1p(-pbar))
    if fam.link == "log":
        return np.log(np.maximum(ybar, 0.05))
    return ybar


def lv_start(prob, b, s, rng, jitter=0.0):
    """Latent-variable means and loadings from an SVD of Dunn-Smyth residuals."""
    n, m, d = prob.n, prob.m, prob.d
    Xt = np.column_stack([np.ones(n), prob.X])
    eta = Xt @ b.T + (0.0 if prob.offset is None else prob.offset)
    y = np.where(prob.W > 0, prob.Y, np.nan)
    R = dunn_smyth(prob.family, y, eta, s, prob.trials, rng)
    R = np.where(np.isnan(R), 0.0, R)
    if jitter:
        R = R + jitter * rng.standard_normal(R.shape)
    R -= R.mean(0)
    U, S, Vt = np.linalg.svd(R, full_matrices=False)
    a = U[:, :d] * np.sqrt(n)
    theta = (Vt[:d].T * S[:d]) / np.sqrt(n)
    return lower_triangularise(a, theta)


def lower_triangularise(a, theta):
    """Rotate (a, theta) so theta is lower triangular with positive diagonal; a theta' unchanged."""
    d = theta.shape[1]
    if d == 0:
        return a, theta
    Q, _ = np.linalg.qr(theta.T)  # theta' = Q R  ->  theta = R' Q'
    T = theta @ Q
    sign = np.sign(np.diag(T[:d]))
    sign[sign == 0] = 1.0
    T = np.tril(T * sign)
    return (a @ Q) * sign, T


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
