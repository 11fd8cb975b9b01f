"""Ordered beta regression (Kubinec 2023) for proportions with exact 0s and 1s (percent cover).

With cut points k_0 < k_1 on the scale of the linear predictor (logit link):

    P(y = 0) = 1 - expit(eta - k_0),   P(y = 1) = expit(eta - k_1),
    y in (0, 1): density (expit(eta - k_0) - expit(eta - k_1)) Beta(y; mu phi, (1 - mu) phi),
    mu = expit(eta).

So eta moves all three parts together: a species' chance of being absent,
its cover where present, and its chance of full cover. Nuisance parameters
per species s = (k_0, log(k_1 - k_0), log phi): s is (m, 3) and ``dispersion``
reports (cut_zero = k_0, cut_one = k_1, phi). Kubinec, R. (2023) "Ordered beta
regression: a parsimonious, well-fitting model for continuous data with lower
and upper bounds", Political Analysis 31, 519-536.

Under eta ~ N(m, v) everything but the beta density is closed form in the
logistic-normal kernels (``_numerics.logistic_normal`` at m - k_0 and m - k_1):

    y = 0:  ell = -E softplus(eta - k_0)
    y = 1:  ell = E[eta - k_1] - E softplus(eta - k_1)
    0 < y < 1:  log(expit(eta - k_0) - expit(eta - k_1))
              = eta - k_1 + log expm1(d) - softplus(eta - k_0) - softplus(eta - k_1),  d = k_1 - k_0,

plus the beta family's exact ell in the interior cells. With R = 1 / (1 - e^-d),
the interior term's derivatives in (k_0, k_1) are (-R + E expit(eta - k_0),
R - E expit(k_1 - eta)) and second derivatives -R (R - 1) - E expit'(.) on the
diagonal, R (R - 1) off it; the chain rule through k_1 = k_0 + e^(s_1) gives
the derivatives in s.
"""
import numpy as np
from scipy import special, stats

from .._numerics import log1pexp, logistic_normal
from ..exceptions import DataWarning, JSDMError
from .base import ELL, Family
from .beta import Beta

_BETA = Beta()


class OrderedBeta(Family):
    """Proportions in [0, 1] with point masses at 0 and 1 (cover), logit link."""

    name = "ordered_beta"
    aliases = ("ordbeta", "orderedbeta", "ordered_beta_regression", "zoib_ordered")
    links = ("logit",)
    default_link = "logit"
    has_dispersion = True
    dispersion_name = "ordered_beta"
    dispersion_ceiling_meaning = (
        "the precision phi at its upper bound: the species' values inside (0, 1) are reproduced "
        "exactly and the likelihood is unbounded (few distinct values, e.g. cover classes "
        "converted to proportions)")
    mean_uses_dispersion = True
    dispersion_positive = (False, False, True)      # cut points are locations; phi is positive
    default_dispersion = (-1.0, 1.0, 5.0)

    def ell(self, y, m, v, s=None, trials=None, order=1):
        """Exact E[log f(y | eta)], eta ~ N(m, v); d_s is (..., 3), d_ss (..., 3, 3)."""
        y, m, v = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (y, m, v)))
        k0, c, sp = _split(s, y.shape)
        dl = np.exp(c)
        k1 = k0 + dl
        f0, f1, g1_, f2 = logistic_normal(m - k0, v)       # E softplus, expit, expit(-), expit'
        F0, F1, G1, F2 = logistic_normal(m - k1, v)
        zero, one = y <= 0.0, y >= 1.0
        mid = ~(zero | one)
        em = -np.expm1(-dl)                                 # 1 - e^-d
        R = 1.0 / em
        RR = np.exp(-dl) / (em * em)                        # R (R - 1)
        val = np.where(zero, -f0, np.where(one, (m - k1) - F0,
                                           (m - k1) + dl + np.log(em) - f0 - F0))
        d_m = np.where(zero, -f1, np.where(one, G1, 1.0 - f1 - F1))
        d_v = -0.5 * np.where(zero, f2, np.where(one, F2, f2 + F2))
        t0 = np.where(zero, f1, np.where(one, 0.0, f1 - R))           # d/dk_0
        t1 = np.where(zero, 0.0, np.where(one, -G1, R - G1))          # d/dk_1
        t00 = np.where(zero, -f2, np.where(one, 0.0, -RR - f2))
        t11 = np.where(zero, 0.0, np.where(one, -F2, -RR - F2))
        t01 = np.where(mid, RR, 0.0)
        d_s = np.zeros(y.shape + (3,))
        d_s[..., 0] = t0 + t1
        d_s[..., 1] = dl * t1
        d_ss = None
        if order >= 2:
            d_ss = np.zeros(y.shape + (3, 3))
            d_ss[..., 0, 0] = t00 + 2.0 * t01 + t11
            d_ss[..., 0, 1] = d_ss[..., 1, 0] = dl * (t01 + t11)
            d_ss[..., 1, 1] = dl * dl * t11 + dl * t1
        inner = np.nonzero(mid)
        if inner[0].size:
            e = _BETA.ell(y[inner], m[inner], v[inner], sp[inner], order=order)
            val[inner] += e.value
            d_m[inner] += e.d_m
            d_v[inner] += e.d_v
            d_s[inner + (2,)] = e.d_s
            if d_ss is not None:
                d_ss[inner + (2, 2)] = e.d_ss
        return ELL(val, d_m, d_v, d_s, d_ss)

    # --- exact density and friends --------------------------------------------------------------
    def check_y(self, y, trials=None):
        """Values in [0, 1] (NaN allowed)."""
        yy = np.asarray(y, dtype=float)
        bad = ~np.isnan(yy) & ~((yy >= 0) & (yy <= 1))
        if bad.any():
            raise JSDMError(
                f"family 'ordered_beta' needs proportions between 0 and 1 (0 and 1 included); found "
                f"{np.unique(yy[bad])[:5].tolist()}. Divide percent cover by 100.")

    def n_dispersion(self, y, species=None):
        """3 per species (k_0, log gap, log phi); warns about species whose cut points or phi
        the data do not identify (no 0s, no 1s, or no values strictly inside)."""
        _warn_unused(y, species)
        return 3

    def dispersion_labels(self, k):
        """Column names of ``dispersion``."""
        return ["cut_zero", "cut_one", "phi"]

    def probs(self, eta, s):
        """(P(y = 0), P(0 < y < 1), P(y = 1)) given eta."""
        eta = np.asarray(eta, dtype=float)
        k0, c, _ = _split(s, eta.shape)
        k1 = k0 + np.exp(c)
        p0 = special.expit(k0 - eta)
        p1 = special.expit(eta - k1)
        return p0, 1.0 - p0 - p1, p1

    def loglik(self, y, eta, s=None, trials=None):
        """Exact log f(y | eta) (log-probabilities at 0 and 1, log-density inside)."""
        y, eta = np.broadcast_arrays(np.asarray(y, dtype=float), np.asarray(eta, dtype=float))
        k0, c, sp = _split(s, y.shape)
        dl = np.exp(c)
        k1 = k0 + dl
        mid = (eta - k1) + dl + np.log(-np.expm1(-dl)) - log1pexp(eta - k0) - log1pexp(eta - k1)
        yi = np.clip(y, 1e-300, 1.0 - 1e-16)
        phi = np.exp(sp)
        dens = stats.beta.logpdf(yi, phi * special.expit(eta), phi * special.expit(-eta))
        return np.where(y <= 0, -log1pexp(eta - k0),
                        np.where(y >= 1, -log1pexp(k1 - eta), mid + dens))

    def mean(self, eta, trials=None, s=None):
        """P(y = 1) + P(0 < y < 1) expit(eta); expit(eta) when ``s`` is None."""
        mu = special.expit(np.asarray(eta, dtype=float))
        if s is None:
            return mu
        _, pm, p1 = self.probs(eta, s)
        return p1 + pm * mu

    def variance(self, mu, s=None, trials=None):
        """Var[y] at the eta whose mean is ``mu`` (the mean increases with eta, given s):
        P1 + P_mid (m^2 + m (1 - m) / (1 + phi)) - mu^2 with m = expit(eta)."""
        from .truncated import invert_increasing

        mu = np.asarray(mu, dtype=float)
        s = np.broadcast_to(np.asarray(s, dtype=float), mu.shape + (3,))
        eta = invert_increasing(lambda e: self.mean(e, s=s), mu)
        _, pm, p1 = self.probs(eta, s)
        m, phi = special.expit(eta), np.exp(s[..., 2])
        return np.maximum(p1 + pm * (m * m + m * (1.0 - m) / (1.0 + phi)) - mu * mu, 0.0)

    def cdf(self, y, eta, s=None, trials=None):
        """P(Y <= y) = P0 + P_mid F_beta(y) for 0 <= y < 1, 1 at y = 1."""
        y, eta = np.broadcast_arrays(np.asarray(y, dtype=float), np.asarray(eta, dtype=float))
        p0, pm, _ = self.probs(eta, s)
        _, _, sp = _split(s, y.shape)
        phi = np.exp(sp)
        fb = stats.beta.cdf(np.clip(y, 0.0, 1.0), phi * special.expit(eta), phi * special.expit(-eta))
        return np.where(y < 0, 0.0, np.where(y >= 1, 1.0, p0 + pm * fb))

    def cdf_lower(self, y, eta, s=None, trials=None):
        """P(Y < y): 0 at y = 0, P0 + P_mid at y = 1, the CDF in between (no atom)."""
        y = np.asarray(y, dtype=float)
        p0, pm, _ = self.probs(eta, s)
        return np.where(y <= 0, 0.0, np.where(y >= 1, p0 + pm, self.cdf(y, eta, s)))

    def sample(self, eta, s=None, trials=None, rng=None):
        """0 with P0, 1 with P1, else a beta draw inside (0, 1) (seeded by ``rng``)."""
        rng = np.random.default_rng(rng)
        eta = np.asarray(eta, dtype=float)
        p0, _, p1 = self.probs(eta, s)
        _, _, sp = _split(s, eta.shape)
        inner = _BETA.sample(eta, sp, rng=rng)
        u = rng.random(eta.shape)
        return np.where(u < p0, 0.0, np.where(u > 1.0 - p1, 1.0, inner))

    def dispersion(self, s):
        """(m, 3): cut_zero = k_0, cut_one = k_0 + e^(s_1), phi = e^(s_2)."""
        if s is None:
            return None
        s = np.asarray(s, dtype=float)
        return np.stack([s[..., 0], s[..., 0] + np.exp(s[..., 1]), np.exp(s[..., 2])], axis=-1)

    def dispersion_param(self, disp):
        """s from (cut_zero, cut_one, phi)."""
        disp = np.asarray(disp, dtype=float)
        return np.stack([disp[..., 0], np.log(disp[..., 1] - disp[..., 0]), np.log(disp[..., 2])],
                        axis=-1)

    def start_intercept(self, y, w, trials=None):
        """logit of the mean of each species' values (0s and 1s included), clipped to [0.02, 0.98]."""
        ybar = np.where(np.asarray(w) > 0, y, 0.0).sum(0) / np.maximum((np.asarray(w) > 0).sum(0), 1)
        return special.logit(np.clip(ybar, 0.02, 0.98))

    def dispersion_start(self, y, mu, n_dispersion=None):
        """Cut points from the shares of 0s and 1s at the species' mean; phi by beta moments of
        the values inside (0, 1)."""
        y = np.asarray(y, dtype=float)
        mu = np.broadcast_to(np.asarray(mu, dtype=float), y.shape)
        ok = ~np.isnan(y)
        n = np.maximum(ok.sum(0), 1)
        eta = special.logit(np.clip(np.nanmean(np.where(ok, mu, np.nan), axis=0), 1e-6, 1 - 1e-6))
        p0 = np.clip((ok & (y <= 0)).sum(0) / n, 0.005, 0.9)
        p1 = np.clip((ok & (y >= 1)).sum(0) / n, 0.005, 0.9)
        k0 = eta - special.logit(1.0 - p0)
        k1 = np.maximum(eta - special.logit(p1), k0 + 0.1)
        inner = np.where(ok & (y > 0) & (y < 1), y, np.nan)
        phi_s = _BETA.dispersion_start(np.where(np.isnan(inner), np.nan, inner), mu)
        return np.stack([k0, np.log(k1 - k0), phi_s], axis=-1)


def _split(s, shape):
    """(k_0, log gap, log phi) broadcast to ``shape`` from s (..., 3)."""
    s = np.asarray(s, dtype=float)
    if s.shape[-1:] != (3,):
        raise JSDMError("family 'ordered_beta' needs s with a last axis of 3 (cut_zero, log gap, "
                        f"log phi); got shape {s.shape}")
    return tuple(np.broadcast_to(s[..., k], shape) for k in range(3))


def _warn_unused(y, species):
    """DataWarning naming species without 0s, 1s or interior values (parameters not identified)."""
    import warnings

    y = np.asarray(y, dtype=float)
    if y.ndim != 2:
        return
    ok = ~np.isnan(y)
    names = list(species) if species is not None else [f"column {j}" for j in range(y.shape[1])]
    notes = []
    for j in np.flatnonzero(ok.any(0)):
        col = y[ok[:, j], j]
        miss = [what for what, has in (("no 0s", (col <= 0).any()), ("no 1s", (col >= 1).any()),
                                       ("no values inside (0, 1)", ((col > 0) & (col < 1)).any()))
                if not has]
        if miss:
            notes.append(f"{names[j]} ({', '.join(miss)})")
    if notes:
        warnings.warn(
            f"family 'ordered_beta': {len(notes)} species lack some kind of value: {'; '.join(notes[:5])}"
            f"{'; ...' if len(notes) > 5 else ''}. Without 0s (1s) a species' cut_zero (cut_one) is "
            "not identified and runs to its bound (P(y = 0) or P(y = 1) ~ 0); without values inside "
            "(0, 1) its phi is not identified. Those estimates and SEs carry no information.",
            DataWarning, stacklevel=5)
