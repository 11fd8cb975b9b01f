"""Benchmark: random species slopes on 2 covariates + 2 latent variables, negative binomial.

The community (1000 sites x 300 species by default) is simulated with
``jsdm.simulate_community`` (NB, 2 LVs, 2 covariates); then it is fitted twice, each fit
timed in CPU seconds (``time.process_time``; the machine is shared):

- today's model of the same size: species-specific fixed intercepts and slopes + 2 LVs;
- the random-slope model: species intercepts fixed, slopes on both covariates random
  ``x1 + x2 + (0 + x1 + x2 | species)`` (correlated, with community means) + 2 LVs.

Target (set in issue 14): the random-slope fit within 2x the CPU time of today's model
of the same size and converged. Prints a table and writes
``bench/results/bench_species_random.json``.

Usage (from the repository root)::

    python bench/bench_species_random.py
    python bench/bench_species_random.py --size 200x50 --repeat 3
"""
import argparse
import json
import platform
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import jsdm

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "bench_species_random.json"
TARGET_RATIO = 2.0


def timed(fn, repeat):
    cpu, out = [], None
    for _ in range(repeat):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c0 = time.process_time()
            out = fn()
            cpu.append(time.process_time() - c0)
    return out, cpu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1000x300")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--n-init", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    n, m = (int(v) for v in args.size.split("x"))
    com, _ = jsdm.simulate_community(n, m, num_lv=2, family="negative_binomial", n_covariates=2,
                                     seed=args.seed)
    covs = list(com.X.columns)
    rs = f"{covs[0]} + {covs[1]} + (0 + {covs[0]} + {covs[1]} | species)"
    rows = []
    for name, kw in [("today: species slopes + 2 LVs", {}),
                     ("random slopes (2 cov, correlated) + 2 LVs", {"random_species": rs})]:
        fit, cpu = timed(lambda kw=kw: jsdm.gllvm(com, family="negative_binomial", num_lv=2,
                                                  n_init=args.n_init, seed=0, **kw), args.repeat)
        rows.append({"model": name, "cpu_median_s": float(np.median(cpu)), "cpu_s": cpu,
                     "elbo": float(fit.llf), "df": int(fit.df), "converged": bool(fit.converged),
                     "n_iter": int(fit.n_iter), "scaled_grad": float(fit.scaled_grad)})
        if kw:
            rows[-1]["varcorr"] = fit.varcorr().to_dict(orient="records")
    ratio = rows[1]["cpu_median_s"] / rows[0]["cpu_median_s"]
    met = ratio <= TARGET_RATIO and rows[1]["converged"]
    print(f"{args.size} NB, 2 covariates, 2 LVs, n_init={args.n_init}; CPU seconds (shared machine)")
    for r in rows:
        print(f"  {r['model']:<44} {r['cpu_median_s']:8.1f} s  ELBO {r['elbo']:.2f}  df {r['df']}"
              f"  converged {r['converged']}  iterations {r['n_iter']}")
    print(f"  ratio {ratio:.2f} (target <= {TARGET_RATIO}): {'met' if met else 'NOT met'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.platform(), "args": vars(args), "rows": rows, "ratio": ratio,
        "target_ratio": TARGET_RATIO, "target_met": bool(met)}, indent=1, default=str))
    return rows


if __name__ == "__main__":
    main()
