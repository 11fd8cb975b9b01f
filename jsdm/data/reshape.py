"""Wide <-> long reshaping of community tables.

Wide form: ``Y`` (sites x species), ``X`` (sites x covariates), ``traits``
(species x traits). Long form: one row per site x species with columns
``site``, ``species``, the response, the site covariates, then the traits.

In the long table produced by :func:`wide_to_long` the ``site`` and
``species`` columns are pandas Categoricals whose categories are the labels
in community order. :func:`long_to_wide` uses those categories (order, and
sites or species with no rows at all) when it finds them, which is what makes
wide -> long -> wide exact. With plain columns the order of first appearance
is used.

Classifying the other columns of a long table (when not named explicitly):

- constant within every site, not within every species: site covariate;
- constant within every species, not within every site: trait;
- constant within both (so one value overall, on a connected design): kept
  as a **site covariate**, with a :class:`~jsdm.exceptions.DataWarning`
  that says so (name it in ``traits=`` to make it a trait instead);
- varying within both: error (it belongs to cells, not to sites or species).
"""
import warnings

import numpy as np
import pandas as pd

from ..exceptions import DataWarning, JSDMError
from .validation import show


def wide_to_long(Y, X, traits, response="y", dropna=True):
    """Stack wide tables into one row per site x species.

    Parameters
    ----------
    Y : DataFrame, shape (n_sites, n_species), float
    X : DataFrame, shape (n_sites, p) or None, rows aligned with Y
    traits : DataFrame, shape (n_species, t) or None, rows aligned with Y's columns
    response : str
        Name of the response column.
    dropna : bool
        Drop site x species cells whose response is missing.

    Returns
    -------
    DataFrame, shape (n_rows, 3 + p + t)
        Site-major rows (all species of the first site, then the next site).
    """
    _check_names(X, traits, response)
    n, m = Y.shape
    site_idx = np.repeat(np.arange(n), m)
    spec_idx = np.tile(np.arange(m), n)
    values = Y.to_numpy().reshape(-1)
    if dropna:
        keep = ~np.isnan(values)
        site_idx, spec_idx, values = site_idx[keep], spec_idx[keep], values[keep]
    parts = [
        pd.DataFrame({
            "site": pd.Categorical.from_codes(site_idx, categories=Y.index),
            "species": pd.Categorical.from_codes(spec_idx, categories=Y.columns),
            response: values,
        })
    ]
    for table, idx in ((X, site_idx), (traits, spec_idx)):
        if table is not None and table.shape[1]:
            parts.append(table.iloc[idx].reset_index(drop=True))
    return pd.concat(parts, axis=1)


def _check_names(X, traits, response):
    taken = {"site": "the site column", "species": "the species column",
             response: "the response column"}
    for table, what in ((X, "covariate"), (traits, "trait")):
        for name in ([] if table is None else table.columns):
            if name in taken:
                raise JSDMError(
                    f"{what} {name!r} has the same name as {taken[name]} of the long table. "
                    f"Rename it, or choose another response name with to_long(response=...)."
                )
            taken[name] = f"the {what} {name!r}"


def labels_of(col, what):
    """Labels of a long-table id column, in community order.

    Parameters
    ----------
    col : Series
        The site or species column of a long table.
    what : str
        "site" or "species", for messages.

    Returns
    -------
    Index
        Categories (all of them, in order) for a Categorical column, else the
        unique values in order of first appearance.
    """
    if col.isna().any():
        rows = col.index[col.isna().to_numpy()]
        raise JSDMError(
            f"the {what} column {col.name!r} is missing (NaN) in rows {show(rows)}. "
            f"Every row needs a {what} label: fill them in or drop those rows."
        )
    if isinstance(col.dtype, pd.CategoricalDtype):
        return pd.Index(col.cat.categories, name=what)
    return pd.Index(pd.unique(col.to_numpy()), name=what, dtype=col.dtype)


def check_no_duplicate_cells(df, site, species):
    """Raise when a site x species pair occurs in more than one row."""
    dup = df.duplicated([site, species], keep=False)
    if dup.any():
        pairs = list(dict.fromkeys(zip(df.loc[dup, site], df.loc[dup, species])))
        raise JSDMError(
            f"the long table has {int(dup.sum())} rows that repeat a ({site}, {species}) pair, "
            f"e.g. {show(pairs)}. Each site x species cell must occur once: aggregate first, e.g. "
            f"df.groupby([{site!r}, {species!r}], as_index=False, observed=True).sum(), "
            "or drop the repeated rows."
        )


def varies_within(df, by, column):
    """Labels of ``by`` groups in which ``column`` takes more than one value (NaN counts)."""
    counts = df.groupby(by, observed=True, sort=False)[column].nunique(dropna=False)
    return counts.index[(counts > 1).to_numpy()]


def classify_columns(df, site, species, covariates, traits):
    """Split the non-id, non-response columns into covariates and traits.

    Parameters
    ----------
    df : DataFrame
        Long table.
    site, species : str
        Names of the id columns.
    covariates, traits : list of str or None
        Columns named explicitly by the user (checked); the other columns are
        classified by the rule in the module docstring.

    Returns
    -------
    (list of str, list of str)
        Covariate names and trait names, in the column order of ``df``.
    """
    covariates = [] if covariates is None else list(covariates)
    traits = [] if traits is None else list(traits)
    for name in covariates:
        _check_constant(df, site, name, "site covariate")
    for name in traits:
        _check_constant(df, species, name, "trait")
    named = set(covariates) | set(traits)
    both = []
    for name in df.columns:
        if name in named or name in (site, species):
            continue
        in_site = len(varies_within(df, site, name)) == 0
        in_species = len(varies_within(df, species, name)) == 0
        if in_site:
            covariates.append(name)
            if in_species:
                both.append(name)
        elif in_species:
            traits.append(name)
        else:
            _raise_varies(df, site, species, name)
    if both:
        warnings.warn(
            f"columns {show(both)} are constant within every site and within every species "
            "(one value overall); they were kept as site covariates. Name them in "
            "traits=[...] to make them traits, or drop them: a constant carries no information.",
            DataWarning, stacklevel=3,
        )
    order = {c: i for i, c in enumerate(df.columns)}
    return sorted(covariates, key=order.get), sorted(traits, key=order.get)


def _check_constant(df, by, name, what):
    if name not in df.columns:
        raise JSDMError(f"{what} {name!r} is not a column of the long table; "
                        f"its columns are {show(df.columns, 20)}.")
    bad = varies_within(df, by, name)
    if len(bad):
        raise JSDMError(
            f"{what} {name!r} takes different values within {by} {show(bad)}; a {what} must have "
            f"one value per {by}. Correct those rows, or if {name!r} describes site x species "
            "cells rather than sites or species, drop it from the table."
        )


def _raise_varies(df, site, species, name):
    sites = varies_within(df, site, name)
    raise JSDMError(
        f"column {name!r} varies within sites (e.g. {show(sites)}) and within species, so it is "
        "neither a site covariate nor a trait. If it is a covariate, correct the rows where "
        "it differs within a site; if it describes site x species cells, drop it from the "
        "table (df.drop(columns=[...])) before building the Community."
    )


def first_per_label(df, by, columns, labels):
    """One row per label of ``by`` with the (constant) values of ``columns``.

    Parameters
    ----------
    df : DataFrame
        Long table.
    by : str
        Id column ("site" or "species" column name).
    columns : list of str
    labels : Index
        Wanted row labels, in order; labels with no row get NaN.

    Returns
    -------
    DataFrame, shape (len(labels), len(columns)) or None when ``columns`` is empty
    """
    if not columns:
        return None
    first = df.drop_duplicates(by)
    out = first[columns].set_axis(pd.Index(first[by].to_numpy()), axis=0)
    return out.reindex(labels)


def pivot_response(df, site, species, response, sites, species_labels):
    """Wide response matrix from a long table (absent cells are NaN).

    Returns
    -------
    DataFrame, shape (len(sites), len(species_labels)), float64
    """
    s_pos = sites.get_indexer(df[site].to_numpy())
    j_pos = species_labels.get_indexer(df[species].to_numpy())
    values = np.full((len(sites), len(species_labels)), np.nan)
    values[s_pos, j_pos] = df[response].to_numpy(dtype=float, na_value=np.nan)
    return pd.DataFrame(values, index=sites, columns=species_labels)
