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

from .params import Params


@dataclass
class Evaluation:
    """ELBO pieces at one parameter value."""

    value: float
    site_terms: np.ndarray      # (n,) sum_j w ell - KL_i (- KL row_i)
    M: np.ndarray               # (n, m) means of eta under q
    V: np.ndarray               # (n, m) variances of eta under q
    Gm: np.ndarray              # (n, m) w * d ell / dm
    Gv: np.ndarray              # (n, m) w * d ell / dv
    Gs: Optional[np.ndarray]    # (n, m) or (n, m, q) w * d ell / ds, or None
    grad: Optional[Params] = None


def weighted(W, D):
    """W (n, m) times D (n, m, ...): the cell weights broadcast over D's trailing axes."""
    D = np.asarray(D)
    return (W.reshape(W.shape + (1,) * (D.ndim - W.ndim)) if D.ndim > W.ndim else W) * D


def fixed_part(prob, P, rows=slice(None)):
    """offset + alpha_i + beta0_j + x_i' B_j for the sites in ``rows``, shape (r, m)."""
    X = prob.X[rows]
    F = np.broadcast_to(P.beta0, (X.shape[0], prob.m)).copy()
    if prob.p:
        F += X @ P.B.T
    if prob.offset is not None:
        F += prob.offset[rows]
    if P.alpha is not None:
        F += P.alpha[rows, None]
    return F


def moments(prob, P, rows=slice(None)):
    """Means and variances (r, m) of the linear predictor under q, for the sites in ``rows``."""
    M = fixed_part(prob, P, rows)
    d = prob.d
    if d:
        M += P.a[rows] @ P.theta.T
        th2 = (P.theta[:, :, None] * P.theta[:, None, :]).reshape(prob.m, d * d)
        L = P.L[rows]
        V = (L @ np.swapaxes(L, 1, 2)).reshape(-1, d * d) @ th2.T
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


def evaluate(prob, P, grad=True):
    """ELBO at P, with its gradient in natural coordinates when ``grad``."""
    M, V = moments(prob, P)
    e = prob.family.ell(prob.Y, M, V, P.s, prob.trials)
    W = prob.W
    site_terms = (W * e.value).sum(1) - kl_terms(prob, P)
    Gm, Gv = W * e.d_m, W * e.d_v
    Gs = None if e.d_s is None else weighted(W, e.d_s)
    ev = Evaluation(float(site_terms.sum()), site_terms, M, V, Gm, Gv, Gs)
    if grad:
        ev.grad = gradient(prob, P, ev)
    return ev


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
    if ev.Gs is not None:
        g.s = ev.Gs.sum(0)
    if prob.row_effect == "fixed":
        g.alpha = Gm.sum(1)
    elif prob.row_effect == "random":
        s2 = np.exp(2.0 * P.log_sigma)
        rho2 = np.exp(2.0 * P.log_rho)
        g.alpha = Gm.sum(1) - P.alpha / s2
        g.log_rho = 2.0 * rho2 * Gv.sum(1) - rho2 / s2 + 1.0
        g.log_sigma = float(((rho2 + P.alpha ** 2) / s2 - 1.0).sum())
    return g
