"""Tweedie (compound Poisson-gamma, 1 < p < 2) with log link; Var = phi mu^p, s = log(phi).

    log f = (y mu^(1-p) / (1-p) - mu^(2-p) / (2-p)) / phi + log a(y, phi)

with log a = 0 at y = 0 (the atom P(Y = 0) = exp(-mu^(2-p) / (phi (2-p)))).
The eta-dependent part is two lognormal moments, so under eta ~ N(m, v), with
E_k = exp(k m + k^2 v / 2):

    ell = (y E_(1-p) / (1-p) - E_(2-p) / (2-p)) / phi + log a(y, phi)       (exact)

For y > 0, a(y, phi) = sum_j W_j / y (Dunn & Smyth 2005), with
beta = (2-p)/(p-1) and log W_j = j z - lgamma(j + 1) - lgamma(j beta),
z = beta log y - beta log(p-1) - (1 + beta) log phi - log(2-p). The terms peak
at j* = y^(2-p) / (phi (2-p)) with sd ~ sqrt(j* (p-1)); the sum runs over
j* +- 12 sd (a table of lgamma values makes each term two flops), or, once
the peak is wide and far from j = 1, is the integral over j (Euler-Maclaurin:
the difference is ~exp(-2 pi^2 sd^2)), done by Gauss-Hermite about j*. With
s = log phi, d log a / ds = -(1 + beta) E_W[j] and d2/ds2 = (1 + beta)^2 Var_W[j].

The power p is fixed per family instance (``Tweedie(power=1.6)``; default 1.5).
"""
from functools import lru_cache

import numpy as np
from scipy import special, stats

from .._numerics import gauss_hermite
from ..exceptions import JSDMError
from .base import ELL, Family


class Tweedie(Family):
    """Non-negative continuous data with exact zeros (biomass), log link, fixed power p."""

    name = "tweedie"
    aliases = ("compound_poisson", "cpg")
    links = ("log",)
    default_link = "log"
    has_dispersion = True
    dispersion_name = "phi"
    zero_atom = True
    default_dispersion = 1.0
    dispersion_can_vanish = True

    def __init__(self, link=None, power=1.5):
        super().__init__(link)
        power = float(power)
        if not 1.0 < power < 2.0:
            raise JSDMError(f"Tweedie power must lie strictly between 1 and 2; got {power}. "
                            "Use 'poisson' for p = 1 and 'gamma' for p = 2.")
        self.power = power

    def __repr__(self):
        return f"Tweedie(link={self.link!r}, power={self.power})"

    def ell(self, y, m, v, s=None, trials=None, order=1):
        """Exact E[log f(y | eta)], eta ~ N(m, v), and derivatives."""
        y, m, v, s = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (y, m, v, s)))
        k1, k2 = 1.0 - self.power, 2.0 - self.power
        inv_phi = np.exp(-s)
        e1 = y * np.exp(k1 * m + 0.5 * k1 * k1 * v) * inv_phi
        e2 = np.exp(k2 * m + 0.5 * k2 * k2 * v) * inv_phi
        core = e1 / k1 - e2 / k2
        log_a, ej, varj = self._series(y, s)
        c = 1.0 / (self.power - 1.0)                          # 1 + beta
        d_ss = core + c * c * varj if order >= 2 else None
        return ELL(core + log_a, e1 - e2, 0.5 * (k1 * e1 - k2 * e2), -core - c * ej, d_ss)

    def _series(self, y, s):
        """log a(y, phi), E_W[j], Var_W[j] (zeros where y = 0), shaped like y."""
        out = [np.zeros(y.shape) for _ in range(3)]
        pos = y > 0
        if pos.any():
            for o, r in zip(out, _log_a(y[pos], s[pos], self.power)):
                o[pos] = r
        return out

    def check_y(self, y, trials=None):
        """Non-negative finite values (NaN allowed)."""
        yy = np.asarray(y, dtype=float)
        bad = ~np.isnan(yy) & ~((yy >= 0) & np.isfinite(yy))
        if bad.any():
            raise JSDMError(f"family 'tweedie' needs non-negative values; found {np.unique(yy[bad])[:5].tolist()}. "
                            "Use family='gaussian' for data that can be negative.")

    def loglik(self, y, eta, s=None, trials=None):
        """Exact log-density (log P(Y = 0) at y = 0)."""
        return self.ell(y, eta, np.zeros(np.shape(eta)), s).value

    def mean(self, eta, trials=None, s=None):
        """mu = exp(eta)."""
        return np.exp(eta)

    def variance(self, mu, s=None, trials=None):
        """phi mu^p."""
        return np.exp(s) * np.asarray(mu, dtype=float) ** self.power

    def _poisson_gamma(self, eta, s):
        """(lambda, gamma shape per event, gamma scale) of the compound Poisson form."""
        p, mu, phi = self.power, np.exp(eta), np.exp(s)
        return mu ** (2 - p) / (phi * (2 - p)), (2 - p) / (p - 1), phi * (p - 1) * mu ** (p - 1)

    def cdf(self, y, eta, s=None, trials=None):
        """P(Y <= y): the Poisson(lambda) mixture of gamma CDFs, summed per cell over the
        Poisson counts within lambda +- 12 sqrt(lambda) (the rest weighs < 1e-30)."""
        y, eta, s = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (y, eta, s)))
        lam, shape, scale = self._poisson_gamma(eta, s)
        lo = np.maximum(1.0, np.floor(lam - 12.0 * np.sqrt(lam) - 5.0))
        size = np.maximum(16, 2 ** np.ceil(np.log2(24.0 * np.sqrt(lam) + 12.0)))
        total = np.exp(-lam)
        x = np.maximum(y, 0.0) / scale
        for n_terms in np.unique(size):
            sel = size == n_terms
            n = lo[sel] + np.arange(n_terms)[:, None]
            terms = stats.poisson.pmf(n, lam[sel]) * special.gammainc(n * shape, x[sel])
            total[sel] += terms.sum(0)
        return np.where(y < 0, 0.0, np.minimum(total, 1.0))

    def cdf_lower(self, y, eta, s=None, trials=None):
        """P(Y < y): 0 at the atom y = 0, else the CDF (Dunn-Smyth residuals randomise the atom)."""
        y = np.asarray(y, dtype=float)
        return np.where(y > 0, self.cdf(y, eta, s), 0.0)

    def sample(self, eta, s=None, trials=None, rng=None):
        """Compound Poisson-gamma draws (seeded by ``rng``) shaped like eta."""
        rng = np.random.default_rng(rng)
        eta, s = np.broadcast_arrays(np.asarray(eta, dtype=float), np.asarray(s, dtype=float))
        lam, shape, scale = self._poisson_gamma(eta, s)
        n = rng.poisson(lam)
        return np.where(n > 0, rng.gamma(np.maximum(n, 1) * shape, scale), 0.0)

    def dispersion_start(self, y, mu):
        """log of the mean of (y - mu)^2 / mu^p per species."""
        y = np.asarray(y, dtype=float)
        mu = np.broadcast_to(np.asarray(mu, dtype=float), y.shape)
        r2 = (y - mu) ** 2 / mu ** self.power
        ok = ~np.isnan(r2)
        phi = np.where(ok, r2, 0.0).sum(0) / np.maximum(ok.sum(0), 1)
        return np.log(np.clip(phi, 1e-4, 1e4))


# --- the series for a(y, phi) -------------------------------------------------------------

def _log_a(y, s, p):
    """log a, E_W[j], Var_W[j] for 1-D y > 0 and s = log phi."""
    beta = (2.0 - p) / (p - 1.0)
    ly = np.log(y)
    z = beta * ly - beta * np.log(p - 1.0) - (1.0 + beta) * s - np.log(2.0 - p)
    jstar = np.maximum(np.exp((2.0 - p) * ly - s - np.log(2.0 - p)), 1.0)
    sd = np.sqrt(jstar * (p - 1.0))
    lo = np.maximum(1.0, np.floor(jstar - 12.0 * sd))
    wide = (jstar - 12.0 * sd > 5.0) & (sd > 3.0)
    need = np.ceil(jstar + 12.0 * sd + 5.0) - lo + 1.0
    out = [np.empty(y.shape) for _ in range(3)]
    size = np.maximum(16, 2 ** np.ceil(np.log2(need)))        # power-of-two term counts
    groups = [(wide, None)] + [(~wide & (size == n), int(n)) for n in np.unique(size[~wide])]
    for sel, n_terms in groups:
        if not sel.any():
            continue
        if n_terms is None:
            res = _integral(z[sel], jstar[sel], sd[sel], beta)
        else:
            res = _direct(z[sel], lo[sel], n_terms, beta)
        for o, r in zip(out, res):
            o[sel] = r
    out[0] -= ly
    return out


@lru_cache(maxsize=8)
def _lgamma_table(beta, n):
    """lgamma(j + 1) + lgamma(j beta) for j = 0..n-1 (j = 0 unused)."""
    j = np.arange(n, dtype=float)
    t = special.gammaln(j + 1.0) + special.gammaln(np.maximum(j, 1.0) * beta)
    t.setflags(write=False)
    return t


def _direct(z, lo, n_terms, beta):
    """Sum W_j over j = lo .. lo + n_terms - 1 (log-sum-exp), with E[j] and Var[j]."""
    j = lo[None, :] + np.arange(n_terms, dtype=float)[:, None]
    table = _lgamma_table(beta, int(lo.max()) + n_terms)
    logw = j * z[None, :] - table[j.astype(np.int64)]
    return _moments(logw, j)


def _integral(z, jstar, sd, beta, k=32):
    """int W(j) dj by Gauss-Hermite about j*, for a peak that is wide and far from j = 1."""
    x, w = gauss_hermite(k)                      # E over N(0, 1): nodes z_k, weights w_k
    j = jstar[None, :] + sd[None, :] * x[:, None]
    logw = (j * z[None, :] - special.gammaln(j + 1.0) - special.gammaln(j * beta)
            + 0.5 * x[:, None] ** 2 + np.log(w)[:, None])
    log_sum, ej, varj = _moments(logw, j)
    return log_sum + np.log(sd) + 0.5 * np.log(2.0 * np.pi), ej, varj


def _moments(logw, j):
    top = logw.max(0)
    wts = np.exp(logw - top)
    tot = wts.sum(0)
    ej = (wts * j).sum(0) / tot
    varj = (wts * (j - ej) ** 2).sum(0) / tot
    return top + np.log(tot), ej, varj
