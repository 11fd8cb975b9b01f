"""The user-facing entry point :func:`gllvm`."""
from .model.fit import fit_problem
from .model.problem import build_problem
from .results.fitted import GLLVMResults


def gllvm(data, X=None, *, family="poisson", num_lv=None, formula=None, link=None, row_effect=None,
          offset=None, trials=None, response=None, site=None, species=None, n_init=3, seed=None,
          maxiter=5000, gtol=1e-3, verbose=False, checks=True):
    """Fit a generalized linear latent variable model (a JSDM) by exact variational approximation.

    Parameters
    ----------
    data : Community, DataFrame (sites x species, wide) or long DataFrame
        With a long table give ``response=``, ``site=`` and ``species=`` column names.
    X : DataFrame (sites x covariates), optional
        Site covariates for wide data; every column enters when ``formula`` is None.
    family : str or Family
        "poisson", "negative_binomial" ("nb"), "binomial", "gaussian", ... or an instance.
    num_lv : int, optional
        Number of latent variables (0 gives independent GLMs per species); default 2,
        or the d of ``rr()`` with an lme4-style formula.
    formula : str, optional
        Right-hand side on the site covariates, e.g. "~ SubsDens + WatrCont"; or an
        lme4/glmmTMB-style formula on long data, e.g.
        "count ~ species + species:SubsDens + rr(0 + species | site, d = 2)"
        (see docs/formula.md and :func:`jsdm.model.formula.parse_formula`).
    link : str, optional
        Link function where the family offers several (binomial: logit, probit, cloglog).
    row_effect : None, "fixed" or "random"
        Site intercepts.
    offset : array (n,) or (n, m), optional
    trials : array broadcastable to (n, m), optional
        Binomial number of trials (1 when omitted).
    n_init : int
        Number of starts; the one with the highest ELBO is kept.
    seed : int, optional
        Seed for starting values; the same seed gives the same fit. None uses a fixed
        default (``jsdm.model.fit.DEFAULT_SEED``), so a call without it is reproducible too.
    maxiter, gtol : optimiser limits; converged means max |gradient| <= gtol.
    verbose : bool
        Print progress to stderr.
    checks : bool
        Run the cheap diagnostics (covariate scaling, sparse species, collapsed
        latent variables, ...) at the end and warn about what they find.

    Returns
    -------
    GLLVMResults
    """
    from .families import get_family

    fam = get_family(family, link=link)
    call = dict(num_lv=num_lv, formula=formula, row_effect=row_effect, offset=offset,
                response=response, site=site, species=species)
    # --- lme4/glmmTMB-style formula: translated into the wide call (jsdm/model/formula.py)
    from .model.formula import is_lme4_formula, translate_call
    if is_lme4_formula(formula, species):
        data, X, call = translate_call(data, X, **call)
    # ---
    call["num_lv"] = 2 if call["num_lv"] is None else call["num_lv"]
    prob = build_problem(data, X, family=fam, trials=trials, **call)
    state = fit_problem(prob, n_init=n_init, seed=seed, maxiter=maxiter, gtol=gtol, verbose=verbose)
    settings = dict(family=fam.name, link=fam.link, num_lv=call["num_lv"], formula=formula,
                    row_effect=call["row_effect"], n_init=n_init, seed=seed, maxiter=maxiter,
                    gtol=gtol)
    if call["formula"] != formula:
        settings["site_formula"] = call["formula"]
    fit = GLLVMResults(prob, state, settings)
    if checks:
        from .analysis.diagnostics import warn_quick_checks
        warn_quick_checks(fit, stacklevel=3)
    return fit
