"""Study: rare species and species without a finite optimum (issue 12).

Two questions, answered with numbers on the data shapes of issue 12
(simulated where the real data are not available; aravo is real):

A. From how many informative records on is a species' association
   information worth a headline? Sparse communities are simulated with known
   truth (NB counts 50 x 120 like the Barro Colorado plots, presence/absence
   75 x 80 like aravo; 2 latent variables); every pair's estimated residual
   correlation (the default "observation" measure) is compared with the true
   one, binned by the smaller number of informative records of the two
   species (counts: sites with y > 0; presence/absence: min(presences,
   absences)). Reported per bin: median absolute error, coverage of the 95%
   delta-method interval, and the share of the 15 largest |estimates| that
   fall in the bin.

B. What to do with species whose likelihood has no finite optimum (perfect
   separation by a covariate or by the latent variables, a species seen at
   one site)? Treatments: "none" (maximum likelihood, as R gllvm), "drop"
   (refit without the species flagged by the unpenalised fit: fewer than 2
   informative records, or a coefficient/loading beyond 10 on the link scale
   per sd), and the weak penalty ``prior_sd`` = 2.5, 5, 10 (a N(0, tau^2)
   prior on loadings and per-sd slopes). Shapes: ``separated_pa`` (simulated,
   truth known for its 13 regular species; several seeds), ``bci_like``
   (simulated 50 x 225, 40% singletons; truth for the regular species),
   ``spider_like`` (28 x 12, 1 LV, nothing separated: the penalty must not
   hurt) and the real aravo presence/absence (no truth: compared with the
   "drop" fit for the well-informed species). Reported: the largest |linear
   predictor|, slope per sd and loading of the problem species; for the
   others the error against the truth (or against "drop") of slopes and
   correlations; convergence; CPU seconds.

Usage (from the repository root)::

    python bench/study_rare_separated.py              # both parts, default replicates
    python bench/study_rare_separated.py --part B --reps 3

Writes bench/results/study_rare_separated.json and prints the tables that
docs/associations.md quotes. CPU times are process times on a shared machine.
"""
import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
RESULTS = ROOT / "bench" / "results" / "study_rare_separated.json"
BINS = [(1, 1), (2, 2), (3, 4), (5, 9), (10, 19), (20, 10 ** 9)]
TREATMENTS = ["none", "drop", 2.5, 5.0, 10.0]


# --- helpers ----------------------------------------------------------------------------
def fit(com, **kw):
    import jsdm

    t = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = jsdm.gllvm(com, seed=1, n_init=1, **kw)
    return f, time.process_time() - t


def informative(Y, binary):
    Y = np.asarray(Y, dtype=float)
    pres = (Y > 0).sum(0)
    return np.minimum(pres, (Y == 0).sum(0)) if binary else pres


def true_correlation(family, beta0, B, theta, disp, X):
    """The default association measure at the true parameters (observation term)."""
    import jsdm

    fam = jsdm.get_family(family)
    theta, beta0 = np.asarray(theta, float), np.asarray(beta0, float)
    eta = beta0[None, :] + (np.asarray(X, float) @ np.asarray(B, float).T if X is not None else 0.0)
    v = (theta ** 2).sum(1)
    if fam.link_residual_variance:
        sig2 = np.full(len(beta0), fam.link_residual_variance)
    else:
        s = fam.dispersion_param(np.asarray(disp, float)) if disp is not None else None
        mu = np.exp(eta + 0.5 * v).mean(0)
        sig2 = fam.observation_variance(mu, s)
    C = theta @ theta.T + np.diag(sig2)
    sd = np.sqrt(np.diag(C))
    return C / np.outer(sd, sd)


# --- part A: how many records make a headline --------------------------------------------
def part_a(reps):
    import jsdm
    from jsdm.analysis.associations import residual_correlation_intervals

    rows = []
    cases = [("counts 50x120 NB", dict(n_sites=50, n_species=120, family="negative_binomial",
                                        intercept=-1.0, intercept_sd=1.5, dispersion=0.4),
              False),
             ("presence/absence 75x80", dict(n_sites=75, n_species=80, family="binomial",
                                             intercept=-1.5, intercept_sd=1.5), True)]
    for label, sim, binary in cases:
        for rep in range(reps):
            com, tr = jsdm.simulate_community(num_lv=2, n_covariates=1, seed=100 + rep,
                                              loading_sd=0.9, coef_sd=0.5, **sim)
            info = informative(com.Y, binary)
            keep = com.species[info >= 1]
            com = com.subset(species=list(keep))
            info = informative(com.Y, binary)
            truth = true_correlation(sim["family"], tr.beta0[keep], tr.B.loc[keep], tr.theta.loc[keep],
                                     None if tr.dispersion is None else tr.dispersion[keep], com.X)
            for treat in ("none", 5.0):
                f, cpu = fit(com, family=sim["family"], num_lv=2, formula="~ x1",
                             prior_sd=None if treat == "none" else treat)
                ci = residual_correlation_intervals(f)
                est, lo, hi = (ci.estimate.to_numpy(), ci.lower.to_numpy(), ci.upper.to_numpy())
                j, k = np.triu_indices(len(keep), 1)
                mn = np.minimum(info[j], info[k])
                err = np.abs(est[j, k] - truth[j, k])
                cov = (lo[j, k] <= truth[j, k]) & (truth[j, k] <= hi[j, k])
                top = np.argsort(-np.abs(est[j, k]))[:15]
                rows.append(dict(case=label, rep=rep, treatment=str(treat), min_records=mn.tolist(),
                                 abs_error=err.tolist(), covered=cov.tolist(),
                                 estimate=est[j, k].tolist(), truth=truth[j, k].tolist(),
                                 top15=top.tolist(), converged=bool(f.converged), cpu=cpu))
    return rows


def summarise_a(rows):
    out = []
    for (case, treat), grp in pd.DataFrame(rows).groupby(["case", "treatment"], sort=False):
        mn = np.concatenate([np.asarray(r) for r in grp["min_records"]])
        err = np.concatenate([np.asarray(r) for r in grp["abs_error"]])
        cov = np.concatenate([np.asarray(r) for r in grp["covered"]])
        est = np.concatenate([np.asarray(r) for r in grp["estimate"]])
        tru = np.concatenate([np.asarray(r) for r in grp["truth"]])
        tops = np.concatenate([np.asarray(r["min_records"])[r["top15"]] for _, r in grp.iterrows()])
        top_err = np.concatenate([np.asarray(r["abs_error"])[r["top15"]] for _, r in grp.iterrows()])
        for lo, hi in BINS:
            sel = (mn >= lo) & (mn <= hi)
            if not sel.any():
                continue
            out.append(dict(case=case, treatment=treat, bin=f"{lo}" if lo == hi else
                            (f"{lo}-{hi}" if hi < 10 ** 9 else f">={lo}"), pairs=int(sel.sum()),
                            median_abs_error=float(np.median(err[sel])),
                            coverage=float(np.mean(cov[sel])),
                            cor_est_truth=float(np.corrcoef(est[sel], tru[sel])[0, 1]),
                            share_of_top15=float(np.mean((tops >= lo) & (tops <= hi))),
                            top15_median_abs_error=float(np.median(top_err[(tops >= lo) & (tops <= hi)]))
                            if ((tops >= lo) & (tops <= hi)).any() else float("nan")))
    return out


# --- part B: treatments for species without a finite optimum -------------------------------
def flagged_species(f):
    """Species the unpenalised fit shows without a finite optimum."""
    from jsdm.analysis.diagnostics import LARGE_COEF, _per_sd

    Y = np.where(f.problem.W > 0, f.problem.Y, np.nan)
    binary = f.family.name == "binomial"
    info = np.nansum(Y > 0, 0)
    if binary:
        info = np.minimum(info, np.nansum(Y == 0, 0))
    bad = set(f.species[info < 2])
    par = f.params
    blocks = par.index.get_level_values("block")
    big = ((blocks == "coef") | (blocks == "loading")) & (np.abs(par.to_numpy() * _per_sd(f, par.index)) > LARGE_COEF)
    bad |= set(par.index[big].get_level_values("species"))
    return sorted(bad)


def problem_size(f, species):
    if not species:
        return dict(max_abs_eta=np.nan, max_abs_slope=np.nan, max_abs_loading=np.nan)
    eta = f.linear_predictor()[species].to_numpy()
    sd = f.problem.X.std(0) if f.problem.p else np.zeros(0)
    slopes = np.abs(f.coef.loc[species, list(f.terms)].to_numpy() * sd) if f.terms else np.zeros(1)
    return dict(max_abs_eta=float(np.abs(eta).max()), max_abs_slope=float(slopes.max(initial=0.0)),
                max_abs_loading=float(np.abs(f.loadings.loc[species].to_numpy()).max()))


def others_error(f, ref_species, truth=None, ref_fit=None, X=None, family=None):
    """Slope and correlation errors of the well-informed species against truth or a reference fit."""
    sp = list(ref_species)
    R = f.residual_correlation().loc[sp, sp].to_numpy()
    j, k = np.triu_indices(len(sp), 1)
    out = {}
    if truth is not None:
        Rt = true_correlation(family, truth.beta0[sp], truth.B.loc[sp], truth.theta.loc[sp],
                              None if truth.dispersion is None else truth.dispersion[sp], X)
        out["cor_median_abs_error"] = float(np.median(np.abs(R[j, k] - Rt[j, k])))
        if f.terms:
            sd = f.problem.X.std(0)
            d = (f.coef.loc[sp, list(f.terms)].to_numpy() - truth.B.loc[sp].to_numpy()) * sd
            out["slope_rmse"] = float(np.sqrt(np.mean(d ** 2)))
    if ref_fit is not None:
        Rr = ref_fit.residual_correlation().loc[sp, sp].to_numpy()
        out["cor_median_abs_change_vs_drop"] = float(np.median(np.abs(R[j, k] - Rr[j, k])))
        out["cor_max_abs_change_vs_drop"] = float(np.max(np.abs(R[j, k] - Rr[j, k])))
        if f.terms:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                se = ref_fit.bse.xs("coef", level="block")
            dif = [(f.coef.loc[s, t] - ref_fit.coef.loc[s, t]) / se.loc[(s, t)]
                   for s in sp for t in f.terms]
            dif = np.abs(np.asarray(dif, float))
            out["slope_median_change_in_se_vs_drop"] = float(np.nanmedian(dif))
    return out


def run_shape(name, make, seeds, has_truth):
    rows = []
    for seed in seeds:
        made = make(seed=seed, truth=True) if has_truth else make()
        com, kw = made[0], made[1]
        truth = made[2] if has_truth else None
        base, cpu0 = fit(com, **kw)
        flagged = flagged_species(base)
        others = [s for s in com.species if s not in flagged]
        if truth is not None:
            others = [s for s in others if s in truth.theta.index]
        fits = {"none": (base, cpu0)}
        keep = [s for s in com.species if s not in flagged]
        fits["drop"] = fit(com.subset(species=keep), **kw) if flagged else (base, cpu0)
        for tau in TREATMENTS[2:]:
            fits[str(tau)] = fit(com, prior_sd=tau, **kw)
        for treat, (f, cpu) in fits.items():
            row = dict(shape=name, seed=seed, treatment=treat, n_flagged=len(flagged),
                       converged=bool(f.converged), cpu=cpu, n_iter=int(f.n_iter))
            row.update(problem_size(f, [s for s in flagged if s in f.species]))
            row.update(others_error(f, others, truth=truth, ref_fit=None if truth is not None
                                    else fits["drop"][0], X=com.X if com.X is not None and f.terms
                                    else None, family=kw["family"]))
            rows.append(row)
            print(f"  {name} seed {seed} {treat:>5}: " + ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                if k not in ("shape", "seed", "treatment")), flush=True)
    return rows


def part_b(reps):
    from _shapes import aravo_available, aravo_pa, bci_like, separated_pa, spider_like

    rows = run_shape("separated_pa", separated_pa, range(3, 3 + 4 * reps), True)
    rows += run_shape("bci_like", bci_like, range(50, 50 + reps), True)
    rows += run_shape("spider_like", lambda seed, truth: _spider_truth(seed), range(12, 12 + reps), True)
    if aravo_available():
        rows += run_shape("aravo_pa", lambda: aravo_pa(), [0], False)
    return rows


def _spider_truth(seed):
    """spider_like with its truth (re-simulated with the same seed and settings)."""
    import jsdm
    from _shapes import spider_like

    com, kw = spider_like(seed=seed)
    phi = np.r_[np.full(4, 0.8), np.full(8, 1e-8)]
    _, tr = jsdm.simulate_community(28, 12, num_lv=1, family="negative_binomial", n_covariates=2,
                                    seed=seed, intercept=1.0, intercept_sd=1.2, loading_sd=0.9,
                                    coef_sd=0.6, dispersion=phi)
    names = com.species
    tr.beta0, tr.B, tr.theta = tr.beta0.set_axis(names), tr.B.set_axis(names), tr.theta.set_axis(names)
    tr.dispersion = tr.dispersion.set_axis(names)
    return com, kw, tr


def summarise_b(rows):
    df = pd.DataFrame(rows)
    num = [c for c in df.columns if c not in ("shape", "seed", "treatment", "converged")]
    g = df.groupby(["shape", "treatment"], sort=False)
    out = g[num].median()
    out["converged"] = g["converged"].mean()
    return out.reset_index()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["A", "B", "AB"], default="AB")
    ap.add_argument("--reps", type=int, default=4)
    args = ap.parse_args(argv)
    res = {"settings": vars(args)}
    if RESULTS.is_file():
        old = json.loads(RESULTS.read_text())
        res.update({k: v for k, v in old.items() if k != "settings"})
    pd.set_option("display.width", 200, "display.max_columns", 30)
    if "A" in args.part:
        rows = part_a(args.reps)
        res["A"] = summarise_a(rows)
        print(pd.DataFrame(res["A"]).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if "B" in args.part:
        rows = part_b(args.reps)
        res["B_rows"] = rows
        res["B"] = summarise_b(rows).to_dict(orient="records")
        print(pd.DataFrame(res["B"]).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
