"""Cross-validation by sites: refit on training sites, score the held-out sites.

For each fold the model is refitted to the training sites (the same model:
family, formula, latent variables, row effect and every other term, i.e.
constrained or concurrent ordination, quadratic responses, species random
effects, community slopes and grouped site effects; the same starts and seed)
and the held-out sites are scored as new sites, whose latent variables are
unknown. Species random effects enter at the fold fit's estimates; a grouped
site effect at the level's estimate (its q) for a level the fold's fit has
seen and integrated over its distribution for a new level (``by=`` that
grouping holds whole levels out). With quadratic responses the per-species
scores integrate over the prior of the latent variables directly (the
linear predictor is not normal):

- ``lpd``: the log predictive density of the whole site, log p(y_i), joint
  over species and integrated over the site's latent variables (quadrature for
  up to 2 latent dimensions, importance sampling beyond;
  :mod:`jsdm.results.marginal`), never a plug-in at z = 0. Summed over sites;
  higher is better.
- ``lpd_marginal``: sum over cells of log p(y_ij), one species at a time.
- ``lpd_conditional``: sum over cells of log p(y_ij | the other species at
  the site): how well a species is predicted once the others are seen, the
  use of residual associations. Its excess over ``lpd_marginal`` is what the
  associations buy.
- ``auc`` / ``tss`` (discrete families, on presence y > 0, from the predicted
  probability of presence; marginal and conditional): per species, then
  averaged over species with both presences and absences among the held-out
  sites; TSS = sensitivity + specificity - 1 at the species' prevalence in
  the training sites as threshold (Liu et al. 2005, Ecography 28: 385).
- ``rmse``: root mean squared error on the response scale of the predicted
  mean (marginal: E[y]; conditional: E[y_ij | other species]), pooled over
  held-out cells.

Model comparison: ``lpd_diff`` is each model's lpd minus the best one's,
``diff_se`` the standard error of that difference from the per-site
differences (paired: sqrt(n) sd), as in Vehtari, Gelman & Gabry (2017,
Statistics and Computing 27: 1413).
"""
from dataclasses import dataclass, field
import os
import warnings

import numpy as np
import pandas as pd

from .._numerics import analysis_rng
from ..exceptions import ConvergenceWarning, JSDMError, JSDMWarning


# --- folds ----------------------------------------------------------------------------------
def make_folds(sites, k=5, seed=0, groups=None):
    """Fold number (0..k-1) of each site, as a Series indexed by site.

    Parameters
    ----------
    sites : Index
    k : int
        Number of folds (2 <= k <= number of sites, or of groups).
    seed : int
        Seed of the random assignment (same seed, same folds).
    groups : Series indexed by site, optional
        Blocked CV: sites of a group are always in the same fold. Groups are
        shuffled and dealt, largest first, to the fold with the fewest sites.
        With k >= the number of groups, each group is its own fold.
    """
    n = len(sites)
    if int(k) != k or k < 2:
        raise JSDMError(f"k must be a whole number >= 2, got {k!r}")
    k = int(k)
    rng = analysis_rng(seed)
    if groups is None:
        if k > n:
            raise JSDMError(f"k={k} folds need at least {k} sites; there are {n}")
        fold = np.empty(n, dtype=int)
        fold[rng.permutation(n)] = np.arange(n) % k
        return pd.Series(fold, index=sites, name="fold")
    labels = pd.Series(groups).reindex(sites)
    if labels.isna().any():
        miss = list(labels.index[labels.isna()][:5])
        raise JSDMError(f"the grouping for blocked CV has no value for sites {miss}")
    uniq = pd.unique(labels)
    order = rng.permutation(len(uniq))
    if k >= len(uniq):
        fold_of = {g: i for i, g in enumerate(uniq[order])}
    else:
        sizes = labels.value_counts()
        gs = sorted(uniq[order], key=lambda g: -sizes[g])          # stable: ties keep the shuffle
        load, fold_of = np.zeros(k), {}
        for g in gs:
            f = int(np.argmin(load))
            fold_of[g] = f
            load[f] += sizes[g]
    return pd.Series([fold_of[g] for g in labels], index=sites, name="fold")


def _groups(fit, by):
    if by is None:
        return None
    if isinstance(by, str):
        com = fit.community
        X = None if com is None else com.X
        if X is None or by not in X.columns:
            cols = [] if X is None else list(X.columns)
            raise JSDMError(f"by={by!r} is not a site covariate of the data (covariates: {cols}); "
                            "give a column name or a Series of group labels indexed by site")
        return X[by]
    by = pd.Series(by)
    if not isinstance(by.index, pd.RangeIndex) or set(fit.sites) <= set(by.index):
        return by
    if len(by) == len(fit.sites):
        return pd.Series(by.to_numpy(), index=fit.sites)
    raise JSDMError(f"by has {len(by)} values for {len(fit.sites)} sites")


# --- models ---------------------------------------------------------------------------------
def _as_models(models):
    """{name: fitted model} from a fit, a spec dict, or a list / dict of them."""
    from .fitted import GLLVMResults

    def one(x):
        if isinstance(x, GLLVMResults):
            return x
        if isinstance(x, dict) and "data" in x:
            from ..api import gllvm
            kw = dict(x)
            return gllvm(kw.pop("data"), **kw)
        raise JSDMError("cross_validate takes a fitted model (jsdm.gllvm(...)), a dict of "
                        "jsdm.gllvm arguments with 'data', or a list or dict of these; got "
                        f"{type(x).__name__}")

    if isinstance(models, GLLVMResults) or (isinstance(models, dict) and "data" in models
                                            and not isinstance(models["data"], (GLLVMResults, dict))):
        fit = one(models)
        return {_default_name(fit): fit}
    if isinstance(models, dict):
        return {str(k): one(v) for k, v in models.items()}
    if isinstance(models, (list, tuple)):
        fits = [one(v) for v in models]
        names = [_default_name(f) for f in fits]
        if len(set(names)) < len(names):
            names = [f"model {i + 1}" for i in range(len(fits))]
        return dict(zip(names, fits))
    return {"model 1": one(models)}


def _default_name(fit):
    return f"{fit.family.name}, num_lv={fit.num_lv}" + (f", {len(fit.terms)} covariate terms"
                                                       if fit.terms else "")


def _check_models(fits):
    names = list(fits)
    ref = fits[names[0]]
    y_ref = np.where(ref.problem.W > 0, ref.problem.Y, np.nan)
    for nm in names[1:]:
        f = fits[nm]
        if list(f.sites) != list(ref.sites) or list(f.species) != list(ref.species):
            raise JSDMError(f"models {names[0]!r} and {nm!r} have different sites or species; "
                            "cross-validation compares models of the same data")
        y = np.where(f.problem.W > 0, f.problem.Y, np.nan)
        if not np.array_equal(y, y_ref, equal_nan=True):
            raise JSDMError(f"models {names[0]!r} and {nm!r} were fitted to different responses")
    for nm, f in fits.items():
        if f.row_effect == "fixed":
            raise JSDMError(f"model {nm!r} has fixed row effects: a held-out site's effect is "
                            "unknown, so it cannot be scored; use row_effect='random' or None")
        if f.community is None:
            raise JSDMError(f"model {nm!r} carries no data to refit on")


def _refit_spec(fit):
    prob, st = fit.problem, fit.settings
    spec = dict(family=prob.family, num_lv=prob.d, formula=prob.formula,
                row_effect=prob.row_effect, n_init=st.get("n_init"), seed=st.get("seed"),
                maxiter=st.get("maxiter", 5000), gtol=st.get("gtol", 1e-3))
    if st.get("prior_sd") is not None:
        spec["prior_sd"] = st["prior_sd"]
    # the model's other terms, as the wide call names them (an lme4-style formula was
    # translated into these when the model was fitted)
    for key in ("num_lv_c", "num_rr", "lv_formula", "quadratic", "site_effects",
                "random_species", "fourth_corner"):
        if st.get(key) not in (None, 0, False, [], ""):
            spec[key] = st[key]
    return spec


def _task(fit, name, fold, train, test, opts):
    """Everything one fold of one model needs, picklable."""
    com, prob = fit.community, fit.problem
    take = (lambda a, rows: None if a is None else np.asarray(a)[rows])
    sites = fit.sites
    X = com.X
    return dict(name=name, fold=int(fold), spec=_refit_spec(fit),
                train=com.subset(sites=sites[train]), test_sites=sites[test],
                test_X=(X.loc[sites[test]] if X is not None else pd.DataFrame(index=sites[test])),
                test_Y=np.where(prob.W[test] > 0, prob.Y[test], np.nan),
                offset_train=take(prob.offset, train), offset_test=take(prob.offset, test),
                trials_train=take(prob.trials, train), trials_test=take(prob.trials, test),
                test_rows=np.flatnonzero(test), **opts)


def run_fold(task):
    """Refit one model on a fold's training sites and score its held-out sites (picklable)."""
    from threadpoolctl import threadpool_limits

    from ..api import gllvm
    from .conditional import score_sites
    from .latent import site_latent

    with threadpool_limits(limits=1), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = gllvm(task["train"], offset=task["offset_train"], trials=task["trials_train"],
                        checks=False, **task["spec"])
            sl = site_latent(fit, task["test_X"], offset=task["offset_test"],
                             trials=task["trials_test"])
        except JSDMError as exc:
            raise JSDMError(f"cross-validation fold {task['fold']} of model {task['name']!r} "
                            f"failed: {exc} (a fold's training sites may lack a factor level or "
                            "a species seen elsewhere: use fewer folds, blocked folds that keep "
                            "levels together, or merge rare levels)") from None
        Y = task["test_Y"]
        W = np.isfinite(Y).astype(float)
        # a held-out response the refitted model gives probability 0 whatever the latent
        # variables (an ordinal category the species never showed in the training sites: its
        # model merged it away) would make every score -inf; it is left out and reported
        Y0 = np.where(W > 0, Y, 0.0)
        with np.errstate(all="ignore"):
            impossible = (W > 0) & ~np.isfinite(sl.loglik(Y0, sl.F))
        used = getattr(fit.problem.family, "categories_used", None)
        if used is not None:        # above every category of the training sites (it would be
            impossible |= (W > 0) & (Y0 > used.shape[1] - 1)      # read as the top one)
        W[impossible] = 0.0
        sc = score_sites(sl, np.where(W > 0, Y, 0.0), W, method=task["method"],
                         n_draws=task["n_draws"], seed=task["seed"] * 1000 + task["fold"],
                         conditional=task["conditional"])
    Ytr = task["train"].Y.to_numpy(dtype=float)
    prev = np.nanmean(np.where(np.isnan(Ytr), np.nan, Ytr > 0), axis=0)
    msgs = sorted({f"{w.category.__name__}: {str(w.message).split('. ')[0]}" for w in caught})
    excluded = [str(task["train"].species[j]) for j in np.nonzero(impossible)[1]]
    return dict(name=task["name"], fold=task["fold"], rows=task["test_rows"], scores=sc,
                prevalence=prev, converged=bool(fit.converged), elbo=float(fit.llf),
                excluded=excluded,
                warnings=msgs, fit=fit if task["keep_fits"] else None)


def _map(tasks, n_jobs):
    if n_jobs == 1 or len(tasks) == 1:
        return [run_fold(t) for t in tasks]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=mp.get_context("spawn")) as ex:
        return list(ex.map(run_fold, tasks))


def _n_jobs(n_jobs, n_tasks):
    if n_jobs is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:          # not on Linux
            cores = os.cpu_count() or 1
        n_jobs = cores
    if int(n_jobs) != n_jobs or n_jobs < 1:
        raise JSDMError(f"n_jobs must be a whole number >= 1 (or None: all cores), got {n_jobs!r}")
    return max(1, min(int(n_jobs), n_tasks))


# --- the entry point ------------------------------------------------------------------------
def cross_validate(models, k=5, seed=0, by=None, conditional=True, method="auto", n_draws=1000,
                   n_jobs=None, keep_fits=False):
    """K-fold cross-validation by sites of one or several GLLVMs on the same data.

    Parameters
    ----------
    models : GLLVMResults, dict of jsdm.gllvm arguments, or a list / dict of these
        The model(s) to assess. A fit is refitted per fold with its own
        settings (family, formula, num_lv, row effect, n_init, seed); a dict
        with ``data`` and the other :func:`jsdm.gllvm` arguments is fitted to
        all the data first. A dict ``{name: model}`` names the models; all
        must be fitted to the same responses. Models with fixed row effects
        cannot score new sites and are refused. A penalised fit (``prior_sd``)
        is refitted with the same penalty.
    k : int
        Number of folds.
    seed : int
        Seed of the fold assignment and of any importance sampling (the same
        seed gives the same folds and scores).
    by : str, Series or None
        Blocked CV: a site covariate name, or group labels indexed by site;
        sites of one group are held out together (e.g. plots, transects,
        regions), which tests transfer to new groups rather than
        interpolation. With k >= the number of groups, leave-one-group-out.
    conditional : bool
        Also score each species given the other species at the held-out site
        (costs about as much as the rest of the scoring again).
    method : {"auto", "quadrature", "is"}
        Integration over a held-out site's latent variables ("auto":
        quadrature for up to 2 latent dimensions, importance sampling beyond).
    n_draws : int
        Importance-sampling draws per site.
    n_jobs : int or None
        Processes for the folds (None: all available cores, at most one per
        fold and model). Results do not depend on it: every fold runs with
        single-threaded linear algebra and its own seed.
    keep_fits : bool
        Keep the per-fold fits (``CVResult.fits``).

    Returns
    -------
    CVResult
        ``.table`` (one row per model), ``.species``, ``.sites``, ``.folds``,
        ``.fold_info``, ``.plot()``.
    """
    fits = _as_models(models)
    _check_models(fits)
    first = next(iter(fits.values()))
    folds = make_folds(first.sites, k, seed, _groups(first, by))
    opts = dict(conditional=bool(conditional), method=method, n_draws=int(n_draws),
                seed=int(seed), keep_fits=bool(keep_fits))
    from .marginal import choose_method
    for f in fits.values():
        choose_method(method, f.num_lv + (f.row_effect == "random"))     # fail early
    tasks = [_task(f, name, j, (folds != j).to_numpy(), (folds == j).to_numpy(), opts)
             for name, f in fits.items() for j in sorted(folds.unique())]
    results = _map(tasks, _n_jobs(n_jobs, len(tasks)))
    return _collect(fits, folds, results, opts, by)


# --- collecting the scores ------------------------------------------------------------------
_CELL_KEYS = ("lpd_cell", "lpd_cond", "mean", "mean_cond", "presence", "presence_cond")


def _assemble(fit, results):
    """Per-model arrays over all sites from its folds' results."""
    n, m = fit.problem.n, fit.problem.m
    arr = {key: np.full((n, m), np.nan) for key in _CELL_KEYS}
    arr["threshold"] = np.full((n, m), np.nan)
    site = {key: np.full(n, np.nan) for key in ("lpd", "lpd_se")}
    for res in results:
        rows, sc = res["rows"], res["scores"]
        for key in _CELL_KEYS:
            if sc.get(key) is not None:
                arr[key][rows] = sc[key]
        arr["threshold"][rows] = res["prevalence"]
        for key in site:
            site[key][rows] = sc[key]
    return arr, site


def _auc(y, p):
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN without both classes."""
    from scipy.stats import rankdata

    ok = np.isfinite(y) & np.isfinite(p)
    y, p = y[ok] > 0, p[ok]
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return np.nan
    ranks = rankdata(p)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _tss(y, p, thr):
    ok = np.isfinite(y) & np.isfinite(p)
    y, hit = y[ok] > 0, p[ok] >= thr[ok]
    if y.all() or (~y).all():
        return np.nan
    return float(hit[y].mean() + (~hit[~y]).mean() - 1.0)


def _species_table(fit, Y, arr, conditional):
    rows = []
    discrete = arr["presence"] is not None and np.isfinite(arr["presence"]).any()
    for j, sp in enumerate(fit.species):
        y = Y[:, j]
        obs = np.isfinite(y)
        row = {"species": sp, "n_sites": int(obs.sum()), "lpd_marginal": np.nansum(arr["lpd_cell"][:, j])}
        if conditional:
            row["lpd_conditional"] = np.nansum(arr["lpd_cond"][:, j])
        if discrete:
            row["prevalence"] = float(np.nanmean(y > 0)) if obs.any() else np.nan
            for tag, key in (("", "presence"), ("_conditional", "presence_cond")):
                if key == "presence_cond" and not conditional:
                    continue
                row["auc" + tag] = _auc(y, arr[key][:, j])
                row["tss" + tag] = _tss(y, arr[key][:, j], arr["threshold"][:, j])
        row["rmse"] = float(np.sqrt(np.nanmean((y - arr["mean"][:, j]) ** 2))) if obs.any() else np.nan
        if conditional:
            row["rmse_conditional"] = (float(np.sqrt(np.nanmean((y - arr["mean_cond"][:, j]) ** 2)))
                                       if obs.any() else np.nan)
        rows.append(row)
    return pd.DataFrame(rows).set_index("species")


def _model_row(fit, Y, arr, site, sp_tab, results, conditional):
    n = int(np.isfinite(site["lpd"]).sum())
    row = {"family": fit.family.name, "num_lv": fit.num_lv,
           "covariates": ", ".join(fit.terms) or "-", "row_effect": fit.row_effect or "-",
           "lpd": float(np.nansum(site["lpd"])),
           "lpd_se": float(np.sqrt(n) * np.nanstd(site["lpd"], ddof=1)) if n > 1 else np.nan,
           "mc_se": float(np.sqrt(np.nansum(site["lpd_se"] ** 2))),
           "lpd_marginal": float(np.nansum(arr["lpd_cell"]))}
    if conditional:
        row["lpd_conditional"] = float(np.nansum(arr["lpd_cond"]))
    for col in ("auc", "tss", "auc_conditional", "tss_conditional"):
        if col in sp_tab.columns:
            row[col] = float(sp_tab[col].mean(skipna=True))
    row["rmse"] = float(np.sqrt(np.nanmean((Y - arr["mean"]) ** 2)))
    if conditional:
        row["rmse_conditional"] = float(np.sqrt(np.nanmean((Y - arr["mean_cond"]) ** 2)))
    row["folds_converged"] = f"{sum(r['converged'] for r in results)}/{len(results)}"
    row["cells_excluded"] = sum(len(r.get("excluded", [])) for r in results)
    row["sites_unscored"] = int(np.isnan(site["lpd"]).sum())
    return row


def _collect(fits, folds, results, opts, by):
    conditional = opts["conditional"]
    tables, species, sites, info, kept = [], {}, [], [], {}
    for name, fit in fits.items():
        mine = [r for r in results if r["name"] == name]
        Y = np.where(fit.problem.W > 0, fit.problem.Y, np.nan)
        arr, site = _assemble(fit, mine)
        sp_tab = _species_table(fit, Y, arr, conditional)
        species[name] = sp_tab
        tables.append(pd.Series(_model_row(fit, Y, arr, site, sp_tab, mine, conditional), name=name))
        sites.append(pd.DataFrame({"model": name, "site": fit.sites, "fold": folds.to_numpy(),
                                   "lpd": site["lpd"], "mc_se": site["lpd_se"]}))
        for r in mine:
            info.append({"model": name, "fold": r["fold"], "n_test": len(r["rows"]),
                         "converged": r["converged"], "elbo_train": r["elbo"],
                         "cells_excluded": len(r.get("excluded", [])),
                         "excluded_species": ", ".join(sorted(set(r.get("excluded", [])))),
                         "warnings": "; ".join(r["warnings"])})
            if r["fit"] is not None:
                kept[(name, r["fold"])] = r["fit"]
    table = pd.DataFrame(tables)
    table.index.name = "model"
    sites = pd.concat(sites, ignore_index=True)
    _add_differences(table, sites)
    fold_info = pd.DataFrame(info)
    _warn_folds(fold_info)
    _warn_unscored(table)
    return CVResult(table, pd.concat(species, names=["model", "species"]), sites, folds,
                    fold_info, dict(opts, k=int(folds.nunique()),
                                    by=by if isinstance(by, (str, type(None))) else "groups"),
                    kept)


def _add_differences(table, sites):
    """lpd minus the best model's, and the paired standard error of that difference."""
    best = table["lpd"].idxmax()
    wide = sites.pivot(index="site", columns="model", values="lpd")
    diffs, ses = [], []
    for name in table.index:
        d = (wide[name] - wide[best]).dropna()
        diffs.append(float(d.sum()))
        ses.append(float(np.sqrt(len(d)) * d.std(ddof=1)) if name != best and len(d) > 1 else 0.0)
    table["lpd_diff"] = diffs
    table["diff_se"] = ses
    table["within_one_se"] = table["lpd_diff"] >= -table["diff_se"]
    table["rank"] = table["lpd"].rank(ascending=False, method="min").astype(int)


def _warn_unscored(table):
    """Say what the scores leave out: held-out cells the fold's model calls impossible, and
    sites whose score is undefined (NaN; the sums skip them)."""
    for name, row in table.iterrows():
        if row["cells_excluded"]:
            warnings.warn(
                f"model {name!r}: {int(row['cells_excluded'])} held-out cell(s) were left out of "
                "every score: the model refitted without them gives their response probability 0 "
                "(an ordinal category the species never showed in that fold's training sites). "
                "See CVResult.fold_info['excluded_species']; fewer folds, or blocked folds, "
                "keep more categories in training.", JSDMWarning, stacklevel=4)
        if row["sites_unscored"]:
            warnings.warn(
                f"model {name!r}: the log predictive density of {int(row['sites_unscored'])} "
                "held-out site(s) is undefined (NaN) and left out of lpd; CVResult.sites shows "
                "which. Comparisons with other models use the sites both scored.",
                JSDMWarning, stacklevel=4)


def _warn_folds(info):
    bad = info[~info["converged"]]
    if len(bad):
        warnings.warn(f"{len(bad)} of {len(info)} fold fits did not converge "
                      f"({', '.join(f'{m} fold {f}' for m, f in zip(bad['model'], bad['fold']))}); "
                      "their scores are those of the unconverged fit. See CVResult.fold_info.",
                      ConvergenceWarning, stacklevel=3)
    noisy = info[info["warnings"].str.len() > 0]
    if len(noisy):
        warnings.warn(f"{len(noisy)} of {len(info)} fold fits raised warnings (often species "
                      "absent from a training fold); see CVResult.fold_info['warnings']",
                      JSDMWarning, stacklevel=3)


@dataclass
class CVResult:
    """Result of :func:`cross_validate`.

    Attributes
    ----------
    table : DataFrame
        One row per model: ``lpd`` (held-out log predictive density, joint
        over species, summed over sites), ``lpd_se`` (its SE across sites),
        ``mc_se`` (Monte Carlo SE of importance sampling; 0 by quadrature),
        ``lpd_marginal``, ``lpd_conditional``, ``auc``, ``tss`` (discrete
        families), ``rmse`` (and ``_conditional`` variants), ``lpd_diff`` and
        ``diff_se`` (to the best model, paired over sites), ``within_one_se``
        (lpd_diff >= -diff_se), ``rank``.
    species : DataFrame indexed by (model, species)
        The same scores per species.
    sites : DataFrame
        One row per model and site: fold, lpd, mc_se.
    folds : Series
        Fold of each site.
    fold_info : DataFrame
        One row per model and fold: held-out sites, convergence, training
        ELBO, warnings raised while fitting.
    settings : dict
    fits : dict
        (model, fold) -> fit, with ``keep_fits=True``.
    """

    table: pd.DataFrame
    species: pd.DataFrame
    sites: pd.DataFrame
    folds: pd.Series
    fold_info: pd.DataFrame
    settings: dict
    fits: dict = field(default_factory=dict)

    @property
    def best(self):
        """Name of the model with the highest held-out lpd."""
        return self.table["lpd"].idxmax()

    @property
    def best_one_se(self):
        """The simplest model (fewest latent variables, then fewest covariate terms) whose lpd
        is within one paired standard error of the best: the one-standard-error rule, which
        guards against picking a larger model on noise (bench/cv_num_lv.py: it chose the true
        num_lv in 97% of replicates, the largest lpd in 70%)."""
        tab = self.table[self.table["within_one_se"]]
        n_terms = tab["covariates"].map(lambda c: 0 if c == "-" else len(str(c).split(", ")))
        return min(tab.index, key=lambda k: (tab.loc[k, "num_lv"], n_terms[k],
                                             -tab.loc[k, "lpd"]))

    def __repr__(self):
        cols = [c for c in ("num_lv", "lpd", "lpd_se", "lpd_diff", "diff_se", "lpd_marginal",
                            "lpd_conditional", "auc", "tss", "rmse") if c in self.table.columns]
        by = self.settings.get("by")
        head = (f"{self.settings['k']}-fold cross-validation by sites"
                + (f" (blocked by {by})" if by else "") + "; higher lpd is better\n")
        with pd.option_context("display.width", 120, "display.max_columns", 20):
            return head + self.table[cols].to_string(float_format=lambda v: f"{v:.3f}")

    def plot(self, metric="lpd", ax=None):
        """Compare the models' cross-validated scores.

        Parameters
        ----------
        metric : {"lpd", "lpd_marginal", "lpd_conditional", "auc", "tss", "rmse"}
            The score drawn (default "lpd", the log predictive density).
        ax : matplotlib Axes, optional
            Axes to draw on.

        Returns
        -------
        matplotlib Axes
            See :func:`jsdm.plotting.plot_cv`.
        """
        from ..plotting.cv import plot_cv
        return plot_cv(self, metric=metric, ax=ax)
