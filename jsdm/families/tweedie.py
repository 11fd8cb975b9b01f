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

The power p is fixed per family instance (``Tweedie(power=1.6)``; default 1.5), or
estimated per species with ``Tweedie(power=None)`` (``family="tweedie_power"``):
then s is (m, 2), s = (log phi, c) with p = 1 + expit(c) in (1, 2), and
``dispersion`` reports (phi, power). In c, beta = (2 - p) / (p - 1) = e^-c and

    z = beta (log y + softplus(-c)) - (1 + beta) s_0 + softplus(c),

so with the term weights W_j and A_j = j, B_j = j digamma(j beta), C_j = j^2 trigamma(j beta),
d log a / dc = z_c E[A] + beta E[B] and d2 log a / dc2 = z_cc E[A] - beta E[B] - beta^2 E[C]
+ Var_W(z_c A + beta B) (and the mixed derivative in s_0 likewise), where
z_c = -beta Q + expit(c), z_cc = beta Q + beta expit(-c) (1 + expit(c)) + expit(c) expit(-c),
Q = log y + softplus(-c) + expit(-c) - s_0. The core's p-derivatives follow from
d E_k / dk = E_k (m + k v) and dp/dc = (p - 1)(2 - p).
"""
from functools import lru_cache

import numpy as np
from scipy import special, stats

from .._numerics import gauss_hermite, trigamma
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
    dispersion_can_vanish = True

    def __init__(self, link=None, power=1.5):
        super().__init__(link)
        if isinstance(power, str):
            raise JSDMError(f"Tweedie power={power!r}: give a number in (1, 2) to fix it, power=None "
                            "to estimate one per species, or estimate one power shared by all "
                            "species with jsdm.profile_power(data, family='tweedie', ...)")
        if power is not None:
            power = float(power)
            if not 1.0 < power < 2.0:
                raise JSDMError(f"Tweedie power must lie strictly between 1 and 2; got {power}. "
                                "Use 'poisson' for p = 1 and 'gamma' for p = 2, or power=None to "
                                "estimate it per species.")
        self.power = power

    def __repr__(self):
        return f"Tweedie(link={self.link!r}, power={self.power})"

    def label(self):
        """'tweedie(power=1.5)' or 'tweedie(power estimated)'."""
        text = super().label()
        return text + ("(power estimated)" if self.power is None else f"(power={self.power:g})")

    # --- the power: fixed, or a second nuisance parameter per species ------------------------
    def n_dispersion(self, y, species=None):
        """None (s = log phi per species) for a fixed power, 2 (log phi, logit(p - 1)) when estimated."""
        return None if self.power is not None else 2

    def dispersion_labels(self, k):
        """Column names of ``dispersion`` when the power is estimated."""
        return ["phi", "power"]

    def _split(self, s, shape):
        """(log phi, p) broadcast to ``shape``."""
        s = np.asarray(s, dtype=float)
        if self.power is not None:
            return np.broadcast_to(s, shape), self.power
        if s.shape[-1:] != (2,):
            raise JSDMError("Tweedie with an estimated power needs s with a last axis of 2 "
                            f"(log phi, logit(power - 1)); got shape {s.shape}")
        return (np.broadcast_to(s[..., 0], shape),
                np.broadcast_to(1.0 + special.expit(s[..., 1]), shape))

    def dispersion(self, s):
        """phi = exp(s); with an estimated power (m, 2): phi and p = 1 + expit(s_1)."""
        if s is None:
            return None
        s = np.asarray(s, dtype=float)
        if self.power is not None:
            return np.exp(s)
        return np.stack([np.exp(s[..., 0]), 1.0 + special.expit(s[..., 1])], axis=-1)

    def dispersion_param(self, disp):
        """s from phi (and the power)."""
        disp = np.asarray(disp, dtype=float)
        if self.power is not None:
            return np.log(disp)
        return np.stack([np.log(disp[..., 0]), special.logit(disp[..., 1] - 1.0)], axis=-1)

    @property
    def default_dispersion(self):
        """For simulate_community: phi = 1 (and power 1.5 when it is estimated)."""
        return 1.0 if self.power is not None else (1.0, 1.5)

    def ell(self, y, m, v, s=None, trials=None, order=1):
        """Exact E[log f(y | eta)], eta ~ N(m, v), and derivatives."""
        if self.power is None:
            return self._ell_free(y, m, v, s, order)
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

    def _ell_free(self, y, m, v, s, order):
        """ell and derivatives in (m, v, log phi, c) with the power p = 1 + expit(c) estimated."""
        y, m, v = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (y, m, v)))
        sp, p = self._split(s, y.shape)
        c = np.broadcast_to(np.asarray(s, dtype=float)[..., 1], y.shape)
        k1, k2 = 1.0 - p, 2.0 - p
        inv_phi = np.exp(-sp)
        pos = y > 0
        E1 = np.where(pos, np.exp(np.minimum(k1 * m + 0.5 * k1 * k1 * v, 700.0)), 0.0)
        e1 = y * E1 * inv_phi
        e2 = np.exp(np.minimum(k2 * m + 0.5 * k2 * k2 * v, 700.0)) * inv_phi
        core = e1 / k1 - e2 / k2
        g1, g2 = 1.0 / k1 - m - k1 * v, 1.0 / k2 - m - k2 * v
        core_p = (e1 / k1) * g1 - (e2 / k2) * g2
        J = (p - 1.0) * (2.0 - p)                         # dp / dc
        ser = _free_series(y, sp, c, order >= 2)
        d_s = np.stack([-core + ser["s"], J * core_p + ser["c"]], axis=-1)
        d_ss = None
        if order >= 2:
            core_pp = (e1 / k1) * (g1 * g1 + 1.0 / (k1 * k1) + v) - (e2 / k2) * (g2 * g2 + 1.0 / (k2 * k2) + v)
            d_ss = np.empty(y.shape + (2, 2))
            d_ss[..., 0, 0] = core + ser["ss"]
            d_ss[..., 0, 1] = d_ss[..., 1, 0] = -J * core_p + ser["sc"]
            d_ss[..., 1, 1] = J * J * core_pp + J * (3.0 - 2.0 * p) * core_p + ser["cc"]
        return ELL(core + ser["value"], e1 - e2, 0.5 * (k1 * e1 - k2 * e2), d_s, d_ss)

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
        if self.power is None and _on_a_lattice(yy):
            raise JSDMError(
                "the Tweedie power cannot be estimated from whole-number responses: as the power "
                "tends to 1 the compound Poisson-gamma puts its mass on multiples of phi and the "
                "likelihood of counts grows without bound (measured on the mite counts: the fit "
                "runs to power 1, phi 1 and an ELBO of +3e4). For counts use a count family "
                "('poisson', 'negative_binomial', 'zip', ...), or keep the power fixed "
                "(family='tweedie', Tweedie(power=1.5)).")

    # --- a power shared by all species, profiled (jsdm.profile_power) -------------------------
    #: the open interval a profiled power lies in, and its default search interval
    power_range = (1.0, 2.0)
    power_search = (1.02, 1.98)

    def with_power(self, power):
        """The same family with the power fixed at ``power`` (one profile evaluation)."""
        return Tweedie(link=self.link, power=power)

    def power_warning(self, y):
        """Why profiling the power on responses ``y`` may mislead, or None."""
        if _on_a_lattice(np.asarray(y, dtype=float)):
            return ("the responses are whole numbers; near a power of 1 the Tweedie likelihood of "
                    "counts grows without bound (a lattice at multiples of phi), so the profile "
                    "tends to the lower bound of the search. Prefer a count family for counts.")
        return None

    def loglik(self, y, eta, s=None, trials=None):
        """Exact log-density (log P(Y = 0) at y = 0)."""
        y, eta = np.broadcast_arrays(np.asarray(y, dtype=float), np.asarray(eta, dtype=float))
        return self.ell(y, eta, np.zeros(y.shape), s).value

    def mean(self, eta, trials=None, s=None):
        """mu = exp(eta)."""
        return np.exp(eta)

    def variance(self, mu, s=None, trials=None):
        """phi mu^p."""
        mu = np.asarray(mu, dtype=float)
        sp, p = self._split(s, mu.shape)
        return np.exp(sp) * mu ** p

    def _poisson_gamma(self, eta, s):
        """(lambda, gamma shape per event, gamma scale) of the compound Poisson form."""
        eta = np.asarray(eta, dtype=float)
        sp, p = self._split(s, eta.shape)
        mu, phi = np.exp(eta), np.exp(sp)
        lam = mu ** (2 - p) / (phi * (2 - p))
        return lam, np.broadcast_to((2 - p) / (p - 1), lam.shape), phi * (p - 1) * mu ** (p - 1)

    def cdf(self, y, eta, s=None, trials=None):
        """P(Y <= y): the Poisson(lambda) mixture of gamma CDFs, summed per cell over the
        Poisson counts within lambda +- 12 sqrt(lambda) (the rest weighs < 1e-30)."""
        y, eta = np.broadcast_arrays(np.asarray(y, dtype=float), np.asarray(eta, dtype=float))
        lam, shape, scale = self._poisson_gamma(eta, s)
        lo = np.maximum(1.0, np.floor(lam - 12.0 * np.sqrt(lam) - 5.0))
        size = np.maximum(16, 2 ** np.ceil(np.log2(24.0 * np.sqrt(lam) + 12.0)))
        total = np.exp(-lam)
        x = np.maximum(y, 0.0) / scale
        for n_terms in np.unique(size):
            sel = size == n_terms
            n = lo[sel] + np.arange(n_terms)[:, None]
            terms = stats.poisson.pmf(n, lam[sel]) * special.gammainc(n * shape[sel], x[sel])
            total[sel] += terms.sum(0)
        return np.where(y < 0, 0.0, np.minimum(total, 1.0))

    def cdf_lower(self, y, eta, s=None, trials=None):
        """P(Y < y): 0 at the atom y = 0, else the CDF (Dunn-Smyth residuals randomise the atom)."""
        y = np.asarray(y, dtype=float)
        return np.where(y > 0, self.cdf(y, eta, s), 0.0)

    def sample(self, eta, s=None, trials=None, rng=None):
        """Compound Poisson-gamma draws (seeded by ``rng``) shaped like eta."""
        rng = np.random.default_rng(rng)
        eta = np.asarray(eta, dtype=float)
        lam, shape, scale = self._poisson_gamma(eta, s)
        n = rng.poisson(lam)
        return np.where(n > 0, rng.gamma(np.maximum(n, 1) * shape, scale), 0.0)

    def dispersion_start(self, y, mu, n_dispersion=None):
        """log of the mean of (y - mu)^2 / mu^p per species (p = 1.5 when it is estimated,
        which starts at 1.5: c = 0)."""
        y = np.asarray(y, dtype=float)
        mu = np.broadcast_to(np.asarray(mu, dtype=float), y.shape)
        p = 1.5 if self.power is None else self.power
        r2 = (y - mu) ** 2 / mu ** p
        ok = ~np.isnan(r2)
        phi = np.log(np.clip(np.where(ok, r2, 0.0).sum(0) / np.maximum(ok.sum(0), 1), 1e-4, 1e4))
        return phi if self.power is not None else np.stack([phi, np.zeros_like(phi)], axis=-1)


def _on_a_lattice(y):
    """True when every observed positive value is a whole number (counts, or a rounded unit)."""
    pos = y[np.isfinite(y) & (y > 0)]
    return pos.size > 0 and bool(np.all(np.floor(pos) == pos))


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


# --- the series with the power estimated: per-cell beta, derivatives in (log phi, c) ------------

def _free_series(y, s, c, second):
    """log a and its derivatives in s = log phi and c = logit(p - 1), shaped like y (0 at y = 0).

    Keys "value", "s", "c" and, with ``second``, "ss", "sc", "cc".
    """
    keys = ["value", "s", "c"] + (["ss", "sc", "cc"] if second else [])
    out = {k: np.zeros(y.shape) for k in keys}
    pos = y > 0
    if not pos.any():
        return out
    yp, sp, cp = y[pos], s[pos], c[pos]
    beta = np.exp(-cp)
    ly = np.log(yp)
    q_c = ly + _sp(-cp) + special.expit(-cp) - sp
    z = beta * (ly + _sp(-cp)) - (1.0 + beta) * sp + _sp(cp)
    zc = -beta * q_c + special.expit(cp)
    zcc = beta * q_c + beta * special.expit(-cp) * (1.0 + special.expit(cp)) \
        + special.expit(cp) * special.expit(-cp)
    p = 1.0 + special.expit(cp)
    jstar = np.maximum(np.exp((2.0 - p) * ly - sp - np.log(2.0 - p)), 1.0)
    sd = np.sqrt(jstar * (p - 1.0))
    lo = np.maximum(1.0, np.floor(jstar - 12.0 * sd))
    wide = (jstar - 12.0 * sd > 5.0) & (sd > 3.0)
    need = np.ceil(jstar + 12.0 * sd + 5.0) - lo + 1.0
    size = np.maximum(16, 2 ** np.ceil(np.log2(need)))
    res = {k: np.empty(yp.shape) for k in ("log", "EA", "EB", "EC", "VA", "VB", "CAB")}
    groups = [(wide, None)] + [(~wide & (size == n), int(n)) for n in np.unique(size[~wide])]
    for sel, n_terms in groups:
        if not sel.any():
            continue
        if n_terms is None:                       # Gauss-Hermite in j about j* (wide peaks)
            x, w = gauss_hermite(32)
            j = jstar[sel][None, :] + sd[sel][None, :] * x[:, None]
            extra = 0.5 * x[:, None] ** 2 + np.log(w)[:, None]
            const = np.log(sd[sel]) + 0.5 * np.log(2.0 * np.pi)
        else:
            j = lo[sel][None, :] + np.arange(n_terms, dtype=float)[:, None]
            extra, const = 0.0, 0.0
        b = beta[sel][None, :]
        jb = j * b
        logw = j * z[sel][None, :] - special.gammaln(j + 1.0) - special.gammaln(jb) + extra
        top = logw.max(0)
        wts = np.exp(logw - top)
        tot = wts.sum(0)
        wts /= tot
        A, B = j, j * special.digamma(jb)
        EA, EB = (wts * A).sum(0), (wts * B).sum(0)
        res["log"][sel] = top + np.log(tot) + const
        res["EA"][sel], res["EB"][sel] = EA, EB
        res["VA"][sel] = (wts * (A - EA) ** 2).sum(0)
        if second:
            res["EC"][sel] = (wts * j * j * trigamma(jb)).sum(0)
            res["VB"][sel] = (wts * (B - EB) ** 2).sum(0)
            res["CAB"][sel] = (wts * (A - EA) * (B - EB)).sum(0)
    c1 = 1.0 + beta
    out["value"][pos] = res["log"] - ly
    out["s"][pos] = -c1 * res["EA"]
    out["c"][pos] = zc * res["EA"] + beta * res["EB"]
    if second:
        VA, VB, CAB = res["VA"], res["VB"], res["CAB"]
        out["ss"][pos] = c1 * c1 * VA
        out["sc"][pos] = beta * res["EA"] - c1 * (zc * VA + beta * CAB)
        out["cc"][pos] = (zcc * res["EA"] - beta * res["EB"] - beta * beta * res["EC"]
                          + zc * zc * VA + 2.0 * zc * beta * CAB + beta * beta * VB)
    return out


def _sp(x):
    return np.logaddexp(0.0, x)


class TweediePower(Tweedie):
    """Tweedie with the power estimated per species (``Tweedie(power=None)``), by name."""

    aliases = ("tweedie_power", "tweedie_p", "tweedie_estimated_power")

    def __init__(self, link=None, power=None):
        super().__init__(link, power=power)
