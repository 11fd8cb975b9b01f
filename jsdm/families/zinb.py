"""Zero-inflated negative binomial: y = 0 with probability pi, else NB2(e^eta, phi).

Two nuisance parameters per species, ``s = (logit pi, log phi)`` (an (m, 2)
array; ``dispersion(s)`` reports the columns pi and phi, Var_NB = mu + phi mu^2).
This is R gllvm's ZINB: a species-specific constant zero-inflation probability
(gllvm's ``params$phi``) and the NB dispersion (gllvm's ``params$ZINB.phi``);
the linear predictor drives the NB mean only.

With a = s_0, r = exp(-s_1), t(eta) = r softplus(eta + s_1) (so NB's P(0) = e^-t):

    y > 0:  log f = -softplus(a) + log NB(y | eta)            (closed form under q, as NB)
    y = 0:  log f = -softplus(a) + logaddexp(a, -t)

Only the y = 0 cells need quadrature. With w = expit(-(a + t)) (the chance that
a zero is an NB zero), t' = r expit(eta + s_1), t'' = r expit'(eta + s_1),
t_s = dt/ds_1 = t' - t, t_ss = t - 2 t' + t'':

    g = logaddexp(a, -t):  g' = -t' w,  g'' = -t'' w + t'^2 w (1 - w),
    g_a = 1 - w,  g_aa = w (1 - w),  g_s = -w t_s,  g_ss = -w t_ss + w (1 - w) t_s^2,
    g_as = w (1 - w) t_s.

g has a corner where t = -a when pi is small (a << 0), of width 1 / t' there
in eta; the zero-cell expectations use Hermite rules while the normal is
narrow on that scale and a composite Gauss-Legendre rule graded toward the
corner otherwise (as ZIP). Measured accuracy: tests/test_families_more.py.

``mean(eta, s=s)`` is (1 - pi) e^eta (the count mean e^eta without ``s``);
Var = mu + (phi + pi) / (1 - pi) mu^2 in terms of that mean.
"""
import numpy as np
from scipy import special

from .._numerics import (binned_expectation, blocked, gauss_hermite, graded_expectation,
                         log1pexp)
from .base import ELL, Family, LogitLogPair, _check_nonneg_int
from .negative_binomial import NegativeBinomial

_NB = NegativeBinomial()


def _zero_nodes(u, a, sp, r):
    """g, g', g'', g_a, g_aa, g_s, g_ss, g_as at nodes u (a = logit pi, sp = log phi, r = 1/phi)."""
    x = np.minimum(u, 700.0) + sp
    ex = np.exp(-np.abs(x))
    sig = np.where(x >= 0.0, 1.0 / (1.0 + ex), ex / (1.0 + ex))       # expit(x)
    t = r * (np.maximum(x, 0.0) + np.log1p(ex))
    t1 = r * sig
    t2 = t1 * (1.0 - sig)
    A = a + t
    e = np.exp(-np.abs(A))
    q = 1.0 / (1.0 + e)
    w = np.where(A >= 0.0, e * q, q)                                    # expit(-A)
    ww = e * q * q                                                      # w (1 - w)
    g = np.maximum(a, -t) + np.log1p(e)
    ts = t1 - t
    tss = t - 2.0 * t1 + t2
    return (g, -t1 * w, -t2 * w + t1 * t1 * ww, 1.0 - w, ww, -w * ts, -w * tss + ww * ts * ts,
            ww * ts)


_N_OUT = 8


def _scaled_gh(k):
    """Hermite rule in the corner-scaled coordinate: the cell's sd is sdx / ib."""
    z, w = gauss_hermite(k)

    def block(mu, sdx, ib, corner, a, sp, r):
        u = np.multiply.outer(z, sdx / ib)
        u += mu
        return tuple(np.dot(w, f) for f in _zero_nodes(u, a, sp, r))

    return blocked(block, k)


def _graded(mu, sdx, ib, corner, a, sp, r):
    return graded_expectation(_zero_nodes, mu, sdx / ib, corner, 1.0 / ib, extra=(a, sp, r), n_gl=10)


_BINS = ((0.0, lambda mu, sdx, ib, corner, a, sp, r: _zero_nodes(np.array(mu, dtype=float), a, sp, r)),) \
    + tuple((v, _scaled_gh(k)) for v, k in ((0.01, 8), (0.05, 12), (0.1, 20), (0.2, 32), (0.5, 48))) \
    + ((np.inf, _graded),)


def zero_expectations(m, v, a, sp):
    """E[(g, g', g'', g_a, g_aa, g_s, g_ss, g_as)] over eta ~ N(m, v) for the y = 0 cells (1-D).

    The corner of g sits where t(eta) = tb = max(-a, 1); its width in eta is
    1 / t'(eta_c). Rules are chosen on v ib^2 with ib = max(t'(eta_c), 1).
    """
    r = np.exp(-sp)
    tb = np.maximum(-a, 1.0)
    yb = tb / r                                        # softplus(x_c) = yb
    xc = np.where(yb > 30.0, yb, np.log(np.expm1(np.minimum(yb, 30.0))))
    corner = xc - sp
    ib = np.maximum(r * special.expit(xc), 1.0)
    return binned_expectation(m, v * ib * ib, _BINS, _N_OUT, extra=(ib, corner, a, sp, r))


class ZeroInflatedNegativeBinomial(LogitLogPair, Family):
    """Counts with excess zeros and overdispersion: species pi (zero inflation) and phi (NB2)."""

    name = "zinb"
    aliases = ("zero_inflated_negative_binomial", "zinegbin", "zi_nb", "zinbinom")
    links = ("log",)
    default_link = "log"
    has_dispersion = True
    dispersion_name = "zinb"
    discrete = True
    mean_uses_dispersion = True
    start_family = "negative_binomial"   # an extra start from its fit (model.fit.related_start)
    default_dispersion = (0.3, 0.5)        # pi, phi (for simulate_community)

    def ell(self, y, m, v, s=None, trials=None, order=1):
        """Exact E[log f(y | eta)], eta ~ N(m, v); d_s is (..., 2), d_ss (..., 2, 2)."""
        y, m, v = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (y, m, v)))
        a, sp = _split(s, y.shape)
        nb = _NB.ell(y, m, v, sp, order=order)
        pi = special.expit(a)
        val = nb.value - log1pexp(a)
        d_m, d_v = np.array(nb.d_m, dtype=float), np.array(nb.d_v, dtype=float)
        d_s = np.stack([np.broadcast_to(-pi, y.shape), nb.d_s], axis=-1)
        d_ss = None
        if order >= 2:
            d_ss = np.zeros(y.shape + (2, 2))
            d_ss[..., 0, 0] = -pi * (1.0 - pi)
            d_ss[..., 1, 1] = nb.d_ss
        zero = np.nonzero(y == 0)
        if zero[0].size:
            g = zero_expectations(m[zero], v[zero], a[zero], sp[zero])
            val[zero] = g[0] - log1pexp(a[zero])
            d_m[zero], d_v[zero] = g[1], 0.5 * g[2]
            d_s[zero + (0,)] = g[3] - pi[zero]
            d_s[zero + (1,)] = g[5]
            if d_ss is not None:
                d_ss[zero + (0, 0)] = g[4] - pi[zero] * (1.0 - pi[zero])
                d_ss[zero + (1, 1)] = g[6]
                d_ss[zero + (0, 1)] = d_ss[zero + (1, 0)] = g[7]
        return ELL(val, d_m, d_v, d_s, d_ss)

    def check_y(self, y, trials=None):
        """Counts must be non-negative whole numbers (NaN allowed)."""
        _check_nonneg_int(y, self.name)

    def n_dispersion(self, y, species=None):
        """Two per species: logit pi and log phi."""
        return 2

    def dispersion_labels(self, k):
        """Column names of ``dispersion``: the zero-inflation probability and the NB dispersion."""
        return ["pi", "phi"]

    def loglik(self, y, eta, s=None, trials=None):
        """Exact log f(y | eta)."""
        y, eta = np.broadcast_arrays(np.asarray(y, dtype=float), np.asarray(eta, dtype=float))
        a, sp = _split(s, y.shape)
        r = np.exp(-sp)
        zero = np.logaddexp(a, -r * log1pexp(eta + sp))
        return np.where(y == 0, zero, _NB.loglik(y, eta, sp)) - log1pexp(a)

    def mean(self, eta, trials=None, s=None):
        """(1 - pi) e^eta; the count mean e^eta when ``s`` is None."""
        lam = np.exp(eta)
        if s is None:
            return lam
        a, _ = _split(s, np.shape(lam))
        return lam * special.expit(-a)

    def variance(self, mu, s=None, trials=None):
        """mu + (phi + pi) / (1 - pi) mu^2, with mu = (1 - pi) e^eta the mean."""
        mu = np.asarray(mu, dtype=float)
        a, sp = _split(s, mu.shape)
        pi = special.expit(a)
        return mu + (np.exp(sp) + pi) / (1.0 - pi) * mu * mu

    def cdf(self, y, eta, s=None, trials=None):
        """P(Y <= y) = pi + (1 - pi) P_NB(Y <= y) for y >= 0."""
        y, eta = np.broadcast_arrays(np.asarray(y, dtype=float), np.asarray(eta, dtype=float))
        a, sp = _split(s, y.shape)
        pi = special.expit(a)
        return np.where(y < 0, 0.0, pi + (1.0 - pi) * _NB.cdf(y, eta, sp))

    def sample(self, eta, s=None, trials=None, rng=None):
        """Draws (seeded by ``rng``): structural zero with probability pi, else NB."""
        rng = np.random.default_rng(rng)
        eta = np.asarray(eta, dtype=float)
        a, sp = _split(s, eta.shape)
        counts = _NB.sample(eta, sp, rng=rng)
        return np.where(rng.random(eta.shape) < special.expit(a), 0.0, counts)


    def dispersion_start(self, y, mu, n_dispersion=None):
        """NB moment estimate of phi on the non-zero-inflated part, and pi from the excess zeros.

        pi = (P0 - P0_NB) / (1 - P0_NB) in [0.01, 0.9] with P0_NB the NB zero
        probability at the species mean; ``mu`` is the count mean e^eta.
        """
        y = np.asarray(y, dtype=float)
        mu = np.broadcast_to(np.asarray(mu, dtype=float), y.shape)
        ok = ~np.isnan(y)
        n = np.maximum(ok.sum(0), 1)
        sp = _NB.dispersion_start(y, mu)
        p0 = (ok & (y == 0)).sum(0) / n
        r = np.exp(-sp)
        p0_nb = np.where(ok, np.exp(-r * np.log1p(mu / r)), 0.0).sum(0) / n
        pi = (p0 - p0_nb) / np.maximum(1.0 - p0_nb, 1e-12)
        return np.stack([special.logit(np.clip(pi, 0.01, 0.9)), sp], axis=-1)


def _split(s, shape):
    """(a, s_1) broadcast to ``shape`` from s (..., 2)."""
    s = np.asarray(s, dtype=float)
    if s.shape[-1:] != (2,):
        from ..exceptions import JSDMError
        raise JSDMError(f"family 'zinb' needs s with a last axis of 2 (logit pi, log phi); got shape {s.shape}")
    return np.broadcast_to(s[..., 0], shape), np.broadcast_to(s[..., 1], shape)

