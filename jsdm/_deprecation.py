"""Deprecated argument names and defaults: one place that words the FutureWarnings.

jsdm keeps one meaning per argument name across the package: ``alpha`` is
always 1 - confidence level (as in statsmodels), the biplot exponent is
``exponent``. Old spellings keep working for a while with a
:class:`FutureWarning` that says what to write instead.
"""
import warnings

#: marks an argument the caller did not pass (so that None can stay a real value)
UNSET = type("Unset", (), {"__repr__": lambda self: "<unset>", "__bool__": lambda self: False})()


def warn_renamed(old, new, where, stacklevel=3):
    """FutureWarning: argument ``old`` of ``where`` is now called ``new``."""
    warnings.warn(f"{where}({old}=...) is deprecated and will be removed in a future version; "
                  f"use {new}=... instead", FutureWarning, stacklevel=stacklevel + 1)


def alpha_from_level(alpha, level, where, default=0.05, stacklevel=3):
    """Resolve ``alpha`` (1 - confidence level) from the deprecated ``level=``.

    Parameters
    ----------
    alpha : float or None
        The caller's ``alpha``; None when not given.
    level : float or None
        The caller's deprecated ``level`` (coverage); None when not given.
    where : str
        Name of the function, for the messages.
    default : float
        ``alpha`` when neither is given.
    stacklevel : int
        Frames between the user's call and this function.

    Returns
    -------
    float
        1 - confidence level.
    """
    if level is None:
        return default if alpha is None else alpha
    if alpha is not None:
        raise TypeError(f"{where}() got both alpha={alpha!r} and the deprecated level={level!r}; "
                        "give alpha only (alpha = 1 - level)")
    warnings.warn(f"{where}(level=...) is deprecated and will be removed in a future version; "
                  f"jsdm uses alpha = 1 - confidence level everywhere: write alpha={1 - level:.4g} "
                  f"instead of level={level!r}", FutureWarning, stacklevel=stacklevel + 1)
    return 1.0 - level
