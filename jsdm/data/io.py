"""Readers for the common shapes of community data files.

- wide: a CSV of sites x species (first column the site id), with optional
  covariate CSV (first column the site id) and trait CSV (first column the
  species id): :func:`read_wide`;
- long: one CSV row per site x species: :func:`read_long`.

Labels are read as text, so that "01" stays "01" and site ids match across
files; in the id columns only an empty cell is missing (a site may be called
"NA"). Elsewhere missing values are the usual spellings (empty, NA, NaN, N/A,
NULL, ...) plus any given in ``na_values``, but **not** the word "None", which
is a real category in ecological tables (e.g. shrub cover "None"). Text
columns of covariate and trait files become (unordered) pandas Categoricals
with sorted levels.

Nothing is read silently wrong: a header that repeats or omits a column name,
a lone carriage return in a file with "\\n" line ends (a label holding a line
break), and a column of numbers with a few text cells ("n.d.", decimal commas)
are refused with the file, column and cells named.
"""
import mmap
import re
from pathlib import Path

import pandas as pd

from ..exceptions import JSDMError
from .community import Community
from .validation import numeric_text_cells, numeric_text_message, show

NA_VALUES = ["", "NA", "N/A", "n/a", "NaN", "nan", "-NaN", "-nan", "#N/A", "#NA",
             "<NA>", "NULL", "null", "."]


def read_csv_table(path, what, index=True, label_columns=(), sep=",", decimal=".",
                   na_values=(), categorical=()):
    """Read one CSV file with clear errors.

    Parameters
    ----------
    path : str or Path
    what : str
        What the file holds, for messages ("response table", "covariates", ...).
    index : bool
        Use the first column as the row index (read as text).
    label_columns : sequence of str
        Further columns to read as text (long tables: site and species ids).
    sep : str
        Field separator.
    decimal : str
        Decimal mark of the numbers ("," for files written with decimal commas).
    na_values : sequence of str
        Further spellings of a missing value (e.g. "n.d.", "-"), besides the
        usual ones (:data:`NA_VALUES`).
    categorical : sequence of str
        Text columns that are categorical on purpose: not checked for numbers
        stored as text.

    Returns
    -------
    DataFrame

    Raises
    ------
    JSDMError
        The file is missing or unreadable; its header repeats a column name or
        leaves one empty (pandas would rename them to 'x.1' or 'Unnamed: 2');
        a column that mostly holds numbers has text cells ('n.d.', decimal
        commas), which would turn it into a factor.
    """
    path = Path(path)
    if not path.is_file():
        where = "a folder, not a file" if path.is_dir() else "not found"
        raise JSDMError(f"{what} file {str(path)!r} is {where} (absolute path: {path.resolve()}). "
                        "Check the path and the current folder.")
    _check_line_ends(path, what)
    try:
        header = _header(path, sep, index, what)
        if index and header and header[0] == "":
            header[0] = "Unnamed: 0"            # R's write.csv leaves the id column unnamed
        text_cols = ([header[0]] if index and len(header) else []) + [
            c for c in label_columns if c in header]
        missing = NA_VALUES + list(na_values)   # labels may be "NA", "null", ...: only "" is missing
        df = pd.read_csv(path, sep=sep, header=0, names=header, decimal=decimal,
                         dtype={c: str for c in text_cols}, keep_default_na=False,
                         na_values={c: [""] if c in text_cols else missing for c in header})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        if isinstance(err, JSDMError):
            raise
        fix = ("It is not UTF-8 text: save it as 'CSV UTF-8' (or convert it) and try again."
               if isinstance(err, UnicodeDecodeError) else
               f"Check that it is a text CSV with one header row and {sep!r} between fields.")
        raise JSDMError(
            f"could not read {what} file {str(path)!r} as CSV ({type(err).__name__}: {err}). {fix}"
        ) from err
    if index:
        if df.shape[1] < 2:
            raise JSDMError(f"{what} file {str(path)!r} has {df.shape[1]} column(s); it needs the "
                            "id column first, then at least one data column.")
        df = df.set_index(df.columns[0])
    skip = set(text_cols) | set(categorical)
    _check_numeric_text(df[[c for c in df.columns if c not in skip]], path, what, index)
    return df


def _check_line_ends(path, what):
    """Refuse a file that ends lines with "\\n" but also holds a lone carriage return.

    pandas writes a label holding "\\r" unquoted; reading it back breaks the
    line there and shifts the row's cells (a site "\\r" came back as a site
    "3.0" with a missing cell). Files that end every line with "\\r" alone (old
    Mac files) are fine.
    """
    if path.stat().st_size == 0:
        return
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data.find(b"\n") < 0:
            return
        lone = re.search(rb"\r(?!\n)", data)
        line = None if lone is None else data[:lone.start()].count(b"\n") + 1
    if line is not None:
        raise JSDMError(f"{what} file {str(path)!r} has a lone carriage return (\\r) on line "
                        f"{line}, though its lines end with \\n: a label or cell holds a line "
                        "break, and the row would be read shifted. Remove the line breaks from "
                        "the labels (jsdm refuses such labels) and write the file again.")


def _header(path, sep, index, what):
    """The header row as written in the file; repeated or empty names are refused."""
    row = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False)
    names = [str(x) for x in row.iloc[0]] if len(row) else []
    first = 1 if index else 0          # R and pandas write an empty name over the id column
    empty = [k + 1 for k, x in enumerate(names) if k >= first and x.strip() == ""]
    if empty:
        raise JSDMError(f"{what} file {str(path)!r}: column(s) {empty} of the header have no "
                        "name; give every column a name in the first row.")
    seen, dup = set(), []
    for x in names:
        if x in seen and x not in dup:
            dup.append(x)
        seen.add(x)
    if dup:
        raise JSDMError(f"{what} file {str(path)!r}: the header repeats the column name(s) "
                        f"{show(dup)}; each column needs its own name (sum or rename the repeated "
                        "species or covariates).")
    return names


def _check_numeric_text(df, path, what, index):
    """Refuse text cells in a column that otherwise holds numbers."""
    axis = "row" if not index else ("species" if what == "trait" else "site")
    for name in df.columns:
        found = numeric_text_cells(df[name])
        if found is None:
            continue
        cells, comma = found
        bad = list(dict.fromkeys(str(v).strip() for v in cells))[:3]
        remedies = [f"if they mean 'missing', list them as missing values: na_values={bad!r} "
                    f"(command line: --na-values {','.join(bad)})"] if not comma else []
        if comma:
            remedies.append("if the file uses decimal commas, read it with decimal=',' "
                            "(command line: --decimal ,)")
        if what == "response table":
            shown = show([f"{lab}: {val!r}" for lab, val in cells.items()], 4)
            raise JSDMError(f"{what} file {str(path)!r}: species {show([name])} hold "
                            f"{'decimal commas' if comma else 'text'} among numbers at "
                            f"{len(cells)} site(s) {shown}; responses must be numbers. Correct "
                            "those cells; " + "; ".join(remedies) + ".")
        remedies.append(f"if {name!r} is categorical on purpose, name it in "
                        f"categorical=[{name!r}] (command line: --categorical {name})")
        raise JSDMError(numeric_text_message(name, f"of {what} file {str(path)!r}", axis,
                                             cells, comma) + " Correct those cells; "
                        + "; ".join(remedies) + ".")


def categorise_text(df, categorical=()):
    """Copy of ``df`` with text columns, and the columns named in ``categorical`` (numbers
    included), turned into unordered Categoricals (sorted levels)."""
    out = df.copy()
    for name in out.columns:
        col = out[name]
        if pd.api.types.is_string_dtype(col.dtype) or col.dtype == object or name in categorical:
            out[name] = pd.Categorical(col)
    return out


def _check_named(categorical, tables):
    """Every column named in ``categorical`` must exist in one of the tables read."""
    known = [c for t in tables if t is not None for c in t.columns]
    unknown = [c for c in categorical if c not in known]
    if unknown:
        raise JSDMError(f"categorical= names column(s) {show(unknown)} that the files do not have; "
                        f"their covariate and trait columns are {show(known, 20)}.")



def read_wide(y_path, covariates=None, traits=None, sep=",", decimal=".", na_values=(),
              categorical=()):
    """Read a wide community: sites x species CSV plus optional covariates and traits.

    Parameters
    ----------
    y_path : str or Path
        CSV with one row per site: first column the site id, then one column
        per species.
    covariates : str or Path, optional
        CSV with one row per site: first column the site id, then covariates.
    traits : str or Path, optional
        CSV with one row per species: first column the species id, then traits.
    sep : str
        Field separator of all files (use "\\t" for tab-separated files).
    decimal : str
        Decimal mark of all files ("," for decimal commas).
    na_values : sequence of str
        Further spellings of a missing value, e.g. ``["n.d."]``.
    categorical : sequence of str
        Covariate or trait columns that are categorical on purpose: read as
        factors even when they hold numbers only (plot codes 1, 2, 3), and not
        refused when they mostly hold numbers.

    Returns
    -------
    Community
        Rows of the covariate and trait files are matched by label.

    Raises
    ------
    JSDMError
        Besides the checks of :class:`Community`: a header that repeats or
        omits a column name, and a column of numbers with some text cells
        (named with their sites), which would otherwise become a factor.
    """
    kw = dict(sep=sep, decimal=decimal, na_values=na_values, categorical=categorical)
    Y = read_csv_table(y_path, "response table", **kw)
    X = None if covariates is None else read_csv_table(covariates, "covariate", **kw)
    T = None if traits is None else read_csv_table(traits, "trait", **kw)
    _check_named(categorical, (X, T))
    X, T = (None if t is None else categorise_text(t, categorical) for t in (X, T))
    return Community(Y, X, T)


def read_long(path, site="site", species="species", response="y",
              covariates=None, traits=None, sep=",", decimal=".", na_values=(), categorical=()):
    """Read a long community CSV (one row per site x species).

    Parameters
    ----------
    path : str or Path
        CSV with a site id column, a species id column and a response column;
        other columns become covariates or traits as in
        :meth:`Community.from_long`.
    site, species, response : str
        Column names.
    covariates, traits : list of str, optional
        Columns to use as covariates / traits (others classified automatically).
    sep, decimal, na_values, categorical
        As in :func:`read_wide`.

    Returns
    -------
    Community
    """
    df = read_csv_table(path, "long table", index=False, label_columns=(site, species), sep=sep,
                        decimal=decimal, na_values=na_values, categorical=categorical)
    meta = [c for c in (site, species, response) if c in df.columns]
    _check_named(categorical, (df.drop(columns=meta),))
    df = pd.concat([df[meta], categorise_text(df.drop(columns=meta), categorical)], axis=1)
    return Community.from_long(df, site=site, species=species, response=response,
                               covariates=covariates, traits=traits)
