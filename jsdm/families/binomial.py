"""Binomial: y successes out of n trials (n = 1 when ``trials`` is None).

    logit:   log f = y eta - n softplus(eta) + log C(n, y)
    probit:  log f = y log Phi(eta) + (n - y) log Phi(-eta) + log C(n, y)
    cloglog: log f = y log(1 - exp(-e^eta)) - (n - y) e^eta + log C(n, y)

Under eta ~ N(m, v) the linear and exponential parts are closed form
(E[eta] = m, E[e^eta] = e^(m + v/2)); the rest uses the y-free quadrature
kernels of ``jsdm._numerics`` (logit: ``logistic_normal``; probit:
``probit_normal`` evaluated at +m for the y part and at -m for the n - y part,
only where that part has a non-zero coefficient; cloglog: ``cloglog_normal``
only where y > 0).

Measured max abs errors of the kernels against adaptive quadrature, |m| <= 30:
logit < 4e-12, probit < 4e-10, cloglog < 1e-10, for v in [0, 20]
(see the accuracy notes in ``jsdm._numerics``).
"""
import numpy as np
from scipy import special, stats

from .._numerics import cloglog_normal, log1pexp, logistic_normal, probit_normal
from ..exceptions import JSDMError
from .base import ELL, Family


class Binomial(Family):
    """Binary or binomial responses with logit, probit or cloglog link."""

    name = "binomial"
    uses_trials = True
    aliases = ("bernoulli", "binary")
    links = ("logit", "probit", "cloglog")
    default_link = "logit"
    discrete = True
    description = "a binomial distribution"

    def informative_records(self, y, trials=None):
        """min(successes > 0, failures > 0) records per species: both must occur."""
        tr = 1.0 if trials is None else trials
        return np.minimum(np.nansum(y > 0, axis=0), np.nansum(y < tr, axis=0))

    @property
    def link_residual_variance(self):
        """Latent-scale residual variance: probit 1, logit pi^2/3, cloglog pi^2/6."""
        return {"probit": 1.0, "logit": np.pi ** 2 / 3.0, "cloglog": np.pi ** 2 / 6.0}[self.link]

    def start_intercept(self, y, w, trials=None):
        """The link of each species' success proportion (clipped to [0.02, 0.98])."""
        ybar = (w * y).sum(0) / np.maximum(w.sum(0), 1)
        nt = 1.0 if trials is None else (w * trials).sum(0) / np.maximum(w.sum(0), 1)
        pbar = np.clip(ybar / nt, 0.02, 0.98)
        if self.link == "logit":
            return special.logit(pbar)
        if self.link == "probit":
            return special.ndtri(pbar)
        return np.log(-np.log1p(-pbar))

    def ell(self, y, m, v, s=None, trials=None, order=1):
        """Exact E[log f(y | eta)], eta ~ N(m, v), with d_m = E[h'], d_v = E[h'']/2."""
        y = np.asarray(y, dtype=float)
        n = _trials(trials, y)
        m, v = np.broadcast_arrays(np.asarray(m, dtype=float), np.asarray(v, dtype=float))
        y, n = np.broadcast_to(y, m.shape), np.broadcast_to(n, m.shape)
        val, d_m, d_v = getattr(self, "_ell_" + self.link)(y, n, m, v)
        val += _log_choose(n, y)
        return ELL(val, d_m, d_v)

    def _ell_logit(self, y, n, m, v):
        f0, f1, g1, f2 = logistic_normal(m, v)
        return y * m - n * f0, y * g1 - (n - y) * f1, -0.5 * n * f2

    def _ell_probit(self, y, n, m, v):
        val, d_m, d_v = np.zeros(m.shape), np.zeros(m.shape), np.zeros(m.shape)
        for sign, c in ((1.0, y), (-1.0, n - y)):
            idx = np.nonzero(c > 0)
            if idx[0].size == 0:
                continue
            lp, lam, dlam = probit_normal(sign * m[idx], v[idx])
            cc = c[idx]
            val[idx] += cc * lp
            d_m[idx] += sign * cc * lam
            d_v[idx] += 0.5 * cc * dlam
        return val, d_m, d_v

    def _ell_cloglog(self, y, n, m, v):
        mu = np.exp(np.minimum(m + 0.5 * v, 700.0))
        fail = (n - y) * mu
        val, d_m, d_v = -fail, -fail, -0.5 * fail
        idx = np.nonzero(y > 0)
        if idx[0].size:
            L, g1, g2 = cloglog_normal(m[idx], v[idx])
            yy = y[idx]
            val[idx] += yy * L
            d_m[idx] += yy * g1
            d_v[idx] += 0.5 * yy * g2
        return val, d_m, d_v

    def check_y(self, y, trials=None):
        """0 <= y <= trials, whole numbers; trials positive whole numbers (NaN allowed in y)."""
        yy = np.asarray(y, dtype=float)
        n = _trials(trials, yy)
        if np.any(~np.isfinite(n) | (n < 1) | (np.floor(n) != n)):
            raise JSDMError("binomial trials must be positive whole numbers; "
                            f"found {np.unique(np.asarray(n)[~((n >= 1) & (np.floor(n) == n))])[:5].tolist()}")
        nb = np.broadcast_to(n, yy.shape)
        bad = ~np.isnan(yy) & ~((yy >= 0) & (yy <= nb) & (np.floor(yy) == yy))
        if bad.any():
            what = "0/1 values" if trials is None else "whole numbers between 0 and trials"
            raise JSDMError(
                f"family 'binomial' needs {what}; found {np.unique(yy[bad])[:5].tolist()}. "
                "Pass trials= for counts out of n, or use family='poisson' / 'negative_binomial' "
                "for unbounded counts.")

    def loglik(self, y, eta, s=None, trials=None):
        """Exact log f(y | eta)."""
        y = np.asarray(y, dtype=float)
        n = _trials(trials, y)
        eta = np.asarray(eta, dtype=float)
        if self.link == "logit":
            core = y * eta - n * log1pexp(eta)
        elif self.link == "probit":
            core = _xmul(y, special.log_ndtr(eta)) + _xmul(n - y, special.log_ndtr(-eta))
        else:
            core = _xmul(y, _log1mexp_exp(eta)) - (n - y) * np.exp(np.minimum(eta, 700.0))
        return core + _log_choose(n, y)

    def prob(self, eta):
        """Success probability g^-1(eta)."""
        eta = np.asarray(eta, dtype=float)
        if self.link == "logit":
            return special.expit(eta)
        if self.link == "probit":
            return special.ndtr(eta)
        return -np.expm1(-np.exp(np.minimum(eta, 700.0)))

    def mean(self, eta, trials=None, s=None):
        """n p: the expected number of successes."""
        p = self.prob(eta)
        return p if trials is None else np.asarray(trials, dtype=float) * p

    def variance(self, mu, s=None, trials=None):
        """n p (1 - p) written in the mean mu = n p."""
        n = 1.0 if trials is None else np.asarray(trials, dtype=float)
        return mu * (1.0 - mu / n)

    def cdf(self, y, eta, s=None, trials=None):
        """P(Y <= y | eta)."""
        return stats.binom.cdf(y, _trials(trials, y), self.prob(eta))

    def sample(self, eta, s=None, trials=None, rng=None):
        """Binomial draws (seeded by ``rng``), float array shaped like eta."""
        rng = np.random.default_rng(rng)
        p = self.prob(eta)
        n = np.broadcast_to(_trials(trials, p), np.shape(p)).astype(np.int64)
        return rng.binomial(n, p).astype(float)


def _trials(trials, y):
    return np.ones(()) if trials is None else np.asarray(trials, dtype=float)


def _log_choose(n, y):
    return special.gammaln(n + 1.0) - special.gammaln(y + 1.0) - special.gammaln(n - y + 1.0)


def _xmul(c, logp):
    """c * log p with 0 * (-inf) = 0."""
    return np.where(c == 0, 0.0, c * np.where(c == 0, 0.0, logp))


def _log1mexp_exp(eta):
    """log(1 - exp(-e^eta)), stable for any eta."""
    eta = np.minimum(np.asarray(eta, dtype=float), 700.0)
    t = np.exp(eta)
    return np.where(eta < -30.0, eta - 0.5 * t, np.log(-np.expm1(-np.maximum(t, 1e-300))))
