"""Checks on community tables: labels, alignment, response values.

Every check raises :class:`~jsdm.exceptions.JSDMError` (or warns with
:class:`~jsdm.exceptions.DataWarning`) with a message that names the
offending labels, echoes a few values and says how to fix the input.
Nothing here modifies its arguments.
"""
import re
import warnings

import numpy as np
import pandas as pd

from ..exceptions import DataWarning, JSDMError

_SHOW = 5  # how many offending labels or values a message lists


def show(labels, limit=_SHOW):
    """Short printable list of labels: ``['a', 'b', ... (12 in all)]``."""
    labels = list(labels)
    text = ", ".join(repr(x) for x in labels[:limit])
    if len(labels) > limit:
        text += f", ... ({len(labels)} in all)"
    return f"[{text}]"


def as_frame(obj, what, index_name):
    """Copy ``obj`` (DataFrame, Series, or None) into a new DataFrame.

    Parameters
    ----------
    obj : DataFrame, Series or None
        The user's table; never modified.
    what : str
        Name used in messages ("Y", "X", "traits").
    index_name : str
        Name given to the row index of the copy ("site" or "species").

    Returns
    -------
    DataFrame or None
    """
    if obj is None:
        return None
    if isinstance(obj, pd.Series):
        obj = obj.to_frame(name=obj.name if obj.name is not None else what)
    if not isinstance(obj, pd.DataFrame):
        raise JSDMError(
            f"{what} must be a pandas DataFrame, got {type(obj).__name__}. "
            f"Wrap it first, e.g. pd.DataFrame(array, index=labels, columns=names)."
        )
    out = obj.copy(deep=True)
    out.index = out.index.copy()
    out.index.name = index_name
    return out


def check_unique(index, what, axis_word, fix):
    """Raise if an index holds duplicated, missing or unusable labels.

    Parameters
    ----------
    index : Index
        Labels to check.
    what : str
        Table name for the message ("Y rows", "X columns", ...).
    axis_word : str
        What the labels are ("site", "species", "covariate").
    fix : str
        Sentence appended to the message saying what to do.

    Raises
    ------
    JSDMError
        A MultiIndex (several label levels), missing (NaN) labels, empty
        labels or labels with control characters (line breaks, tabs, ...),
        which do not survive a CSV file, or duplicated labels.
    """
    check_labels(index, what, axis_word)
    if index.hasnans:
        raise JSDMError(f"{what}: some {axis_word} labels are missing (NaN; an empty cell in a "
                        f"CSV file reads as missing). {fix}")
    dup = index[index.duplicated()].unique()
    if len(dup):
        raise JSDMError(f"{what}: duplicated {axis_word} labels {show(dup)}. {fix}")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_labels(index, what, axis_word):
    """Refuse label sets that cannot be shown, matched or written to CSV and read back.

    A MultiIndex, the empty label '' and labels holding control characters
    (carriage return, line feed, tab, NUL, ...) are refused with the labels
    named; a CSV written by pandas or R would bring them back changed.
    """
    if isinstance(index, pd.MultiIndex):
        raise JSDMError(
            f"{what} have {index.nlevels} levels of labels (a pandas MultiIndex, e.g. "
            f"{index[0]!r}); jsdm needs one label per {axis_word}. Join the levels first, e.g. "
            "df.columns = ['_'.join(map(str, c)) for c in df.columns] (or df.index for rows).")
    text = [x for x in index if isinstance(x, str)]
    empty = [x for x in text if x.strip() == ""]
    if empty:
        raise JSDMError(f"{what}: {len(empty)} {axis_word} label(s) are empty or blank "
                        f"{show(empty)}; give every {axis_word} a visible label.")
    bad = [x for x in text if _CONTROL.search(x)]
    if bad:
        raise JSDMError(f"{what}: {axis_word} labels {show(bad)} hold control characters (line "
                        "breaks, tabs, ...), which do not survive a CSV file; remove them, e.g. "
                        "df.index = df.index.str.replace(r'[\\x00-\\x1f]', ' ', regex=True).")


def align(frame, target, what, target_what, axis_word):
    """Reorder the rows of ``frame`` to the labels of ``target``.

    Parameters
    ----------
    frame : DataFrame
        Table indexed by label (e.g. X indexed by site).
    target : Index
        Labels in the wanted order (e.g. the rows of Y).
    what, target_what : str
        Table names for the message.
    axis_word : str
        "site" or "species".

    Returns
    -------
    DataFrame
        ``frame`` with rows in the order of ``target``.

    Raises
    ------
    JSDMError
        When a label is present in one table and absent in the other.
    """
    only_frame = frame.index.difference(target, sort=False)
    only_target = target.difference(frame.index, sort=False)
    if len(only_frame) or len(only_target):
        parts = []
        if len(only_target):
            parts.append(f"{axis_word} labels in {target_what} but not in {what}: {show(only_target)}")
        if len(only_frame):
            parts.append(f"{axis_word} labels in {what} but not in {target_what}: {show(only_frame)}")
        hint = _type_hint(frame.index, target)
        raise JSDMError(
            f"{what} and {target_what} do not have the same {axis_word} labels; "
            + "; ".join(parts) + ". Rows are matched by label, not by position: give "
            f"{what} exactly one row per {axis_word} of {target_what}." + hint
        )
    return frame.reindex(target)


def _type_hint(a, b):
    """Extra advice when two label sets agree once written as text."""
    if set(map(str, a)) == set(map(str, b)):
        return (
            " The labels agree when written as text, so their types differ "
            f"({a.dtype} vs {b.dtype}): convert both, e.g. df.index = df.index.astype(str)."
        )
    return ""


def check_response(Y):
    """Return Y as float64 after checking it is numeric and finite.

    Parameters
    ----------
    Y : DataFrame, shape (n_sites, n_species)

    Returns
    -------
    DataFrame, shape (n_sites, n_species)
        float64 copy; missing values (None, pd.NA) become NaN.
    """
    if Y.shape[0] == 0 or Y.shape[1] == 0:
        raise JSDMError(f"Y has shape {Y.shape}; a community needs at least one site (row) "
                        "and one species (column).")
    bad = [c for c in Y.columns if not is_numeric_column(Y[c])]
    if bad:
        examples, values = _non_numeric_examples(Y[bad[0]])
        raise JSDMError(
            f"Y must hold numbers, but species {show(bad)} have non-numeric values "
            f"(e.g. {examples} in {bad[0]!r}). " + _conversion_hint(values)
        )
    out = Y.astype("float64")
    arr = out.to_numpy()
    if np.isinf(arr).any():
        rows, cols = np.nonzero(np.isinf(arr))
        cells = [(out.index[r], out.columns[c]) for r, c in zip(rows, cols)]
        raise JSDMError(
            f"Y holds infinite values at (site, species) {show(cells)}. "
            "Replace them by a finite value or by NaN (missing)."
        )
    return out


def is_numeric_column(col):
    """True for numeric (incl. bool and nullable) columns and object columns of numbers."""
    dtype = col.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return False
    return pd.api.types.is_numeric_dtype(dtype) or (pd.api.types.is_object_dtype(dtype) and _all_numbers(col))


def _all_numbers(col):
    vals = col.dropna()
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
               for v in vals)


def _non_numeric_examples(col):
    """A few values of ``col`` that are not numbers (text, booleans mixed with numbers, ...)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return f"a pandas Categorical with levels {show(col.cat.categories, 3)}", []
    vals = col.dropna()
    bad = [v for v in vals if not isinstance(v, (int, float, np.integer, np.floating))
           or isinstance(v, (bool, np.bool_))]
    bad = sorted(dict.fromkeys(bad), key=lambda v: isinstance(v, str) and _parses(v))
    return show(bad, 3), bad


def _conversion_hint(bad):
    """What to do about the non-numeric values found."""
    if bad and all(isinstance(v, str) and _parses(v) for v in bad):
        return ("They are text that looks like numbers (read as text, e.g. because of a decimal "
                "comma or quoting): convert with Y = Y.apply(pd.to_numeric, errors='coerce'), or "
                "read the file with the right decimal= and na_values= settings.")
    if bad and any(isinstance(v, (bool, np.bool_)) for v in bad):
        return ("True/False mixed with numbers: convert the column, e.g. Y[c] = Y[c].astype(float), "
                "after checking what True and False stand for.")
    return ("Convert them, e.g. Y = Y.apply(pd.to_numeric, errors='coerce') to turn text "
            "into NaN (missing).")


def numeric_text_cells(col):
    """Cells that keep a mostly numeric text column from being numbers.

    Parameters
    ----------
    col : Series of text (object or string dtype)

    Returns
    -------
    (Series, bool) or None
        The offending cells (indexed like ``col``) and whether the numbers
        would parse with a decimal comma; None when the column is not mostly
        numbers (at least half of its non-missing cells) or is all numbers
        with a decimal point.
    """
    if not (col.dtype == object or pd.api.types.is_string_dtype(col.dtype)):
        return None
    vals = col.dropna()
    if not len(vals):
        return None
    text = vals.map(lambda v: v.strip() if isinstance(v, str) else v)
    is_str = text.map(lambda v: isinstance(v, str))
    number = text.map(lambda v: isinstance(v, (int, float, np.integer, np.floating))
                      and not isinstance(v, (bool, np.bool_)))
    ok = number | (is_str & text.map(lambda v: isinstance(v, str) and _parses(v)))
    comma = is_str & text.map(lambda v: isinstance(v, str) and "," in v
                              and _parses(v.replace(",", ".")))
    if ok.mean() < 0.5 and (ok | comma).mean() < 0.5:
        return None
    if ok.all() and not is_str.any():
        return None
    if comma.any() and (ok | comma).all():
        return vals[comma], True
    return vals[~ok], bool(comma.any())


def numeric_text_message(col, where, axis_word, cells, decimal_comma):
    """Sentence naming the cells of a numeric column that are not numbers, and the remedies."""
    tail = "; read as it is, it would become a factor with one level per distinct value."
    if not len(cells):
        return f"column {col!r} {where} holds numbers stored as text" + tail
    shown = show([f"{lab}: {val!r}" for lab, val in cells.items()], 4)
    what = ("numbers written with decimal commas" if decimal_comma
            else "numbers but also text")
    return f"column {col!r} {where} holds {what} at {len(cells)} {axis_word}(s) {shown}" + tail


def _parses(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def check_table(frame, what, axis_word):
    """Check a covariate or trait table: unique column names, no infinities.

    Parameters
    ----------
    frame : DataFrame
        X (sites x covariates) or traits (species x traits).
    what : str
        "X" or "traits".
    axis_word : str
        "site" or "species" (what the rows are).
    """
    check_unique(frame.columns, f"{what} columns", "column",
                 f"Rename the {what} columns so that each name occurs once.")
    for name in frame.columns:
        col = frame[name]
        if pd.api.types.is_numeric_dtype(col.dtype) and not isinstance(col.dtype, pd.CategoricalDtype):
            inf = np.isinf(col.to_numpy(dtype=float, na_value=np.nan))
            if inf.any():
                raise JSDMError(
                    f"{what} column {name!r} is infinite at "
                    f"{'species' if axis_word == 'species' else axis_word + 's'} "
                    f"{show(col.index[inf])}. "
                    "Replace them by finite values (or NaN and then impute)."
                )


def warn_numeric_text(frame, what, axis_word):
    """Warn (DataWarning) about text columns of X or traits that mostly hold numbers."""
    for name in frame.columns:
        found = numeric_text_cells(frame[name])
        if found is None:
            continue
        cells, comma = found
        warnings.warn(
            numeric_text_message(name, f"of {what}", axis_word, cells, comma) + " Convert it, "
            f"e.g. {what}[{name!r}] = pd.to_numeric({what}[{name!r}], errors='coerce') (those "
            f"cells become missing), or make it a factor on purpose with .astype('category').",
            DataWarning, stacklevel=4)


def warn_missing_table(frame, what, axis_word):
    """Warn (DataWarning) when a covariate or trait table has missing values."""
    miss = frame.isna()
    if not miss.to_numpy().any():
        return
    cols = [c for c in frame.columns if miss[c].any()]
    rows = frame.index[miss.any(axis=1).to_numpy()]
    warnings.warn(
        f"{what} columns {show(cols)} have missing values at {axis_word}s {show(rows)}. "
        "Models need complete covariates and traits: impute them, or leave those "
        f"{axis_word}s out with Community.subset(...).",
        DataWarning, stacklevel=4,
    )


def empty_labels(Y):
    """Species and sites without any non-zero observed value.

    Parameters
    ----------
    Y : DataFrame, shape (n_sites, n_species), float

    Returns
    -------
    (Index, Index)
        Empty species (columns), empty sites (rows).
    """
    nonzero = (Y.to_numpy() != 0) & ~np.isnan(Y.to_numpy())
    return Y.columns[~nonzero.any(axis=0)], Y.index[~nonzero.any(axis=1)]


def warn_empty(Y):
    """Warn (DataWarning) about empty species and sites; never drops them."""
    species, sites = empty_labels(Y)
    if len(species) == 0 and len(sites) == 0:
        return
    parts = []
    if len(species):
        parts.append(f"species with no non-zero observation (all zero or missing): {show(species)}")
    if len(sites):
        parts.append(f"sites with no non-zero observation (all zero or missing): {show(sites)}")
    warnings.warn(
        "; ".join(parts) + ". They were kept; they carry no information on "
        "associations and can make estimates diverge. Remove them with "
        "Community.drop_empty(), which returns a new Community and reports what it dropped.",
        DataWarning, stacklevel=3,
    )
