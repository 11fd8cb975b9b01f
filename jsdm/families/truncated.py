"""Zero-truncated counts (y >= 1): the abundance part of a hurdle model.

    truncated_poisson:  log f = y eta - e^eta - lgamma(y + 1) - L(eta),   L = log(1 - exp(-e^eta))
    truncated_nb:       log f = log NB2(y | eta, phi) - L_NB(eta),        L_NB = log(1 - P_NB(0))

with P_NB(0) = exp(-T), T = r softplus(eta + s), r = 1 / phi, s = log phi.

Under eta ~ N(m, v): the Poisson part is closed form and E[L], E[L'], E[L'']
are the complementary log-log kernels of ``_numerics.cloglog_normal`` (L is the
cloglog log-probability); the NB part is NB2's exact ell, and L_NB (which does
not depend on y: one set of node values per cell) is integrated by Hermite
rules binned by the variance and the composite rule for wide normals. With
q = 1 / expm1(T), T' = r expit(x), T'' = T' expit(-x), x = eta + s,
T_s = T' - T, T_ss = T - 2 T' + T'' (all computed as ratios to 1 - e^-T, finite as T -> 0):

    L_NB' = T' q,   L_NB'' = T'' q - T'^2 q (1 + q),
    d L_NB / ds = T_s q,   d2 L_NB / ds2 = T_ss q - T_s^2 q (1 + q).

These families are also what a hurdle model with its own linear predictor for
presence needs: see ``jsdm.families.hurdle.two_part``.
"""
import numpy as np
from scipy import special, stats

from .._numerics import (binned_expectation, cloglog_normal, gh_rule, log1pexp,
                         uniform_expectation)
from ..exceptions import JSDMError
from .base import ELL, Family
from .negative_binomial import NegativeBinomial

_NB = NegativeBinomial()


def check_positive_counts(y, name):
    """Whole numbers >= 1 (NaN allowed), else a JSDMError naming the bad values."""
    yy = np.asarray(y, dtype=float)
    ok = np.isnan(yy) | ((yy >= 1) & (np.floor(yy) == yy) & np.isfinite(yy))
    if not ok.all():
        bad = np.unique(yy[~ok])[:5]
        raise JSDMError(
            f"family {name!r} needs whole-number counts of at least 1 (zero-truncated); found "
            f"{bad.tolist()}. Zeros belong to the presence part: use a hurdle family "
            "('hurdle_poisson', 'hurdle_nb'), or set the zeros to NaN (missing) for the "
            "abundance part of a two-part model (jsdm.families.hurdle.two_part).")


def invert_increasing(fun, target, lo=-50.0, hi=50.0, n_iter=80):
    """x with fun(x) = target for an increasing fun, by bisection on [lo, hi] (vectorised)."""
    target = np.asarray(target, dtype=float)
    a, b = np.full(target.shape, lo), np.full(target.shape, hi)
    for _ in range(n_iter):
        mid = 0.5 * (a + b)
        up = fun(mid) < target
        a, b = np.where(up, mid, a), np.where(up, b, mid)
    return 0.5 * (a + b)


def _nb_zero_nodes(second):
    """L_NB, L', L'', L_s (and L_ss) at nodes u; s = log phi, r = 1 / phi."""
    def fun(u, s, r):
        x = np.clip(u + s, -700.0, 700.0)
        sig = special.expit(x)
        T = r * log1pexp(x)
        T1 = r * sig
        T2 = T1 * (1.0 - sig)
        e = np.exp(-T)
        pos = -np.expm1(-np.maximum(T, 1e-300))          # 1 - e^-T, accurate for small T
        # q = 1 / expm1(T) = e / pos and q (1 + q) = e / pos^2, taken as ratios to pos
        a1, a2, a_s = T1 / pos, T2 / pos, (T1 - T) / pos
        out = [np.log(pos), a1 * e, (a2 - a1 * a1) * e, a_s * e]
        if second:
            out.append(((T - 2.0 * T1 + T2) / pos - a_s * a_s) * e)
        return out
    return fun


_TABLE = ((0.01, 8), (0.05, 12), (0.1, 16), (0.2, 24), (0.3, 32), (0.5, 48))   # as cloglog: poles pi/2 away


def _bins(second):
    fun = _nb_zero_nodes(second)
    point = ((0.0, lambda mu, sd, s, r: fun(np.array(mu, dtype=float), s, r)),)
    wide = ((np.inf, lambda mu, sd, s, r: uniform_expectation(fun, mu, sd, (s, r))),)
    return point + tuple((v, gh_rule(fun, k)) for v, k in _TABLE) + wide


_NB_BINS = {False: _bins(False), True: _bins(True)}


def nb_zero_expectations(m, v, s, order=1):
    """E[(L_NB, L', L'', L_s[, L_ss])] over eta ~ N(m, v), arrays of one shape."""
    m, v, s = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (m, v, s)))
    second = order >= 2
    return binned_expectation(m, v, _NB_BINS[second], 5 if second else 4, extra=(s, np.exp(-s)))


class TruncatedPoisson(Family):
    """Zero-truncated Poisson counts (y >= 1), log link; e^eta is the untruncated mean."""

    name = "truncated_poisson"
    aliases = ("zero_truncated_poisson", "ztpoisson", "truncpoisson", "ztp")
    links = ("log",)
    default_link = "log"
    discrete = True
    missing_fill = 1.0          # zero is not a valid response of a zero-truncated count
    mean_uses_dispersion = True        # E[y] = e^eta / (1 - exp(-e^eta)), not g^-1(eta)

    def ell(self, y, m, v, s=None, trials=None, order=1):
        """Exact E[log f(y | eta)], eta ~ N(m, v) (finite at y = 0, which has no mass)."""
        y, m, v = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (y, m, v)))
        mu = np.exp(np.minimum(m + 0.5 * v, 700.0))
        L, L1, L2 = cloglog_normal(m, v)
        val = y * m - mu - special.gammaln(y + 1.0) - L
        return ELL(val, y - mu - L1, -0.5 * (mu + L2))

    def check_y(self, y, trials=None):
        """Whole numbers >= 1 (NaN allowed)."""
        check_positive_counts(y, self.name)

    def loglik(self, y, eta, s=None, trials=None):
        """Exact log f(y | eta)."""
        y, eta = np.broadcast_arrays(np.asarray(y, dtype=float), np.asarray(eta, dtype=float))
        e = np.minimum(eta, 700.0)
        t = np.exp(e)
        L = np.where(e < -30.0, e - 0.5 * t, np.log(-np.expm1(-np.maximum(t, 1e-300))))
        return y * eta - t - special.gammaln(y + 1.0) - L

    def mean(self, eta, trials=None, s=None):
        """e^eta / (1 - exp(-e^eta))."""
        lam = np.exp(np.asarray(eta, dtype=float))
        return lam / -np.expm1(-lam)

    def variance(self, mu, s=None, trials=None):
        """Var of the truncated count with mean ``mu`` (> 1): lam (1 + lam) / (1 - e^-lam) - mu^2."""
        mu = np.asarray(mu, dtype=float)
        lam = np.exp(invert_increasing(lambda x: self.mean(x), mu))
        return lam * (1.0 + lam) / -np.expm1(-lam) - mu * mu

    def cdf(self, y, eta, s=None, trials=None):
        """P(Y <= y) = 1 - P_Pois(Y > y) / P_Pois(Y > 0) (0 below 1)."""
        lam = np.exp(np.asarray(eta, dtype=float))
        return np.where(np.asarray(y) < 1, 0.0, 1.0 - stats.poisson.sf(y, lam) / -np.expm1(-lam))

    def sample(self, eta, s=None, trials=None, rng=None):
        """Draws by inversion on the survival side (seeded by ``rng``)."""
        rng = np.random.default_rng(rng)
        lam = np.exp(np.asarray(eta, dtype=float))
        u = rng.random(lam.shape) * -np.expm1(-lam)
        return np.maximum(stats.poisson.isf(u, lam), 1.0)

    def start_intercept(self, y, w, trials=None):
        """log lam per species with the truncated mean equal to the mean of the observed counts."""
        ybar = _mean_positive(y, w)
        return invert_increasing(lambda x: self.mean(x), np.maximum(ybar, 1.0 + 1e-3))


class TruncatedNegativeBinomial(Family):
    """Zero-truncated NB2 counts (y >= 1), log link, species phi (Var_NB = mu + phi mu^2)."""

    name = "truncated_nb"
    aliases = ("zero_truncated_negative_binomial", "truncated_negative_binomial", "ztnb",
               "truncated_negbin")
    links = ("log",)
    default_link = "log"
    has_dispersion = True
    dispersion_name = "phi"
    discrete = True
    missing_fill = 1.0          # zero is not a valid response of a zero-truncated count
    mean_uses_dispersion = True
    default_dispersion = 0.5
    dispersion_floor_meaning = "indistinguishable from the zero-truncated Poisson (no over-dispersion)"

    def ell(self, y, m, v, s=None, trials=None, order=1):
        """Exact E[log f(y | eta)], eta ~ N(m, v) (finite at y = 0, which has no mass)."""
        y, m, v, s = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (y, m, v, s)))
        nb = _NB.ell(y, m, v, s, order=order)
        z = nb_zero_expectations(m, v, s, order)
        d_ss = None if order < 2 else nb.d_ss - z[4]
        return ELL(nb.value - z[0], nb.d_m - z[1], nb.d_v - 0.5 * z[2], nb.d_s - z[3], d_ss)

    def check_y(self, y, trials=None):
        """Whole numbers >= 1 (NaN allowed)."""
        check_positive_counts(y, self.name)

    def loglik(self, y, eta, s=None, trials=None):
        """Exact log f(y | eta)."""
        return self.ell(y, eta, np.zeros(np.shape(eta)), s).value

    def mean(self, eta, trials=None, s=None):
        """E[y] = mu / (1 - P_NB(0)); the NB mean e^eta when ``s`` is None."""
        mu = np.exp(np.asarray(eta, dtype=float))
        if s is None:
            return mu
        return mu / _nb_positive(eta, s)

    def variance(self, mu, s=None, trials=None):
        """Var of the truncated count with mean ``mu``."""
        mu = np.asarray(mu, dtype=float)
        s = np.broadcast_to(np.asarray(s, dtype=float), mu.shape)
        eta = invert_increasing(lambda x: self.mean(x, s=s), mu)
        lam = np.exp(eta)
        p1 = _nb_positive(eta, s)
        return (lam + np.exp(s) * lam * lam + lam * lam) / p1 - mu * mu

    def cdf(self, y, eta, s=None, trials=None):
        """P(Y <= y) = 1 - P_NB(Y > y) / P_NB(Y > 0) (0 below 1)."""
        d = _NB._scipy(eta, s)
        return np.where(np.asarray(y) < 1, 0.0, 1.0 - d.sf(y) / _nb_positive(eta, s))

    def sample(self, eta, s=None, trials=None, rng=None):
        """Draws by inversion on the survival side (seeded by ``rng``)."""
        rng = np.random.default_rng(rng)
        eta, s = np.broadcast_arrays(np.asarray(eta, dtype=float), np.asarray(s, dtype=float))
        u = rng.random(eta.shape) * _nb_positive(eta, s)
        return np.maximum(_NB._scipy(eta, s).isf(u), 1.0)

    def dispersion_start(self, y, mu):
        """NB moment estimate from the counts (``mu``: their untruncated mean e^eta)."""
        return _NB.dispersion_start(y, mu)

    def start_intercept(self, y, w, trials=None):
        """log of the mean observed count (the truncation is left to the fit)."""
        return np.log(np.maximum(_mean_positive(y, w), 1.0))


def _nb_positive(eta, s):
    """P_NB(Y > 0) = 1 - exp(-r softplus(eta + s))."""
    eta, s = np.broadcast_arrays(np.asarray(eta, dtype=float), np.asarray(s, dtype=float))
    return -np.expm1(-np.exp(-s) * log1pexp(eta + s))


def _mean_positive(y, w):
    """Per-species mean of the observed non-zero values (1 where there is none)."""
    y = np.asarray(y, dtype=float)
    keep = (np.asarray(w) > 0) & (y > 0)
    n = keep.sum(0)
    return np.where(n > 0, np.where(keep, y, 0.0).sum(0) / np.maximum(n, 1), 1.0)
