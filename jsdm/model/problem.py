"""The fitting problem: response matrix, design, masks and labels as arrays.

A :class:`Problem` is built once from the user's data and never changes; the
optimiser state lives elsewhere (:class:`jsdm.model.params.Params`).
"""
from dataclasses import dataclass, field
from typing import Optional
import warnings

import numpy as np
import pandas as pd

from ..exceptions import DataWarning, JSDMError
from ..families import Family, get_family

ROW_EFFECTS = (None, "fixed", "random")


@dataclass(frozen=True, eq=False)
class Problem:
    """Arrays the engine works on (n sites, m species, p covariate columns).

    Attributes
    ----------
    Y : ndarray (n, m)   responses, missing cells filled with a valid value
    W : ndarray (n, m)   1.0 where observed, 0.0 where missing (a read-only broadcast
                         view of 1.0 when nothing is missing)
    X : ndarray (n, p)   site design without intercept (p may be 0)
    offset : ndarray (n, m) or None
    trials : ndarray (n, m) or None (binomial)
    """

    Y: np.ndarray
    W: np.ndarray
    X: np.ndarray
    family: Family
    num_lv: int
    row_effect: Optional[str]
    sites: pd.Index
    species: pd.Index
    terms: tuple
    offset: Optional[np.ndarray] = None
    trials: Optional[np.ndarray] = None
    formula: Optional[str] = None
    info: dict = field(default_factory=dict)

    @property
    def n(self):
        return self.Y.shape[0]

    @property
    def m(self):
        return self.Y.shape[1]

    @property
    def p(self):
        return self.X.shape[1]

    @property
    def d(self):
        return self.num_lv

    @property
    def nobs(self):
        return int(self.W.sum())

    @property
    def n_disp(self):
        """q when each species' dispersion is a vector (ordinal cut points), else None.

        Read from ``info["n_dispersion"]`` (set by :func:`build_problem`), or
        asked of the family for problems built by hand.
        """
        if "n_dispersion" in self.info:
            return self.info["n_dispersion"]
        if not self.family.has_dispersion:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            return self.family.n_dispersion(np.where(self.W > 0, self.Y, np.nan))

    @property
    def s_mask(self):
        """Which entries of s are parameters ((m, q) booleans), or None when all are.

        A mixed-family model stores s as (m, q) with q the largest number of nuisance
        parameters of its families; a species whose family has fewer keeps the rest at 0.
        """
        if not self.family.has_dispersion:
            return None
        return self.family.dispersion_mask(self.m, self.n_disp or 1)

    @property
    def s_shape(self):
        """Shape of the dispersion parameter s: (m,), (m, q) or None without dispersion."""
        if not self.family.has_dispersion:
            return None
        q = self.n_disp
        return (self.m,) if q is None else (self.m, q)


def _as_community(data, X=None, response=None, site=None, species=None):
    """Coerce the accepted data shapes to a Community."""
    from ..data import Community

    if isinstance(data, Community):
        if X is not None:
            raise JSDMError("pass covariates inside the Community (Community(Y, X=...)), not as X=")
        return data
    if not isinstance(data, pd.DataFrame):
        data = pd.DataFrame(np.asarray(data, dtype=float))
        data.index = [f"site{i + 1}" for i in range(data.shape[0])]
        data.columns = [f"sp{j + 1}" for j in range(data.shape[1])]
    if response is not None or site is not None or species is not None:
        if response is None or site is None or species is None:
            raise JSDMError(
                "long-format data need all of response=, site= and species= "
                f"(got response={response!r}, site={site!r}, species={species!r})"
            )
        return Community.from_long(data, site=site, species=species, response=response)
    if X is not None and not isinstance(X, pd.DataFrame):
        X = pd.DataFrame(np.asarray(X, dtype=float), index=data.index,
                         columns=[f"x{k + 1}" for k in range(np.shape(X)[1])])
    return Community(data, X=X)


def _design(com, formula):
    """Site design matrix (no intercept) from a formula or from all covariates."""
    Xdf = com.X
    if formula is None:
        if Xdf is None or Xdf.shape[1] == 0:
            return np.zeros((com.n_sites, 0)), ()
        formula = "~ " + " + ".join(f"`{c}`" for c in Xdf.columns)
    if Xdf is None:
        raise JSDMError(f"formula {formula!r} given but the data have no site covariates; "
                        "pass X= or build a Community with X")
    import formulaic

    rhs = formula.split("~", 1)[1] if "~" in formula else formula
    try:
        mm = formulaic.model_matrix("~ " + rhs, Xdf, na_action="raise")
    except Exception as exc:  # formulaic raises many types
        raise JSDMError(f"could not build the design from formula {formula!r}: {exc}. "
                        f"Available covariates: {list(Xdf.columns)}") from None
    mm = pd.DataFrame(mm)
    mm = mm.drop(columns=[c for c in mm.columns if c == "Intercept"])
    mat = mm.to_numpy(dtype=float)
    if not np.isfinite(mat).all():
        raise JSDMError("covariates contain missing or infinite values; remove or impute those sites")
    return mat, tuple(str(c) for c in mm.columns)


def build_problem(data, X=None, *, family, num_lv=2, formula=None, row_effect=None,
                  offset=None, trials=None, response=None, site=None, species=None):
    """Validate user input and build a :class:`Problem`."""
    fam = get_family(family)
    if not (isinstance(num_lv, (int, np.integer)) and num_lv >= 0):
        raise JSDMError(f"num_lv must be a whole number >= 0, got {num_lv!r}")
    if row_effect not in ROW_EFFECTS:
        raise JSDMError(f"row_effect must be one of None, 'fixed', 'random'; got {row_effect!r}")
    com = _as_community(data, X, response, site, species)
    Ydf = com.Y
    fam = fam.bind(Ydf.columns)         # a mixed family: one family per species, in this order
    Y = Ydf.to_numpy(dtype=float)
    W = np.isfinite(Y).astype(float)
    if W.all():         # complete data: a read-only view of 1.0 (no n x m array of ones)
        W = np.broadcast_to(1.0, Y.shape)
    if W.sum() == 0:
        raise JSDMError("the response table has no observed values")
    tr = None if trials is None else np.broadcast_to(np.asarray(trials, dtype=float), Y.shape).copy()
    fam.check_y(Y, tr)
    Yf = np.where(W > 0, Y, 0.0)
    Xmat, terms = _design(com, formula)
    off = None if offset is None else np.broadcast_to(
        np.asarray(offset, dtype=float).reshape(-1, 1) if np.ndim(offset) == 1 else
        np.asarray(offset, dtype=float), Y.shape).copy()
    if row_effect == "fixed" and Xmat.shape[1]:
        import warnings
        from ..exceptions import DataWarning
        warnings.warn(
            "fixed row effects absorb every site-level covariate: the slopes of "
            f"{', '.join(terms)} are identified only up to a shift shared by all species, and "
            "their standard errors will not exist. Use row_effect='random' (or no row effect) to "
            "estimate covariate effects, or keep fixed row effects and read only differences "
            "between species' slopes.", DataWarning, stacklevel=4)
    if int(num_lv) > Y.shape[1]:
        raise JSDMError(f"num_lv={num_lv} exceeds the number of species ({Y.shape[1]})")
    info = {"community": com}
    q = fam.n_dispersion(Y, species=Ydf.columns) if fam.has_dispersion else None
    if q is not None:
        info["n_dispersion"] = int(q)
    return Problem(Y=Yf, W=W, X=Xmat, family=fam, num_lv=int(num_lv), row_effect=row_effect,
                   sites=Ydf.index.copy(), species=Ydf.columns.copy(), terms=terms,
                   offset=off, trials=tr, formula=formula, info=info)
