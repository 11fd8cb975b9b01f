"""The fitting problem: response matrix, design, masks and labels as arrays.

A :class:`Problem` is built once from the user's data and never changes; the
optimiser state lives elsewhere (:class:`jsdm.model.params.Params`).
"""
from dataclasses import dataclass, field
from typing import Optional
import warnings

import numpy as np
import pandas as pd

from ..data.validation import show
from ..exceptions import DataWarning, JSDMError
from ..families import Family, get_family
from .checks import (cell_values, check_design_rank, check_num_lv, check_offset,
                     check_response_scale)

ROW_EFFECTS = (None, "fixed", "random")


def unstandardised(X, tol=0.05):
    """True when a numeric, non-0/1 design column has |mean| > tol sd or sd off 1 by more than tol.

    Messages suggest standardising covariates only then (not to users who did,
    nor on data without covariates).
    """
    X = np.asarray(X, dtype=float)
    if not X.size or X.shape[0] < 2:
        return False
    sd, mean = X.std(0, ddof=1), X.mean(0)
    dummy = np.array([np.isin(np.unique(X[:, k]), (0.0, 1.0)).all() for k in range(X.shape[1])])
    off = ~dummy & ((np.abs(sd - 1.0) > tol) | (np.abs(mean) > tol * np.maximum(sd, 1e-300)))
    return bool(off.any())


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
    model_terms : tuple of Term or None
        The terms of the linear predictor (``jsdm.model.terms``); None: the classic
        ones from ``terms`` (species slopes), ``num_lv`` and ``row_effect``.
    predictor : LinearPredictor (built on construction, not a field)
        The terms bound to this problem's data.
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
    model_terms: Optional[tuple] = None
    #: {grouping name: (codes (n,), level labels)} of grouped site effects ``(1 | plot)``
    groups: Optional[dict] = None

    def __post_init__(self):
        from .terms import LinearPredictor, default_terms

        if self.family.has_dispersion and "n_dispersion" not in self.info:
            self.info["n_dispersion"] = self.n_disp      # asked of the family once
        terms = self.model_terms
        if terms is None:
            terms = default_terms(self.terms, self.num_lv, self.row_effect)
            object.__setattr__(self, "model_terms", terms)
        disp = self.family.has_dispersion
        pred = LinearPredictor(terms, n=self.Y.shape[0], m=self.Y.shape[1], X=self.X,
                               offset=self.offset, family=self.family,
                               n_disp=self.n_disp if disp else None,
                               s_free=self.s_free if disp else None,
                               sites=self.sites, species=self.species, covariates=self.terms,
                               traits=self.info.get("traits"),
                               trait_names=self.info.get("trait_names", ()),
                               groups=self.groups,
                               designs=self.info.get("designs"))
        object.__setattr__(self, "predictor", pred)

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
    def s_shape(self):
        """Shape of the dispersion parameter s: (m,), (m, q), (1, q) when one vector is shared
        by all species (``family.shared_dispersion``), or None without dispersion."""
        if not self.family.has_dispersion:
            return None
        q = self.n_disp
        if q is None:
            return (self.m,)
        return (1, q) if self.family.shared_dispersion else (self.m, q)

    @property
    def s_free(self):
        """Boolean mask (shape ``s_shape``) of the dispersion entries the fit estimates, or None
        for all (ordinal: cut points of categories a species does not use are held)."""
        return self.family.free_dispersion() if self.family.has_dispersion else None


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


RESERVED_TERMS = ("Intercept",)      # the species intercepts' column in jsdm's tables


def _token(k):
    return f"_jsdm_c{k}_"


def _design(com, formula, drop=()):
    """Site design matrix (no intercept) from a formula or from all covariates; (matrix, terms).

    Covariate names are never parsed as formula syntax: with ``formula=None``
    every column enters under its own name (``1``, ``a+b``, ``log(x)`` included),
    and names quoted with backticks in a formula are taken literally. The
    intercept is dropped by its position in formulaic's model spec, not by name.
    """
    Xdf = com.X
    if drop and Xdf is not None:       # grouping columns of site_effects: not covariates
        Xdf = Xdf.drop(columns=[c for c in drop if c in Xdf.columns])
    if formula is None and (Xdf is None or Xdf.shape[1] == 0):
        return np.zeros((com.n_sites, 0)), ()
    if Xdf is None:
        raise JSDMError(f"formula {formula!r} given but the data have no site covariates; "
                        "pass X= or build a Community with X")
    if formula is None:
        _check_complete(Xdf)
    names = {_token(k): str(c) for k, c in enumerate(Xdf.columns)}
    data = Xdf.set_axis(list(names), axis=1)
    if formula is None:
        rhs = " + ".join(names)
    else:
        rhs = formula.split("~", 1)[1] if "~" in formula else formula
        for tok, name in names.items():      # `name` -> its token, so formulaic reads it literally
            rhs = rhs.replace(f"`{name}`", tok)
        data = pd.concat([Xdf.set_axis([str(c) for c in Xdf.columns], axis=1), data], axis=1)
        data = data.loc[:, ~data.columns.duplicated()]
    mat, terms = _model_matrix(rhs, data, formula, Xdf, names)
    _check_terms(terms, formula)
    check_design_rank(mat, terms)
    return mat, terms


def _model_matrix(rhs, data, formula, Xdf, names):
    import formulaic

    try:
        mm = formulaic.model_matrix("~ " + rhs, data, na_action="raise")
    except Exception as exc:  # formulaic raises many types
        shown = f"formula {formula!r}" if formula is not None else "the covariates (every column)"
        raise JSDMError(f"could not build the design from {shown}: "
                        f"{_untoken(str(exc), names)}. Available covariates: {list(Xdf.columns)}; "
                        "quote names that are not plain identifiers with backticks, e.g. "
                        "'~ `soil pH` + temp'.") from None
    keep = [i for t, idx in mm.model_spec.term_indices.items() if str(t) != "1" for i in idx]
    mat = np.asarray(pd.DataFrame(mm).iloc[:, sorted(keep)].to_numpy(dtype=float))
    terms = tuple(_untoken(str(mm.columns[i]), names) for i in sorted(keep))
    if not np.isfinite(mat).all():
        raise JSDMError("covariates contain missing or infinite values; remove or impute those sites")
    return mat, terms


def _check_complete(Xdf):
    """Refuse missing covariate values (all covariates enter the design), naming them."""
    miss = Xdf.isna()
    if miss.to_numpy().any():
        cols = [c for c in Xdf.columns if miss[c].any()]
        rows = Xdf.index[miss.any(axis=1).to_numpy()]
        raise JSDMError(f"covariates {show(cols)} are missing at sites {show(rows)}; the model "
                        "needs complete covariates: impute them, leave those sites out "
                        "(Community.subset), or name the complete covariates in formula=.")


def _untoken(text, names):
    for tok, name in names.items():
        text = text.replace(tok, name)
    return text


def _check_terms(terms, formula):
    """Refuse design columns whose names would be ambiguous in jsdm's tables."""
    clash = [t for t in terms if t in RESERVED_TERMS]
    if clash:
        raise JSDMError(
            f"a covariate named {clash[0]!r} would be confused with the species intercepts, which "
            f"jsdm's coefficient tables call {RESERVED_TERMS[0]!r}; rename it, e.g. "
            f"X.rename(columns={{{clash[0]!r}: {clash[0] + '_x'!r}}}).")
    dup = sorted({t for t in terms if terms.count(t) > 1})
    if dup:
        raise JSDMError(f"the design has several columns named {show(dup)} (a covariate name "
                        "equals a column that formula expansion makes, e.g. 'f[T.a]'); rename "
                        "the covariate.")


def build_problem(data, X=None, *, family, num_lv=2, formula=None, row_effect=None,
                  offset=None, trials=None, response=None, site=None, species=None,
                  extra_terms=(), species_random=None, community_slopes=None,
                  site_effects=None, num_lv_c=0, num_rr=0, lv_formula=None, quadratic=False):
    """Validate user input and build a :class:`Problem`.

    ``site_effects``: grouped site effects, a grouping column name or a list of them
    (columns of the site table, ``Community.X``): ``"plot"`` is ``(1 | plot)``,
    ``"a:b"`` the combinations of a and b, ``"a/b"`` both ``a`` and ``a:b`` (nested);
    see ``jsdm.model.terms.group_effects.site_groupings``.

    ``extra_terms``: further terms of the linear predictor (``jsdm.model.terms.Term``)
    appended to the classic ones (intercepts, slopes, ``num_lv`` latent variables,
    ``row_effect``); the optimiser and the outputs take them as they come.
    ``num_lv_c``, ``num_rr``, ``lv_formula``: concurrent and constrained ordination
    (``jsdm.model.terms.ordination``) on the design of ``lv_formula``.
    """
    fam = get_family(family)
    unstructured = isinstance(num_lv, str) and num_lv == "species"
    if not unstructured:
        check_num_lv(num_lv)
    if row_effect not in ROW_EFFECTS:
        raise JSDMError(f"row_effect must be one of None, 'fixed', 'random'; got {row_effect!r}")
    com = _as_community(data, X, response, site, species)
    Ydf = com.Y
    fam = fam.bind(Ydf.columns)         # a mixed family: one family per species, in this order
    Y = Ydf.to_numpy(dtype=float)
    if unstructured:
        num_lv = _unstructured_rank(*Y.shape)
    W = np.isfinite(Y).astype(float)
    if W.all():         # complete data: a read-only view of 1.0 (no n x m array of ones)
        W = np.broadcast_to(1.0, Y.shape)
    if W.sum() == 0:
        raise JSDMError("the response table has no observed values")
    if trials is not None and not fam.uses_trials:
        raise JSDMError(
            f"trials= was given, but family {fam.name!r} does not use a number of trials (only "
            "counts out of a known total do, as family='binomial'); remove trials=, or use "
            "family='binomial' for successes out of trials")
    tr = _trials(trials, W, Ydf)
    fam.check_y(Y, tr)
    check_response_scale(Y, W, fam, Ydf.columns)
    fam = fam.prepare(np.where(W > 0, Y, np.nan), species=Ydf.columns)   # ordinal: categories used
    Yf = np.where(W > 0, Y, fam.missing_fill)
    from .terms.group_effects import site_groupings
    groups, group_terms, group_cols = site_groupings(com, site_effects, row_effect)
    Xmat, terms = _design(com, formula, drop=group_cols if formula is None else ())
    off = check_offset(cell_values(offset, "offset", Ydf.index, Ydf.columns), W, Ydf.index,
                       Ydf.columns)
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
    model_terms = None
    if species_random is not None or community_slopes is not None:
        _species_traits(com, [t for t in (species_random, community_slopes) if t is not None],
                        info)
    num_lv_c, num_rr = check_ordination(num_lv_c, num_rr, lv_formula, Y.shape[1], int(num_lv))
    quadratic = check_quadratic(quadratic, int(num_lv) + num_lv_c)
    ordination = bool(num_lv_c or num_rr or quadratic)
    if (extra_terms or species_random is not None or community_slopes is not None or group_terms
            or ordination):
        from .terms import default_terms
        model_terms = default_terms(terms, int(num_lv), row_effect, species_random=species_random,
                                    community=community_slopes)
        if ordination:                  # ordination (terms/ordination.py, quadratic.py)
            from .terms.ordination import choose_anchors, ordination_terms
            lv_cols, anchors = (), None
            if num_lv_c or num_rr:
                Xlv, lv_cols = _design(com, lv_formula)
                if Xlv.shape[1] == 0:
                    raise JSDMError(f"lv_formula {lv_formula!r} gives no covariate columns; name "
                                    "at least one site covariate, e.g. lv_formula='~ SubsDens + "
                                    "WatrCont'")
                both = [c for c in lv_cols if c in terms]
                if both:
                    raise JSDMError(
                        f"{show(both)} have species-specific slopes (formula) and enter the "
                        f"ordination (lv_formula {lv_formula!r}): x_i' C theta_j is then absorbed "
                        "by the slopes x_i' B_j and not identified. Keep each covariate in one "
                        "place, e.g. formula='~ 1' (no slopes) or an lv_formula without them.")
                info["designs"] = {"lv": Xlv}
                info["lv_columns"] = tuple(lv_cols)
                info["lv_formula"] = lv_formula
                anchors = choose_anchors(Y, W, Xlv, num_rr) if num_rr else None
            model_terms = ordination_terms(model_terms, num_lv_c, num_rr, tuple(lv_cols),
                                           quadratic, anchors)
        model_terms = model_terms + tuple(group_terms) + tuple(extra_terms)
    if groups:
        info["site_effects"] = list(groups)
    return Problem(Y=Yf, W=W, X=Xmat, family=fam, num_lv=int(num_lv) + num_lv_c,
                   row_effect=row_effect,
                   sites=Ydf.index.copy(), species=Ydf.columns.copy(), terms=terms,
                   offset=off, trials=tr, formula=formula, info=info, model_terms=model_terms,
                   groups=groups or None)


#: warn when the unstructured covariance has more parameters than this share of the observations
UNSTRUCTURED_SHARE = 0.1


def _unstructured_rank(n, m):
    """num_lv of the unstructured species covariance (``num_lv="species"``, the formula's
    ``(0 + species | site)``): m, one latent variable per species, so that Theta Theta' (Theta
    lower triangular m x m) is any covariance. Warns when its m (m + 1) / 2 parameters are
    many for the n m observations."""
    k = m * (m + 1) // 2
    if k > UNSTRUCTURED_SHARE * n * m:
        warnings.warn(
            f"the unstructured species covariance (0 + species | site) has {k} parameters for "
            f"{n} sites x {m} species ({n * m} observations): more than "
            f"{UNSTRUCTURED_SHARE:.0%} of the data, with {n} x {k} variational parameters on top. "
            "Estimates will be noisy and the fit slow; a reduced-rank model, rr(0 + species | "
            "site, d = 2) (num_lv=2), captures the main correlations with far fewer parameters "
            "(compare them with jsdm.anova or AIC).", DataWarning, stacklevel=4)
    return m


def _species_traits(com, terms, info):
    """Put the species traits the terms (species random effects, community slopes) use into
    ``info`` (checked)."""
    names = sorted({t for term in terms for _, ts in term.traits for t in ts})
    if not names:
        return
    T = com.traits
    cols = {}
    missing = []
    for t in names:
        if T is not None and t in T.columns:
            cols[t] = T.loc[com.Y.columns, t]
            continue
        col = None if T is None else _trait_expression(T.loc[com.Y.columns], t)
        if col is None:
            missing.append(t)
        else:
            cols[t] = col
    if missing:
        raise JSDMError(f"species trait(s) {show(missing)} are not in the community's traits "
                        f"{show([] if T is None else list(T.columns))}; give them as "
                        "Community(Y, X, traits=...) (a numeric trait may be transformed in the "
                        "formula, e.g. scale(SLA) or log(Height)).")
    T = pd.DataFrame(cols, index=com.Y.columns)
    vals = T.to_numpy(dtype=float)
    if not np.isfinite(vals).all():
        bad = T.index[~np.isfinite(vals).all(axis=1)]
        raise JSDMError(f"species traits {show(names)} are missing for species {show(bad)}; "
                        "impute them or leave those species out (Community.subset).")
    info["traits"], info["trait_names"] = vals, tuple(names)


def _trait_expression(T, expr):
    """One numeric column from a transformation of the traits written in a formula (e.g.
    ``scale(SLA)``, ``log(Height)``), evaluated on the species' traits; None when ``expr``
    is not such an expression (or gives several columns, e.g. a factor)."""
    import formulaic

    try:
        mm = formulaic.model_matrix("~ 0 + " + expr, T, na_action="ignore")
    except Exception:  # formulaic raises many types; the caller reports the name as missing
        return None
    if mm.shape[1] != 1:
        return None
    return pd.Series(np.asarray(mm, dtype=float)[:, 0], index=T.index)


def check_quadratic(quadratic, d):
    """Validate ``quadratic``: False, True or "lv" (case-insensitive); needs latent variables."""
    if isinstance(quadratic, str) and quadratic.lower() == "lv":
        quadratic = "lv"
    if quadratic not in (False, True, "lv"):
        raise JSDMError(f"quadratic must be False, True or 'lv', got {quadratic!r}")
    if quadratic and d == 0:
        raise JSDMError("quadratic responses need latent variables: set num_lv >= 1 or "
                        "num_lv_c >= 1 (quadratic responses to constrained num_rr latent "
                        "variables are not available)")
    return quadratic


def check_ordination(num_lv_c, num_rr, lv_formula, m, num_lv):
    """Validate the ordination arguments; returns (num_lv_c, num_rr) as ints."""
    out = []
    for name, v in (("num_lv_c", num_lv_c), ("num_rr", num_rr)):
        if v is None:
            v = 0
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise JSDMError(f"{name} must be a whole number >= 0, got {v!r}")
        out.append(int(v))
    if (out[0] or out[1]) and lv_formula is None:
        raise JSDMError("num_lv_c / num_rr need the covariates of the ordination: pass "
                        "lv_formula=, e.g. lv_formula='~ SubsDens + WatrCont'")
    if lv_formula is not None and not (out[0] or out[1]):
        raise JSDMError("lv_formula= was given without num_lv_c= (concurrent) or num_rr= "
                        "(constrained ordination); set one of them, or drop lv_formula")
    if out[0] + out[1] + num_lv > m:
        raise JSDMError(f"num_lv + num_lv_c + num_rr = {out[0] + out[1] + num_lv} exceeds the "
                        f"number of species ({m})")
    return tuple(out)


def _trials(trials, W, Ydf):
    """``trials=`` as an (n, m) array matched to the data; cells with a missing response get 1."""
    tr = cell_values(trials, "trials", Ydf.index, Ydf.columns)
    if tr is None:
        return None
    return np.where(np.broadcast_to(W > 0, tr.shape), tr, np.where(np.isfinite(tr), tr, 1.0))
