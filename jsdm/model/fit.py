"""Fitting: starts, block Newton warm-up, L-BFGS polish, best of several starts."""
from dataclasses import dataclass, field
import time
import warnings

import numpy as np

from ..exceptions import ConvergenceWarning
from ..optim.lbfgs import minimize_lbfgs
from .objective import evaluate
from .params import Layout, Params
from .blocks import curvature_diagonal, squarem_ascent
from .newton import newton_ascent
from .start import glm_start, initial_params, lower_triangularise


@dataclass
class FitState:
    """What the optimiser found for one problem (the best start)."""

    params: Params
    value: float
    grad: np.ndarray          # packed gradient of the ELBO at params
    converged: bool
    n_iter: int
    n_eval: int
    message: str
    elapsed: float
    layout: Layout
    start_values: list = field(default_factory=list)   # final ELBO of each start
    history: list = field(default_factory=list)

    @property
    def max_grad(self):
        return float(np.max(np.abs(self.grad))) if self.grad.size else 0.0


def make_layout(prob):
    return Layout(prob.n, prob.m, prob.p, prob.d, prob.family.has_dispersion, prob.row_effect)


def neg_elbo(prob, layout):
    """f(x) = -ELBO and its packed gradient, for minimisers."""
    def fg(x):
        P = layout.unpack(x)
        ev = evaluate(prob, P)
        if not np.isfinite(ev.value):
            return np.inf, np.zeros_like(x)
        return -ev.value, -layout.pack_grad(ev.grad, P)
    return fg


def normalise(P):
    """Flip LV signs so the loadings' diagonal is positive (an exact symmetry)."""
    d = P.theta.shape[1]
    if d == 0:
        return P
    sign = np.sign(np.diag(P.theta[:d]))
    sign[sign == 0] = 1.0
    P = P.copy()
    P.theta = P.theta * sign
    P.a = P.a * sign
    P.L = P.L * sign[None, :, None]
    # keep L's diagonal positive: flip columns of L back (A = L L' is unchanged by column signs)
    P.L = P.L * sign[None, None, :]
    return P


def fit_problem(prob, *, n_init=1, seed=None, maxiter=5000, gtol=1e-3, verbose=False,
                start=None):
    """Fit the model; return the best :class:`FitState` over ``n_init`` starts."""
    t0 = time.perf_counter()
    layout = make_layout(prob)
    rng = np.random.default_rng(seed)
    glm = glm_start(prob)
    fg = neg_elbo(prob, layout)
    best, values = None, []
    for k in range(max(1, int(n_init)) if start is None else 1):
        P0 = start if start is not None else initial_params(prob, rng, jitter=0.0 if k == 0 else 0.5, glm=glm)
        cb = _printer(k, t0) if verbose else None
        P0, _ = squarem_ascent(prob, layout, P0, max_iter=10, rtol=1e-10)
        P0, _ = newton_ascent(prob, P0, max_iter=15, rtol=1e-11)
        scale = np.sqrt(curvature_diagonal(prob, layout, P0))
        x0 = layout.pack(P0)

        def fg_scaled(y):
            f, g = fg(x0 + y / scale)
            return f, g / scale

        res = minimize_lbfgs(fg_scaled, np.zeros_like(x0), maxiter=maxiter, gtol=gtol * 0.1, callback=cb)
        res.x = x0 + res.x / scale
        values.append(-res.fun)
        if best is None or -res.fun > -best.fun:
            best = res
    P = normalise(layout.unpack(best.x))
    ev = evaluate(prob, P)
    g = layout.pack_grad(ev.grad, P)
    gmax = float(np.max(np.abs(g))) if g.size else 0.0
    state = FitState(P, ev.value, g, gmax <= gtol, best.n_iter, best.n_eval, best.message,
                     time.perf_counter() - t0, layout, values, best.history)
    if not state.converged:
        warnings.warn(
            f"the fit did not converge: max |gradient| = {gmax:.3g} > {gtol:g} after "
            f"{best.n_iter} iterations ({best.message}). Try more starts (n_init=5), "
            "standardising covariates, fewer latent variables, or a larger maxiter.",
            ConvergenceWarning, stacklevel=3)
    return state


def _printer(k, t0):
    import sys

    def cb(it, f, gmax):
        if it % 50 == 0:
            print(f"[jsdm] start {k + 1} iter {it:5d}  ELBO {-f:.4f}  max|grad| {gmax:.2e}  "
                  f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return cb
