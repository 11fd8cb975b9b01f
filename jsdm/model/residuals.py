"""Dunn-Smyth randomised quantile residuals (used by starting values and results)."""
import numpy as np
from scipy import special


def dunn_smyth(family, y, eta, s=None, trials=None, rng=None):
    """Randomised quantile residuals Phi^-1(u), u ~ U(F(y-), F(y)) for discrete families.

    Parameters
    ----------
    family : Family
    y, eta : ndarray (n, m); NaN in y gives NaN residuals
    s : ndarray (m,) or None
    trials : ndarray or None
    rng : seed or Generator (the draw is reproducible for a fixed seed)
    """
    rng = np.random.default_rng(rng)
    y = np.asarray(y, dtype=float)
    miss = np.isnan(y)
    yf = np.where(miss, 0.0, y)
    hi = np.asarray(family.cdf(yf, eta, s, trials), dtype=float)
    if family.discrete:
        lo_fn = getattr(family, "cdf_lower", None)
        if lo_fn is not None:
            lo = np.asarray(lo_fn(yf, eta, s, trials), dtype=float)
        else:
            lo = np.where(yf > 0, family.cdf(yf - 1.0, eta, s, trials), 0.0)
        u = lo + rng.uniform(size=y.shape) * (hi - lo)
    else:
        u = hi
    eps = 1e-12
    r = special.ndtri(np.clip(u, eps, 1.0 - eps))
    r[miss] = np.nan
    return r
