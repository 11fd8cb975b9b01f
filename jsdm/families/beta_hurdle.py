"""Beta hurdle for proportions with exact zeros (cover of absent species): zero mass + beta.

    P(y = 0) = 1 - p,   y in (0, 1): density p Beta(y; mu phi, (1 - mu) phi),  mu = expit(eta),

with a species presence probability p (s_0 = logit p) and precision phi
(s_1 = log phi): s is (m, 2). As in ``hurdle_poisson`` the one linear predictor
drives the cover where the species is present; presence is a species constant,
and the likelihood factorises into an intercept-only binomial and the beta
family on the non-zero records (so ell is the beta family's exact ell there).
With a zero mass only, a zero-inflated beta and a beta hurdle are the same model.
For presence with its own covariate effects and loadings use ``two_part``-style
tables with a binomial and a beta family (jsdm.families.hurdle).
"""
import numpy as np
from scipy import special

from ..exceptions import JSDMError
from .base import LogitLogPair
from .beta import Beta
from .hurdle import _Hurdle


class BetaHurdle(LogitLogPair, _Hurdle):
    """Proportions in [0, 1) with exact zeros: species presence p, beta cover where present."""

    name = "beta_hurdle"
    aliases = ("hurdle_beta", "betah", "zero_inflated_beta", "zib", "beta_zero")
    links = ("logit",)
    default_link = "logit"
    discrete = False
    dispersion_name = "beta_hurdle"
    dispersion_ceiling_meaning = (
        "the precision phi at its upper bound: the species' values inside (0, 1) are reproduced "
        "exactly and the likelihood is unbounded (few distinct values, e.g. cover classes "
        "converted to proportions)")
    default_dispersion = (0.6, 10.0)
    count = Beta()
    _fill = 0.5
    start_family = None

    def check_y(self, y, trials=None):
        """Values in [0, 1) (NaN allowed)."""
        yy = np.asarray(y, dtype=float)
        bad = ~np.isnan(yy) & ~((yy >= 0) & (yy < 1))
        if bad.any():
            raise JSDMError(
                f"family 'beta_hurdle' needs proportions in [0, 1) (exact zeros allowed, not exact 1s); "
                f"found {np.unique(yy[bad])[:5].tolist()}. For data with exact 1s too use "
                "family='ordered_beta'; divide percent cover by 100.")

    def dispersion_labels(self, k):
        """Column names of ``dispersion``: presence probability and beta precision."""
        return ["p_present", "phi"]


    def mean(self, eta, trials=None, s=None):
        """p expit(eta); expit(eta) when ``s`` is None."""
        return super().mean(eta, trials, s) if s is not None else special.expit(eta)

    def cdf_lower(self, y, eta, s=None, trials=None):
        """P(Y < y): 0 at the atom y = 0, the CDF above it."""
        y = np.asarray(y, dtype=float)
        return np.where(y > 0, self.cdf(y, eta, s), 0.0)

    def start_intercept(self, y, w, trials=None):
        """logit of the mean cover where present, clipped to [0.02, 0.98]."""
        y = np.asarray(y, dtype=float)
        keep = (np.asarray(w) > 0) & (y > 0)
        ybar = np.where(keep, y, 0.0).sum(0) / np.maximum(keep.sum(0), 1)
        return special.logit(np.clip(np.where(keep.any(0), ybar, 0.5), 0.02, 0.98))

    def dispersion_start(self, y, mu, n_dispersion=None):
        """(logit share of non-zeros, beta moment estimate of log phi on the non-zero values)."""
        y = np.asarray(y, dtype=float)
        pos = np.where(y > 0, y, np.nan)
        return np.stack([self._presence_start(y), self.count.dispersion_start(pos, mu)], axis=-1)
