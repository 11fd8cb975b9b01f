"""Coverage of species-richness prediction intervals on data simulated from the model.

Each replicate simulates a community from a GLLVM (``jsdm.simulate_community``),
fits the same model, and computes each site's 95% richness interval with
``jsdm.analysis.goodness.richness`` (latent variables drawn from their prior,
``lv="marginal"``, and from each site's variational posterior,
``lv="conditional"``). Reports the share of sites whose observed richness lies
inside, and the model's own probability of the (whole-number) interval, which
is a little above 95% because richness is discrete.

Usage (from the repository root)::

    python bench/richness_coverage.py
    python bench/richness_coverage.py --reps 40 --families poisson nb binomial
    python bench/richness_coverage.py --reps 10 --species 40 --out richness_coverage_40sp.json
"""
import argparse
import time
import warnings

import pandas as pd

import jsdm
from jsdm.analysis.goodness import richness
from _common17 import write


def one(family, rep, args):
    com, _ = jsdm.simulate_community(args.sites, args.species, num_lv=2, family=family,
                                     n_covariates=1, seed=500 + rep, loading_sd=0.8,
                                     intercept=-0.5 if family != "binomial" else 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        fit = jsdm.gllvm(com, family=family, num_lv=2, seed=1, n_init=1)
    row = {"family": family, "rep": rep, "converged": bool(fit.converged)}
    for lv in ("marginal", "conditional"):
        r = richness(fit, lv=lv, n_draws=args.draws, seed=rep)
        row[f"coverage_{lv}"] = float(r["inside"].mean())
        row[f"interval_probability_{lv}"] = float(r["interval_probability"].mean())
        row[f"width_{lv}"] = float((r["upper"] - r["lower"]).mean())
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--sites", type=int, default=150)
    ap.add_argument("--species", type=int, default=15)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--families", nargs="+", default=["poisson", "nb", "binomial"])
    ap.add_argument("--out", default="richness_coverage.json", help="file name in bench/results")
    args = ap.parse_args(argv)
    t0 = time.time()
    rows = [one(f, rep, args) for f in args.families for rep in range(args.reps)]
    df = pd.DataFrame(rows)
    summary = df.groupby("family").mean(numeric_only=True).drop(columns="rep")
    summary["sites_per_family"] = args.reps * args.sites
    print(summary.T.round(3))
    path = write(args.out, {"settings": vars(args),
                                            "summary": summary.T.round(4).to_dict(),
                                            "replicates": rows,
                                            "elapsed": {"wall_s": time.time() - t0}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
