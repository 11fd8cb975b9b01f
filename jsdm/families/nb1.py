"""Negative binomial NB1 with log link: Var = mu (1 + phi), linear in the mean; s = log(phi).

NB1 is the NB with size r = mu / phi (varying with the mean) and fixed
p = 1 / (1 + phi). With r = exp(eta - s):

    log f = lgamma(y + r) - lgamma(r) - r softplus(s) - y softplus(-s) - lgamma(y + 1)

(log(1 + phi) = softplus(s), log(phi / (1 + phi)) = -softplus(-s)).

The term -r softplus(s) is a lognormal moment under eta ~ N(m, v): with
R = E[r] = exp(m - s + v / 2) its mean is -R softplus(s) (closed form; that is
all of ell at y = 0). The rest, g = lgamma(y + r) - lgamma(r) for y > 0, needs
quadrature; it grows only linearly in eta in both tails. With
D = digamma(y + r) - digamma(r), D1 = trigamma(y + r) - trigamma(r)
(``_numerics.digamma_diff``/``trigamma_diff``, accurate as r -> inf):

    g' = r D,   g'' = g' + r^2 D1,   g_s = -g',   g_ss = g''

and -y softplus(-s) adds y expit(-s) and -y expit(s) expit(-s) to d_s, d_ss.
g is analytic in eta within |Im eta| < pi, so Hermite rules binned by the
variance and the composite rule ``uniform_expectation`` for wide normals
integrate it to ~1e-10 (measured: tests/test_families_more.py).
"""
import numpy as np
from scipy import special, stats

from .._numerics import (binned_expectation, digamma_diff, gh_rule, lgamma_ratio, log1pexp,
                         trigamma, trigamma_diff, uniform_expectation)
from .base import ELL, Family, _check_nonneg_int

_TABLE = ((0.01, 8), (0.05, 12), (0.2, 16), (0.5, 24), (1.0, 32), (2.0, 48))


def _nodes(second):
    """g, g', g'', g_s (and g_ss when ``second``) at nodes u, for y > 0."""
    def fun(u, y, s):
        x = np.clip(u - s, -700.0, 700.0)
        r = np.exp(x)
        g = lgamma_ratio(y, r) + y * x
        g1, r2d1 = scaled_gamma_diffs(y, r)
        g2 = g1 + r2d1
        out = [g, g1, g2, -g1]
        if second:
            out.append(g2)
        return out
    return fun


def scaled_gamma_diffs(y, r):
    """r (digamma(y + r) - digamma(r)) and r^2 (trigamma(y + r) - trigamma(r)).

    For r < 1 through digamma(r) = digamma(r + 1) - 1/r and trigamma(r) =
    trigamma(r + 1) + 1/r^2 (finite as r -> 0: the limits are 1 and -1 for
    y > 0), else the differences that stay accurate as r -> inf. Both are 0 at y = 0.
    """
    y, r = np.broadcast_arrays(np.asarray(y, dtype=float), np.asarray(r, dtype=float))
    d1, d2 = np.zeros(y.shape), np.zeros(y.shape)
    small = (r < 1.0) & (y > 0)
    if small.any():
        ys, rs = y[small], r[small]
        d1[small] = rs * (special.digamma(ys + rs) - special.digamma(1.0 + rs)) + 1.0
        d2[small] = rs * rs * (trigamma(ys + rs) - trigamma(1.0 + rs)) - 1.0
    big = (r >= 1.0) & (y > 0)
    if big.any():
        yb, rb = y[big], r[big]
        d1[big] = rb * digamma_diff(yb, rb)
        d2[big] = rb * rb * trigamma_diff(yb, rb)
    return d1, d2


def _bins(second):
    fun = _nodes(second)
    point = ((0.0, lambda mu, sd, y, s: fun(np.array(mu, dtype=float), y, s)),)
    wide = ((np.inf, lambda mu, sd, y, s: uniform_expectation(fun, mu, sd, (y, s))),)
    return point + tuple((v, gh_rule(fun, k)) for v, k in _TABLE) + wide


_BINS = {False: _bins(False), True: _bins(True)}


class NegativeBinomial1(Family):
    """Negative binomial counts with variance linear in the mean (NB1), log link, species phi."""

    name = "nb1"
    aliases = ("negative_binomial_1", "nbinom1", "negbin1", "negative_binomial1")
    links = ("log",)
    default_link = "log"
    has_dispersion = True
    dispersion_name = "phi"
    discrete = True
    default_dispersion = 1.0
    dispersion_floor_meaning = "indistinguishable from Poisson (no over-dispersion)"

    def ell(self, y, m, v, s=None, trials=None, order=1):
        """Exact E[log f(y | eta)], eta ~ N(m, v), and derivatives (see module notes)."""
        y, m, v, s = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (y, m, v, s)))
        sp, ex = log1pexp(s), special.expit(s)
        R = np.exp(np.minimum(m - s + 0.5 * v, 700.0))
        val = -R * sp                                   # E[-r softplus(s)]: all of ell at y = 0
        d_m = val.copy()
        d_v = 0.5 * val
        d_s = -val - R * ex
        second = order >= 2
        d_ss = val + R * ex * (1.0 + ex) if second else None
        pos = np.nonzero(y > 0)
        if pos[0].size:
            yp, sq = y[pos], s[pos]
            res = binned_expectation(m[pos], v[pos], _BINS[second], 5 if second else 4, extra=(yp, sq))
            exp_ = special.expit(-sq)
            val[pos] += res[0] - yp * log1pexp(-sq) - special.gammaln(yp + 1.0)
            d_m[pos] += res[1]
            d_v[pos] += 0.5 * res[2]
            d_s[pos] += res[3] + yp * exp_
            if second:
                d_ss[pos] += res[4] - yp * ex[pos] * exp_
        return ELL(val, d_m, d_v, d_s, d_ss)

    def check_y(self, y, trials=None):
        """Counts must be non-negative whole numbers (NaN allowed)."""
        _check_nonneg_int(y, self.name)

    def loglik(self, y, eta, s=None, trials=None):
        """Exact log f(y | eta) for dispersion phi = exp(s)."""
        y, eta, s = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (y, eta, s)))
        x = np.clip(eta - s, -700.0, 700.0)
        r = np.exp(x)
        return (lgamma_ratio(y, r) + y * x - r * log1pexp(s) - y * log1pexp(-s)
                - special.gammaln(y + 1.0))

    def mean(self, eta, trials=None, s=None):
        """mu = exp(eta)."""
        return np.exp(eta)

    def variance(self, mu, s=None, trials=None):
        """mu (1 + phi)."""
        return mu * (1.0 + np.exp(s))

    def cdf(self, y, eta, s=None, trials=None):
        """P(Y <= y | eta)."""
        s = np.asarray(s, dtype=float)
        return stats.nbinom.cdf(y, np.exp(np.asarray(eta, dtype=float) - s), special.expit(-s))

    def sample(self, eta, s=None, trials=None, rng=None):
        """Gamma-Poisson draws (seeded by ``rng``): lambda ~ Gamma(mu / phi, phi)."""
        rng = np.random.default_rng(rng)
        eta, s = np.broadcast_arrays(np.asarray(eta, dtype=float), np.asarray(s, dtype=float))
        lam = rng.gamma(np.exp(eta - s), np.exp(s))
        return rng.poisson(lam).astype(float)

    def dispersion_start(self, y, mu):
        """Moment estimate log(sum((y - mu)^2 - mu) / sum(mu)) per species, phi in [1e-3, 1e3]."""
        y = np.asarray(y, dtype=float)
        mu = np.broadcast_to(np.asarray(mu, dtype=float), y.shape)
        ok = ~np.isnan(y)
        num = np.where(ok, (np.where(ok, y, 0.0) - mu) ** 2 - mu, 0.0).sum(0)
        den = np.where(ok, mu, 0.0).sum(0)
        return np.log(np.clip(num / np.maximum(den, 1e-300), 1e-3, 1e3))
