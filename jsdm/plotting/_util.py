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
#: Longest label drawn in a figure; longer ones keep their start and end around an ellipsis.
#: Tables (summary, CSV, report) always show labels in full.
LABEL_WIDTH = 32


def short_label(label, width=LABEL_WIDTH):
    """``label`` as text of at most ``width`` characters (start ... end when longer).

    Figures draw labels with this, so that the time to lay out a figure does
    not grow with the length of the labels (a 5,000-character species name
    made matplotlib's layout take minutes).
    """
    text = " ".join(str(label).split())
    if len(text) <= width:
        return text
    head = (width - 1) * 2 // 3
    tail = width - 1 - head
    return text[:head] + "\u2026" + (text[-tail:] if tail else "")


def short_labels(labels, width=LABEL_WIDTH):
    """Shortened labels (see :func:`short_label`), kept distinct: a clash gets its position."""
    out = [short_label(x, width) for x in labels]
    seen = {}
    for k, text in enumerate(out):
        seen.setdefault(text, []).append(k)
    for where in seen.values():
        if len(where) > 1 and len({str(labels[k]) for k in where}) > 1:
            for k in where:
                out[k] = short_label(labels[k], width - len(f" [{k + 1}]")) + f" [{k + 1}]"
    return out
