"""Benchmark: each ordination type next to the unconstrained fit of the same size (issue 15).

Simulated negative binomial communities (``jsdm.simulate_community``, 2 latent
variables, 2 site covariates) of 500 x 100 and 1000 x 300; every type is fitted with
``n_init=1`` (one start of each type: for quadratic responses the linear fit and one
quadratic start) or, with ``--n-init default``, with jsdm.gllvm's default starts (3;
quadratic responses: the linear fit from 3 starts, then d + 2 quadratic starts), and
2 latent dimensions: unconstrained (``num_lv=2``, no species slopes), constrained
(``num_rr=2``), concurrent (``num_lv_c=2``), quadratic responses per LV
(``quadratic="lv"``) and per species (``quadratic=True``), the last two on the
unconstrained latent variables. CPU seconds (``time.process_time``; the machine is
shared by several users, so wall times would mislead), ELBO, convergence and the ratio
to the unconstrained fit are printed and written to ``bench/results/bench_ordination.json``.

Usage (from the repository root)::

    python bench/bench_ordination.py                      # both sizes, all types
    python bench/bench_ordination.py --sizes 500x100 --types constrained,concurrent
    python bench/bench_ordination.py --n-init default --out bench/results/bench_ordination_default.json
    python bench/bench_ordination.py --sizes 1000x300 --types unconstrained,constrained,concurrent \
        --out bench/results/bench_ordination_1000x300.json
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
RESULTS = ROOT / "bench" / "results" / "bench_ordination.json"
TYPES = {
    "unconstrained": dict(num_lv=2),
    "constrained": dict(num_lv=0, num_rr=2, lv_formula="~ x1 + x2"),
    "concurrent": dict(num_lv=0, num_lv_c=2, lv_formula="~ x1 + x2"),
    "quadratic_lv": dict(num_lv=2, quadratic="lv"),
    "quadratic": dict(num_lv=2, quadratic=True),
}


def data(n, m, seed=1):
    com, _ = jsdm.simulate_community(n_sites=n, n_species=m, num_lv=2, family="negative_binomial",
                                  n_covariates=2, seed=seed)
    X = com.X.copy()
    X.columns = ["x1", "x2"]
    return com.Y, X


def run(size, kind, repeat=1, n_init=1):
    n, m = (int(v) for v in size.split("x"))
    Y, X = data(n, m)
    times, fit = [], None
    for _ in range(repeat):
        t0 = time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = jsdm.gllvm(Y, X, family="negative_binomial", formula="~ 1", n_init=n_init,
                             checks=False, **TYPES[kind])
        times.append(time.process_time() - t0)
    return {"size": size, "type": kind, "n_init": "default" if n_init is None else n_init,
            "cpu_s": float(np.median(times)), "elbo": float(fit.llf),
            "converged": bool(fit.converged), "iterations": int(fit.state.n_iter),
            "quadratic_starts": int(fit.state.quadratic_starts)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="500x100,1000x300")
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--n-init", default="1", help="starts per fit: a number, or 'default'")
    ap.add_argument("--out", default=str(RESULTS), help="JSON file to write")
    args = ap.parse_args()
    rows = []
    for size in args.sizes.split(","):
        base = None
        for kind in args.types.split(","):
            r = run(size, kind, args.repeat, None if args.n_init == "default" else int(args.n_init))
            if kind == "unconstrained":
                base = r["cpu_s"]
            r["ratio_to_unconstrained"] = r["cpu_s"] / base if base else float("nan")
            rows.append(r)
            print(f"{size:>9} {kind:>14} {r['cpu_s']:8.2f} s  x{r['ratio_to_unconstrained']:5.2f}  "
                  f"ELBO {r['elbo']:.2f}  converged {r['converged']}  iter {r['iterations']}",
                  flush=True)
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": platform.platform(), "python": platform.python_version(),
           "note": f"CPU seconds, n_init={args.n_init}; 2-core machine", "rows": rows}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
