"""Beta-binomial: y successes out of n trials with overdispersion; logit link, precision phi.

    y | p ~ Binomial(n, p),  p ~ Beta(mu phi, (1 - mu) phi),  mu = expit(eta),  s = log(phi);
    E[y] = n mu,  Var = n mu (1 - mu) (1 + (n - 1) / (phi + 1))   (-> binomial as phi -> inf).

With a = phi expit(eta), b = phi expit(-eta) and G(k, r) = lgamma(k + r) - lgamma(r):

    log f = log C(n, y) + G(y, a) + G(n - y, b) - G(n, phi).

Only h = G(y, a) + G(n - y, b) depends on eta and needs quadrature (h is analytic
in eta within |Im eta| < pi). With p = expit(eta), q = expit(-eta),
A1 = a (digamma(y + a) - digamma(a)), A2 = a^2 (trigamma(y + a) - trigamma(a)) and
B1, B2 the same at (n - y, b) (``nb1.scaled_gamma_diffs``: finite as a -> 0 and
accurate as a -> inf):

    h'  = q A1 - p B1,                  h'' = (q - p) h' + q^2 A2 + p^2 B2,
    dh/ds = A1 + B1,                    d2h/ds2 = A1 + A2 + B1 + B2,

and -G(n, phi) adds -N1 and -N1 - N2 (N1, N2 the same at (n, phi)).
Hermite rules binned by the variance, then the composite rule for wide
normals (measured accuracy: tests/test_families_more.py).
"""
import numpy as np
from scipy import special, stats

from .._numerics import binned_expectation, gh_rule, lgamma_ratio, uniform_expectation
from ..exceptions import JSDMError
from .base import ELL, Family
from .nb1 import scaled_gamma_diffs

_TABLE = ((0.01, 6), (0.05, 10), (0.1, 12), (0.3, 20), (0.5, 28), (0.75, 36), (1.0, 48), (2.0, 64))


def _lgamma_diff(k, r):
    """G(k, r) = lgamma(k + r) - lgamma(r) (0 at k = 0), accurate for tiny and huge r."""
    k, r = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(r, dtype=float))
    out = np.zeros(k.shape)
    small = (r < 1.0) & (k > 0)
    if small.any():
        out[small] = special.gammaln(k[small] + r[small]) - special.gammaln(r[small])
    big = (r >= 1.0) & (k > 0)
    if big.any():
        kb, rb = k[big], r[big]
        out[big] = lgamma_ratio(kb, rb) + kb * np.log(rb)
    return out


def _nodes(second):
    """h, h', h'', h_s (and h_ss) at nodes u."""
    def fun(u, y, ny, phi):
        np.clip(u, -700.0, 700.0, out=u)
        p, q = special.expit(u), special.expit(-u)
        a, b = phi * p, phi * q
        A1, A2 = scaled_gamma_diffs(y, a)
        B1, B2 = scaled_gamma_diffs(ny, b)
        h1 = q * A1 - p * B1
        out = [_lgamma_diff(y, a) + _lgamma_diff(ny, b), h1, (q - p) * h1 + q * q * A2 + p * p * B2,
               A1 + B1]
        if second:
            out.append(A1 + A2 + B1 + B2)
        return out
    return fun


def _bins(second):
    fun = _nodes(second)
    point = ((0.0, lambda mu, sd, *ex: fun(np.array(mu, dtype=float), *ex)),)
    wide = ((np.inf, lambda mu, sd, *ex: uniform_expectation(fun, mu, sd, ex)),)
    return point + tuple((v, gh_rule(fun, k)) for v, k in _TABLE) + wide


_BINS = {False: _bins(False), True: _bins(True)}


class BetaBinomial(Family):
    """Counts out of known totals (``trials``) with extra-binomial variation; logit link."""

    name = "beta_binomial"
    aliases = ("betabinomial", "betabinom", "beta_binom")
    links = ("logit",)
    default_link = "logit"
    has_dispersion = True
    dispersion_name = "phi"
    dispersion_ceiling_meaning = (
        "the precision phi at its upper bound: no extra-binomial variation (the beta-binomial "
        "has become the binomial)")
    discrete = True
    uses_trials = True
    default_dispersion = 5.0

    def ell(self, y, m, v, s=None, trials=None, order=1):
        """Exact E[log f(y | eta)], eta ~ N(m, v), and derivatives (see module notes)."""
        n = _trials(trials)
        y, m, v, s, n = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (y, m, v, s, n)))
        phi = np.exp(s)
        second = order >= 2
        res = binned_expectation(m, v, _BINS[second], 5 if second else 4, extra=(y, n - y, phi))
        N1, N2 = scaled_gamma_diffs(n, phi)
        const = _log_choose(n, y) - _lgamma_diff(n, phi)
        d_ss = res[4] - N1 - N2 if second else None
        return ELL(res[0] + const, res[1], 0.5 * res[2], res[3] - N1, d_ss)

    def check_y(self, y, trials=None):
        """0 <= y <= trials, whole numbers; trials (required) whole numbers >= 2."""
        if trials is None:
            raise JSDMError("family 'beta_binomial' needs the number of trials per record (trials=...); "
                            "with one trial (0/1 data) its overdispersion is not identified: use "
                            "family='binomial' for presence/absence.")
        yy = np.asarray(y, dtype=float)
        n = np.broadcast_to(np.asarray(trials, dtype=float), yy.shape)
        if np.any(~np.isfinite(n) | (n < 1) | (np.floor(n) != n)):
            raise JSDMError("beta_binomial trials must be positive whole numbers; found "
                            f"{np.unique(n[~((n >= 1) & (np.floor(n) == n))])[:5].tolist()}")
        bad = ~np.isnan(yy) & ~((yy >= 0) & (yy <= n) & (np.floor(yy) == yy))
        if bad.any():
            raise JSDMError(f"family 'beta_binomial' needs whole numbers between 0 and trials; found "
                            f"{np.unique(yy[bad])[:5].tolist()}.")

    def loglik(self, y, eta, s=None, trials=None):
        """Exact log f(y | eta)."""
        n = _trials(trials)
        y, eta, s, n = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (y, eta, s, n)))
        phi = np.exp(s)
        a, b = phi * special.expit(eta), phi * special.expit(-eta)
        return (_log_choose(n, y) + _lgamma_diff(y, a) + _lgamma_diff(n - y, b)
                - _lgamma_diff(n, phi))

    def mean(self, eta, trials=None, s=None):
        """n mu (mu when trials is None)."""
        mu = special.expit(np.asarray(eta, dtype=float))
        return mu if trials is None else np.asarray(trials, dtype=float) * mu

    def variance(self, mu, s=None, trials=None):
        """n p (1 - p) (1 + (n - 1) / (phi + 1)) in terms of the mean mu = n p."""
        n = _trials(trials)
        p = np.asarray(mu, dtype=float) / n
        return n * p * (1.0 - p) * (1.0 + (n - 1.0) / (np.exp(s) + 1.0))

    def observation_variance(self, mu, s=None, trials=None):
        """Link-scale variance of one observation (delta method on the proportion y / n):
        (1 + (n - 1) / (phi + 1)) / (n p (1 - p)), p = mu / n."""
        n = _trials(trials)
        p = np.asarray(mu, dtype=float) / n
        with np.errstate(divide="ignore", invalid="ignore"):
            return (1.0 + (n - 1.0) / (np.exp(s) + 1.0)) / (n * p * (1.0 - p))

    def cdf(self, y, eta, s=None, trials=None):
        """P(Y <= y | eta)."""
        phi = np.exp(np.asarray(s, dtype=float))
        eta = np.asarray(eta, dtype=float)
        return stats.betabinom.cdf(y, _trials(trials), phi * special.expit(eta), phi * special.expit(-eta))

    def sample(self, eta, s=None, trials=None, rng=None):
        """Binomial draws with beta-distributed success probabilities (seeded by ``rng``)."""
        rng = np.random.default_rng(rng)
        eta, s = np.broadcast_arrays(np.asarray(eta, dtype=float), np.asarray(s, dtype=float))
        phi = np.exp(s)
        p = rng.beta(phi * special.expit(eta), phi * special.expit(-eta))
        n = np.broadcast_to(_trials(trials), eta.shape).astype(np.int64)
        return rng.binomial(n, p).astype(float)

    def start_intercept(self, y, w, trials=None):
        """logit of each species' share of successes, clipped to [0.02, 0.98]."""
        n = np.broadcast_to(_trials(trials), np.shape(y))
        keep = np.asarray(w) > 0
        share = np.where(keep, y, 0.0).sum(0) / np.maximum(np.where(keep, n, 0.0).sum(0), 1.0)
        return special.logit(np.clip(share, 0.02, 0.98))

    def dispersion_start(self, y, mu):
        """log phi = log 10 (moderate overdispersion) for every species."""
        return np.full(np.shape(y)[-1], np.log(10.0))


def _trials(trials):
    return np.ones(()) if trials is None else np.asarray(trials, dtype=float)


def _log_choose(n, y):
    return special.gammaln(n + 1.0) - special.gammaln(y + 1.0) - special.gammaln(n - y + 1.0)
