"""The Community container: one validated object for a community data set.

A community is a response table ``Y`` (sites x species), optional site
covariates ``X`` (sites x covariates) and optional species ``traits``
(species x traits). Tables are matched by label, never by position, and
copied on the way in so that the user's DataFrames are never modified.

Conventions
-----------
- ``Y`` is stored as float64; missing cells are NaN (never zero).
- The row index of ``Y`` and ``X`` is named ``"site"``, the columns of ``Y``
  and the rows of ``traits`` are named ``"species"``.
- Covariate and trait columns keep their dtypes (numeric, bool, Categorical,
  text).
"""
import numpy as np
import pandas as pd

from ..exceptions import JSDMError
from . import reshape
from . import validation as val


class Community:
    """Sites x species responses with site covariates and species traits.

    Parameters
    ----------
    Y : DataFrame, shape (n_sites, n_species)
        Responses (counts, presence/absence, cover, biomass...). Rows are
        sites, columns species; labels are kept. NaN marks a missing cell.
    X : DataFrame, shape (n_sites, p), optional
        Site covariates indexed by site label (any row order).
    traits : DataFrame, shape (n_species, t), optional
        Species traits indexed by species label (any row order).

    Raises
    ------
    JSDMError
        Duplicated or missing labels, labels present in one table and absent
        in another, non-numeric or infinite responses, infinite covariates,
        a name used both as covariate and trait.

    Warns
    -----
    DataWarning
        Empty species or sites (no non-zero observation; kept, see
        :meth:`drop_empty`), missing covariate or trait values.

    Examples
    --------
    >>> com = Community(Y, X=env)            # doctest: +SKIP
    >>> com.to_long().head()                 # doctest: +SKIP
    """

    def __init__(self, Y, X=None, traits=None):
        Y = val.as_frame(Y, "Y", "site")
        val.check_unique(Y.index, "Y rows", "site", "Give every site (row of Y) its own label.")
        val.check_unique(Y.columns, "Y columns", "species",
                         "Give every species (column of Y) its own label, or sum the duplicates.")
        Y.columns = Y.columns.copy()
        Y.columns.name = "species"
        self._Y = val.check_response(Y)
        self._X = self._side_table(X, "X", self._Y.index, "site")
        self._traits = self._side_table(traits, "traits", self._Y.columns, "species")
        self._check_shared_names()
        val.warn_empty(self._Y)

    @staticmethod
    def _side_table(table, what, labels, axis_word):
        table = val.as_frame(table, what, axis_word)
        if table is None:
            return None
        val.check_unique(table.index, f"{what} rows", axis_word,
                         f"Give {what} exactly one row per {axis_word}.")
        val.check_table(table, what, axis_word)
        val.warn_numeric_text(table, what, axis_word)
        table = val.align(table, labels, what, "Y", axis_word)
        val.warn_missing_table(table, what, axis_word)
        return table

    def _check_shared_names(self):
        shared = set(self.covariates) & set(self.trait_names)
        if shared:
            raise JSDMError(
                f"names {val.show(sorted(map(str, shared)))} are used both as site covariates and "
                "as traits; rename one of each pair so that formulas and the long table are unambiguous."
            )

    # --- tables and labels ----------------------------------------------------
    @property
    def Y(self):
        """DataFrame, shape (n_sites, n_species): a copy of the responses (float64)."""
        return self._Y.copy()

    @property
    def X(self):
        """DataFrame, shape (n_sites, p), or None: a copy of the site covariates."""
        return None if self._X is None else self._X.copy()

    @property
    def traits(self):
        """DataFrame, shape (n_species, t), or None: a copy of the species traits."""
        return None if self._traits is None else self._traits.copy()

    @property
    def sites(self):
        """Index, length n_sites: site labels in order."""
        return self._Y.index

    @property
    def species(self):
        """Index, length n_species: species labels in order."""
        return self._Y.columns

    @property
    def n_sites(self):
        """int: number of sites (rows of Y)."""
        return self._Y.shape[0]

    @property
    def n_species(self):
        """int: number of species (columns of Y)."""
        return self._Y.shape[1]

    @property
    def covariates(self):
        """list of str: names of the site covariates (empty without X)."""
        return [] if self._X is None else list(self._X.columns)

    @property
    def trait_names(self):
        """list of str: names of the species traits (empty without traits)."""
        return [] if self._traits is None else list(self._traits.columns)

    # --- summaries --------------------------------------------------------------
    @property
    def prevalence(self):
        """Series, length n_species: share of observed sites where y > 0 (NaN cells left out)."""
        Y = self._Y.to_numpy()
        observed = (~np.isnan(Y)).sum(axis=0)
        present = (Y > 0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            prev = present / observed
        return pd.Series(prev, index=self.species, name="prevalence")

    @property
    def missing_fraction(self):
        """float: share of site x species cells that are missing (NaN)."""
        return float(np.isnan(self._Y.to_numpy()).mean()) if self._Y.size else 0.0

    @property
    def response_type(self):
        """str: "binary" (all 0/1), "count" (whole numbers >= 0) or "continuous"."""
        y = self._Y.to_numpy()
        y = y[~np.isnan(y)]
        if np.isin(y, (0.0, 1.0)).all():
            return "binary"
        if (y >= 0).all() and (np.floor(y) == y).all():
            return "count"
        return "continuous"

    def empty(self):
        """Species and sites with no non-zero observation.

        Returns
        -------
        dict
            ``{"species": Index, "sites": Index}``.
        """
        species, sites = val.empty_labels(self._Y)
        return {"species": species, "sites": sites}

    def __repr__(self):
        lines = [f"Community: {self.n_sites} sites x {self.n_species} species "
                 f"({self.response_type} responses, {100 * self.missing_fraction:.1f}% missing)"]
        lines.append("  covariates: " + _names(self.covariates))
        lines.append("  traits:     " + _names(self.trait_names))
        prev = self.prevalence.dropna()
        if len(prev):
            lines.append(
                f"  prevalence: min {prev.min():.2f}, median {prev.median():.2f}, max {prev.max():.2f}"
                f" (share of sites where y > 0)"
            )
        empty = self.empty()
        if len(empty["species"]) or len(empty["sites"]):
            lines.append(f"  empty:      {len(empty['species'])} species, {len(empty['sites'])} sites"
                         " (see drop_empty())")
        return "\n".join(lines)

    def equals(self, other):
        """True when ``other`` is a Community with identical tables (labels, order, values, dtypes).

        Parameters
        ----------
        other : object
            What to compare with (anything that is not a Community gives False).

        Returns
        -------
        bool
        """
        if not isinstance(other, Community):
            return False
        return all(_same(a, b) for a, b in ((self._Y, other._Y), (self._X, other._X),
                                            (self._traits, other._traits)))

    # --- new objects ------------------------------------------------------------
    def subset(self, sites=None, species=None):
        """A new Community restricted to some sites and/or species.

        Parameters
        ----------
        sites, species : list-like of labels or boolean array, optional
            Labels to keep (in the order given) or a boolean mask over
            ``self.sites`` / ``self.species``. None keeps all.

        Returns
        -------
        Community
        """
        site_lab = _pick(self.sites, sites, "site")
        spec_lab = _pick(self.species, species, "species")
        return Community(
            self._Y.loc[site_lab, spec_lab],
            None if self._X is None else self._X.loc[site_lab],
            None if self._traits is None else self._traits.loc[spec_lab],
        )

    def drop_empty(self, verbose=True):
        """A new Community without empty species and sites.

        Species are dropped first (no non-zero observation), then sites that
        are empty among the remaining species.

        Parameters
        ----------
        verbose : bool
            Print what was dropped.

        Returns
        -------
        Community
            ``self`` is unchanged. ``dropped`` attribute on the result:
            ``{"species": [...], "sites": [...]}``.
        """
        species, _ = val.empty_labels(self._Y)
        keep_sp = self.species.difference(species, sort=False)
        _, sites = val.empty_labels(self._Y[keep_sp])
        out = self.subset(sites=self.sites.difference(sites, sort=False), species=keep_sp)
        out.dropped = {"species": list(species), "sites": list(sites)}
        if verbose:
            print(f"drop_empty: dropped {len(species)} species {val.show(species)} and "
                  f"{len(sites)} sites {val.show(sites)}")
        return out

    # --- long form --------------------------------------------------------------
    def to_long(self, response="y", dropna=True):
        """One row per site x species.

        Parameters
        ----------
        response : str
            Name of the response column.
        dropna : bool
            Leave out cells whose response is missing.

        Returns
        -------
        DataFrame, shape (n_cells, 3 + p + t)
            Columns ``site``, ``species`` (Categoricals whose categories are the
            labels in community order), the response, the site covariates, then
            the traits; rows site-major. ``Community.from_long`` on this table
            gives back an identical Community (with ``dropna=True`` a site or
            species with no observed cell keeps its label but loses its
            covariate or trait values).
        """
        return reshape.wide_to_long(self._Y, self._X, self._traits, response, dropna)

    @classmethod
    def from_long(cls, df, site="site", species="species", response="y",
                  covariates=None, traits=None):
        """Build a Community from a long table (one row per site x species).

        Parameters
        ----------
        df : DataFrame
            Long table; not modified.
        site, species, response : str
            Column names of the site id, species id and response.
        covariates, traits : list of str, optional
            Columns to use as site covariates / species traits (checked to be
            constant within site / species). Other columns are classified
            automatically: constant within site -> covariate, constant within
            species -> trait, constant within both -> covariate (with a
            DataWarning), varying within both -> error.

        Returns
        -------
        Community
            Sites and species in order of first appearance (or in category
            order for Categorical id columns); absent cells are NaN.
        """
        df = _long_checked(df, site, species, response)
        sites = reshape.labels_of(df[site], "site")
        spec = reshape.labels_of(df[species], "species")
        cov, tr = reshape.classify_columns(df.drop(columns=[response]), site, species,
                                           covariates, traits)
        Y = reshape.pivot_response(df, site, species, response, sites, spec)
        X = reshape.first_per_label(df, site, cov, sites)
        T = reshape.first_per_label(df, species, tr, spec)
        return cls(Y, X, T)


def _long_checked(df, site, species, response):
    """Check a long table's id and response columns; return it unchanged."""
    if not isinstance(df, pd.DataFrame):
        raise JSDMError(f"from_long needs a pandas DataFrame, got {type(df).__name__}.")
    missing = [c for c in (site, species, response) if c not in df.columns]
    if missing:
        raise JSDMError(
            f"the long table has no column(s) {val.show(missing)}; its columns are "
            f"{val.show(df.columns, 20)}. Name the right ones with site=, species=, response=."
        )
    val.check_unique(df.columns, "long table columns", "column", "Rename the repeated columns.")
    col = df[response]
    if not val.is_numeric_column(col):
        bad = pd.to_numeric(col.astype(object), errors="coerce").isna() & col.notna()
        rows = list(zip(df.loc[bad, site], df.loc[bad, species], col[bad]))
        raise JSDMError(
            f"the response column {response!r} must hold numbers; found non-numeric values at "
            f"(site, species, value) {val.show(rows)}. Convert it with pd.to_numeric(..., "
            "errors='coerce') to turn text into NaN (missing), or fix those rows."
        )
    reshape.check_no_duplicate_cells(df, site, species)
    return df


def _names(names):
    return ", ".join(map(str, names)) if names else "(none)"


def _same(a, b):
    if a is None or b is None:
        return a is None and b is None
    return (a.index.equals(b.index) and a.columns.equals(b.columns)
            and a.index.dtype == b.index.dtype and a.columns.dtype == b.columns.dtype
            and list(a.dtypes) == list(b.dtypes) and a.equals(b))


def _pick(labels, wanted, what):
    """Labels selected by a list of labels or a boolean mask."""
    if wanted is None:
        return labels
    arr = np.asarray(wanted)
    if arr.dtype == bool:
        if arr.shape != (len(labels),):
            raise JSDMError(f"a boolean {what} mask needs {len(labels)} entries, got {arr.shape}.")
        return labels[arr]
    wanted = pd.Index(list(wanted))
    unknown = wanted.difference(labels, sort=False)
    if len(unknown):
        raise JSDMError(f"unknown {what} labels {val.show(unknown)}; known ones are "
                        f"{val.show(labels, 10)}.")
    if wanted.has_duplicates:
        raise JSDMError(f"{what} labels selected twice: {val.show(wanted[wanted.duplicated()])}.")
    return labels[labels.get_indexer(wanted)]
