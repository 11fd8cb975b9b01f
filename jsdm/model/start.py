"""Starting values: per-species GLMs, then an SVD of their Dunn-Smyth residuals.

The GLMs fit the terms marked ``in_glm_start`` (species intercepts and slopes) with
the dispersion; every term then writes its own starting values
(``Term.start``) from them: the latent variables from the leading factors of the
GLMs' Dunn-Smyth residuals, row effects at zero, the site covariances diagonal.
"""
import numpy as np

from .._numerics import safe_solve

from . import penalty
from .blocks import dispersion_step, hold_fixed
from .objective import weighted
from .params import S_BOUNDS
from .residuals import dunn_smyth
from .terms.latent import lower_triangularise, triangular_rotation  # noqa: F401

_MAX_STEP = 5.0


def glm_start(prob, n_iter=25, tol=1e-7, max_sites=1000):
    """Independent per-species GLMs (no latent variables, no row effects), batched Newton.

    Only starting values: with more than ``max_sites`` sites (or more than about
    500,000 cells, but never fewer than 200 sites) they are fitted on an evenly
    spaced subset of sites (deterministic, so fits stay reproducible); the full
    fit refines everything.

    Returns ``(b, s)``: b (m, k) the coefficients of the ``in_glm_start`` terms (with the
    classic terms: intercepts and slopes, k = 1 + p), s (m,), (m, q) or None.
    """
    keep = min(prob.n, max_sites, max(200, 500_000 // max(prob.m, 1)))
    rows = np.unique(np.linspace(0, prob.n - 1, keep).round().astype(int))
    fam, Y, W = prob.family, prob.Y[rows], prob.W[rows]
    Xt = glm_design(prob, rows)
    off = 0.0 if prob.offset is None else prob.offset[rows]
    trials = None if prob.trials is None else prob.trials[rows]
    b = np.zeros((prob.m, Xt.shape[1]))
    col = _intercept_column(prob.predictor)
    if col is not None:
        b[:, col] = fam.start_intercept(Y, W, trials)
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

    pen = penalty.glm_curvature(prob)                # penalty (prior_sd): the GLMs' terms

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


def _intercept_column(pred):
    """Column of the starting GLMs' design holding the species intercepts, or None."""
    at = 0
    for t in pred.glm_terms:
        if t.kind == "intercepts":
            return at
        cols = getattr(t, "columns", ())
        if t.kind == "species_random" and "1" in cols:
            return at + list(cols).index("1")
        at += t.species_width(pred)
    return None


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


def glm_design(prob, rows=slice(None)):
    """Site design (r, k) of the terms fitted by the starting GLMs (intercept column first)."""
    pred = prob.predictor
    P = None            # their designs are data (1, x_i), not parameters
    return np.column_stack([t.species_design(pred, P, rows) for t in pred.glm_terms])


def lv_start(prob, eta, s, d, rng, jitter=0.0):
    """Latent-variable means and loadings from the leading factors of Dunn-Smyth residuals.

    ``eta`` (n, m): the starting GLMs' linear predictor (offset included).
    """
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


def initial_params(prob, rng, jitter=0.0, glm=None):
    """Complete starting Params for one start: every term's ``start`` from the GLMs."""
    b, s = glm if glm is not None else glm_start(prob)
    pred = prob.predictor
    P = pred.zeros()
    if s is not None:
        P.s = s.copy()
    coef, at = {}, 0
    for t in pred.glm_terms:
        w = t.species_width(pred)
        coef[t] = b[:, at:at + w]
        at += w
    eta0 = glm_design(prob) @ b.T + (0.0 if prob.offset is None else prob.offset)
    init = {"glm": coef, "s": s, "rng": rng, "jitter": jitter, "eta0": eta0, "prob": prob}
    for t in pred.terms:
        t.start(pred, P, init)
    P.L = pred.start_cov()
    if pred.ksr:                                # species random effects: their joint q
        P.Lsp = pred.species_random_start()
    return P
