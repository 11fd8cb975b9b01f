"""The evidence lower bound (ELBO) and its analytic gradient.

    ELBO = sum_ij w_ij ell(y_ij, m_ij, v_ij) - sum_i KL(q(z_i) || N(0, I)) [- KL of row effects]
    m_ij = offset_ij + alpha_i + beta0_j + x_i' B_j + a_i' theta_j
    v_ij = theta_j' A_i theta_j [+ rho_i^2 for random row effects]

All work is batched as matrix products over sites and species; the only
Python loop is inside quadrature families, over quadrature nodes.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import penalty
from .params import Params


@dataclass
class Evaluation:
    """ELBO pieces at one parameter value."""

    value: float
    site_terms: np.ndarray      # (n,) sum_j w ell - KL_i (- KL row_i)
    M: Optional[np.ndarray]     # (n, m) means of eta under q (None when not kept)
    V: Optional[np.ndarray]     # (n, m) variances of eta under q (None when not kept)
    Gm: np.ndarray              # (n, m) w * d ell / dm
    Gv: np.ndarray              # (n, m) w * d ell / dv
    gs: Optional[np.ndarray]    # (m,), (m, q) or (1, q) shared: sum_i (sum_j) w * d ell / ds, or None
    grad: Optional[Params] = None


def weighted(W, D):
    """W (n, m) times D (n, m, ...): the cell weights broadcast over D's trailing axes."""
    D = np.asarray(D)
    return (W.reshape(W.shape + (1,) * (D.ndim - W.ndim)) if D.ndim > W.ndim else W) * D


def fixed_part(prob, P, rows=slice(None), cols=slice(None)):
    """offset + alpha_i + beta0_j + x_i' B_j for the sites in ``rows`` and species in ``cols``."""
    X = prob.X[rows]
    beta0 = P.beta0[cols]
    F = np.broadcast_to(beta0, (X.shape[0], beta0.shape[0])).copy()
    if prob.p:
        F += X @ P.B[cols].T
    if prob.offset is not None:
        F += prob.offset[rows][:, cols]
    if P.alpha is not None:
        F += P.alpha[rows, None]
    return F


def moments(prob, P, rows=slice(None), cols=slice(None), A2=None):
    """Means and variances of the linear predictor under q for the sites in ``rows`` and the
    species in ``cols``. ``A2``: all sites' covariances reshaped (n, d * d), when at hand."""
    M = fixed_part(prob, P, rows, cols)
    d = prob.d
    if d:
        th = P.theta[cols]
        M += P.a[rows] @ th.T
        th2 = (th[:, :, None] * th[:, None, :]).reshape(th.shape[0], d * d)
        if A2 is None:
            L = P.L[rows]
            A2 = (L @ np.swapaxes(L, 1, 2)).reshape(-1, d * d)
        else:
            A2 = A2[rows]
        V = A2 @ th2.T
        np.maximum(V, 0.0, out=V)
    else:
        V = np.zeros_like(M)
    if prob.row_effect == "random":
        V += np.exp(2.0 * P.log_rho[rows])[:, None]
    return M, V


def kl_terms(prob, P):
    """Per-site KL of the variational posteriors from their priors, shape (n,)."""
    kl = np.zeros(prob.n)
    if prob.d:
        diagL = np.diagonal(P.L, axis1=1, axis2=2)
        kl += 0.5 * ((P.L ** 2).sum(axis=(1, 2)) + (P.a ** 2).sum(1) - prob.d) - np.log(diagL).sum(1)
    if prob.row_effect == "random":
        s2 = np.exp(2.0 * P.log_sigma)
        rho2 = np.exp(2.0 * P.log_rho)
        kl += 0.5 * (rho2 + P.alpha ** 2) / s2 - 0.5 - (P.log_rho - P.log_sigma)
    return kl


_CHUNK_CELLS = 1_000_000
CACHE_KEY = "_ell_cache"     # in Problem.info while a fit runs; removed at its end


def cell_eval(prob, P, order=1, clip=True):
    """Weighted ELL derivatives and the ELBO's per-site and per-species sums at P.

    Returns a dict: Gm, Gv as (n, m) arrays (Gv clipped at 0 from above when
    ``clip``, as Newton steps want it); "gs", the per-species sum over sites of
    the weighted derivative in the dispersion (shape (m,) or (m, q); (1, q), summed
    over species too, when the dispersion is shared), and "gss", that of the second
    derivative ((m,), (m, q, q) or (1, q, q)) when ``order`` is 2 (None without a
    dispersion); and the sums "site" (n,: ell minus KL) and "species"
    (m,). Sites are taken in chunks of about a million cells, so the family's
    temporaries stay small.
    """
    n, m = prob.n, prob.m
    disp = prob.family.has_dispersion
    vec = prob.s_shape if disp else None
    mat = vec if (not disp or len(vec) == 1) else vec + vec[-1:]
    out = {"Gm": np.empty((n, m)), "Gv": np.empty((n, m)), "clip": clip,
           "gs": np.zeros(vec) if disp else None,
           "gss": np.zeros(mat) if disp and order >= 2 else None,
           "site": np.empty(n), "species": np.zeros(m), "clipped": False}
    step = max(1, _CHUNK_CELLS // max(m, 1))
    for start in range(0, n, step):
        _eval_rows(prob, P, slice(start, min(n, start + step)), order, out)
    out["site"] -= kl_terms(prob, P)
    penalty.add_to_cells(prob, P, out["site"], out["species"])      # penalty (prior_sd)
    return out


def _cache(prob, rows):
    """The family's per-chunk cache of y-only terms (families that accept one), as kwargs."""
    if not getattr(prob.family, "accepts_cache", False):
        return {}
    store = prob.info.setdefault(CACHE_KEY, {})
    return {"cache": store.setdefault((rows.start, rows.stop), {})}


def _eval_rows(prob, P, rows, order, out):
    """Fill ``out`` for the sites in ``rows`` (one chunk of cell_eval)."""
    with np.errstate(over="ignore", invalid="ignore"):   # trial points may be wild:
        M, V = moments(prob, P, rows)                     # non-finite sums are rejected
        trials = None if prob.trials is None else prob.trials[rows]
        e = prob.family.ell(prob.Y[rows], M, V, P.s, trials, order=order, **_cache(prob, rows))
    W = prob.W[rows]
    val = np.asarray(e.value) * W
    out["site"][rows] = val.sum(1)
    out["species"] += val.sum(0)
    np.multiply(e.d_m, W, out=out["Gm"][rows])
    gv = out["Gv"][rows]
    np.multiply(e.d_v, W, out=gv)
    if out["clip"]:
        if not out["clipped"] and (gv > 0.0).any():
            out["clipped"] = True       # Gv is then not the gradient's (see ``gradient_from``)
        np.minimum(gv, 0.0, out=gv)
    if out["gs"] is not None:     # sums over sites: all the gradient and dispersion step need
        out["gs"] += species_sum(prob, np.einsum("ij,ij...->j...", W, e.d_s))
    if out["gss"] is not None:
        out["gss"] += species_sum(prob, np.einsum("ij,ij...->j...", W, e.d_ss))


def species_sum(prob, x):
    """Per-species dispersion sums (m, ...) as the dispersion's shape: summed over species
    when one dispersion vector is shared by all of them (then (1, ...))."""
    return x.sum(axis=0, keepdims=True) if prob.family.shared_dispersion else x


def evaluate(prob, P, grad=True):
    """ELBO at P, with its gradient in natural coordinates when ``grad``.

    With ``grad`` the cells are evaluated in chunks (``cell_eval``) and M, V are
    not kept; without, M and V (n, m) are returned for callers that need them.
    """
    if grad:
        ce = cell_eval(prob, P, clip=False)
        ev = Evaluation(float(ce["site"].sum()), ce["site"], None, None, ce["Gm"], ce["Gv"],
                        ce["gs"])
        ev.grad = gradient(prob, P, ev)
        return ev
    M, V = moments(prob, P)
    e = prob.family.ell(prob.Y, M, V, P.s, prob.trials)
    W = prob.W
    site_terms = (W * e.value).sum(1) - kl_terms(prob, P)
    penalty.add_to_cells(prob, P, site_terms)                       # penalty (prior_sd)
    Gm, Gv = W * e.d_m, W * e.d_v
    gs = None if e.d_s is None else species_sum(prob, weighted(W, e.d_s).sum(0))
    return Evaluation(float(site_terms.sum()), site_terms, M, V, Gm, Gv, gs)


def gradient_from(prob, P, ce):
    """The ELBO's gradient from a ``cell_eval`` result at P, or None where Gv was clipped."""
    if ce.get("clipped"):
        return None
    ev = Evaluation(float(ce["site"].sum()), ce["site"], None, None, ce["Gm"], ce["Gv"], ce["gs"])
    return gradient(prob, P, ev)


def gradient(prob, P, ev):
    """Analytic gradient of the ELBO (natural coordinates, full L and theta)."""
    n, m, d = prob.n, prob.m, prob.d
    Gm, Gv = ev.Gm, ev.Gv
    g = Params(beta0=Gm.sum(0), B=Gm.T @ prob.X if prob.p else np.zeros((m, 0)),
               theta=np.zeros((m, d)), a=np.zeros((n, d)), L=np.zeros((n, d, d)))
    if d:
        A = P.A
        th2 = (P.theta[:, :, None] * P.theta[:, None, :]).reshape(m, d * d)
        dA = (Gv @ th2).reshape(n, d, d)                       # sum_j Gv theta theta'
        Q = (Gv.T @ A.reshape(n, d * d)).reshape(m, d, d)      # sum_i Gv A_i
        g.theta = Gm.T @ P.a + 2.0 * np.einsum("jkl,jl->jk", Q, P.theta)
        g.theta = np.tril(g.theta)
        g.a = Gm @ P.theta - P.a
        gL = 2.0 * dA @ P.L - P.L
        idx = np.arange(d)
        gL[:, idx, idx] += 1.0 / P.L[:, idx, idx]
        g.L = np.tril(gL)
    if ev.gs is not None:
        g.s = ev.gs
    if prob.row_effect == "fixed":
        g.alpha = Gm.sum(1)
    elif prob.row_effect == "random":
        s2 = np.exp(2.0 * P.log_sigma)
        rho2 = np.exp(2.0 * P.log_rho)
        g.alpha = Gm.sum(1) - P.alpha / s2
        g.log_rho = 2.0 * rho2 * Gv.sum(1) - rho2 / s2 + 1.0
        g.log_sigma = float(((rho2 + P.alpha ** 2) / s2 - 1.0).sum())
    penalty.add_gradient(prob, P, g)                                # penalty (prior_sd)
    return g
