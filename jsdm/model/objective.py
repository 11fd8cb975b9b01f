"""The evidence lower bound (ELBO) and its analytic gradient.

    ELBO = sum_ij w_ij ell(y_ij, m_ij, v_ij) - sum over q blocks of KL
    m_ij = offset_ij + sum_t m^t_ij,   v_ij = sum of the q blocks' variances

The terms and their blocks are assembled by the problem's
:class:`~jsdm.model.terms.predictor.LinearPredictor` (``prob.predictor``); with the
classic terms m_ij = offset_ij + alpha_i + beta0_j + x_i' B_j + a_i' theta_j and
v_ij = U_j' Sigma_i U_j, U_j = (theta_j[, 1]) and Sigma_i the joint covariance of
the site's latent variables [and random row effect]. All work is batched as
matrix products over sites and species; the only Python loops are over the few
terms when a block is assembled, and inside quadrature families over nodes.
"""
import weakref
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import penalty
from .params import Params  # noqa: F401  (kept for callers importing it from here)


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
    """The mean of every term but the latent variables (offset, row effects, intercepts,
    slopes) for the sites in ``rows`` and species in ``cols``."""
    return prob.predictor.fixed_part(P, rows, cols)


def moments(prob, P, rows=slice(None), cols=slice(None), S2=None):
    """Means and variances of the linear predictor under q for the sites in ``rows`` and the
    species in ``cols``. ``S2``: all sites' joint site covariances reshaped (n, kr * kr),
    when at hand (``prob.predictor.site_cov2(P)``)."""
    return prob.predictor.moments(P, rows, cols, S2)


def kl_terms(prob, P):
    """Per-site KL of the variational posteriors from their priors, shape (n,)."""
    return prob.predictor.kl(P)


_CHUNK_CELLS = 1_000_000
# The family's per-chunk caches of y-only terms, per problem while a fit runs (the
# Problem itself is never written to; fit_problem releases its entry at the end).
_ELL_CACHES = weakref.WeakKeyDictionary()


def release_cache(prob):
    """Drop the family's cached y-only terms of ``prob`` (memory, not results)."""
    _ELL_CACHES.pop(prob, None)


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
    out["site"] -= prob.predictor.kl(P)
    if prob.predictor.ksr:                      # species random effects: their q's KL by species
        out["species"] -= prob.predictor.species_kl(P)
    penalty.add_to_cells(prob, P, out["site"], out["species"])      # penalty (prior_sd)
    return out


def _cache(prob, rows):
    """The family's per-chunk cache of y-only terms (families that accept one), as kwargs."""
    if not getattr(prob.family, "accepts_cache", False):
        return {}
    store = _ELL_CACHES.setdefault(prob, {})
    return {"cache": store.setdefault((rows.start, rows.stop), {})}


def _eval_rows(prob, P, rows, order, out):
    """Fill ``out`` for the sites in ``rows`` (one chunk of cell_eval)."""
    with np.errstate(over="ignore", invalid="ignore"):   # trial points may be wild:
        M, V = prob.predictor.moments(P, rows)           # non-finite sums are rejected
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
    g = prob.predictor.gradient(P, ev.Gm, ev.Gv, ev.gs)
    penalty.add_gradient(prob, P, g)                                # penalty (prior_sd)
    return g
