"""Dunn-Smyth randomised quantile residuals (used by starting values and results)."""
import numpy as np
from scipy import special

from .._numerics import analysis_rng


def dunn_smyth(family, y, eta, s=None, trials=None, rng=None):
    """Randomised quantile residuals Phi^-1(u), u ~ U(F(y-), F(y)) (u = F(y) without an atom at y).

    Parameters
    ----------
    family : Family
    y, eta : ndarray (n, m); NaN in y gives NaN residuals
    s : ndarray (m,) or None
    trials : ndarray or None
    rng : seed or Generator (the draw is reproducible for a fixed seed; None means seed 0)
    """
    rng = analysis_rng(rng)
    y = np.asarray(y, dtype=float)
    miss = np.isnan(y)
    yf = np.where(miss, 0.0, y)
    hi = np.asarray(family.cdf(yf, eta, s, trials), dtype=float)
    # P(Y < y): equal to the cdf where the distribution has no atom at y, so the draw
    # randomises exactly at atoms (all values of discrete families, Tweedie's zeros)
    lo = np.asarray(family.cdf_lower(yf, eta, s, trials), dtype=float)
    u = lo + rng.uniform(size=y.shape) * (hi - lo)
    eps = 1e-12
    r = special.ndtri(np.clip(u, eps, 1.0 - eps))
    r[miss] = np.nan
    return r
