"""Numerically stable building blocks shared by the families and the engine."""
from functools import lru_cache

import numpy as np
from scipy import special

LOG_2PI = float(np.log(2.0 * np.pi))


def log1pexp(x):
    """log(1 + exp(x)) without overflow (softplus)."""
    return np.logaddexp(0.0, x)


def expit(x):
    """Logistic function 1 / (1 + exp(-x)), stable for any x."""
    return special.expit(x)


def log_ndtr(x):
    """log Phi(x), stable in both tails."""
    return special.log_ndtr(x)


def mills_ratio(x):
    """phi(x) / Phi(x), stable for very negative x."""
    return np.exp(-0.5 * x * x - 0.5 * LOG_2PI - special.log_ndtr(x))


@lru_cache(maxsize=None)
def gauss_hermite(k):
    """Nodes and weights for E[f(Z)], Z ~ N(0, 1): sum_k w_k f(z_k).

    Returns read-only arrays ``(z, w)`` of length ``k`` with ``sum(w) == 1``
    (physicists' Hermite rule rescaled: z = sqrt(2) x, w = w_x / sqrt(pi)).
    """
    x, w = np.polynomial.hermite.hermgauss(int(k))
    z = np.sqrt(2.0) * x
    w = w / np.sqrt(np.pi)
    z.setflags(write=False)
    w.setflags(write=False)
    return z, w
