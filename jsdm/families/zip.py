"""Zero-inflated Poisson: y = 0 with probability pi, else Poisson(e^eta); s = logit(pi).

With t = e^eta and pi = expit(s):

    y > 0:  log f = -softplus(s) + y eta - t - lgamma(y + 1)        (closed form in eta)
    y = 0:  log f = -softplus(s) + logaddexp(s, -t)

Only the y = 0 cells need quadrature. h is not concave in eta there (a corner
at t = -s when pi is small). With w = expit(-(s + t)) (the chance
that a zero is a Poisson zero), for y = 0:

    h' = -t w,   h'' = -t w + t^2 w (1 - w),   dh/ds = (1 - w) - pi,
    d2h/ds2 = w (1 - w) - pi (1 - pi)

and for y > 0: dh/ds = -pi, d2h/ds2 = -pi (1 - pi). The y = 0 expectations
(``zero_expectations``) use Hermite rules while the normal is narrow on the
corner's scale and a graded composite Gauss-Legendre rule otherwise (about
4 us per such cell); see ZIP_ACCURACY below for the measured errors.

``mean`` and ``variance`` take ``s``: E[y] = (1 - pi) e^eta and
Var = mu + pi / (1 - pi) mu^2 in terms of that mean; without ``s`` (the
engine's ``mean(eta, trials)``) ``mean`` returns the count mean e^eta.
"""
import numpy as np
from scipy import special, stats

from .._numerics import binned_expectation, blocked, gauss_hermite, graded_expectation, log1pexp
from .base import ELL, Family, _check_nonneg_int

# Measured max error (abs, or relative where |value| > 1) of the y = 0 expectations
# (value and derivatives) against adaptive quadrature with breakpoints at the corner,
# eta mean in [-30, 30], s in [-12, 8], v in [1e-4, 20]: value < 2e-12, h'' < 3e-10.
ZIP_ACCURACY = "value < 2e-12, derivatives < 3e-10 for v in [0, 20]"


def _zero_nodes(u, s):
    """logaddexp(s, -t), h', h'', (1 - w), w (1 - w) at nodes u for the y = 0 term."""
    np.minimum(u, 300.0, out=u)
    t = np.exp(u)
    a = s + t
    e = np.exp(-np.abs(a))
    lae = np.maximum(s, -t) + np.log1p(e)
    q = 1.0 / (1.0 + e)                        # expit(|a|)
    eq = e * q                                 # expit(-|a|)
    w = np.where(a >= 0.0, eq, q)              # expit(-a)
    ww = eq * q                                # w (1 - w)
    h1 = -t * w
    h2 = h1 + t * t * ww
    return lae, h1, h2, 1.0 - w, ww


def _scaled_gh(k):
    """Hermite rule on (mu, sd_x = sd * t_b): the bins are chosen on the corner's scale."""
    z, w = gauss_hermite(k)

    def block(mu, sdx, s, tb):
        u = np.multiply.outer(z, sdx / tb)
        u += mu
        return tuple(np.dot(w, f) for f in _zero_nodes(u, s))

    return blocked(block, k)


def _graded(mu, sdx, s, tb):
    return graded_expectation(_zero_nodes, mu, sdx / tb, np.log(tb), 1.0 / tb, extra=(s,), n_gl=10)


_ZIP_BINS = ((0.0, lambda mu, sdx, s, tb: _zero_nodes(np.array(mu, dtype=float), s)),) + tuple(
    (v, _scaled_gh(k)) for v, k in ((0.01, 8), (0.05, 12), (0.1, 20), (0.2, 32), (0.5, 48))) + (
    (np.inf, _graded),)


def zero_expectations(m, v, s):
    """E[(g, h', h'', 1 - w, w (1 - w))] over eta ~ N(m, v) for y = 0 (1-D arrays).

    g = logaddexp(s, -e^eta) has a corner at e^eta = -s of width 1/|s| when
    pi = expit(s) is small; rules are chosen on v_x = v t_b^2, t_b = max(-s, 1):
    Hermite while the normal is narrow on the corner's scale, else the graded
    composite rule.
    """
    tb = np.maximum(-s, 1.0)
    return binned_expectation(m, v * tb * tb, _ZIP_BINS, 5, extra=(s, tb))


class ZeroInflatedPoisson(Family):
    """Counts with excess zeros: species zero-inflation probability pi = expit(s)."""

    name = "zip"
    aliases = ("zero_inflated_poisson", "zipoisson")
    links = ("log",)
    default_link = "log"
    has_dispersion = True
    dispersion_name = "pi"
    default_dispersion = 0.3
    dispersion_floor_meaning = "no zero inflation: indistinguishable from Poisson"
    discrete = True
    mean_uses_dispersion = True
    start_family = "negative_binomial"   # an extra start from its fit (model.fit.related_start)

    def ell(self, y, m, v, s=None, trials=None, order=1):
        """Exact E[log f(y | eta)], eta ~ N(m, v); quadrature only in the y = 0 cells."""
        y = np.asarray(y, dtype=float)
        y, m, v, s = np.broadcast_arrays(y, np.asarray(m, dtype=float), np.asarray(v, dtype=float),
                                         np.asarray(s, dtype=float))
        pi = special.expit(s)
        mu = np.exp(np.minimum(m + 0.5 * v, 700.0))
        val = -log1pexp(s) + y * m - mu - special.gammaln(y + 1.0)
        d_m, d_v, d_s = y - mu, -0.5 * mu, -pi
        d_ss = -pi * (1.0 - pi) if order >= 2 else None
        zero = np.nonzero(y == 0)
        if zero[0].size:
            lae, h1, h2, nw, ww = zero_expectations(m[zero], v[zero], s[zero])
            val[zero] = -log1pexp(s[zero]) + lae
            d_m[zero], d_v[zero] = h1, 0.5 * h2
            d_s[zero] = nw - pi[zero]
            if d_ss is not None:
                d_ss[zero] += ww
        return ELL(val, d_m, d_v, d_s, d_ss)

    def check_y(self, y, trials=None):
        """Counts must be non-negative whole numbers (NaN allowed)."""
        _check_nonneg_int(y, self.name)

    def loglik(self, y, eta, s=None, trials=None):
        """Exact log f(y | eta) with zero-inflation expit(s)."""
        y = np.asarray(y, dtype=float)
        eta = np.asarray(eta, dtype=float)
        t = np.exp(np.minimum(eta, 700.0))
        pos = -log1pexp(s) + y * eta - t - special.gammaln(y + 1.0)
        zero = -log1pexp(s) + np.logaddexp(s, -t)
        return np.where(y == 0, zero, pos)

    def mean(self, eta, trials=None, s=None):
        """(1 - pi) e^eta; the count mean e^eta when ``s`` is None."""
        lam = np.exp(eta)
        return lam if s is None else lam * special.expit(-np.asarray(s, dtype=float))

    def variance(self, mu, s=None, trials=None):
        """mu + pi / (1 - pi) mu^2, with mu = (1 - pi) e^eta the mean."""
        return mu + np.exp(np.asarray(s, dtype=float)) * mu * mu

    def cdf(self, y, eta, s=None, trials=None):
        """P(Y <= y) = pi + (1 - pi) P_Poisson(Y <= y) for y >= 0."""
        pi = special.expit(np.asarray(s, dtype=float))
        return pi + (1.0 - pi) * stats.poisson.cdf(y, np.exp(eta))

    def sample(self, eta, s=None, trials=None, rng=None):
        """Draws (seeded by ``rng``): structural zero with probability pi, else Poisson."""
        rng = np.random.default_rng(rng)
        eta, s = np.broadcast_arrays(np.asarray(eta, dtype=float), np.asarray(s, dtype=float))
        counts = rng.poisson(np.exp(eta)).astype(float)
        return np.where(rng.random(eta.shape) < special.expit(s), 0.0, counts)

    def dispersion(self, s):
        """pi = expit(s)."""
        return None if s is None else special.expit(s)

    def dispersion_param(self, disp):
        """s = logit(pi)."""
        return special.logit(disp)

    def dispersion_start(self, y, mu):
        """logit of the excess-zero fraction per species, pi in [0.01, 0.9].

        ``mu`` is the count mean e^eta (what ``mean(eta)`` gives without ``s``).
        """
        y = np.asarray(y, dtype=float)
        mu = np.broadcast_to(np.asarray(mu, dtype=float), y.shape)
        ok = ~np.isnan(y)
        n = np.maximum(ok.sum(0), 1)
        p0 = (ok & (y == 0)).sum(0) / n
        p0_pois = np.where(ok, np.exp(-mu), 0.0).sum(0) / n
        pi = (p0 - p0_pois) / np.maximum(1.0 - p0_pois, 1e-12)
        return special.logit(np.clip(pi, 0.01, 0.9))
