"""Checks of a fitted GLLVM, in the spirit of glmmTMB's diagnose() and lme4's warnings.

Each check returns :class:`Problem` records (what is wrong, the evidence, what
to do, the parameters involved). :func:`diagnose` runs them all, including the
Hessian; :func:`quick_checks` runs the cheap ones (no Hessian) and is meant
for the end of every fit (:func:`warn_quick_checks` turns them into warnings).

Thresholds (module constants, documented in the messages):

- convergence: the fit's own verdict (scaled gradient max_k |g_k| / sqrt(max(h_k, 1))
  above ``gtol``); the report names the parameters with the largest scaled gradient;
- Hessian: smallest eigenvalue of the correlation-scaled negative Schur
  complement <= 1e-9 (not definite: SEs are NaN) or <= 1e-6 (near-singular);
- large coefficients (non-identity links): |estimate| > 10 on the link scale
  (separation: no finite optimum); large standard errors (``diagnose`` only,
  it needs the Hessian): SE > 10 for a slope per sd or a loading length (a
  parameter the data do not pin down);
- estimates set by the penalty (fits with ``prior_sd``, ``diagnose`` only):
  a slope (per sd) or a species' loading length |theta_j| whose SE exceeds
  half the prior sd, i.e. the data carry less than three times the
  information of the prior (SE checks judge loadings by |theta_j|: a single
  loading's SE depends on the rotation's anchor species);
- covariate scaling: design column sd outside [0.1, 10] or |mean| > 10 sd
  (0/1 dummy columns exempt);
- collapsed latent variable: root-mean-square loading < 0.1 on the link scale
  (divided by the residual sd for identity links), or < 1% of the trace of
  Theta Theta';
- sparse species: informative records (non-zeros; for binomial also
  non-full) not exceeding the species' number of parameters;
- dispersion at its bound: the dispersion parameter at the lower end of its
  range (negative binomial: phi ~ 2e-9, indistinguishable from Poisson);
- random row effects: sd < 0.01;
- degenerate dispersion (Gaussian, Tweedie, gamma, beta): model variance at the
  fitted means below 1e-6 of the data's variance for a species;
- variational approximation (:func:`check_approximation`, in ``diagnose`` only):
  the importance-sampling log-likelihood exceeds the ELBO by more than 3 Monte
  Carlo SEs and by more than ``APPROX_GAP`` nats per site on average; or the
  importance sampling itself is unreliable (smallest effective sample size
  below ``APPROX_ESS`` of the draws).
"""
from dataclasses import dataclass, field
import warnings
import weakref

import numpy as np
import pandas as pd

from ..exceptions import DataWarning, HessianWarning, JSDMWarning
from ..model.params import S_BOUNDS

LARGE_COEF = 10.0
LARGE_SE = 10.0
SCALE_RANGE = (0.1, 10.0)
LV_RMS = 0.1
LV_SHARE = 0.01
ROW_SD = 0.01
APPROX_GAP = 0.1
APPROX_ESS = 0.1
#: a species enters headline tables and plot labels with at least this many informative
#: records (and more than its number of parameters); bench/study_rare_separated.py
MIN_RECORDS = 5
#: SE / prior_sd above which a penalised estimate counts as set by the penalty
PENALTY_SHARE = 0.5
#: distance of s from its lower bound within which the dispersion counts as at the bound
#: (a factor e^3 = 20: NB phi below 4e-8, over-dispersion of no consequence at any count)
BOUND_TOL = 3.0
#: starts whose final ELBO is this far below the best one (nats, or this fraction of |ELBO| on
#: large data) ended at another optimum; smaller differences are the optimiser's tolerance
START_TOL = 0.01
START_RTOL = 1e-6


@dataclass
class Problem:
    """One finding of :func:`diagnose`.

    Attributes
    ----------
    kind : str
        Short name ("convergence", "hessian", "near_singular", "large_coefficient",
        "covariate_scaling", "collapsed_lv", "sparse_species", "row_variance",
        "group_variance", "degenerate_dispersion", "dispersion_at_bound", "dispersion_at_ceiling",
        "large_se", "penalty_dominated", "species_random_variance", "starts").
    message : str
        One-line statement of the problem.
    evidence : str
        The numbers behind it.
    remedy : str
        What to do.
    parameters : list
        Labels (block, species/site, term) of the parameters or names involved.
    """

    kind: str
    message: str
    evidence: str
    remedy: str
    parameters: list = field(default_factory=list)

    def __str__(self):
        return f"[{self.kind}] {self.message}\n    evidence: {self.evidence}\n    remedy:   {self.remedy}"


@dataclass
class Diagnosis:
    """Result of :func:`diagnose`: ``.ok``, ``.problems`` (records) and a readable report.

    Parameters
    ----------
    problems : list of Problem
        What is wrong, each with its evidence and remedy.
    stats : dict
        The numbers the checks looked at (max scaled gradient, smallest
        Hessian eigenvalue, ...).
    """

    problems: list
    stats: dict

    @property
    def ok(self):
        """True when no check found a problem."""
        return not self.problems

    def to_frame(self):
        """Problems as a DataFrame (one row each; empty when ok).

        Returns
        -------
        DataFrame, shape (n_problems, 5)
            Columns kind, message, evidence, remedy, parameters.
        """
        cols = ["kind", "message", "evidence", "remedy", "parameters"]
        rows = [[p.kind, p.message, p.evidence, p.remedy, "; ".join(_fmt(x) for x in p.parameters)]
                for p in self.problems]
        return pd.DataFrame(rows, columns=cols)

    def __str__(self):
        head = ["GLLVM diagnostics", "=" * 17]
        head += [f"{k}: {_fmt_val(v)}" for k, v in self.stats.items()]
        if self.ok:
            return "\n".join(head + ["", "No problems found."])
        body = [f"{len(self.problems)} problem(s) found:"] + [f"{k + 1}. {p}" for k, p in enumerate(self.problems)]
        return "\n".join(head + [""] + body)

    def __repr__(self):
        return str(self)

    def _repr_html_(self):
        import html

        return f"<pre>{html.escape(str(self))}</pre>"


def _fmt(lab):
    if isinstance(lab, tuple):
        return "/".join(str(x) for x in lab if x != "")
    return str(lab)


def _fmt_val(v):
    return f"{v:.3g}" if isinstance(v, (float, np.floating)) else str(v)


def _names(labels, k=6):
    s = ", ".join(_fmt(x) for x in labels[:k])
    return s + (f" (+{len(labels) - k} more)" if len(labels) > k else "")


# --- packed labels of every parameter (model and variational) --------------------------
def packed_labels(fit):
    """Label of every entry of the packed parameter vector (model and variational)."""
    from ..results.inference import packed_labels as _labels

    return _labels(fit)


# --- checks ---------------------------------------------------------------------------
def _scaled_gradient(fit):
    """|g_k| / sqrt(max(curvature_k, 1)), the engine's convergence measure (raw |g| as fallback)."""
    g = np.abs(fit.state.grad)
    try:
        from ..model.blocks import curvature_diagonal

        h = curvature_diagonal(fit.problem, fit.state.layout, fit.state.params)
        return g / np.sqrt(np.maximum(h, 1.0))
    except (ImportError, AttributeError, TypeError, ValueError):
        return g


def check_convergence(fit):
    """Non-convergence: the (scaled) gradient at the returned parameters, and who carries it."""
    if fit.converged:
        return []
    gtol = float(fit.settings.get("gtol", 1e-3))
    g = _scaled_gradient(fit)
    gmax = float(g.max()) if g.size else 0.0
    top = np.argsort(-g)[:5]
    labels = packed_labels(fit)
    who = [labels[k] for k in top]
    return [Problem(
        "convergence", "the optimiser stopped before the gradient was small",
        f"max scaled |gradient| = {gmax:.3g} (tolerance {gtol:g}; raw max {fit.max_grad:.3g}) after "
        f"{fit.n_iter} iterations; largest at {_names(who)}",
        _join("refit with a larger maxiter and more starts (n_init=5)", standardise_advice(fit))
        + "; if the large gradient sits on one species, check that species' data", who)]


def check_hessian(fit):
    """Not negative definite / near-singular Hessian of the ELBO, and which parameters."""
    from ..results.inference import NEAR_SINGULAR_TOL, information

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HessianWarning)
        info = information(fit)
    out = []
    if info.flagged:
        out.append(Problem(
            "hessian", "the Hessian of the ELBO is not negative definite",
            f"smallest scaled eigenvalue {info.min_eigenvalue:.2e}; standard errors are NaN for "
            f"{_names(info.flagged)}",
            "these parameters are not identified at this optimum: " + _join(
                "use fewer latent variables", "drop very rare species or use a weak penalty "
                "(prior_sd=5)", standardise_advice(fit)) + ", or refit with more starts",
            list(info.flagged)))
    elif info.min_eigenvalue < NEAR_SINGULAR_TOL:
        weak = info.weak_directions()
        who = [lab for _, labs in weak for lab in labs]
        out.append(Problem(
            "near_singular", "the Hessian of the ELBO is near-singular",
            f"smallest scaled eigenvalue {info.min_eigenvalue:.2e} (< {NEAR_SINGULAR_TOL:g}); weak "
            f"direction(s) carried by {_names(who)}",
            "standard errors of these parameters are unreliable: simplify the model (fewer "
            "latent variables or covariates)" + (" or " + standardise_advice(fit)
                                                 if standardise_advice(fit) else ""), who))
    if info.bad_sites:
        out.append(Problem(
            "hessian", "the variational optimum is not a strict maximum for some sites",
            f"{len(info.bad_sites)} site(s), e.g. {list(info.bad_sites[:5])}",
            "refit with a larger maxiter or more starts (n_init=5)", list(info.bad_sites)))
    return out


def _per_sd(fit, index):
    """Scale factors putting slopes per sd of their design column (1 elsewhere).

    A slope on a column with a small spread (e.g. orthogonal polynomials) is
    large per unit but not per sd; judging it per sd avoids false alarms.
    """
    sd = dict(zip(fit.terms, fit.problem.X.std(axis=0))) if fit.problem.p else {}
    return np.array([sd.get(term, 1.0) if block == "coef" else 1.0
                     for block, _, term in index])


def _large(fit):
    """(labels, per-sd estimates, per-sd factors) of slopes/loadings/intercepts with |estimate| > LARGE_COEF."""
    par = fit.params
    blocks = par.index.get_level_values("block")
    sel = np.asarray((blocks == "coef") | (blocks == "loading"))
    if getattr(fit, "prior_sd", None) is not None:
        # penalised slopes and loadings stay finite, and then so do the intercepts: a large
        # intercept is a rare species with strong loadings, not separation
        sel &= np.asarray(par.index.get_level_values("term") != "Intercept")
    unit = _per_sd(fit, par.index)
    bad = sel & (np.abs(par.to_numpy() * unit) > LARGE_COEF)
    return bad, unit


def standardise_advice(fit):
    """"standardise covariates" when some numeric design column is not standardised, else ""."""
    from ..model.problem import unstandardised

    return "standardise covariates" if unstandardised(fit.problem.X) else ""


def _join(*parts):
    return ", ".join(p for p in parts if p)


def large_coefficient_species(fit):
    """Species with a slope, loading (or, unpenalised, intercept) beyond LARGE_COEF on the link
    scale: the cheap, estimate-only sign of a likelihood without a finite optimum."""
    if fit.family.link == "identity":
        return []
    bad, _ = _large(fit)
    sp = set(fit.params.index[bad].get_level_values("species"))
    return [s for s in fit.species if s in sp]


def check_large_coefficients(fit, se=None):
    """Huge estimates on the link scale: separation, a likelihood without a finite optimum.

    Slopes are judged per sd of their covariate (the change in the linear
    predictor over one sd), intercepts and loadings as they are. Uses the
    estimates only, so the fit-time warning and :func:`diagnose` count the
    same; large standard errors are :func:`check_large_se`. ``se`` (optional)
    is only quoted in the evidence.
    """
    if fit.family.link == "identity":
        return []
    bad, _ = _large(fit)
    if not bad.any():
        return []
    par = fit.params
    who = list(par.index[bad])
    est = par.to_numpy()
    ex = [f"{_fmt(lab)} = {est[k]:.3g}" + (f" (SE {se.iloc[k]:.3g})" if se is not None else "")
          for k, lab in zip(np.flatnonzero(bad)[:4], who[:4])]
    species = sorted(set(lab[1] for lab in who), key=list(fit.species).index)
    return [Problem(
        "large_coefficient", f"{len(who)} suspiciously large coefficient(s) on the link scale "
        f"({len(species)} species)", "; ".join(ex) + f" (limit |estimate| {LARGE_COEF:g}; slopes per "
        "sd of their covariate)",
        _separation_remedy(fit), who)]


def _separation_remedy(fit):
    cause = ("a species present (or absent) only on one side of a covariate or of the latent "
             "variables, or at one site, has no finite optimum (separation)" if fit.terms else
             "a species present (or absent) only at one end of the latent variables, or at one "
             "site, has no finite optimum")
    if getattr(fit, "prior_sd", None) is None:
        todo = "refit with a weak penalty (prior_sd=5) or drop or merge that species"
    else:
        todo = ("the penalty keeps them finite, but they are set by it: read them as 'large, sign "
                "known', or drop or merge that species")
    return f"{cause}: " + _join(todo, standardise_advice(fit))


def _judged_se(fit, se):
    """(labels, SE) judged by the SE checks: each slope per sd of its covariate, and for the
    loadings of a species the SE of their length |theta_j| (label (loading, species, "|theta|")).

    A single loading's SE depends on how well the first species pin the rotation
    of the latent variables (a rare anchor species inflates every loading's SE
    while correlations stay precise); the length of a species' loading vector
    does not depend on the rotation, so its SE is what says whether the data
    pin that species' loadings down.
    """
    par = fit.params
    blocks = par.index.get_level_values("block")
    terms = par.index.get_level_values("term")
    slope = np.asarray((blocks == "coef") & (terms != "Intercept"))
    s = se.reindex(par.index).to_numpy() * _per_sd(fit, par.index)
    labels, vals = list(par.index[slope]), list(s[slope])
    if fit.num_lv:
        C = fit.cov_params()
        th = fit.loadings
        for sp in fit.species:
            lab = [("loading", sp, lv) for lv in fit.lv_names if ("loading", sp, lv) in C.index]
            t = th.loc[sp, [lv for _, _, lv in lab]].to_numpy(dtype=float)
            nrm = np.sqrt((t ** 2).sum())
            g = t / nrm if nrm > 0 else np.full(len(t), np.nan)
            V = C.loc[lab, lab].to_numpy(dtype=float)
            labels.append(("loading", sp, "|theta|"))
            vals.append(float(np.sqrt(max(g @ V @ g, 0.0))) if np.isfinite(V).all() else np.nan)
    return labels, np.asarray(vals, dtype=float)


def check_large_se(fit, se):
    """Standard errors above LARGE_SE on the link scale: slopes per sd, loadings by the SE of
    each species' loading length (rotation free); weakly identified parameters."""
    if fit.family.link == "identity" or se is None:
        return []
    labels, s = _judged_se(fit, se)
    bad = np.isfinite(s) & (s > LARGE_SE)
    if not bad.any():
        return []
    who = [labels[k] for k in np.flatnonzero(bad)]
    ex = [f"{_fmt(lab)}: SE {s[k]:.3g}" for k, lab in zip(np.flatnonzero(bad)[:4], who[:4])]
    return [Problem(
        "large_se", f"{len(who)} standard error(s) above {LARGE_SE:g} on the link scale",
        "; ".join(ex) + " (slopes per sd of their covariate; loadings: the length of a species' "
        "loading vector)",
        "the data hardly pin these parameters down: " + _join(
            "use fewer latent variables or covariates", "a weak penalty (prior_sd=5)"
            if getattr(fit, "prior_sd", None) is None else "", "or drop the species"), who)]


def check_penalty_dominated(fit, se):
    """Penalised fits: slopes (per sd) or loading lengths whose SE exceeds PENALTY_SHARE *
    prior_sd: set mainly by the prior (the data carry less than 3 times its information)."""
    tau = getattr(fit, "prior_sd", None)
    if tau is None or se is None:
        return []
    labels, s = _judged_se(fit, se)
    bad = np.isfinite(s) & (s > PENALTY_SHARE * tau)
    if not bad.any():
        return []
    who = [labels[k] for k in np.flatnonzero(bad)]
    species = sorted(set(lab[1] for lab in who), key=list(fit.species).index)
    return [Problem(
        "penalty_dominated", f"{len(species)} species whose slopes or loadings are set mainly by "
        "the penalty, not by the data", f"{_names(species)}: SE above {PENALTY_SHARE:g} x prior_sd "
        f"= {PENALTY_SHARE * tau:.3g} (slopes per sd; loadings: the length of the species' "
        "loading vector; the data carry less than 3 times the prior's information)",
        "their likelihood has no finite optimum (separation) or too little data: read their "
        "slopes and associations as 'large, sign known' at most; they are left out of headline "
        "tables", who)]


def check_covariate_scaling(fit):
    """Design columns with sd far from 1 or far from centred; suggest standardising."""
    X, terms = fit.problem.X, fit.terms
    out = []
    if not X.size:
        return out
    sd, mean = X.std(0, ddof=1) if X.shape[0] > 1 else np.ones(X.shape[1]), X.mean(0)
    dummy = np.array([np.isin(np.unique(X[:, k]), (0.0, 1.0)).all() for k in range(X.shape[1])])
    lo, hi = SCALE_RANGE
    bad = ~dummy & ((sd < lo) | (sd > hi) | (np.abs(mean) > hi * np.maximum(sd, 1e-300)))
    if bad.any():
        who = [terms[k] for k in np.flatnonzero(bad)]
        ev = "; ".join(f"{terms[k]}: mean {mean[k]:.3g}, sd {sd[k]:.3g}" for k in np.flatnonzero(bad)[:5])
        out.append(Problem(
            "covariate_scaling", f"badly scaled covariate(s): {', '.join(who)}",
            ev + f" (wanted: sd within [{lo:g}, {hi:g}], mean within {hi:g} sd of 0)",
            "standardise them, e.g. X = (X - X.mean()) / X.std(), or use scale(x) in the formula; "
            "coefficients are then per sd and the optimiser is better conditioned", who))
    return out


def check_collapsed_lvs(fit):
    """Latent variables whose loadings have shrunk to ~0 (too many LVs)."""
    d = fit.num_lv
    if not d:
        return []
    th = fit.loadings.to_numpy()
    if fit.family.link == "identity" and fit.dispersion is not None:
        th = th / fit.dispersion.to_numpy()[:, None]
    rms = np.sqrt((th ** 2).mean(0))
    share = (th ** 2).sum(0) / max((th ** 2).sum(), 1e-300)
    bad = (rms < LV_RMS) | (share < LV_SHARE)
    if not bad.any():
        return []
    who = [fit.lv_names[k] for k in np.flatnonzero(bad)]
    ev = "; ".join(f"{fit.lv_names[k]}: rms loading {rms[k]:.3g}, share of trace {share[k]:.1%}"
                   for k in np.flatnonzero(bad))
    keep = d - int(bad.sum())
    return [Problem(
        "collapsed_lv", f"latent variable(s) {', '.join(who)} have collapsed to ~0",
        ev + f" (limits: rms {LV_RMS:g}, share {LV_SHARE:.0%})",
        f"fit fewer latent variables (num_lv={keep}) and compare with jsdm.anova or "
        "jsdm.select_num_lv", who)]


def informative_records(fit):
    """Informative records per species (m,): sites with y > 0; for binomial the smaller of
    that and the sites below the number of trials (a species present everywhere says as
    little as one absent everywhere); for Gaussian every observed site. A model with a
    family per species asks each species' own family."""
    prob = fit.problem
    Y = np.where(prob.W > 0, prob.Y, np.nan)
    info = fit.family.informative_records(Y, prob.trials)     # None: every observed site
    if info is None:
        return np.sum(np.broadcast_to(prob.W, Y.shape) > 0, axis=0).astype(int)
    return np.asarray(info).astype(int)


def species_parameters(fit):
    """Species-specific parameters per species (m,): the free coordinates of its species block
    (intercept, slopes, free loadings, ...) and its dispersion."""
    prob = fit.problem
    return prob.predictor.free.sum(1) + _species_dispersions(fit)


def check_sparse_species(fit):
    """Species with no more informative records than species-specific parameters."""
    prob = fit.problem
    if fit.family.informative_records(np.where(prob.W > 0, prob.Y, np.nan), prob.trials) is None:
        return []                       # every observed record informs (continuous families)
    info = informative_records(fit)
    k = species_parameters(fit)
    bad = info <= k
    if not bad.any():
        return []
    who = list(fit.species[bad])
    ev = "; ".join(f"{sp}: {int(info[j])} informative record(s) for {int(k[j])} parameters"
                   for sp, j in zip(who[:5], np.flatnonzero(bad)[:5]))
    if len(who) > 5:
        ev += f" (+{len(who) - 5} more)"
    return [Problem(
        "sparse_species", f"{len(who)} species with too few non-zero records for their parameters",
        ev, "drop these species (Community.subset / drop_empty), pool them, or use fewer "
        "covariates; their estimates and SEs are unreliable (the report leaves them out of "
        "its headline tables)", who)]


def dispersion_at_bound(fit):
    """Boolean Series: species whose dispersion sits at the lower end of its range."""
    s = fit.state.params.s
    if s is None or np.ndim(s) != 1:
        return pd.Series(False, index=fit.species)
    return pd.Series(np.asarray(s) <= S_BOUNDS[0] + BOUND_TOL, index=fit.species)


def check_dispersion_at_bound(fit):
    """Dispersions at the lower bound of their range (NB: indistinguishable from Poisson)."""
    at = dispersion_at_bound(fit)
    if not at.any():
        return []
    who = list(fit.species[at.to_numpy()])
    name = fit.family.dispersion_name or "dispersion"
    val = float(fit.family.dispersion(np.array([S_BOUNDS[0]]))[0])
    meaning = getattr(fit.family, "dispersion_floor_meaning", None) or \
        "the smallest value the fit allows"
    return [Problem(
        "dispersion_at_bound", f"{len(who)} species with {name} at its lower bound: {meaning}",
        f"{_names(who)}: {name} = {val:.2g} (the bound)",
        "nothing to fix: the data show no over-dispersion for these species; their "
        f"{name}, its SE and interval carry no information (the report prints them as 'at bound')",
        [("dispersion", sp, name) for sp in who])]


def dispersion_at_ceiling(fit):
    """Series (species, term) -> value of the estimated nuisance parameters at the upper end
    of their range (unconstrained s within ``BOUND_TOL`` of its upper bound)."""
    P, layout = fit.state.params, fit.state.layout
    if P.s is None:
        return pd.Series(dtype=float)
    sl = layout.slices["s"]
    packed = layout.pack(P)[sl]
    est = fit.params.loc["dispersion"]
    if len(est) != packed.size:           # (not the terms' packed order: nothing to say)
        return pd.Series(dtype=float)
    return est[packed >= S_BOUNDS[1] - BOUND_TOL]


def check_dispersion_at_ceiling(fit):
    """Nuisance parameters at the upper end of their range (a beta precision: the species'
    non-zero values reproduced exactly, an unbounded likelihood)."""
    at = dispersion_at_ceiling(fit)
    if at.empty:
        return []
    meaning = getattr(fit.family, "dispersion_ceiling_meaning", None) or (
        "at the upper end of the range the fit allows; where it is a precision the species' "
        "values are reproduced exactly and the likelihood is unbounded there")
    who = list(dict.fromkeys(sp for sp, _ in at.index))
    ev = "; ".join(f"{_fmt(sp)}: {term} = {v:.3g}" for (sp, term), v in list(at.items())[:5])
    if len(at) > 5:
        ev += f" (+{len(at) - 5} more)"
    return [Problem(
        "dispersion_at_ceiling",
        f"{len(at)} nuisance parameter(s) of {len(who)} species at the upper bound: {meaning}",
        ev, "these estimates and their SEs carry no information. Where the likelihood is "
        "unbounded (a precision fitted to few distinct values), fits from different starts can "
        "differ by how many species reach the bound and their ELBOs are not comparable: look at "
        "these species (how many distinct non-zero values?), drop them, fit fewer latent "
        "variables, or use a family for classes (cover classes: ordinal)",
        [("dispersion", sp, term) for sp, term in at.index])]


def _species_dispersions(fit):
    """Dispersion parameters of each species' own (ordinal: its free cut points; none when the
    cut points are common to all species)."""
    free = fit.state.layout.s_free
    if not fit.family.has_dispersion:
        return 0
    if free is None:
        return 1
    return 0 if fit.family.shared_dispersion else free.sum(axis=1)


def check_row_variance(fit):
    """Near-zero variance of random row effects."""
    if fit.row_effect != "random" or fit.row_sigma is None or fit.row_sigma >= ROW_SD:
        return []
    return [Problem(
        "row_variance", "the random row-effect standard deviation is near zero",
        f"sigma = {fit.row_sigma:.3g} (< {ROW_SD:g})",
        "the site effects are not needed: refit with row_effect=None", [("row_sigma", "", "sigma")])]


def check_group_variance(fit):
    """Near-zero variance of a grouped site effect (1 | plot): named, with the term to drop."""
    out = []
    pred, P = fit.problem.predictor, fit.state.params
    for t in pred.group_terms:
        for g, _, _, _, sd in t.varcorr_rows(pred, P):
            if sd < ROW_SD:
                out.append(Problem(
                    "group_variance", f"the sd of the grouped site effect (1 | {g}) is near zero",
                    f"sd = {sd:.3g} (< {ROW_SD:g})",
                    f"the effects of {g} are not needed: drop (1 | {g}) (site_effects without "
                    f"{g!r}) and compare with jsdm.anova", [("group_sd", g, "sd")]))
    return out


#: sd of a random species coefficient below which its variance counts as collapsed
SPECIES_RE_SD = 0.01


def check_species_random_variance(fit):
    """Random species effects whose sd collapsed to ~0: name them with the term to drop."""
    pred = fit.problem.predictor
    out = []
    for t, _, _ in getattr(pred, "species_random_terms", []):
        sd = np.exp(np.asarray(fit.state.params.sp_logsd, dtype=float))
        names = ["(Intercept)" if c == "1" else c for c in t.columns]
        low = [k for k in range(t.kb) if sd[k] < SPECIES_RE_SD]
        if not low:
            continue
        who = ", ".join(f"{names[k]} (sd {sd[k]:.2g})" for k in low)
        drop = [f"(1 | {t.group})" if t.columns[k] == "1" else f"(0 + {t.columns[k]} | {t.group})"
                for k in low]
        fixed = ["the species intercepts (species)" if t.columns[k] == "1"
                 else f"the community slope {t.columns[k]}" for k in low]
        out.append(Problem(
            "species_random_variance",
            f"random species effect(s) on {', '.join(names[k] for k in low)} have collapsed to ~0",
            f"{who} (< {SPECIES_RE_SD:g}; the variance sits on its boundary, where Wald SEs and "
            "likelihood-ratio p-values are not reliable)",
            f"drop {' and '.join(drop)} from the model (keep {', '.join(fixed)} as a fixed "
            "effect); the species do not differ detectably in it",
            [("ranef_sd", t.group, names[k]) for k in low]))
    return out


DEGENERATE_RATIO = 1e-6


def check_degenerate_dispersion(fit):
    """Species fitted with (almost) no residual variance: the likelihood is unbounded there.

    Flags species whose model variance at the fitted means, averaged over sites,
    is below ``DEGENERATE_RATIO`` times the variance of their data (residual sd
    below 0.1% of the data's). Fixed row effects give every site its own
    parameter and can reproduce a species exactly; the dispersion then drifts
    towards 0 and the fit cannot converge.
    """
    prob = fit.problem
    s = fit.state.params.s
    if not fit.family.dispersion_can_vanish or s is None or np.ndim(s) != 1:
        return []
    y = np.where(prob.W > 0, prob.Y, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mu = fit.fitted().to_numpy()
        v = np.nanmean(np.where(prob.W > 0, fit.family.variance(mu, s[None, :]), np.nan), axis=0)
        ratio = v / np.nanvar(y, axis=0)
    bad = np.isfinite(ratio) & (ratio < DEGENERATE_RATIO)
    if not bad.any():
        return []
    who = list(fit.species[bad])
    name = fit.family.dispersion_name
    disp = fit.family.dispersion(np.asarray(s)[bad])
    ev = "; ".join(f"{_fmt(sp)}: {name} = {d:.3g}, model/data variance {r:.2g}"
                   for sp, d, r in zip(who[:5], disp[:5], ratio[bad][:5]))
    if len(who) > 5:
        ev += f" (+{len(who) - 5} more)"
    if fit.row_effect == "fixed":
        what = ("fixed row effects give every site its own parameter and can reproduce a species "
                "exactly: refit with row_effect='random' (or None)")
    else:
        what = ("the latent variables explain these species entirely (a Heywood case, as in "
                "factor analysis): look at their values (constant, or nearly so?), remove them, "
                "or fit fewer latent variables")
    return [Problem(
        "degenerate_dispersion",
        f"{len(who)} species fitted with almost no residual variance: the likelihood is "
        "unbounded there", ev + f" (limit {DEGENERATE_RATIO:g})", what,
        [("dispersion", sp, name) for sp in who])]


def check_approximation(fit, n_draws=500, seed=0):
    """Quality of the variational approximation: ([Problem], stats dict).

    Compares the ELBO with an importance-sampling estimate of the marginal
    log-likelihood at the fitted parameters (``fit.loglik_is``); their
    difference is the summed KL divergence of the variational posteriors from
    the true posteriors of the site latent variables.
    """
    if fit.num_lv == 0 and fit.row_effect != "random":
        return [], {"variational approximation": "exact (no latent variables)"}
    from ..results.likelihood import not_per_site

    why = not_per_site(fit)
    if why:
        return [], {"variational approximation": f"not checked: {why} (the importance-sampling "
                                                  "check integrates one site at a time)"}
    est = fit.loglik_is(n_draws=n_draws, seed=seed)
    n = len(est.sites)
    stats = {"log-likelihood (importance sampling)": f"{est.value:.3f} (MC se {est.se:.3f}, "
                                                     f"{n_draws} draws per site)",
             "ELBO gap (log-likelihood - ELBO)": f"{est.gap:.3f} in total, {est.gap / n:.3g} "
                                                 f"per site (largest {est.sites['gap'].max():.3g})",
             "min importance-sampling ESS": f"{est.min_ess:.0f} of {n_draws}"}
    problems = []
    if est.min_ess < APPROX_ESS * n_draws:
        low = est.sites.index[est.sites["ess"] < APPROX_ESS * n_draws]
        problems.append(Problem(
            "approximation_check", "the importance-sampling check of the approximation is "
            "unreliable at some sites", f"effective sample size below {APPROX_ESS:.0%} of "
            f"{n_draws} draws at {len(low)} site(s): {_names(list(low))}",
            "rerun fit.loglik_is(n_draws=...) with more draws; the posterior of these sites' "
            "latent variables is far from the variational one", [("site", s, "") for s in low]))
    if est.gap > 3.0 * est.se and est.gap > APPROX_GAP * n:
        worst = est.sites["gap"].sort_values(ascending=False).index[:6]
        problems.append(Problem(
            "approximation", "the ELBO is well below the log-likelihood: comparisons based on the "
            "ELBO (anova, AIC, BIC) can mislead", f"gap {est.gap:.3g} (MC se {est.se:.2g}), "
            f"{est.gap / n:.3g} per site (limit {APPROX_GAP}); largest at {_names(list(worst))}",
            "compare models with jsdm.anova(..., loglik='is') or by cross-validation "
            "(jsdm.cross_validate); estimates are variational, so also check them against a "
            "model with fewer latent variables", [("site", s, "") for s in worst]))
    return problems, stats


def check_starts(fit, tol=None):
    """Starts that ended at different optima (the ELBO has several local maxima here).

    ``fit.state.start_values`` holds the final ELBO of each start; the fit keeps the
    best. Starts more than ``tol`` (default ``START_TOL`` nats, or ``START_RTOL`` of
    |ELBO| when larger) below it ended at another, lower optimum.
    """
    allv = np.asarray(getattr(fit.state, "start_values", None) or [], dtype=float)
    n, failed = allv.size, int((~np.isfinite(allv)).sum())
    vals = allv[np.isfinite(allv)]
    if n < 2 or not vals.size:
        return []
    best = vals.max()
    tol = max(START_TOL, START_RTOL * abs(best)) if tol is None else float(tol)
    behind = np.sort(vals[vals < best - tol])
    if not behind.size and not failed:
        return []
    what = [f"{behind.size} of {n} starts ended more than {tol:.3g} below the best"] if \
        behind.size else []
    what += [f"{failed} of {n} starts failed numerically"] if failed else []
    return [Problem(
        "starts", "; ".join(what),
        f"final ELBO of the starts: best {best:.4f}"
        + ("; lower ones " + ", ".join(f"{v:.4f}" for v in behind[:5])
           + (" ..." if behind.size > 5 else "") if behind.size else "")
        + (f"; {failed} failed (a singular step)" if failed else "")
        + f" (the fit kept the best; tolerance {tol:.3g})",
        "the ELBO has several local optima for these data, so even the best of these starts may "
        f"not be the highest: refit with more starts (n_init={max(10, 3 * n)}) and a few seeds and "
        "keep the best; estimates that differ between such fits are not well determined", [])]


QUICK = (check_covariate_scaling, check_sparse_species, check_collapsed_lvs, check_row_variance,
         check_group_variance, check_species_random_variance, check_large_coefficients,
         check_degenerate_dispersion, check_dispersion_at_bound, check_dispersion_at_ceiling,
         check_starts)


def quick_checks(fit):
    """Cheap checks (no Hessian) for the end of every fit: list of :class:`Problem`.

    On a fit that did not converge only the data checks run (scaling, sparse
    species): the estimates are not at an optimum, and the ConvergenceWarning
    already says so.
    """
    checks = QUICK if fit.converged else (check_covariate_scaling, check_sparse_species,
                                          check_degenerate_dispersion, check_dispersion_at_bound)
    out = []
    for check in checks:
        out += check(fit)
    return out


def warn_quick_checks(fit, stacklevel=3):
    """Emit one warning per :func:`quick_checks` problem (DataWarning or JSDMWarning); return them."""
    probs = quick_checks(fit)
    for p in probs:
        cat = DataWarning if p.kind in ("covariate_scaling", "sparse_species") else JSDMWarning
        warnings.warn(f"{p.message}: {p.evidence}. What to do: {p.remedy}.", cat, stacklevel=stacklevel)
    return probs


_CACHE = weakref.WeakKeyDictionary()


def diagnose(fit, hessian=True, approximation=True, n_draws=500, seed=0):
    """Run every check on a fitted GLLVM.

    The cheap checks are the very functions the fit-time warnings run
    (:data:`QUICK`), so their counts agree; the Hessian adds its own kinds
    ("hessian", "near_singular", "large_se", "penalty_dominated"). The result
    is cached per fit (a fit never changes), so the report, its summary box
    and ``diagnostics.csv`` show one set of counts.

    Parameters
    ----------
    fit : GLLVMResults
    hessian : bool
        Include the Hessian check (eigenvalues of the covariance's inverse) and
        SE-based checks; skipped automatically for very large problems.
    approximation : bool
        Check the variational approximation against an importance-sampling
        estimate of the log-likelihood (:func:`check_approximation`), with
        ``n_draws`` draws per site and ``seed``.

    Returns
    -------
    Diagnosis
        ``.ok`` is True when nothing is wrong; ``.problems`` lists
        :class:`Problem` records; ``print()`` gives a readable report.
    """
    from ..results.inference import MAX_CROSS_ENTRIES

    cache = _CACHE.setdefault(fit, {})
    key = (hessian, approximation, n_draws, seed)
    if key in cache:
        return cache[key]
    layout = fit.state.layout
    q = layout.size - layout.n_model
    use_h = hessian and float(layout.n_model) * q <= MAX_CROSS_ENTRIES
    problems = check_convergence(fit)
    se = None
    if use_h:
        problems += check_hessian(fit)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", HessianWarning)
            se = fit.bse
    for check in QUICK:
        problems += check_large_coefficients(fit, se) if check is check_large_coefficients else check(fit)
    problems += check_large_se(fit, se) + check_penalty_dominated(fit, se)
    fam_text = getattr(fit.family, "composition", None) or f"{fit.family.name} ({fit.family.link})"
    stats = {"family": fam_text, "sites x species": f"{fit.problem.n} x {fit.problem.m}",
             "num_lv": fit.num_lv, "ELBO": float(fit.llf), "converged": bool(fit.converged),
             "max scaled gradient": float(fit.state.scaled_grad),
             "max |gradient|": float(fit.max_grad)}
    if use_h:
        from ..results.inference import information
        stats["min scaled Hessian eigenvalue"] = information(fit).min_eigenvalue
    else:
        stats["Hessian"] = "not checked (" + ("problem too large" if hessian else "hessian=False") + ")"
    if approximation:
        more, approx_stats = check_approximation(fit, n_draws=n_draws, seed=seed)
        problems += more
        stats.update(approx_stats)
    cache[key] = Diagnosis(problems, stats)
    return cache[key]


def species_information(fit, diagnosis=None, min_records=MIN_RECORDS):
    """Per-species table of what the data and the fit can say, and who makes the headlines.

    Parameters
    ----------
    fit : GLLVMResults
    diagnosis : Diagnosis, optional
        ``fit.diagnose()`` (computed when None); its large-coefficient and
        penalty checks mark species without a finite optimum.
    min_records : int
        Informative records a species needs for headline tables and plot
        labels (also more than its number of parameters). The default 5 comes
        from bench/study_rare_separated.py: below it, the strongest estimated
        correlations are off by 0.4-1.2 on average (docs/associations.md).

    Returns
    -------
    DataFrame indexed by species: ``sites`` (observed), ``occupied`` (y > 0),
    ``prevalence``, ``informative`` (records), ``parameters``, ``rare``
    (fewer informative records than required), ``no_finite_optimum``
    (separation or an estimate set by the penalty), ``dispersion_at_bound``,
    ``headline`` (neither rare nor without finite optimum).
    """
    prob = fit.problem
    diag = fit.diagnose() if diagnosis is None else diagnosis
    Y = np.where(prob.W > 0, prob.Y, np.nan)
    sites = np.sum(prob.W > 0, axis=0)
    occ = np.nansum(Y > 0, axis=0)
    info, k = informative_records(fit), species_parameters(fit)
    rare = (info < min_records) | (info <= k)
    sep = set()
    for p in getattr(diag, "problems", []):
        if p.kind in ("large_coefficient", "penalty_dominated"):
            sep |= {lab[1] for lab in p.parameters if isinstance(lab, tuple)}
    out = pd.DataFrame({"sites": sites.astype(int), "occupied": occ.astype(int),
                        "prevalence": occ / np.maximum(sites, 1), "informative": info,
                        "parameters": k.astype(int), "rare": rare,
                        "no_finite_optimum": [sp in sep for sp in fit.species],
                        "dispersion_at_bound": dispersion_at_bound(fit).to_numpy()},
                       index=fit.species)
    out["headline"] = ~out["rare"] & ~out["no_finite_optimum"]
    out.attrs["min_records"] = int(min_records)
    return out
