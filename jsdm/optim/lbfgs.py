"""Quasi-Newton minimisation with an analytic gradient, with a recorded history.

Knows nothing about GLLVMs: it minimises f(x) given f and its gradient.
"""
from dataclasses import dataclass, field
import time

import numpy as np
from scipy import optimize


@dataclass
class OptimResult:
    x: np.ndarray
    fun: float
    grad: np.ndarray
    n_iter: int
    n_eval: int
    success: bool
    message: str
    history: list = field(default_factory=list)   # (iteration, f, max|g|, seconds)


def minimize_lbfgs(fun_grad, x0, *, maxiter=5000, gtol=1e-6, ftol=1e-14, memory=20,
                   callback=None, bounds=None):
    """Minimise with L-BFGS-B; ``fun_grad(x) -> (f, g)``.

    ``bounds``: optional (lower, upper) arrays (use +-inf where unbounded).
    Stops when max |projected g| <= gtol or the relative reduction of f falls below ftol.
    ``callback(iteration, f, max_abs_grad)`` is called once per iteration.
    """
    t0 = time.perf_counter()
    hist, state = [], {"n_eval": 0, "last": None}

    def fg(x):
        f, g = fun_grad(x)
        state["n_eval"] += 1
        state["last"] = (float(f), g)
        return f, g

    def cb(xk):
        f, g = state["last"]
        gmax = float(np.max(np.abs(g))) if g.size else 0.0
        hist.append((len(hist) + 1, f, gmax, time.perf_counter() - t0))
        if callback is not None:
            callback(len(hist), f, gmax)

    if bounds is not None:
        bounds = optimize.Bounds(bounds[0], bounds[1])
    res = optimize.minimize(fg, x0, jac=True, method="L-BFGS-B", callback=cb, bounds=bounds,
                            options={"maxiter": maxiter, "maxcor": memory, "gtol": gtol,
                                     "ftol": ftol, "maxfun": 3 * maxiter, "maxls": 40})
    f, g = fun_grad(res.x)
    return OptimResult(res.x, float(f), g, int(res.nit), state["n_eval"] + 1, bool(res.success),
                       str(res.message), hist)
