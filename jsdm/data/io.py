"""Readers for the common shapes of community data files.

- wide: a CSV of sites x species (first column the site id), with optional
  covariate CSV (first column the site id) and trait CSV (first column the
  species id): :func:`read_wide`;
- long: one CSV row per site x species: :func:`read_long`.

Labels are read as text, so that "01" stays "01" and site ids match across
files. Missing values are the usual spellings (empty, NA, NaN, N/A, NULL,
...), but **not** the word "None", which is a real category in ecological
tables (e.g. shrub cover "None"). Text columns of covariate and trait files
become (unordered) pandas Categoricals with sorted levels.
"""
from pathlib import Path

import pandas as pd

from ..exceptions import JSDMError
from .community import Community

NA_VALUES = ["", "NA", "N/A", "n/a", "NaN", "nan", "-NaN", "-nan", "#N/A", "#NA",
             "<NA>", "NULL", "null", "."]


def read_csv_table(path, what, index=True, label_columns=(), sep=","):
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

    Returns
    -------
    DataFrame
    """
    path = Path(path)
    if not path.is_file():
        where = "a folder, not a file" if path.is_dir() else "not found"
        raise JSDMError(f"{what} file {str(path)!r} is {where} (absolute path: {path.resolve()}). "
                        "Check the path and the current folder.")
    try:
        header = pd.read_csv(path, nrows=0, sep=sep).columns
        text_cols = ([header[0]] if index and len(header) else []) + [
            c for c in label_columns if c in header]
        df = pd.read_csv(path, sep=sep, dtype={c: str for c in text_cols},
                         keep_default_na=False, na_values=NA_VALUES)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
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
    return df


def categorise_text(df):
    """Copy of ``df`` with text columns turned into unordered Categoricals (sorted levels)."""
    out = df.copy()
    for name in out.columns:
        col = out[name]
        if pd.api.types.is_string_dtype(col.dtype) or col.dtype == object:
            out[name] = pd.Categorical(col)
    return out


def read_wide(y_path, covariates=None, traits=None, sep=","):
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

    Returns
    -------
    Community
        Rows of the covariate and trait files are matched by label.
    """
    Y = read_csv_table(y_path, "response table", sep=sep)
    X = None if covariates is None else categorise_text(read_csv_table(covariates, "covariate", sep=sep))
    T = None if traits is None else categorise_text(read_csv_table(traits, "trait", sep=sep))
    return Community(Y, X, T)


def read_long(path, site="site", species="species", response="y",
              covariates=None, traits=None, sep=","):
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
    sep : str
        Field separator.

    Returns
    -------
    Community
    """
    df = read_csv_table(path, "long table", index=False, label_columns=(site, species), sep=sep)
    meta = [c for c in (site, species, response) if c in df.columns]
    df = pd.concat([df[meta], categorise_text(df.drop(columns=meta))], axis=1)
    return Community.from_long(df, site=site, species=species, response=response,
                               covariates=covariates, traits=traits)
