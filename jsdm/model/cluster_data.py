"""Input for cluster fits that need not fit in one process: Parquet long tables (several
files) or dask arrays (e.g. ``dask.array.from_zarr``), read chunk by chunk on the workers.

``jsdm.gllvm(ClusterData.from_parquet(...), family=..., client=client)``. Each chunk is
read, reshaped to sites x species and validated by the family's checks on the worker
that holds it (an error names the file or the rows); the driver sees only labels.
Covariates come from a table keyed by site (a DataFrame on the driver: one row per
site, every column enters the design, as ``formula=None`` does in memory).
"""
import numpy as np
import pandas as pd

from ..exceptions import JSDMError


class ClusterData:
    """Sites split into chunks that workers read themselves.

    Build with :meth:`from_parquet` or :meth:`from_array`.
    """

    def __init__(self, readers, sites, species, covariates):
        self.readers, self.sites, self.species = readers, sites, pd.Index(species)
        self.covariates = covariates

    @classmethod
    def from_parquet(cls, paths, *, site, species, response, covariates=None, client=None):
        """Long tables in Parquet, one or more files; each site's rows in one file.

        Parameters
        ----------
        paths : list of str
            Parquet files (each becomes one chunk of sites), readable from the workers.
        site, species, response : str
            Column names.
        covariates : DataFrame, optional
            Site covariates indexed by site label.
        client : dask.distributed.Client, optional
            Scan the files' labels on the workers (default: on the driver).
        """
        paths = [str(p) for p in paths]
        if not paths:
            raise JSDMError("from_parquet needs at least one file")
        scans = (client.gather(client.map(_scan_parquet, paths, site=site, species=species,
                                          pure=False))
                 if client is not None else [_scan_parquet(p, site, species) for p in paths])
        seen, sites = {}, []
        for path, (s_labels, _) in zip(paths, scans):
            for s in s_labels:
                if s in seen:
                    raise JSDMError(f"site {s!r} has rows in {seen[s]!r} and {path!r}; each "
                                    "site's rows must be in one file (one chunk)")
                seen[s] = path
            sites.append(list(s_labels))
        sp = pd.Index(sorted(set().union(*[set(sc[1]) for sc in scans])))
        readers = [_ParquetReader(p, site, species, response, sp) for p in paths]
        return cls(readers, sites, sp, _covariates(covariates, [s for c in sites for s in c]))

    @classmethod
    def from_array(cls, Y, *, sites=None, species=None, covariates=None):
        """A sites x species dask array (or Zarr array via ``dask.array.from_zarr``); its row
        chunks are the chunks of sites."""
        import dask.array as da

        Y = da.asarray(Y)
        n, m = Y.shape
        sites = pd.Index(sites if sites is not None else [f"site{i + 1}" for i in range(n)])
        species = pd.Index(species if species is not None else [f"sp{j + 1}" for j in range(m)])
        edges = np.concatenate([[0], np.cumsum(Y.chunks[0])])
        readers = [_ArrayReader(Y[a:b]) for a, b in zip(edges[:-1], edges[1:]) if b > a]
        parts = [list(sites[a:b]) for a, b in zip(edges[:-1], edges[1:]) if b > a]
        return cls(readers, parts, species, _covariates(covariates, list(sites)))

    def chunk_specs(self, *, family, num_lv, row_effect, formula, client=None, chunks=None):
        """The chunk specs of a cluster fit (``jsdm.model.distributed.ChunkSpec``)."""
        from .distributed import ChunkSpec
        from .terms import default_terms

        if formula is not None:
            raise JSDMError("formula= is not available with ClusterData yet: every covariate "
                            "column enters; select columns in the covariates table")
        if family.has_dispersion and _vector_dispersion(family):
            raise JSDMError(f"family {family.name!r} needs the categories used over all the "
                            "data; fit it from an in-memory table with client=")
        terms = tuple(str(c) for c in self.covariates.columns) if self.covariates is not None else ()
        model = {"family": family, "num_lv": int(num_lv), "row_effect": row_effect,
                 "species": self.species, "terms": terms, "formula": None, "n_disp": None,
                 "model_terms": default_terms(terms, int(num_lv), row_effect)}
        specs, row0 = [], 0
        for k, (reader, sites) in enumerate(zip(self.readers, self.sites)):
            X = (self.covariates.loc[sites].to_numpy(dtype=float) if self.covariates is not None
                 else np.zeros((len(sites), 0)))
            specs.append(ChunkSpec(k, row0, sites, model, loader=_Loader(reader, sites, X, family)))
            row0 += len(sites)
        return specs


def _vector_dispersion(family):
    try:
        return family.n_dispersion(np.ones((2, 2))) is not None
    except Exception:
        return True


def _covariates(cov, sites):
    if cov is None:
        return None
    if not isinstance(cov, pd.DataFrame):
        raise JSDMError("covariates must be a DataFrame indexed by site label")
    missing = [s for s in sites if s not in cov.index]
    if missing:
        raise JSDMError(f"the covariates table has no row for sites {missing[:5]} "
                        f"({len(missing)} in all); index it by the site labels of the data")
    sub = cov.loc[sites]
    if not np.isfinite(sub.to_numpy(dtype=float)).all():
        raise JSDMError("covariates contain missing or infinite values; remove or impute them")
    return cov


def _scan_parquet(path, site, species):
    cols = pd.read_parquet(path, columns=[site, species])
    return list(pd.unique(cols[site])), list(pd.unique(cols[species]))


class _ParquetReader:
    def __init__(self, path, site, species, response, all_species):
        self.path, self.site, self.species, self.response = path, site, species, response
        self.all_species = all_species

    def __call__(self, sites):
        df = pd.read_parquet(self.path, columns=[self.site, self.species, self.response])
        if df.duplicated([self.site, self.species]).any():
            raise JSDMError(f"{self.path!r}: a site x species pair appears twice")
        wide = df.pivot(index=self.site, columns=self.species, values=self.response)
        return wide.reindex(index=sites, columns=self.all_species).to_numpy(dtype=float)


class _ArrayReader:
    def __init__(self, block):
        self.block = block

    def __call__(self, sites):
        return np.asarray(self.block.compute(scheduler="sync"), dtype=float)


class _Loader:
    """Reads one chunk on a worker and validates it as the data layer does in memory."""

    def __init__(self, reader, sites, X, family):
        self.reader, self.sites, self.X, self.family = reader, sites, X, family

    def __call__(self):
        Y = self.reader(self.sites)
        W = np.isfinite(Y)
        where = getattr(self.reader, "path", f"sites {self.sites[0]!r}..{self.sites[-1]!r}")
        try:
            self.family.check_y(np.where(W, Y, np.nan), None)
        except JSDMError as err:
            raise JSDMError(f"{where}: {err}") from None
        return {"Y": Y, "X": self.X, "offset": None, "trials": None}
