"""Likelihood-ratio tests between nested fits.

The test uses the ELBO in place of the log-likelihood (as R gllvm does for VA
fits): the statistic 2 (ELBO_b - ELBO_a) approximates the likelihood ratio
statistic when both bounds are equally tight. Model selection, which refits,
lives in ``jsdm.selection`` (above the fitter, so that results/ never
imports the top-level API).
"""
import numpy as np
import pandas as pd
from scipy import stats

from ..exceptions import JSDMError


def _observed(prob):
    return np.where(prob.W > 0, prob.Y, np.nan)


def _same_array(a, b):
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def _family_names(prob):
    """(name, link) of each species' family (one family: the same for all)."""
    members = getattr(prob.family, "members", None) or [prob.family] * prob.m
    return [(f.name, f.link) for f in members]


def _check_same_data(fits, names):
    """Raise JSDMError naming the first difference between the fits' data."""
    ref, rn = fits[0].problem, names[0]
    for fit, nm in zip(fits[1:], names[1:]):
        prob = fit.problem
        checks = [
            (list(prob.species) == list(ref.species), "species (columns of the response)"),
            (list(prob.sites) == list(ref.sites), "sites (rows of the response)"),
            (_same_array(_observed(prob), _observed(ref)), "response values or missing cells"),
            (_family_names(prob) == _family_names(ref),
             f"family ({prob.family.name}/{prob.family.link} vs {ref.family.name}/{ref.family.link}"
             ", per species where it varies)"),
            (_same_array(prob.trials, ref.trials), "binomial trials"),
            (_same_array(prob.offset, ref.offset), "offsets"),
        ]
        for ok, what in checks:
            if not ok:
                raise JSDMError(f"models {rn!r} and {nm!r} differ in their {what}; a likelihood-ratio "
                                "test needs nested models fitted to the same data. Refit both on "
                                "the same Community with the same family.")


def _in_span(Xa, Xb, tol=1e-8):
    """True when every column of Xa lies in the span of [1, Xb]."""
    if Xa.shape[1] == 0:
        return True
    B = np.column_stack([np.ones(Xb.shape[0]), Xb])
    coef = np.linalg.lstsq(B, Xa, rcond=None)[0]
    resid = Xa - B @ coef
    return bool(np.all(np.abs(resid) <= tol * (1.0 + np.abs(Xa).max(0))))


def _check_nested(a, b, na, nb):
    """Raise unless fit ``a`` is nested in fit ``b``; return True when the test is on a boundary."""
    pa, pb = a.problem, b.problem
    problems = []
    if pa.d > pb.d:
        problems.append(f"{na!r} has more latent variables ({pa.d} > {pb.d})")
    if not _in_span(pa.X, pb.X):
        problems.append(f"the covariates of {na!r} ({', '.join(pa.terms) or 'none'}) are not "
                        f"contained in those of {nb!r} ({', '.join(pb.terms) or 'none'})")
    if pa.row_effect is not None and pa.row_effect != pb.row_effect:
        problems.append(f"row effects {pa.row_effect!r} vs {pb.row_effect!r}")
    ga, gb = _group_names(pa), _group_names(pb)
    if not ga <= gb:
        problems.append(f"grouped site effects of {na!r} ({', '.join(sorted(ga))}) are not all "
                        f"in {nb!r} ({', '.join(sorted(gb)) or 'none'})")
    ra, rb = _species_random(pa), _species_random(pb)
    if not ra[0] <= rb[0]:
        problems.append(f"{na!r} has random species effects on {sorted(ra[0] - rb[0])} that "
                        f"{nb!r} does not have")
    if problems:
        raise JSDMError(f"model {na!r} is not nested in {nb!r}: " + "; ".join(problems)
                        + ". Compare non-nested models by AIC/BIC instead.")
    # a variance (or correlation) added by the larger model (latent variables, a row effect,
    # a grouping, species random effects): its null is on the boundary, the chi-square
    # p-value conservative (about twice the 50:50 chi-square mixture's for one variance)
    return (pa.d != pb.d or (pa.row_effect is None and pb.row_effect == "random")
            or ra[0] != rb[0] or ra[1] < rb[1] or ga != gb)


def _group_names(prob):
    """Names of the grouped site effects of a problem ((1 | plot), nested chains expanded)."""
    out = set()
    for t in prob.predictor.group_terms:
        out.update(getattr(t, "chain", (t.group,)))
    return out


def _species_random(prob):
    """(set of random species coefficients, number of correlation parameters) of a problem."""
    cols, ncor = set(), 0
    for t, _, _ in getattr(prob.predictor, "species_random_terms", []):
        cols |= set(t.columns)
        ncor += int(t.corr_mask().sum())
    return cols, ncor


def anova(*fits, names=None, loglik="elbo", n_draws=1000, seed=0):
    """Likelihood-ratio tests of nested GLLVM fits on the same data.

    Parameters
    ----------
    *fits : GLLVMResults
        Two or more fits; they are ordered by their number of parameters and
        each is tested against the previous one.
    names : list of str, optional
        Row labels (default "model 1", ... in the order given).
    loglik : {"elbo", "is"}
        What stands for the log-likelihood. "elbo": the variational bound
        (``fit.llf``, as R gllvm). "is": the importance-sampling estimate of
        the marginal log-likelihood at each fit's parameters
        (:meth:`GLLVMResults.loglik_is`), which removes the bias of comparing
        two bounds of unequal tightness; the table then also has ``llf_is``,
        ``llf_is_se``, ``gap`` (llf_is - ELBO) and ``statistic_se`` (Monte
        Carlo SE of the statistic). The parameters are still the variational
        estimates, not maximum-likelihood ones.
    n_draws, seed : importance-sampling draws per site and seed (``loglik="is"``).

    Returns
    -------
    DataFrame
        One row per model: family, num_lv, df, llf (ELBO), AIC, BIC and, from
        the second row, ``statistic`` = 2 (llf - llf_previous), ``df_diff``,
        ``p_value`` (chi-square upper tail) and ``boundary``. A test on the
        boundary of the parameter space (more latent variables, or adding a
        random row effect) has a conservative p-value (mixture of chi-squares).

    Raises
    ------
    JSDMError
        Fits on different data, different families, or not nested.
    """
    if len(fits) < 2:
        raise JSDMError(f"anova needs at least two fits to compare, got {len(fits)}")
    names = [f"model {k + 1}" for k in range(len(fits))] if names is None else [str(n) for n in names]
    if len(names) != len(fits):
        raise JSDMError(f"got {len(names)} names for {len(fits)} fits")
    if loglik not in ("elbo", "is"):
        raise JSDMError(f"loglik must be 'elbo' or 'is', got {loglik!r}")
    _check_same_data(fits, names)
    order = sorted(range(len(fits)), key=lambda k: fits[k].df)
    ll = {k: (fits[k].llf, 0.0) for k in order}
    if loglik == "is":
        est = {k: fits[k].loglik_is(n_draws=n_draws, seed=seed) for k in order}
        ll = {k: (e.value, e.se) for k, e in est.items()}
    rows = []
    for pos, k in enumerate(order):
        f = fits[k]
        row = {"model": names[k], "family": f.family.name, "num_lv": f.num_lv,
               "covariates": ", ".join(f.terms) or "-", "df": f.df, "llf": f.llf,
               "aic": f.aic, "bic": f.bic}
        if loglik == "is":
            row.update(llf_is=ll[k][0], llf_is_se=ll[k][1], gap=ll[k][0] - f.llf)
        row.update(statistic=np.nan, df_diff=np.nan, p_value=np.nan, boundary=False)
        if loglik == "is":
            row["statistic_se"] = np.nan
        if pos:
            kp = order[pos - 1]
            prev = fits[kp]
            boundary = _check_nested(prev, f, names[kp], names[k])
            ddf = f.df - prev.df
            stat = 2.0 * (ll[k][0] - ll[kp][0])
            row.update(statistic=stat, df_diff=ddf, boundary=boundary,
                       p_value=float(stats.chi2.sf(max(stat, 0.0), ddf)) if ddf > 0 else np.nan)
            if loglik == "is":
                row["statistic_se"] = 2.0 * float(np.hypot(ll[k][1], ll[kp][1]))
        rows.append(row)
    out = pd.DataFrame(rows).set_index("model")
    what = "ELBO" if loglik == "elbo" else "importance-sampling log-likelihood llf_is"
    out.attrs["note"] = (f"statistic = 2 ({what} - that of the previous row); boundary=True: the "
                         "p-value is conservative (the null is on the boundary).")
    return out
