"""Poisson with log link: the one family with a fully closed-form ell."""
import numpy as np
from scipy import special, stats

from .base import ELL, Family, _check_nonneg_int


class Poisson(Family):
    """Counts with log link; ell = y m - exp(m + v/2) - lgamma(y + 1) exactly."""

    name = "poisson"
    description = "a Poisson distribution"
    links = ("log",)
    default_link = "log"
    discrete = True

    def ell(self, y, m, v, s=None, trials=None, order=1):
        """Closed-form E[log f(y | eta)], eta ~ N(m, v): d_m = y - mu, d_v = -mu/2."""
        mu = np.exp(m + 0.5 * v)
        val = y * m - mu - special.gammaln(y + 1.0)
        return ELL(val, y - mu, -0.5 * mu)

    def check_y(self, y, trials=None):
        """Counts must be non-negative whole numbers (NaN allowed)."""
        _check_nonneg_int(y, self.name)

    def loglik(self, y, eta, s=None, trials=None):
        """Exact log f(y | eta)."""
        return y * eta - np.exp(eta) - special.gammaln(y + 1.0)

    def mean(self, eta, trials=None, s=None):
        """mu = exp(eta)."""
        return np.exp(eta)

    def variance(self, mu, s=None, trials=None):
        """Var = mu."""
        return mu

    def cdf(self, y, eta, s=None, trials=None):
        """P(Y <= y | eta)."""
        return stats.poisson.cdf(y, np.exp(eta))

    def sample(self, eta, s=None, trials=None, rng=None):
        """Poisson draws (seeded by ``rng``), float array shaped like eta."""
        rng = np.random.default_rng(rng)
        return rng.poisson(np.exp(eta)).astype(float)
