"""Coverage of 95% Wald intervals for the species slopes, on data simulated from the model.

One truth (intercepts, slopes, loadings, dispersions) is drawn once with
``jsdm.simulate_community``; the covariates are held fixed and every replicate
draws fresh latent variables and responses from that truth, fits the same
model, and checks whether each slope's 95% Wald interval (``fit.conf_int()``)
covers the true slope. Prints the coverage with its Monte Carlo standard error
and writes ``bench/results/coverage_slopes.json``.

Usage (from the repository root; about 2-4 minutes with the defaults)::

    python bench/coverage_slopes.py
    python bench/coverage_slopes.py --reps 300 --family nb --sites 150 --species 12
"""
import argparse
import json
import platform
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

import jsdm

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "coverage_slopes.json"


def draw(truth, X, fam, rng):
    """One community from the fixed truth with fresh latent variables."""
    th = truth.theta.to_numpy()
    Z = rng.standard_normal((X.shape[0], th.shape[1]))
    eta = truth.beta0.to_numpy() + X.to_numpy() @ truth.B.to_numpy().T + Z @ th.T
    s = None if truth.dispersion is None else fam.dispersion_param(truth.dispersion.to_numpy())
    Y = pd.DataFrame(fam.sample(eta, s, None, rng), index=X.index, columns=truth.beta0.index)
    return jsdm.Community(Y, X)


def one_replicate(com, truth, args, level):
    """(covered flags, interval widths, converged, identified) for the slopes of one fit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        fit = jsdm.gllvm(com, family=args.family, num_lv=args.num_lv, seed=1, n_init=1)
        ci = fit.conf_int(alpha=1 - level)
    coef = ci.xs("coef", level="block").drop("Intercept", level="term")
    true = truth.B.stack()
    true.index.names = ["species", "term"]
    true = true.reindex(coef.index)
    covered = (coef["lower"] <= true) & (true <= coef["upper"])
    return covered.to_numpy(), (coef["upper"] - coef["lower"]).to_numpy(), fit.converged, \
        bool(coef.notna().all(axis=None))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=150)
    ap.add_argument("--sites", type=int, default=100)
    ap.add_argument("--species", type=int, default=10)
    ap.add_argument("--num-lv", dest="num_lv", type=int, default=2)
    ap.add_argument("--covariates", type=int, default=2)
    ap.add_argument("--family", default="poisson")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--level", type=float, default=0.95)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    com0, truth = jsdm.simulate_community(args.sites, args.species, num_lv=args.num_lv,
                                          family=args.family, n_covariates=args.covariates,
                                          seed=args.seed, intercept=0.5)
    fam = jsdm.get_family(args.family)
    rng = np.random.default_rng(args.seed + 1)
    cov, width, conv, ident, t0 = [], [], [], [], time.perf_counter()
    for r in range(args.reps):
        c, w, ok, idf = one_replicate(draw(truth, com0.X, fam, rng), truth, args, args.level)
        cov.append(c), width.append(w), conv.append(ok), ident.append(idf)
        if (r + 1) % 25 == 0:
            print(f"  {r + 1}/{args.reps} replicates, coverage so far {np.nanmean(np.concatenate(cov)):.3f}")
    report(args, np.array(cov, dtype=float), np.array(width), conv, ident, time.perf_counter() - t0)


def report(args, cov, width, conv, ident, elapsed):
    """Print the figure and write the JSON."""
    flat = cov.ravel()
    p = float(flat.mean())
    mcse = float(np.sqrt(p * (1 - p) / flat.size))
    per_replicate_sd = float(cov.mean(1).std(ddof=1) / np.sqrt(cov.shape[0]))
    out = {
        "what": f"coverage of {args.level:.0%} Wald intervals for species slopes",
        "design": {"family": args.family, "sites": args.sites, "species": args.species,
                   "num_lv": args.num_lv, "covariates": args.covariates, "reps": args.reps,
                   "seed": args.seed},
        "coverage": p, "mc_se_binomial": mcse, "mc_se_replicates": per_replicate_sd,
        "intervals": int(flat.size), "median_width": float(np.median(width)),
        "converged_share": float(np.mean(conv)), "all_ses_finite_share": float(np.mean(ident)),
        "coverage_by_term": {f"x{k + 1}": float(cov.reshape(cov.shape[0], args.species, -1)[:, :, k].mean())
                             for k in range(args.covariates)},
        "elapsed_s": elapsed, "machine": platform.platform(), "python": platform.python_version(),
        "jsdm": jsdm.__version__, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    print(f"Coverage of {args.level:.0%} Wald intervals for {flat.size} slopes "
          f"({args.reps} replicates, {args.family}, {args.sites} x {args.species}, num_lv={args.num_lv}): "
          f"{p:.3f} (MC s.e. {max(mcse, per_replicate_sd):.3f}); converged {np.mean(conv):.0%}; "
          f"{elapsed:.0f} s")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
