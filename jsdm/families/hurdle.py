"""Hurdle counts: presence (y > 0) with a species probability p, abundance by a truncated count.

    P(y = 0) = 1 - p,    P(y = k) = p f_trunc(k | eta)  for k >= 1,

with f_trunc the zero-truncated Poisson or NB2 of ``jsdm.families.truncated``
and s_0 = logit p (hurdle_nb adds s_1 = log phi: s is (m, 2)).

What the linear predictor drives. The engine has one linear predictor per
cell (eta_ij, normal under q). Here eta drives the abundance given presence
only; presence is a species constant, exactly as R gllvm's ZIP/ZINB keep the
zero-inflation probability constant per species. The likelihood then factorises:
the presence part is an intercept-only binomial per species (its estimate is
the share of non-zero records) and the latent variables and covariates act on
the counts at the sites where the species is present. This is the model
statsmodels' ``HurdleCountModel`` fits with an intercept-only zero part, and it
is the exact one-linear-predictor special case of gllvm-style hurdles.

Hurdle models in which presence has its own covariate effects and loadings on
the shared latent variables (two linear predictors per species, as in
glmmTMB's ``ziformula`` with a truncated family) need no new engine: they are a
mixed-family model on a doubled response table, presence columns (binomial,
0/1) and abundance columns (truncated count, NaN where y = 0), whose cells are
independent given the shared latent variables. ``two_part(Y)`` builds that
table and its family mapping; the ELBO of the two-part model is exactly the sum
over both parts.
"""
import numpy as np
import pandas as pd
from scipy import special

from .._numerics import log1pexp
from ..exceptions import DataWarning, JSDMError
from .base import ELL, Family, LogitLogPair, _check_nonneg_int
from .truncated import TruncatedNegativeBinomial, TruncatedPoisson


class _Hurdle(Family):
    """Shared presence part: s[..., 0] (or s itself for a scalar) = logit p."""

    links = ("log",)
    default_link = "log"
    has_dispersion = True
    discrete = True
    mean_uses_dispersion = True
    start_family = "negative_binomial"   # an extra start from its fit (model.fit.related_start)
    count = None               # the truncated family (an instance)
    _fill = 1.0                # a value of the count part's support, used where y = 0

    def _split(self, s, shape):
        s = np.asarray(s, dtype=float)
        if not self.count.has_dispersion:
            return np.broadcast_to(s, shape), None
        if s.shape[-1:] != (2,):
            raise JSDMError(f"family {self.name!r} needs s with a last axis of 2 (logit p, log phi); "
                            f"got shape {s.shape}")
        return np.broadcast_to(s[..., 0], shape), np.broadcast_to(s[..., 1], shape)

    def ell(self, y, m, v, s=None, trials=None, order=1):
        """Exact E[log f(y | eta)], eta ~ N(m, v): the count part only where y > 0."""
        y, m, v = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (y, m, v)))
        a, sc = self._split(s, y.shape)
        pres = y > 0
        p, q = special.expit(a), special.expit(-a)
        val = np.where(pres, -log1pexp(-a), -log1pexp(a))
        da = np.where(pres, q, -p)
        daa = -p * q
        d_m, d_v = np.zeros(y.shape), np.zeros(y.shape)
        pos = np.nonzero(pres)
        dc = dcc = None
        if pos[0].size:
            e = self.count.ell(y[pos], m[pos], v[pos], None if sc is None else sc[pos], order=order)
            val[pos] += e.value
            d_m[pos], d_v[pos] = e.d_m, e.d_v
            dc, dcc = e.d_s, e.d_ss
        if sc is None:
            return ELL(val, d_m, d_v, da, daa if order >= 2 else None)
        d_s = np.zeros(y.shape + (2,))
        d_s[..., 0] = da
        d_ss = None
        if order >= 2:
            d_ss = np.zeros(y.shape + (2, 2))
            d_ss[..., 0, 0] = daa
        if dc is not None:
            d_s[pos + (1,)] = dc
            if d_ss is not None:
                d_ss[pos + (1, 1)] = dcc
        return ELL(val, d_m, d_v, d_s, d_ss)

    def check_y(self, y, trials=None):
        """Counts must be non-negative whole numbers (NaN allowed)."""
        _check_nonneg_int(y, self.name)

    def loglik(self, y, eta, s=None, trials=None):
        """Exact log f(y | eta)."""
        y, eta = np.broadcast_arrays(np.asarray(y, dtype=float), np.asarray(eta, dtype=float))
        a, sc = self._split(s, y.shape)
        yc = np.where(y > 0, y, self._fill)
        return np.where(y > 0, -log1pexp(-a) + self.count.loglik(yc, eta, sc), -log1pexp(a))

    def mean(self, eta, trials=None, s=None):
        """p E_trunc[y | eta]; the untruncated count mean e^eta when ``s`` is None."""
        eta = np.asarray(eta, dtype=float)
        if s is None:
            return np.exp(eta)
        a, sc = self._split(s, eta.shape)
        return special.expit(a) * self.count.mean(eta, s=sc)

    def variance(self, mu, s=None, trials=None):
        """p E_trunc[y^2] - mu^2, with the truncated mean found from mu = p E_trunc[y]."""
        mu = np.asarray(mu, dtype=float)
        a, sc = self._split(s, mu.shape)
        p = special.expit(a)
        mt = mu / p
        vt = self.count.variance(mt, sc)
        return p * (vt + mt * mt) - mu * mu

    def cdf(self, y, eta, s=None, trials=None):
        """P(Y <= y) = 1 - p + p F_trunc(y)."""
        y, eta = np.broadcast_arrays(np.asarray(y, dtype=float), np.asarray(eta, dtype=float))
        a, sc = self._split(s, y.shape)
        p = special.expit(a)
        return np.where(y < 0, 0.0, 1.0 - p + p * self.count.cdf(y, eta, sc))

    def sample(self, eta, s=None, trials=None, rng=None):
        """Presence with probability p, then a truncated count (seeded by ``rng``)."""
        rng = np.random.default_rng(rng)
        eta = np.asarray(eta, dtype=float)
        a, sc = self._split(s, eta.shape)
        counts = self.count.sample(eta, sc, rng=rng)
        return np.where(rng.random(eta.shape) < special.expit(a), counts, 0.0)

    def _presence_start(self, y):
        y = np.asarray(y, dtype=float)
        ok = ~np.isnan(y)
        share = (ok & (y > 0)).sum(0) / np.maximum(ok.sum(0), 1)
        return special.logit(np.clip(share, 0.01, 0.99))

    def start_intercept(self, y, w, trials=None):
        """The truncated count's start from the non-zero records."""
        return self.count.start_intercept(y, w, trials)

    def n_dispersion(self, y, species=None):
        """1 (logit p) or 2 (logit p, log phi); warns about species never absent or never present."""
        _warn_one_sided(self.name, y, species)
        return None if not self.count.has_dispersion else 2


class HurdlePoisson(_Hurdle):
    """Hurdle Poisson: species presence probability p, zero-truncated Poisson abundance."""

    name = "hurdle_poisson"
    aliases = ("poisson_hurdle", "hurdle_pois", "hpoisson", "truncated_poisson_hurdle")
    dispersion_name = "p_present"
    default_dispersion = 0.6
    dispersion_floor_meaning = "presence probability at its lower bound (the species is never present)"
    count = TruncatedPoisson()

    def dispersion(self, s):
        """p = expit(s)."""
        return None if s is None else special.expit(s)

    def dispersion_param(self, disp):
        """s = logit(p)."""
        return special.logit(disp)

    def dispersion_start(self, y, mu):
        """logit of the share of non-zero records, p in [0.01, 0.99]."""
        return self._presence_start(y)


class HurdleNegativeBinomial(LogitLogPair, _Hurdle):
    """Hurdle NB: species presence probability p, zero-truncated NB2 abundance (phi)."""

    name = "hurdle_nb"
    aliases = ("hurdle_negative_binomial", "negative_binomial_hurdle", "nb_hurdle", "hnb",
               "hurdle_negbin")
    dispersion_name = "hurdle"
    default_dispersion = (0.6, 0.5)
    count = TruncatedNegativeBinomial()
    # the hurdle Poisson's fit starts this one better than the NB's (bench_starts: spider-like
    # seed 4, -799.21 against -799.87 for the best of 12 starts; seed 1, 0.05 below against 0.24)
    start_family = "hurdle_poisson"

    def dispersion_labels(self, k):
        """Column names of ``dispersion``: presence probability and NB dispersion."""
        return ["p_present", "phi"]


    def dispersion_start(self, y, mu, n_dispersion=None):
        """(logit share of non-zeros, NB moment estimate of log phi from the non-zero counts)."""
        y = np.asarray(y, dtype=float)
        pos = np.where(y > 0, y, np.nan)
        return np.stack([self._presence_start(y), self.count.dispersion_start(pos, mu)], axis=-1)


def _warn_one_sided(name, y, species):
    """DataWarning naming species with no zeros or only zeros (p at the bound, not identified)."""
    import warnings

    y = np.asarray(y, dtype=float)
    ok = ~np.isnan(y)
    n_pos = (ok & (y > 0)).sum(0)
    n_obs = ok.sum(0)
    bad = (n_obs > 0) & ((n_pos == n_obs) | (n_pos == 0))
    if y.ndim != 2 or not bad.any():
        return
    names = list(species) if species is not None else [f"column {j}" for j in range(y.shape[1])]
    who = [f"{names[j]} ({'never absent' if n_pos[j] == n_obs[j] else 'never present'})"
           for j in np.flatnonzero(bad)]
    warnings.warn(f"family {name!r}: {len(who)} species have no zeros or no non-zero counts: "
                  f"{'; '.join(who[:5])}. Their presence probability sits at its bound (1 or 0) and "
                  "its standard error carries no information; species never present give no "
                  "information on the counts at all (drop them).", DataWarning, stacklevel=5)


def two_part(Y, count="truncated_poisson", presence_link="logit"):
    """The response table and family mapping of a hurdle model with two linear predictors.

    Each species j becomes two columns: ``"<j>:presence"`` (1 where y > 0, 0 where
    y = 0) fitted with a binomial family, and ``"<j>:abundance"`` (y where y > 0,
    NaN elsewhere) fitted with a zero-truncated count family. Fitted together
    (``jsdm.gllvm(table, family=families)``) both parts share the latent
    variables, each with its own loadings and covariate effects.

    Parameters
    ----------
    Y : DataFrame (sites x species)
        Counts (NaN for missing records; they stay missing in both parts).
    count : str
        "truncated_poisson" or "truncated_nb".
    presence_link : str
        Link of the presence part ("logit", "probit", "cloglog"); "cloglog" with a
        truncated Poisson is statsmodels' ``HurdleCountModel`` with a Poisson zero part.

    Returns
    -------
    (DataFrame, dict)
        The two-part table (sites x 2 species, species order kept, presence first)
        and ``{column: family}`` for ``family=``.
    """
    if not isinstance(Y, pd.DataFrame):
        raise JSDMError("two_part needs the counts as a DataFrame (sites x species)")
    _check_nonneg_int(Y.to_numpy(dtype=float), "hurdle")
    from . import get_family

    fam_pres = get_family("binomial", link=presence_link)
    fam_count = get_family(count)
    if fam_count.name not in ("truncated_poisson", "truncated_nb"):
        raise JSDMError(f"two_part: count must be 'truncated_poisson' or 'truncated_nb', got {count!r}")
    cols, fams = {}, {}
    for sp in Y.columns:
        y = Y[sp].astype(float)
        cols[f"{sp}:presence"] = (y > 0).astype(float).where(y.notna())
        cols[f"{sp}:abundance"] = y.where(y > 0)
        fams[f"{sp}:presence"], fams[f"{sp}:abundance"] = fam_pres, fam_count
    return pd.DataFrame(cols, index=Y.index), fams

