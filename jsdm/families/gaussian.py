"""Gaussian with identity link; dispersion = residual sd, s = log(sd).

Closed form under eta ~ N(m, v), with sd^2 = exp(2 s) and q = (y - m)^2 + v:

    ell  = -log(2 pi)/2 - s - q / (2 sd^2)
    d_m  = (y - m) / sd^2,      d_v = -1 / (2 sd^2)
    d_s  = -1 + q / sd^2,       d_ss = -2 q / sd^2
"""
import numpy as np
from scipy import special

from .._numerics import LOG_2PI
from ..exceptions import JSDMError
from .base import ELL, Family


class Gaussian(Family):
    """Normal responses, identity link, species residual sd."""

    name = "gaussian"
    aliases = ("normal",)
    links = ("identity",)
    default_link = "identity"
    has_dispersion = True
    dispersion_name = "sd"
    description = "a Gaussian distribution with species-specific residual standard deviation"
    default_dispersion = 1.0
    dispersion_is_response_sd = True
    dispersion_can_vanish = True

    def link_variance(self, dispersion, m, method=None):
        """sd_j^2 (identity link: the residual variance itself)."""
        return np.asarray(dispersion, dtype=float) ** 2

    def link_variance_derivative(self, dispersion, method=None):
        return 2.0 * np.asarray(dispersion, dtype=float)

    def informative_records(self, y, trials=None):
        """Every observed value informs a Gaussian species: None (no sparse-species check)."""
        return None

    def ell(self, y, m, v, s=None, trials=None, order=1):
        """Closed-form E[log f(y | eta)], eta ~ N(m, v), and derivatives."""
        s = np.asarray(s, dtype=float)
        prec = np.exp(-2.0 * s)
        r = np.asarray(y, dtype=float) - m
        q = r * r + v
        qp = q * prec
        val = -0.5 * LOG_2PI - s - 0.5 * qp
        d_v = np.zeros(np.shape(val)) - 0.5 * prec
        d_ss = -2.0 * qp if order >= 2 else None
        return ELL(val, r * prec, d_v, qp - 1.0, d_ss)

    def check_y(self, y, trials=None):
        """Any finite value (NaN allowed)."""
        yy = np.asarray(y, dtype=float)
        bad = np.isinf(yy)
        if bad.any():
            raise JSDMError(f"family 'gaussian' needs finite responses; found {np.unique(yy[bad]).tolist()}. "
                            "Replace infinite values by NaN (missing) or fix the data.")

    def loglik(self, y, eta, s=None, trials=None):
        """Normal log-density of y with mean eta and sd exp(s)."""
        s = np.asarray(s, dtype=float)
        z = (np.asarray(y, dtype=float) - eta) * np.exp(-s)
        return -0.5 * LOG_2PI - s - 0.5 * z * z

    def mean(self, eta, trials=None, s=None):
        """Identity: mu = eta."""
        return np.asarray(eta, dtype=float)

    def variance(self, mu, s=None, trials=None):
        """sd^2, whatever the mean."""
        return np.zeros(np.broadcast(mu, s).shape) + np.exp(2.0 * np.asarray(s, dtype=float))

    def cdf(self, y, eta, s=None, trials=None):
        """Phi((y - eta) / sd)."""
        return special.ndtr((np.asarray(y, dtype=float) - eta) * np.exp(-np.asarray(s, dtype=float)))

    def sample(self, eta, s=None, trials=None, rng=None):
        """Normal draws (seeded by ``rng``) shaped like eta."""
        rng = np.random.default_rng(rng)
        eta, sd = np.broadcast_arrays(np.asarray(eta, dtype=float), np.exp(np.asarray(s, dtype=float)))
        return eta + sd * rng.standard_normal(eta.shape)

    def dispersion_start(self, y, mu):
        """log of the root mean square residual per species (NaN cells skipped)."""
        y = np.asarray(y, dtype=float)
        res2 = (y - np.broadcast_to(mu, y.shape)) ** 2
        ok = ~np.isnan(res2)
        ms = np.where(ok, res2, 0.0).sum(0) / np.maximum(ok.sum(0), 1)
        return 0.5 * np.log(np.maximum(ms, 1e-12))

