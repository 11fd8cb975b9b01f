"""Model selection: refit a model with several numbers of latent variables and compare.

This module sits above the fitter (:func:`jsdm.gllvm`), next to it, because
selecting a model means fitting several; the comparisons of fits that need no
refit (:func:`jsdm.anova`) live in ``jsdm/results/``, which never imports the
top-level API.
"""
from dataclasses import dataclass, field

import pandas as pd

from .api import gllvm
from .exceptions import JSDMError

CRITERIA = ("aic", "aicc", "bic")


@dataclass
class Selection:
    """Result of :func:`select_num_lv`; unpacks as ``table, best = select_num_lv(...)``.

    Parameters
    ----------
    table : DataFrame
        Indexed by num_lv; columns df, llf, aic, aicc, bic, converged, best.
    best : GLLVMResults
        The fit with the smallest criterion.
    fits : dict of int to GLLVMResults
        Every candidate's fit, by its number of latent variables.
    criterion : str
        The criterion that chose ``best``.
    """

    table: pd.DataFrame
    best: object
    fits: dict = field(default_factory=dict)
    criterion: str = "aicc"

    @property
    def best_fit(self):
        """The chosen fit (same as ``best``)."""
        return self.best

    def __iter__(self):
        return iter((self.table, self.best))


def _rank_arguments(k, kwargs):
    """gllvm arguments for k latent variables: num_lv=k, or k written into an lme4 formula."""
    from .model.formula import is_lme4_formula, with_rank

    formula = kwargs.get("formula")
    if formula is not None and is_lme4_formula(formula, kwargs.get("species")):
        names = {key: kwargs[key] for key in ("site", "species") if kwargs.get(key)}
        return {**kwargs, "formula": with_rank(formula, k, **names)}
    return {**kwargs, "num_lv": k}


def select_num_lv(data, X=None, *, num_lv=range(0, 5), criterion="aicc", **kwargs):
    """Fit several numbers of latent variables and pick the best by an information criterion.

    Parameters
    ----------
    data : Community or DataFrame
        As for :func:`jsdm.gllvm`.
    X : DataFrame, optional
        As for :func:`jsdm.gllvm`.
    num_lv : iterable of int
        Candidates (default 0..4; values above the number of species are dropped).
    criterion : {"aicc", "aic", "bic"}
        Information criterion to minimise.
    **kwargs
        Passed to :func:`jsdm.gllvm` (family, formula, seed, n_init, ...).

    Returns
    -------
    Selection
        ``.table`` (one row per candidate, the chosen one marked in ``best``),
        ``.best`` (the chosen fit), ``.fits``.
    """
    crit = str(criterion).lower()
    if crit not in CRITERIA:
        raise JSDMError(f"criterion must be one of {', '.join(CRITERIA)}; got {criterion!r}")
    cands = sorted({int(k) for k in num_lv})
    if not cands or cands[0] < 0:
        raise JSDMError(f"num_lv candidates must be whole numbers >= 0, got {list(num_lv)!r}")
    fits, rows = {}, []
    for k in cands:
        try:
            fit = gllvm(data, X, **_rank_arguments(k, kwargs))
        except JSDMError:
            if fits:          # e.g. more LVs than species: stop at the largest valid
                break
            raise
        fits[k] = fit
        rows.append({"num_lv": k, "df": fit.df, "llf": fit.llf, "aic": fit.aic, "aicc": fit.aicc,
                     "bic": fit.bic, "converged": fit.converged})
    table = pd.DataFrame(rows).set_index("num_lv")
    best_k = int(table[crit].idxmin())
    table["best"] = table.index == best_k
    return Selection(table, fits[best_k], fits, crit)
