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
