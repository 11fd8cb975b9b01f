"""Does cross-validation pick the true number of latent variables?

Each replicate simulates a community from a GLLVM with ``--true-lv`` latent
variables (``jsdm.simulate_community``, one covariate), fits num_lv = 0..3
with that covariate, and runs ``jsdm.cross_validate`` (k-fold by sites). It
records which num_lv has the highest held-out log predictive density (joint
over species, latent variables integrated out), which the one-standard-error
rule picks (the smallest num_lv whose lpd is within one paired SE of the
best), and, for comparison, which has the smallest AIC and BIC of the
full-data fits. Prints the shares and writes
``bench/results/cv_num_lv.json``.

Usage (from the repository root; about 15 s per replicate on a shared 2-core
machine with the defaults)::

    python bench/cv_num_lv.py
    python bench/cv_num_lv.py --reps 40 --family nb --sites 120
"""
import argparse
import time
import warnings

import pandas as pd

import jsdm
from _common17 import write


def one(rep, args):
    com, _ = jsdm.simulate_community(args.sites, args.species, num_lv=args.true_lv,
                                     family=args.family, n_covariates=1, seed=1000 + rep,
                                     intercept=0.5 if args.family != "binomial" else 0.0,
                                     loading_sd=args.loading_sd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        fits = {d: jsdm.gllvm(com, family=args.family, num_lv=d, seed=1, n_init=1)
                for d in args.candidates}
        cv = jsdm.cross_validate({str(d): f for d, f in fits.items()}, k=args.k, seed=rep,
                                 n_jobs=args.n_jobs, conditional=args.conditional)
    lpd = cv.table["lpd"]
    within = cv.table[cv.table["lpd_diff"] >= -cv.table["diff_se"]]      # one-SE rule
    row = {"rep": rep, "cv": int(lpd.idxmax()), "cv_one_se": int(min(within.index, key=int)),
           "aic": min(fits, key=lambda d: fits[d].aic),
           "bic": min(fits, key=lambda d: fits[d].bic),
           **{f"lpd_{d}": float(lpd[str(d)]) for d in fits},
           "converged": all(f.converged for f in fits.values())}
    if args.conditional:
        row["cv_conditional"] = int(cv.table["lpd_conditional"].idxmax())
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--sites", type=int, default=100)
    ap.add_argument("--species", type=int, default=12)
    ap.add_argument("--true-lv", type=int, default=2)
    ap.add_argument("--candidates", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--family", default="poisson")
    ap.add_argument("--loading-sd", type=float, default=0.8)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--conditional", action="store_true",
                    help="also score species given the others (slower)")
    args = ap.parse_args(argv)
    t0, c0 = time.time(), time.process_time()
    rows = []
    for rep in range(args.reps):
        rows.append(one(rep, args))
        r = rows[-1]
        print(f"rep {rep:3d}: CV picks {r['cv']}, AIC {r['aic']}, BIC {r['bic']}", flush=True)
    df = pd.DataFrame(rows)
    share = {k: float((df[k] == args.true_lv).mean()) for k in ("cv", "cv_one_se", "aic", "bic")
             if k in df}
    if "cv_conditional" in df:
        share["cv_conditional"] = float((df["cv_conditional"] == args.true_lv).mean())
    print(f"\ntrue num_lv = {args.true_lv}; share of {args.reps} replicates choosing it:")
    for k, v in share.items():
        print(f"  {k:15s} {v:.2f}")
    print("choices (CV):", df["cv"].value_counts().sort_index().to_dict())
    elapsed = {"wall_s": time.time() - t0, "cpu_s": time.process_time() - c0}
    path = write("cv_num_lv.json", {"settings": vars(args), "share_true_first": share,
                                    "cv_choices": df["cv"].value_counts().sort_index().to_dict(),
                                    "replicates": rows, "elapsed": elapsed,
                                    "note": "shared 2-core machine; timings noisy"})
    print(f"wrote {path} ({elapsed['wall_s']:.0f} s wall, {elapsed['cpu_s']:.0f} s CPU)")


if __name__ == "__main__":
    main()
