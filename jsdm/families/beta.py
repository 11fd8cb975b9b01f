"""Beta regression for proportions in (0, 1): logit link, precision phi, s = log(phi).

With p = expit(eta), q = expit(-eta) and l = logit(y):

    log f = lgamma(phi) - lgamma(phi p) - lgamma(phi q) + (phi p - 1) log y + (phi q - 1) log(1 - y)
          = h(eta; phi, l) + lgamma(phi) + phi log(1 - y) - log y - log(1 - y),
    h     = -lgamma(phi p) - lgamma(phi q) + phi l p.

Only h needs quadrature (its own y-dependence is the per-cell l); h is not
concave in eta in general (y near 0 or 1 with small phi). With
D = phi (l - digamma(phi p) + digamma(phi q)):

    h'  = p q D
    h'' = p q (1 - 2 p) D - (p q phi)^2 (trigamma(phi p) + trigamma(phi q))
    dh/dphi   = l p - p digamma(phi p) - q digamma(phi q)
    d2h/dphi2 = -p^2 trigamma(phi p) - q^2 trigamma(phi q)

(then chain through phi = e^s and add the y-only terms' derivatives
digamma(phi) + log(1 - y) and trigamma(phi)). Var = mu (1 - mu) / (1 + phi).

Quadrature: Hermite binned by v while v <= 2, then the composite rule
``uniform_expectation`` (h is analytic within pi of the real axis). Measured
max error against adaptive quadrature (value and derivatives, |m| <= 30,
phi in [0.5, 1e3], y in [1e-4, 0.9999], v in [0, 20]): see BETA_ACCURACY.
Each node costs two lgamma and two digamma (four more trigamma for order=2),
so this family is ~20x dearer per cell than the logit binomial.
"""
import numpy as np
from scipy import special, stats

from .._numerics import binned_expectation, gh_rule, trigamma, uniform_expectation
from ..exceptions import JSDMError
from .base import ELL, Family

BETA_ACCURACY = "< 1e-10 (relative where |value| > 1) for v in [0, 20]"


def _nodes(second):
    """h, h', h'', dh/dphi (and d2h/dphi2 when ``second``) at nodes u."""
    def fun(u, phi, ell):
        np.clip(u, -300.0, 300.0, out=u)          # keeps phi * expit(-|u|) and its trigamma finite
        p, q = special.expit(u), special.expit(-u)
        a, b = phi * p, phi * q
        pa, pb = special.digamma(a), special.digamma(b)
        ta, tb = trigamma(a), trigamma(b)
        pq = p * q
        D = phi * (ell - pa + pb)
        out = [ell * a - special.gammaln(a) - special.gammaln(b), pq * D,
               pq * (q - p) * D - (pq * phi) ** 2 * (ta + tb), ell * p - p * pa - q * pb]
        if second:
            out.append(-p * p * ta - q * q * tb)
        return out
    return fun


def _bins(second):
    fun = _nodes(second)
    point = ((0.0, lambda mu, sd, phi, ell: fun(np.array(mu, dtype=float), phi, ell)),)
    table = ((0.01, 6), (0.05, 10), (0.1, 12), (0.3, 20), (0.5, 28), (0.75, 36), (1.0, 48), (2.0, 64))
    wide = ((np.inf, lambda mu, sd, phi, ell: uniform_expectation(fun, mu, sd, (phi, ell))),)
    return point + tuple((v, gh_rule(fun, k)) for v, k in table) + wide


_BINS = {False: _bins(False), True: _bins(True)}


class Beta(Family):
    """Proportions strictly inside (0, 1) (cover, relative abundance), species precision phi."""

    name = "beta"
    aliases = ()
    links = ("logit",)
    default_link = "logit"
    has_dispersion = True
    dispersion_name = "phi"
    dispersion_ceiling_meaning = (
        "the precision phi at its upper bound: the species' values inside (0, 1) are reproduced "
        "exactly and the likelihood is unbounded (few distinct values, e.g. cover classes "
        "converted to proportions)")
    missing_fill = 0.5
    default_dispersion = 10.0
    dispersion_can_vanish = True

    def ell(self, y, m, v, s=None, trials=None, order=1):
        """Exact E[log f(y | eta)], eta ~ N(m, v), and derivatives."""
        y, m, v, s = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (y, m, v, s)))
        phi = np.exp(s)
        ell_y = special.logit(y)
        second = order >= 2
        res = binned_expectation(m, v, _BINS[second], 5 if second else 4, extra=(phi, ell_y))
        log1my = np.log1p(-y)
        val = res[0] + special.gammaln(phi) + phi * log1my - np.log(y) - log1my
        g_phi = res[3] + special.digamma(phi) + log1my
        d_ss = None
        if second:
            d_ss = phi * g_phi + phi * phi * (res[4] + trigamma(phi))
        return ELL(val, res[1], 0.5 * res[2], phi * g_phi, d_ss)

    def check_y(self, y, trials=None):
        """Values strictly between 0 and 1 (NaN allowed)."""
        yy = np.asarray(y, dtype=float)
        bad = ~np.isnan(yy) & ~((yy > 0) & (yy < 1))
        if bad.any():
            raise JSDMError(
                f"family 'beta' needs proportions strictly between 0 and 1; found {np.unique(yy[bad])[:5].tolist()}. "
                "Squeeze exact 0/1 values, e.g. (y (n - 1) + 0.5) / n, or use family='binomial' with trials.")

    def loglik(self, y, eta, s=None, trials=None):
        """Exact beta log-density with mean expit(eta) and precision exp(s)."""
        return self.ell(y, eta, np.zeros(np.shape(eta)), s).value

    def mean(self, eta, trials=None, s=None):
        """mu = expit(eta)."""
        return special.expit(eta)

    def variance(self, mu, s=None, trials=None):
        """mu (1 - mu) / (1 + phi)."""
        return mu * (1.0 - mu) / (1.0 + np.exp(s))

    def cdf(self, y, eta, s=None, trials=None):
        """P(Y <= y | eta)."""
        phi = np.exp(np.asarray(s, dtype=float))
        return stats.beta.cdf(y, phi * special.expit(eta), phi * special.expit(-np.asarray(eta)))

    def sample(self, eta, s=None, trials=None, rng=None):
        """Beta draws (seeded by ``rng``) shaped like eta, kept strictly inside (0, 1).

        With small shape parameters a draw can round to exactly 0 or 1 in double
        precision; those are moved to the nearest representable interior value.
        """
        rng = np.random.default_rng(rng)
        eta, s = np.broadcast_arrays(np.asarray(eta, dtype=float), np.asarray(s, dtype=float))
        phi = np.exp(s)
        draws = rng.beta(phi * special.expit(eta), phi * special.expit(-eta))
        return np.clip(draws, np.nextafter(0.0, 1.0), np.nextafter(1.0, 0.0))

    def dispersion_start(self, y, mu):
        """log(mean(mu (1 - mu)) / mean((y - mu)^2) - 1) per species, phi in [0.5, 1e4]."""
        y = np.asarray(y, dtype=float)
        mu = np.broadcast_to(np.asarray(mu, dtype=float), y.shape)
        ok = ~np.isnan(y)
        r2 = np.where(ok, (np.where(ok, y, 0.5) - mu) ** 2, 0.0).sum(0)
        bv = np.where(ok, mu * (1.0 - mu), 0.0).sum(0)
        return np.log(np.clip(bv / np.maximum(r2, 1e-300) - 1.0, 0.5, 1e4))
