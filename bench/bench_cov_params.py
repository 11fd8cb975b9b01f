"""Benchmark: time of the covariance of the estimates (``fit.cov_params()``).

Fits a negative binomial GLLVM (2 latent variables, 2 covariates) to data
simulated by ``jsdm.simulate_community`` at each size, then times the
analytic Hessian + Schur complement + checked inverse (``cov_params``, cold
cache). Prints a table and writes ``bench/results/cov_params.json``.

Usage (from the repository root)::

    python bench/bench_cov_params.py                  # 200x50, 500x100, 1000x100
    python bench/bench_cov_params.py --sizes 1000x100 --family poisson
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
from jsdm.results import inference

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "cov_params.json"


def run(size, family, seed):
    n, m = (int(v) for v in size.split("x"))
    com, _ = jsdm.simulate_community(n, m, num_lv=2, family=family, n_covariates=2, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        t0 = time.perf_counter()
        fit = jsdm.gllvm(com, family=family, num_lv=2, seed=seed, n_init=1)
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        C = fit.cov_params()
        t_cov = time.perf_counter() - t0
    info = inference.information(fit)
    layout = fit.state.layout
    return {"size": size, "family": family, "model_params": int(layout.n_model),
            "variational_params": int(layout.size - layout.n_model), "fit_s": t_fit,
            "cov_params_s": t_cov, "finite_se_share": float(np.isfinite(np.diag(C)).mean()),
            "min_scaled_eigenvalue": info.min_eigenvalue}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="200x50,500x100,1000x100")
    ap.add_argument("--family", default="negative_binomial")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    rows = [run(s, args.family, args.seed) for s in args.sizes.split(",")]
    print(f"{'size':>10} {'model p':>8} {'var. p':>8} {'fit s':>8} {'cov_params s':>13} {'finite SE':>10}")
    for r in rows:
        print(f"{r['size']:>10} {r['model_params']:>8} {r['variational_params']:>8} {r['fit_s']:>8.2f} "
              f"{r['cov_params_s']:>13.2f} {r['finite_se_share']:>10.0%}")
    out = {"rows": rows, "machine": platform.platform(), "python": platform.python_version(),
           "numpy": np.__version__, "jsdm": jsdm.__version__,
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
