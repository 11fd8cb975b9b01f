"""Negative binomial (NB2) with log link: Var = mu + phi mu^2, size r = 1 / phi.

With s = log(phi) (so r = exp(-s)) the log-density splits as

    log f = lgamma_ratio(y, r) - lgamma(y + 1) + y eta - (y + r) softplus(eta + s)

where ``lgamma_ratio(y, r) = lgamma(y + r) - lgamma(r) - y log r``. Only the
softplus term depends non-linearly on eta, so under eta ~ N(m, v)

    ell = lgamma_ratio(y, r) - lgamma(y + 1) + y m - (y + r) F0,

with F0, F1, F2 the expectations of softplus, expit and expit' at U = eta + s ~
N(m + s, v) (``_numerics.logistic_normal``: y-free, so one set of quadrature
sums serves every count). Derivatives, with dpsi = digamma(y + r) - digamma(r)
and dpsi1 = trigamma(y + r) - trigamma(r):

    d_m  = y - (y + r) F1                      (computed as y G1 - r F1)
    d_v  = -(y + r) F2 / 2
    d_s  = y - r dpsi + r F0 - (y + r) F1
    d_ss = r dpsi + r^2 dpsi1 - r F0 + 2 r F1 - (y + r) F2

Accuracy: that of ``logistic_normal`` (max abs error in F0, F1, F2 below 4e-12
for v in [0, 20], |m + s| <= 30, measured against adaptive quadrature), times
(y + r) for the value and d_v.
"""
import numpy as np
from scipy import special, stats

from .._numerics import digamma_diff, lgamma_ratio, log1pexp, logistic_normal, trigamma_diff
from .base import ELL, Family, _check_nonneg_int


class NegativeBinomial(Family):
    """Negative binomial counts, log link, species dispersion phi (s = log phi)."""

    name = "negative_binomial"
    aliases = ("nb", "negbin", "nb2", "nbinom", "nbinom2", "negative.binomial")
    links = ("log",)
    default_link = "log"
    has_dispersion = True
    dispersion_name = "phi"
    dispersion_floor_meaning = "indistinguishable from Poisson (no over-dispersion)"
    discrete = True

    accepts_cache = True
    description = ("a negative binomial distribution with species-specific dispersion \u03c6_j "
                   "(variance \u03bc + \u03c6_j \u03bc\u00b2)")
    default_dispersion = 0.5
    observation_variance_formula = "log(1 + 1/\u03bc_j + \u03c6_j)"
    link_variance_methods = ("lognormal", "trigamma")

    def link_variance(self, dispersion, m, method=None):
        """log(1 + phi_j) ("lognormal", R gllvm's choice) or trigamma(1 / phi_j) ("trigamma":
        the exact variance of log g for the gamma mixing variable g, mean 1, variance phi_j)."""
        phi = np.asarray(dispersion, dtype=float)
        if (method or "lognormal") == "trigamma":
            return special.polygamma(1, 1.0 / phi)
        return np.log1p(phi)

    def link_variance_derivative(self, dispersion, method=None):
        phi = np.asarray(dispersion, dtype=float)
        if (method or "lognormal") == "trigamma":
            return -special.polygamma(2, 1.0 / phi) / phi ** 2
        return 1.0 / (1.0 + phi)

    def size(self, dispersion):
        """R's size = 1 / phi."""
        return 1.0 / np.asarray(dispersion, dtype=float)

    def ell(self, y, m, v, s=None, trials=None, order=1, cache=None):
        """Exact E[log f(y | eta)], eta ~ N(m, v), and its derivatives (see module notes).

        ``cache``: optional dict owned by the caller for one fixed ``y``; the
        y-and-s-only terms (log-gamma, digamma, trigamma differences) are kept
        there and reused while ``s`` is unchanged.
        """
        y = np.asarray(y, dtype=float)
        s = np.asarray(s, dtype=float)
        r = np.exp(-s)
        const, dpsi, tpsi = self._y_terms(y, s, r, order, cache)
        f0, f1, g1, f2 = logistic_normal(m + s, v)
        yr = y + r
        val = const + y * m - yr * f0
        d_m = y * g1 - r * f1
        d_s = d_m + r * (f0 - dpsi)
        d_ss = None
        if order >= 2:
            d_ss = r * dpsi + r * r * tpsi - r * f0 + 2.0 * r * f1 - yr * f2
        return ELL(val, d_m, -0.5 * yr * f2, d_s, d_ss)

    @staticmethod
    def _y_terms(y, s, r, order, cache):
        """(lgamma_ratio - lgamma(y + 1), digamma diff, trigamma diff or None), cached by s.

        With a cache and one dispersion per column, the special functions are
        evaluated once per distinct (count, species) pair rather than per cell
        (the pairs are indexed once, as y is fixed) and gathered; zero counts
        contribute 0 to all three.
        """
        if cache is not None and cache.get("s") is not None and np.array_equal(cache["s"], s):
            if order < 2 or cache.get("tpsi") is not None:
                return cache["const"], cache["dpsi"], cache.get("tpsi")
        pairs = _count_pairs(y, r, cache)
        if pairs is None:
            const = lgamma_ratio(y, r) - special.gammaln(y + 1.0)
            dpsi = digamma_diff(y, r)
            tpsi = trigamma_diff(y, r) if order >= 2 else None
        else:
            nz, inv, uy, ucol = pairs
            ur = np.asarray(r, dtype=float)[ucol]
            const = _scatter(lgamma_ratio(uy, ur) - special.gammaln(uy + 1.0), nz, inv)
            dpsi = _scatter(digamma_diff(uy, ur), nz, inv)
            tpsi = _scatter(trigamma_diff(uy, ur), nz, inv) if order >= 2 else None
        if cache is not None:
            keep = cache.get("pairs")
            cache.clear()
            cache.update(s=s.copy(), const=const, dpsi=dpsi, tpsi=tpsi, pairs=keep)
        return const, dpsi, tpsi

    def check_y(self, y, trials=None):
        """Counts must be non-negative whole numbers (NaN allowed)."""
        _check_nonneg_int(y, self.name)

    def loglik(self, y, eta, s=None, trials=None):
        """Exact log f(y | eta) for dispersion phi = exp(s)."""
        y = np.asarray(y, dtype=float)
        r = np.exp(-np.asarray(s, dtype=float))
        return (lgamma_ratio(y, r) - special.gammaln(y + 1.0) + y * eta
                - (y + r) * log1pexp(eta + s))

    def mean(self, eta, trials=None, s=None):
        """mu = exp(eta)."""
        return np.exp(eta)

    def variance(self, mu, s=None, trials=None):
        """mu + phi mu^2."""
        return mu + np.exp(s) * mu * mu

    def _scipy(self, eta, s):
        r = np.exp(-np.asarray(s, dtype=float))
        return stats.nbinom(r, special.expit(-(eta + s)))     # p = 1 / (1 + phi mu)

    def cdf(self, y, eta, s=None, trials=None):
        """P(Y <= y | eta)."""
        return self._scipy(eta, s).cdf(y)

    def sample(self, eta, s=None, trials=None, rng=None):
        """Gamma-Poisson draws (seeded by ``rng``), float array shaped like eta."""
        rng = np.random.default_rng(rng)
        eta, s = np.broadcast_arrays(np.asarray(eta, dtype=float), np.asarray(s, dtype=float))
        lam = rng.gamma(np.exp(-s), np.exp(eta + s))
        return rng.poisson(lam).astype(float)

    def dispersion_start(self, y, mu):
        """Moment estimate log(sum((y - mu)^2 - mu) / sum(mu^2)) per species, phi in [1e-3, 1e3]."""
        y = np.asarray(y, dtype=float)
        mu = np.broadcast_to(np.asarray(mu, dtype=float), y.shape)
        ok = ~np.isnan(y)
        num = np.where(ok, (np.where(ok, y, 0.0) - mu) ** 2 - mu, 0.0).sum(0)
        den = np.where(ok, mu * mu, 0.0).sum(0)
        phi = num / np.maximum(den, 1e-300)
        return np.log(np.clip(phi, 1e-3, 1e3))


def _count_pairs(y, r, cache):
    """(non-zero mask, pair index per non-zero cell, counts, columns) of the distinct
    (count, species) pairs of ``y`` (rows x species), kept in ``cache``; None when
    there is no cache, the dispersion is not one per column, or counts are not whole."""
    if cache is None or np.ndim(y) != 2 or np.shape(r) != (y.shape[1],):
        return None
    pairs = cache.get("pairs")
    if pairs is None:
        nz = y > 0
        vals = y[nz]
        if not np.all(np.floor(vals) == vals) or (vals.size and vals.max() > 2.0 ** 40):
            cache["pairs"] = False
            return None
        m = y.shape[1]
        key = vals.astype(np.int64) * m + np.nonzero(nz)[1]
        uniq, inv = np.unique(key, return_inverse=True)
        pairs = (nz, inv.astype(np.int32 if uniq.size < 2 ** 31 else np.int64),
                 (uniq // m).astype(float), uniq % m)
        cache["pairs"] = pairs
    return pairs if pairs is not False else None


def _scatter(u, nz, inv):
    """Cell values from per-pair values ``u``: 0 where y = 0."""
    out = np.zeros(nz.shape)
    out[nz] = u[inv]
    return out
