"""Checks of a fitting call's input before any fitting starts.

Each function raises :class:`~jsdm.exceptions.JSDMError` with a message that
names the argument (or the columns, sites, species) at fault, echoes what was
found and says what to do; none modifies its arguments. They are used by
:func:`jsdm.model.problem.build_problem` and :func:`jsdm.gllvm`.

- :func:`check_fit_options`: ``num_lv``, ``n_init``, ``maxiter``, ``gtol``, ``seed``;
- :func:`cell_values`: an ``offset=`` or ``trials=`` argument as an (n, m)
  array, matched by label when it has labels, shape-checked when it has not;
- :func:`check_offset`: finite offsets on observed cells;
- :func:`check_design_rank`: constant or collinear design columns, named;
- :func:`check_response_scale`: responses too large (or, for the Gaussian,
  too spread out or too concentrated) to be fitted in floating point.
"""
import numbers
import warnings

import numpy as np
import pandas as pd

from ..exceptions import JSDMError
from ..data.validation import show


# --- options ------------------------------------------------------------------------
def _whole(value):
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_num_lv(num_lv):
    """``num_lv`` must be a whole number >= 0 (True/False are refused, not read as 1/0)."""
    if not (_whole(num_lv) and num_lv >= 0):
        raise JSDMError(f"num_lv must be a whole number >= 0 (0 fits independent GLMs), got "
                        f"{num_lv!r} of type {type(num_lv).__name__}")


def check_fit_options(n_init, maxiter, gtol, seed):
    """Refuse starts, iteration limits, tolerances and seeds that cannot mean what they say.

    Parameters
    ----------
    n_init : int >= 1, or None (the default number of starts)
    maxiter : int >= 1
    gtol : float > 0, finite
    seed : None, int >= 0 or numpy Generator
    """
    if n_init is not None and not (_whole(n_init) and n_init >= 1):
        raise JSDMError(f"n_init (the number of starts) must be a whole number >= 1, got {n_init!r}")
    if not (_whole(maxiter) and maxiter >= 1):
        raise JSDMError(f"maxiter must be a whole number >= 1, got {maxiter!r}")
    ok = isinstance(gtol, numbers.Real) and not isinstance(gtol, (bool, np.bool_))
    if not (ok and np.isfinite(gtol) and gtol > 0):
        raise JSDMError(f"gtol (the tolerance on the curvature-scaled gradient) must be a positive "
                        f"finite number, e.g. 1e-3; got {gtol!r}")
    if seed is not None and not isinstance(seed, np.random.Generator) and not (_whole(seed) and seed >= 0):
        raise JSDMError(f"seed must be None (a fixed default), a whole number >= 0 or a "
                        f"numpy Generator, got {seed!r}")


# --- offsets and trials ---------------------------------------------------------------
def _numbers(values, name):
    try:
        if isinstance(values, (pd.Series, pd.DataFrame)):     # pd.NA (nullable dtypes) -> NaN
            return values.to_numpy(dtype=float, na_value=np.nan)
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise JSDMError(f"{name}= must hold numbers ({err})") from None


def _label_match(index, labels):
    """True when ``index`` holds exactly the labels ``labels`` (any order, no repeats)."""
    return (len(index) == len(labels) and not index.has_duplicates
            and index.isin(labels).all())


def _series_values(value, name, sites, species):
    """A labelled Series: one value per site (n, 1) or per species (1, m), matched by label."""
    idx = value.index
    on_sites, on_species = _label_match(idx, sites), _label_match(idx, species)
    if on_sites and on_species and not sites.equals(species):
        raise JSDMError(f"{name}= is a Series whose labels are both the site and the species "
                        "labels; pass an array of shape (n_sites, n_species) or a DataFrame "
                        "(sites x species) instead.")
    if on_sites:
        return _numbers(value.reindex(sites), name).reshape(-1, 1)
    if on_species:
        return _numbers(value.reindex(species), name).reshape(1, -1)
    if idx.has_duplicates:
        raise JSDMError(f"{name}= is a Series with repeated labels {show(idx[idx.duplicated()].unique())}")
    missing, extra = sites.difference(idx, sort=False), idx.difference(sites, sort=False)
    raise JSDMError(
        f"{name}= is a Series indexed by labels that are neither the sites nor the species: "
        f"sites without a value {show(missing)}, labels that are not sites {show(extra)}. "
        f"Values are matched by label, not by position: index it by site (or by species), or "
        f"pass {name}.to_numpy() to use the values in the order of the sites.")


def _frame_values(value, name, sites, species):
    """A DataFrame: sites (rows) x species (columns), matched by label."""
    rows_ok = _label_match(value.index, sites)
    cols_ok = _label_match(value.columns, species)
    if rows_ok and cols_ok:
        return _numbers(value.reindex(index=sites, columns=species), name)
    if value.shape[1] == 1 and rows_ok:
        return _numbers(value.iloc[:, 0].reindex(sites), name).reshape(-1, 1)
    if _label_match(value.index, species) and _label_match(value.columns, sites):
        raise JSDMError(f"{name}= has species as rows and sites as columns; pass {name}.T "
                        "(sites x species).")
    parts = []
    if not rows_ok:
        parts.append(f"rows: sites without a row {show(sites.difference(value.index, sort=False))},"
                     f" rows that are not sites {show(value.index.difference(sites, sort=False))}")
    if not cols_ok:
        parts.append(f"columns: species without a column "
                     f"{show(species.difference(value.columns, sort=False))}, columns that are "
                     f"not species {show(value.columns.difference(species, sort=False))}")
    raise JSDMError(f"{name}= is a DataFrame that does not match the data by label ("
                    + "; ".join(parts) + "). It needs one row per site and one column per "
                    "species (any order), or a single column indexed by site.")


def _array_values(value, name, n, m):
    """An unlabelled scalar or array: shape-checked, never silently broadcast the wrong way."""
    arr = _numbers(value, name)
    if arr.ndim == 0:
        return arr.reshape(1, 1)
    if arr.ndim == 1:
        if arr.shape[0] == n:
            return arr.reshape(-1, 1)
        hint = (f" A 1-D {name} holds one value per site; for one value per species pass "
                f"shape (1, {m}) or a Series indexed by species." if arr.shape[0] == m else "")
        raise JSDMError(f"{name}= has {arr.shape[0]} values but there are {n} sites.{hint}")
    if arr.ndim == 2:
        r, c = arr.shape
        if r in (1, n) and c in (1, m):
            return arr
        hint = (f" It looks transposed: pass {name}.T." if (r, c) == (m, n) else "")
        raise JSDMError(f"{name}= has shape {arr.shape}; it must be ({n}, {m}) (sites x species), "
                        f"({n}, 1), (1, {m}), ({n},) or a number.{hint}")
    raise JSDMError(f"{name}= has {arr.ndim} dimensions (shape {arr.shape}); give at most 2 "
                    f"(sites x species).")


def cell_values(value, name, sites, species):
    """An ``offset=`` or ``trials=`` argument as a new float (n, m) array in the data's order.

    Parameters
    ----------
    value : None, number, array-like, Series or DataFrame
        A Series indexed by site (or by species) gives one value per site (or
        species); a DataFrame is sites x species (or one column indexed by
        site); labels are matched, whatever their order. Unlabelled input is
        taken in the order of the sites and species and must have shape
        (n, m), (n, 1), (1, m), (n,) or be a number.
    name : str
        The argument's name, for messages.
    sites, species : Index
        Labels of the response table's rows and columns.

    Returns
    -------
    ndarray (n, m) or None
    """
    if value is None:
        return None
    n, m = len(sites), len(species)
    if isinstance(value, pd.DataFrame):
        arr = _frame_values(value, name, sites, species)
    elif isinstance(value, pd.Series):
        arr = _series_values(value, name, sites, species)
    else:
        arr = _array_values(value, name, n, m)
    return np.array(np.broadcast_to(arr, (n, m)), dtype=float)


def check_offset(off, W, sites, species):
    """Refuse non-finite offsets on observed cells; return a copy with 0 on missing cells."""
    if off is None:
        return None
    observed = np.broadcast_to(W > 0, off.shape)
    bad = ~np.isfinite(off) & observed
    if bad.any():
        rows, cols = np.nonzero(bad)
        cells = [(sites[i], species[j], float(off[i, j])) for i, j in zip(rows, cols)]
        raise JSDMError(
            f"offset= is missing or infinite at {int(bad.sum())} observed cell(s), "
            f"(site, species, value) {show(cells)}. An offset must be a finite number wherever "
            "the response is observed: fill it in, or set those responses to NaN (missing).")
    return np.where(observed, off, 0.0)


# --- the design -----------------------------------------------------------------------
_RANK_RTOL = 1e-9


def _dependence(Z, k, kept, names):
    """Describe column k of Z as a combination of the ``kept`` columns, or None if independent."""
    col = Z[:, k]
    norm = np.linalg.norm(col)
    if norm == 0.0:
        return f"{names[k]!r} is zero at every site (a factor level that no site has?)"
    basis = Z[:, kept]
    coef, *_ = np.linalg.lstsq(basis, col, rcond=None)
    if np.linalg.norm(col - basis @ coef) > _RANK_RTOL * norm:
        return None
    if kept == [0] or np.allclose(coef[1:], 0.0, atol=1e-8 * max(1.0, np.abs(coef).max())):
        return f"{names[k]!r} is constant across sites (it duplicates the species intercepts)"
    big = max(1.0, np.abs(coef).max())
    parts = [(c, f"{abs(c):.4g} * {names[j]!r}" if j else f"{abs(c):.4g}")
             for c, j in zip(coef, kept) if abs(c) > 1e-8 * big]
    more = len(parts) - 6
    parts = sorted(parts, key=lambda ct: -abs(ct[0]))[:6] if more > 0 else parts
    text = " ".join(f"{'-' if c < 0 else '+'} {t}" for c, t in parts)
    text = text[2:] if text.startswith("+") else text
    return f"{names[k]!r} = " + text + (f" + ... ({more} more columns)" if more > 0 else "")


def check_design_rank(X, names):
    """Refuse a rank-deficient design (with the species intercepts), naming the columns.

    Parameters
    ----------
    X : ndarray (n, p)
        Site design without intercept.
    names : sequence of str
        Column names (the model's terms).

    Raises
    ------
    JSDMError
        When the intercept and the p columns are not linearly independent:
        a constant column, an all-zero column, or a column that is an exact
        linear combination of earlier ones (each named, with the combination).
    """
    n, p = X.shape
    if p == 0:
        return
    Z = np.column_stack([np.ones(n), X])
    scale = np.linalg.norm(Z, axis=0)
    Zs = Z / np.where(scale > 0, scale, 1.0)
    sv = np.linalg.svd(Zs, compute_uv=False)
    if len(sv) == p + 1 and sv[-1] > _RANK_RTOL * sv[0]:
        return
    labels = ["(Intercept)", *map(str, names)]
    kept, found = [0], []
    for k in range(1, p + 1):
        why = _dependence(Z, k, kept, labels)
        if why is None:
            kept.append(k)
        else:
            found.append(why)
    size = (f" The data have {n} sites for {p + 1} coefficients per species (intercept and "
            f"{p} slopes)." if n <= p else "")
    raise JSDMError(
        "the covariate design is rank deficient, so some slopes are not identified: "
        + "; ".join(found or ["the columns are (numerically) linearly dependent"]) + "."
        + size + " Drop these columns from X (or from the formula), or merge the factor levels "
        "involved, and fit again.")


# --- response scale ------------------------------------------------------------------
MAX_ABS_RESPONSE = 1e15          # beyond 2**53 whole numbers are no longer exact in float64
GAUSSIAN_SD_RANGE = (1e-6, 1e5)  # residual sd bounds of the engine are 2e-9 .. 3.3e6


def check_response_scale(Y, W, family, species):
    """Refuse responses whose scale the engine cannot represent; say how to rescale.

    Parameters
    ----------
    Y, W : ndarray (n, m)
        Responses (missing cells filled) and the observed-cell mask.
    family : Family
    species : Index
    """
    obs = np.broadcast_to(W > 0, Y.shape)
    big = np.abs(np.where(obs, Y, 0.0)).max(initial=0.0)
    if big > MAX_ABS_RESPONSE:
        k = int(np.floor(np.log10(big))) - 2
        raise JSDMError(
            f"responses as large as {big:.3g} cannot be fitted reliably in floating point "
            f"(limit {MAX_ABS_RESPONSE:.0e}). Change their unit first, e.g. Y / 1e{k}, and "
            "read the estimates in that unit.")
    for fam, cols in family.column_groups(Y.shape[1]):     # a family per species: each its own
        if fam.dispersion_is_response_sd:
            _check_sd(Y[:, cols], obs[:, cols], species[cols])


def _check_sd(Y, obs, species):
    """Refuse Gaussian-like responses whose sd the residual sd cannot take."""
    Yo = np.where(obs, Y, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)         # all-missing species
        scale = np.nanmax(np.abs(Yo), axis=0)
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
        sd = np.nanstd(Yo / scale, axis=0) * scale               # no underflow near 1e-300
    lo, hi = GAUSSIAN_SD_RANGE
    live = np.isfinite(sd) & (sd > 0)
    bad = live & ((sd > hi) | (sd < lo))
    if bad.any():
        typical = float(np.median(sd[live]))
        k = int(np.round(np.log10(typical)))
        fix = f"Y / 1e{k}" if k > 0 else f"Y * 1e{-k}"
        raise JSDMError(
            f"Gaussian responses of species {show(list(species[bad]))} have standard deviations "
            f"{show([float(f'{v:.3g}') for v in sd[bad]])}, outside the range "
            f"{lo:g} to {hi:g} that the residual sd of this model can take. Change the unit of "
            f"the responses first (e.g. {fix}) and read the estimates in that unit.")
