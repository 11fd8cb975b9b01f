"""Poisson with log link: the one family with a fully closed-form ell."""
import numpy as np
from scipy import special

from .base import ELL, Family, _check_nonneg_int


class Poisson(Family):
    name = "poisson"
    links = ("log",)
    default_link = "log"
    discrete = True

    def ell(self, y, m, v, s=None, trials=None, order=1):
        mu = np.exp(m + 0.5 * v)
        val = y * m - mu - special.gammaln(y + 1.0)
        return ELL(val, y - mu, -0.5 * mu)

    def check_y(self, y, trials=None):
        _check_nonneg_int(y, self.name)

    def loglik(self, y, eta, s=None, trials=None):
        return y * eta - np.exp(eta) - special.gammaln(y + 1.0)

    def mean(self, eta, trials=None, s=None):
        return np.exp(eta)

    def variance(self, mu, s=None, trials=None):
        return mu

    def cdf(self, y, eta, s=None, trials=None):
        from scipy import stats
        return stats.poisson.cdf(y, np.exp(eta))

    def sample(self, eta, s=None, trials=None, rng=None):
        rng = np.random.default_rng(rng)
        return rng.poisson(np.exp(eta)).astype(float)
