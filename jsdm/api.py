"""The user-facing entry point :func:`gllvm`."""
import numbers

import numpy as np

from .exceptions import JSDMError
from .model.checks import check_fit_options
from .model.fit import DEFAULT_SEED, fit_problem, n_starts
from .model.problem import build_problem
from .results.fitted import GLLVMResults


def gllvm(data, X=None, *, family="poisson", num_lv=None, formula=None, link=None, row_effect=None,
          offset=None, trials=None, response=None, site=None, species=None, cutpoints=None,
          n_init=None, seed=None, maxiter=5000, gtol=1e-3, verbose=False, checks=True, prior_sd=None,
          random_species=None, fourth_corner=None, site_effects=None, client=None, chunks=None,
          num_lv_c=0, num_rr=0, lv_formula=None, quadratic=False):
    """Fit a generalized linear latent variable model (a JSDM) by exact variational approximation.

    Parameters
    ----------
    data : Community, DataFrame (sites x species, wide) or long DataFrame
        With a long table give ``response=``, ``site=`` and ``species=`` column names.
    X : DataFrame (sites x covariates), optional
        Site covariates for wide data; every column enters when ``formula`` is None.
    family : str or Family
        "poisson", "negative_binomial" ("nb"), "binomial", "gaussian", ... or an instance.
    num_lv : int or "species", optional
        Number of latent variables (0 gives independent GLMs per species); default 2,
        or the d of ``rr()`` with an lme4-style formula. ``"species"``: one per species,
        the unstructured species covariance by site (lme4's ``(0 + species | site)``)
        as a full-rank factor model; a DataWarning suggests ``rr()`` when its
        m (m + 1) / 2 parameters are many for the data.
    formula : str, optional
        Right-hand side on the site covariates, e.g. "~ SubsDens + WatrCont"; or an
        lme4/glmmTMB-style formula on long data, e.g.
        "count ~ species + species:SubsDens + rr(0 + species | site, d = 2)"
        (see docs/formula.md and :func:`jsdm.model.formula.parse_formula`).
    response, site, species : str, optional
        Column names of the response, the site label and the species label
        in a long table (with an lme4-style formula, the response defaults to
        the formula's left-hand side; site and species default to "site" and
        "species").
    link : str, optional
        Link function where the family offers several (binomial: logit, probit, cloglog).
    row_effect : None, "fixed" or "random"
        Site intercepts.
    site_effects : str or list of str, optional
        Grouped site effects: random intercepts by the levels of site-level grouping
        columns of the site table (``X`` / ``Community.X``), the wide form of lme4's
        ``(1 | plot)``. ``"plot"``: one effect per plot; ``["year", "observer"]``:
        crossed; ``"plot/transect"``: nested, i.e. ``"plot"`` and ``"plot:transect"``
        (the combinations). With an lme4-style formula write the bars instead. The
        grouping columns are not covariates (they are left out of the design when
        ``formula`` is None). See docs/formula.md, "Grouped site effects".
    offset : number, array (n,), (n, 1), (1, m) or (n, m), Series or DataFrame, optional
        Known part of the linear predictor. A Series indexed by site (or by
        species) or a DataFrame (sites x species) is matched by label; an
        array is taken in the order of the sites and species (a 1-D array
        holds one value per site). Must be finite wherever y is observed.
    trials : same shapes as ``offset``, optional
        Binomial number of trials (1 when omitted).
    cutpoints : {"species", "common"}, optional
        Ordinal family only: cut points per species (the default) or one set
        shared by all species (R gllvm's ``zeta.struc = "common"``; far fewer
        parameters for sparse cover tables). Categories a species (or, with
        "common", every species) never uses are merged; a DataWarning says which.
    n_init : int >= 1, optional
        Number of starts; the one with the highest ELBO is kept. The default,
        None, is 3 starts, and for quadratic responses (``quadratic=``) the linear
        fit from 3 starts followed by d + 2 quadratic starts, one per pattern of
        starting D (docs: "Starting values and n_init"). A given n_init with
        quadratic responses runs the linear fit from n_init starts and the first
        n_init of those d + 2 patterns (``n_init=1``: one quadratic start, as R
        gllvm's ``n.init = 1``; faster, less reliable on data with several optima).
    seed : int >= 0 or numpy Generator, optional
        Seed of the starting values (the jittered starts and the randomised
        residuals they come from). The default, None, uses a fixed seed (0):
        the same data and call give the same fit, bit for bit. Pass other
        seeds to try other starts.
    maxiter : int >= 1
        Iteration limit of the optimiser (all phases together).
    gtol : float > 0
        Convergence tolerance. The fit is *converged* when the largest
        curvature-scaled gradient, max_k |g_k| / sqrt(max(h_k, 1)) with g the
        gradient of the ELBO and h_k its curvature along parameter k, is at
        most ``gtol`` (``fit.scaled_grad``); the raw max |gradient|
        (``fit.max_grad``) can be larger for parameters with large curvature.
    verbose : bool
        Print progress to stderr.
    checks : bool
        Run the cheap diagnostics (covariate scaling, sparse species, collapsed
        latent variables, ...) at the end and warn about what they find.
    prior_sd : float, optional
        A weak Gaussian penalty: loadings and slopes (per standard deviation of
        their covariate) get a N(0, prior_sd^2) prior, and the fit is the
        penalised (posterior-mode) estimate. Keeps estimates finite for species
        whose likelihood has no finite optimum (perfect separation, a species
        seen at one site); well-informed species barely move (see
        docs/associations.md, "Rare and separated species"; 5 is the value
        studied there). Default None: maximum likelihood (of the ELBO), as R
        gllvm. ``fit.llf`` is the ELBO without the penalty.
    random_species : str, optional
        Random species coefficients (wide data), written as on long data in lme4: bars
        by species and the fixed terms that are their community means, e.g.
        ``"WatrCont + (1 + WatrCont | species)"`` (correlated random intercepts and
        WatrCont slopes; the intercept's mean is implicit as in lme4),
        ``"(1 | species) + (0 + x | species)"`` (independent), ``"x + (x || species)"``,
        ``"x + x:height + (0 + x | species)"`` (a species trait in the slopes' mean: the
        fourth corner; traits from the Community). A random coefficient replaces the
        fixed species-specific one on the same column (the covariate must be in the
        design, see ``formula``). See docs/species_random.md; on long data write the
        bars in the formula.
    fourth_corner : str, optional
        Community slopes on site covariates and their interactions with species traits
        (fixed), as R gllvm's trait formula: ``"Snow + Slope + (Snow + Slope):(Height + SLA)"``
        (the covariate first). Replaces the species-specific slopes on those covariates;
        traits come from the Community. ``fit.fourth_corner()`` gives the coefficients.
    client : dask.distributed.Client, optional
        Fit on that Dask cluster: the sites are split into chunks that stay on the
        workers with their site parameters; the driver steps the species
        parameters (docs/scaling.md). Needs ``pip install 'jsdm[dask]'``. Returns a
        ``jsdm.results.cluster.ClusterGLLVMResults``. ``data`` may also be a
        ``jsdm.model.cluster_data.ClusterData`` (Parquet files, Zarr or dask arrays).
    chunks : int, optional
        Number of chunks of sites with ``client`` (default: two per worker, and
        at most about 5 million cells per chunk).

    num_lv_c : int >= 0
        Concurrent ordination (R gllvm's ``num.lv.c``): this many latent variables
        z_i = C' x_i + e_i, e_i ~ N(0, I), explained partly by the covariates of
        ``lv_formula``; unconstrained latent variables (``num_lv``) follow them.
    num_rr : int >= 0
        Constrained ordination (R gllvm's ``num.RR``; reduced-rank regression, the
        model-based RDA/CCA): this many latent variables z_i = C' x_i without a
        residual.
    lv_formula : str, optional
        Right-hand side on the site covariates of the ordination (R gllvm's
        ``lv.formula``), e.g. "~ SubsDens + WatrCont"; no intercept. Required with
        ``num_lv_c`` or ``num_rr``. ``num_lv`` stays the number of *unconstrained*
        latent variables (pass ``num_lv=0`` for a purely constrained or concurrent
        ordination). See docs/ordination_constrained.md.
    quadratic : False, True or "lv"
        Unimodal responses to the latent variables (R gllvm's ``quadratic``):
        eta_ij gains - sum_k D_jk z_ik^2 with D_jk >= 0 per species (True) or one D_k
        per latent variable shared by all species ("lv"). Gives species optima and
        tolerances (``fit.optima``, ``fit.tolerances``). Exact ELBO for Poisson
        (and Gaussian); a documented approximation for other families
        (docs/ordination_constrained.md).

    Returns
    -------
    GLLVMResults
        The fitted model: estimates as labelled tables (``coef`` species x
        terms, ``loadings`` species x num_lv, ``lv`` sites x num_lv), inference,
        predictions, associations, ordination, plots and the report.
    """
    from .families import get_family

    fam = get_family(family, link=link)
    if cutpoints is not None:
        fam = fam.with_cutpoints(cutpoints)
    check_fit_options(n_init, maxiter, gtol, seed)
    if prior_sd is not None and (isinstance(prior_sd, bool) or not (
            isinstance(prior_sd, numbers.Real) and np.isfinite(prior_sd) and prior_sd > 0)):
        raise JSDMError(f"prior_sd must be a positive number (the sd of the penalty), got "
                        f"{prior_sd!r}; use None for no penalty")
    call = dict(num_lv=num_lv, formula=formula, row_effect=row_effect, offset=offset,
                response=response, site=site, species=species, site_effects=site_effects)
    if random_species is not None:
        from .model.formula import parse_random_species
        call["species_random"], shared = parse_random_species(random_species, both=True)
        if shared is not None:
            if fourth_corner is not None:
                raise JSDMError(f"community slopes are given twice: {shared.lme4()!r} in "
                                "random_species= and fourth_corner=; write them in one place.")
            call["community_slopes"] = shared
    if fourth_corner is not None:
        from .model.formula import parse_fourth_corner
        call["community_slopes"] = parse_fourth_corner(fourth_corner)
    # --- lme4/glmmTMB-style formula: translated into the wide call (jsdm/model/formula.py)
    from .model.formula import is_lme4_formula, translate_call
    if is_lme4_formula(formula, species):
        given = [call.pop(k, None) for k in ("species_random", "community_slopes")]
        data, X, call = translate_call(data, X, **call)
        if any(g is not None for g in given):
            raise JSDMError("random_species= and fourth_corner= are for wide data; with an "
                            "lme4-style formula write those terms in the formula.")
        if "random_species" in call:
            call["species_random"] = call.pop("random_species")
        if "fourth_corner" in call:
            call["community_slopes"] = call.pop("fourth_corner")
        ordn = {k: call.pop(k) for k in ("num_lv_c", "num_rr", "lv_formula", "quadratic") if k in call}
        for k, v in ordn.items():
            given = {"num_lv_c": num_lv_c, "num_rr": num_rr, "lv_formula": lv_formula,
                     "quadratic": quadratic}[k]
            if given not in (0, None, False) and given != v:
                raise JSDMError(f"{k}={given!r} contradicts the formula's rr() term ({k}={v!r}); "
                                "give it in one place")
        num_lv_c, num_rr = ordn.get("num_lv_c", num_lv_c), ordn.get("num_rr", num_rr)
        lv_formula, quadratic = ordn.get("lv_formula", lv_formula), ordn.get("quadratic", quadratic)
    # ---
    call["num_lv"] = 2 if call["num_lv"] is None else call["num_lv"]
    if client is None and chunks is not None:
        raise JSDMError("chunks= splits the sites over a Dask cluster; give client= too")
    if client is not None and (num_lv_c or num_rr or quadratic):
        raise JSDMError("constrained, concurrent and quadratic ordination are not available on a "
                        "Dask cluster yet; fit them without client=")
    if client is not None:
        from .results.cluster import gllvm_on_cluster
        return gllvm_on_cluster(data, X, client=client, chunks=chunks, family=fam, trials=trials,
                                call=call, n_init=n_starts(n_init), seed=seed, maxiter=maxiter, gtol=gtol,
                                verbose=verbose, prior_sd=prior_sd, formula=formula)
    prob = build_problem(data, X, family=fam, trials=trials, num_lv_c=num_lv_c, num_rr=num_rr,
                         lv_formula=lv_formula, quadratic=quadratic, **call)
    if prior_sd is not None:
        prob.info["prior_sd"] = float(prior_sd)
    state = fit_problem(prob, n_init=n_init, seed=seed, maxiter=maxiter, gtol=gtol, verbose=verbose)
    settings = dict(family=fam.name, link=fam.link, num_lv=call["num_lv"], formula=formula,
                    cutpoints=getattr(fam, "cut_structure", None),
                    row_effect=call["row_effect"], n_init=n_init,
                    seed=DEFAULT_SEED if seed is None else seed, maxiter=maxiter, gtol=gtol,
                    prior_sd=prior_sd)
    if call.get("site_effects"):
        settings["site_effects"] = list(prob.info.get("site_effects", []))
    if call.get("species_random") is not None:
        settings["random_species"] = call["species_random"].lme4()
    if call.get("community_slopes") is not None:
        settings["fourth_corner"] = call["community_slopes"].lme4()
    if num_lv_c or num_rr or quadratic:
        settings.update(num_lv_c=int(num_lv_c), num_rr=int(num_rr), lv_formula=lv_formula,
                        quadratic=quadratic)
    if state.quadratic_starts:
        settings["quadratic_starts"] = int(state.quadratic_starts)
    if call["formula"] != formula:
        settings["site_formula"] = call["formula"]
    fit = GLLVMResults(prob, state, settings)
    if checks:
        from .analysis.diagnostics import warn_quick_checks
        warn_quick_checks(fit, stacklevel=3)
    return fit


ORDINATION_TYPES = ("unconstrained", "concurrent", "constrained")


def compare_ordinations(data, X=None, *, lv_formula, d=2, types=ORDINATION_TYPES,
                        family="poisson", cv=None, cv_seed=0, **kwargs):
    """Fit unconstrained, concurrent and constrained ordinations with the same dimension d
    and compare them by AIC and BIC, and optionally by cross-validation.

    Parameters
    ----------
    data, X : as in :func:`gllvm`.
    lv_formula : str
        Covariates of the constrained and concurrent ordinations (``gllvm(lv_formula=)``).
    d : int >= 1
        Number of latent dimensions of every model: ``num_lv=d`` (unconstrained),
        ``num_lv_c=d`` (concurrent), ``num_rr=d`` (constrained).
    types : sequence of {"unconstrained", "concurrent", "constrained"}
    family, **kwargs
        Passed to every :func:`gllvm` call (e.g. ``formula``, ``row_effect``,
        ``n_init``, ``seed``).
    cv : int, optional
        Also compare the types by K-fold cross-validation by sites with ``cv`` folds
        (:func:`jsdm.cross_validate`, the same folds for every type; each fold refits
        each type). Adds the columns ``lpd`` (log predictive density of the held-out
        sites, higher is better), ``lpd_diff`` and ``diff_se`` (from the best type, with
        the paired standard error of the difference) and ``lpd_conditional``. The
        :class:`~jsdm.results.crossval.CVResult` is in ``table.attrs["cv"]``.
    cv_seed : int
        Seed of the fold assignment.

    Returns
    -------
    (DataFrame, dict)
        The table (one row per type: df, ELBO, AIC, BIC, dAIC, dBIC from the best of
        each, sorted by AIC) and the fits by type. The ELBO stands for the
        log-likelihood as in R gllvm; a constrained model has no random part, so its
        ELBO is its exact log-likelihood while the others' are bounds (their AIC is
        conservative).
    """
    bad = [t for t in types if t not in ORDINATION_TYPES]
    if bad or not types:
        raise JSDMError(f"types must be among {ORDINATION_TYPES}, got {list(types)!r}")
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise JSDMError(f"d must be a whole number >= 1, got {d!r}")
    args = {"unconstrained": dict(num_lv=d),
            "concurrent": dict(num_lv=0, num_lv_c=d, lv_formula=lv_formula),
            "constrained": dict(num_lv=0, num_rr=d, lv_formula=lv_formula)}
    fits, rows = {}, []
    for t in types:
        fit = gllvm(data, X, family=family, **{**kwargs, **args[t]})
        fits[t] = fit
        rows.append({"type": t, "d": d, "df": fit.df, "elbo": fit.llf, "aic": fit.aic,
                     "bic": fit.bic, "converged": fit.converged})
    import pandas as pd

    tab = pd.DataFrame(rows).set_index("type")
    tab["d_aic"] = tab["aic"] - tab["aic"].min()
    tab["d_bic"] = tab["bic"] - tab["bic"].min()
    if cv is not None:
        from .results.crossval import cross_validate
        res = cross_validate(fits, k=cv, seed=cv_seed)
        cols = [c for c in ("lpd", "lpd_diff", "diff_se", "lpd_conditional") if c in res.table]
        tab = tab.join(res.table[cols])
        tab.attrs["cv"] = res
    return tab.sort_values("aic"), fits
