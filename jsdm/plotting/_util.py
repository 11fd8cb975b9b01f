"""Small helpers shared by the plot functions (matplotlib imported lazily)."""
import numpy as np

#: tick labels are drawn only up to this many (beyond, they overlap at any readable size)
READABLE_LABELS = 60


def get_ax(ax=None, figsize=(6.0, 5.0)):
    """Return ``ax`` or a new Axes on a new Figure."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def new_figure(nrows, ncols, figsize):
    """A Figure with a grid of Axes (always a 2-D array)."""
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)


def label_fontsize(n, base=9.0, lo=6.0):
    """Tick-label font size that shrinks with the number of labels (never below ``lo``)."""
    return max(lo, min(base, base * 40.0 / max(n, 1)))


def readable(n, labels="auto"):
    """Whether ``n`` tick labels are drawn: ``labels`` True/False, or "auto" (n <= READABLE_LABELS)."""
    if labels == "auto":
        return n <= READABLE_LABELS
    return bool(labels)


def robust_limits(values, k=4.0, pad=0.05):
    """Axis limits covering the finite values within ``k`` interquartile ranges of the quartiles.

    Returns (lo, hi, n_outside): a few wild values (a species without a finite
    optimum has linear predictors in the thousands) are clipped by the axis
    and counted so the plot can say so; well-behaved data are shown whole.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not v.size:
        return -1.0, 1.0, 0
    q1, q3 = np.quantile(v, [0.25, 0.75])
    iqr = max(q3 - q1, 1e-9)
    lo, hi = max(v.min(), q1 - k * iqr), min(v.max(), q3 + k * iqr)
    span = max(hi - lo, 1e-9)
    lo, hi = lo - pad * span, hi + pad * span
    return float(lo), float(hi), int(np.sum((v < lo) | (v > hi)))


def subset_species(fit, species):
    """Positions of ``species`` (labels, or None for all) among ``fit.species``."""
    from ..exceptions import JSDMError

    if species is None:
        return np.arange(len(fit.species))
    pos = {s: j for j, s in enumerate(fit.species)}
    bad = [s for s in species if s not in pos]
    if bad:
        raise JSDMError(f"unknown species {bad[:5]}; the fit's species are e.g. {list(fit.species[:5])}")
    return np.array([pos[s] for s in species], dtype=int)
