"""Exponential with log link (the gamma with shape 1): mean mu = e^eta, Var = mu^2, no dispersion.

    log f = -eta - y e^(-eta),   y >= 0

is linear in eta and e^(-eta), so under eta ~ N(m, v), with E = y e^(-m + v/2):

    ell = -m - E,   d_m = E - 1,   d_v = -E / 2          (closed form, exact).
"""
import numpy as np

from ..exceptions import JSDMError
from .base import ELL, Family


class Exponential(Family):
    """Non-negative continuous responses (waiting times, biomass) with Var = mu^2, log link."""

    name = "exponential"
    aliases = ("expon", "exp")
    links = ("log",)
    default_link = "log"

    def ell(self, y, m, v, s=None, trials=None, order=1):
        """Closed-form E[log f(y | eta)], eta ~ N(m, v), and derivatives."""
        y, m, v = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (y, m, v)))
        E = y * np.exp(np.minimum(-m + 0.5 * v, 700.0))
        return ELL(-m - E, E - 1.0, -0.5 * E)

    def check_y(self, y, trials=None):
        """Non-negative finite values (NaN allowed)."""
        yy = np.asarray(y, dtype=float)
        bad = ~np.isnan(yy) & ~((yy >= 0) & np.isfinite(yy))
        if bad.any():
            raise JSDMError(
                f"family 'exponential' needs non-negative values; found {np.unique(yy[bad])[:5].tolist()}. "
                "Use family='gaussian' for data that can be negative.")

    def loglik(self, y, eta, s=None, trials=None):
        """Exact log-density -eta - y e^(-eta)."""
        eta = np.asarray(eta, dtype=float)
        return -eta - np.asarray(y, dtype=float) * np.exp(np.minimum(-eta, 700.0))

    def mean(self, eta, trials=None, s=None):
        """mu = exp(eta)."""
        return np.exp(eta)

    def variance(self, mu, s=None, trials=None):
        """mu^2."""
        return np.asarray(mu, dtype=float) ** 2

    def cdf(self, y, eta, s=None, trials=None):
        """P(Y <= y) = 1 - exp(-y e^(-eta))."""
        y = np.maximum(np.asarray(y, dtype=float), 0.0)
        return -np.expm1(-y * np.exp(-np.asarray(eta, dtype=float)))

    def sample(self, eta, s=None, trials=None, rng=None):
        """Exponential draws (seeded by ``rng``) shaped like eta."""
        rng = np.random.default_rng(rng)
        return rng.exponential(np.exp(np.asarray(eta, dtype=float)))
