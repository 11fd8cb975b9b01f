"""Recovery and interval coverage of grouped site-effect sds, on data simulated from the model.

n = 200 sites in 25 plots (8 sites each), split into 2 subplots of 4 sites; m = 40
species; Poisson; species intercepts ~ N(0, 0.5^2) and slopes on one covariate ~ N(0,
0.4^2); a crossed grouping "year" (5 levels) drawn independently of the plots. True sds:
plot 0.6, plot:sub 0.4, year 0.3. Every replicate draws fresh effects and responses and
fits ``y ~ species + species:x + (1 | plot/sub) + (1 | year)``; the script prints, per
sd, the mean estimate, its bias and RMSE, and the coverage of the 95% Wald interval
(``fit.conf_int()``, built on the log-sd scale) with its Monte Carlo SE, and writes
``bench/results/recovery_group_effects.json``.

Usage (from the repository root; about 1-2 minutes with the defaults on 2 shared cores)::

    python bench/recovery_group_effects.py
    python bench/recovery_group_effects.py --reps 100
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
RESULTS = ROOT / "bench" / "results" / "recovery_group_effects.json"
TRUTH = {"plot": 0.6, "plot:sub": 0.4, "year": 0.3}


def simulate(rng, n=200, m=40, per_plot=8):
    G = n // per_plot
    plot = np.repeat(np.arange(G), per_plot)
    sub = np.tile(np.repeat([0, 1], per_plot // 2), G)
    year = rng.integers(0, 5, n)
    x = rng.normal(size=n)
    beta0, b = rng.normal(0.0, 0.5, m), rng.normal(0.0, 0.4, m)
    u = (rng.normal(0, TRUTH["plot"], G)[plot]
         + rng.normal(0, TRUTH["plot:sub"], 2 * G)[2 * plot + sub]
         + rng.normal(0, TRUTH["year"], 5)[year])
    eta = beta0[None] + x[:, None] * b[None] + u[:, None]
    Y = pd.DataFrame(rng.poisson(np.exp(eta)).astype(float), index=[f"s{i}" for i in range(n)],
                     columns=[f"sp{j}" for j in range(m)])
    X = pd.DataFrame({"x": x, "plot": [f"p{k}" for k in plot], "sub": [f"q{k}" for k in sub],
                      "year": [f"y{k}" for k in year]}, index=Y.index)
    return Y, X


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    est = {k: [] for k in TRUTH}
    cover = {k: [] for k in TRUTH}
    cpu = []
    t0 = time.perf_counter()
    for r in range(args.reps):
        Y, X = simulate(rng)
        c0 = time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = jsdm.gllvm(Y, X, family="poisson", formula="~ x", num_lv=0,
                             site_effects=["plot/sub", "year"], n_init=1)
            ci = fit.conf_int()
        cpu.append(time.process_time() - c0)
        for k, true in TRUTH.items():
            lab = ("group_sd", k, "sd")
            est[k].append(float(fit.params[lab]))
            lo, hi = ci.loc[lab]
            cover[k].append(bool(lo <= true <= hi))
    rows = []
    for k, true in TRUTH.items():
        e, c = np.array(est[k]), np.array(cover[k], dtype=float)
        rows.append({"sd": k, "true": true, "mean": e.mean(), "bias": e.mean() - true,
                     "rmse": float(np.sqrt(((e - true) ** 2).mean())), "coverage": c.mean(),
                     "coverage_mcse": float(np.sqrt(c.mean() * (1 - c.mean()) / len(c)))})
    table = pd.DataFrame(rows).set_index("sd")
    print(f"{args.reps} replicates, n=200, m=40, Poisson, (1 | plot/sub) + (1 | year); "
          f"CPU per fit (incl. conf_int) median {np.median(cpu):.2f} s; wall {time.perf_counter() - t0:.0f} s")
    print(table.round(3).to_string())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "script": "bench/recovery_group_effects.py", "reps": args.reps, "seed": args.seed,
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.platform(), "jsdm": jsdm.__version__,
        "cpu_per_fit_median_s": float(np.median(cpu)),
        "note": "machine shared by several engineers (2 cores): times are noisy",
        "table": table.reset_index().to_dict(orient="records")}, indent=2))


if __name__ == "__main__":
    main()
