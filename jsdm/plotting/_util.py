"""Small helpers shared by the plot functions (matplotlib imported lazily)."""


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


def label_fontsize(n, base=9.0, lo=4.0):
    """Tick-label font size that shrinks with the number of labels."""
    return max(lo, min(base, base * 40.0 / max(n, 1)))


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
    for text, where in seen.items():
        if len(where) > 1 and len({str(labels[k]) for k in where}) > 1:
            for k in where:
                out[k] = short_label(labels[k], width - len(f" [{k + 1}]")) + f" [{k + 1}]"
    return out
