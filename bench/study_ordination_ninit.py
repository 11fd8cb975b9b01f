"""Study: how often one start finds the best optimum, per ordination type, on the mite data.

Negative binomial (constrained num_rr=2, concurrent num_lv_c=2, lv_formula ~ SubsDens +
WatrCont, no species slopes) and Poisson quadratic responses (num_lv=2, quadratic="lv"
and True): fits from seeds 0..S-1 with n_init=1, and with the default n_init=3; the
final ELBO of each, the best over all, and how many single starts end within 0.01 of
it. Writes bench/results/study_ordination_ninit.json.

Usage::

    python bench/study_ordination_ninit.py [--seeds 10] [--quadratic-seeds 3]
        [--cases quadratic] [--out bench/results/study_ordination_ninit_quadratic.json]

(``--cases``: only the cases whose name contains one of these comma-separated words.)
"""
import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np

import jsdm

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "study_ordination_ninit.json"


def mite():
    com = jsdm.datasets.load_mite()
    X = com.X[["SubsDens", "WatrCont"]].astype(float)
    return com, (X - X.mean()) / X.std(ddof=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--quadratic-seeds", type=int, default=3)
    ap.add_argument("--cases", default="", help="comma-separated words; only matching cases")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    com, X = mite()
    cases = {
        "constrained (NB)": (dict(family="negative_binomial", num_lv=0, formula="~ 1", num_rr=2,
                                  lv_formula="~ SubsDens + WatrCont"), args.seeds),
        "concurrent (NB)": (dict(family="negative_binomial", num_lv=0, formula="~ 1", num_lv_c=2,
                                 lv_formula="~ SubsDens + WatrCont"), args.seeds),
        "quadratic LV (Poisson)": (dict(family="poisson", num_lv=2, quadratic="lv"),
                                   args.quadratic_seeds),
        "quadratic TRUE (Poisson)": (dict(family="poisson", num_lv=2, quadratic=True),
                                     args.quadratic_seeds),
    }
    words = [w for w in args.cases.split(",") if w]
    if words:
        cases = {k: v for k, v in cases.items() if any(w in k for w in words)}
    out = {}
    for name, (kw, n_seeds) in cases.items():
        rec = {}
        for n_init in (1, 3):
            vals, secs = [], []
            for seed in range(n_seeds):
                t0 = time.process_time()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fit = jsdm.gllvm(com.Y, X, n_init=n_init, seed=seed, **kw)
                secs.append(time.process_time() - t0)
                vals.append(float(fit.llf))
            rec[f"n_init={n_init}"] = {"elbo": vals, "cpu_s": secs}
        best = max(max(r["elbo"]) for r in rec.values())
        for key, r in rec.items():
            r["within_0.01_of_best"] = int(sum(v >= best - 0.01 for v in r["elbo"]))
            r["n"] = len(r["elbo"])
        rec["best"] = best
        out[name] = rec
        for key in ("n_init=1", "n_init=3"):
            r = rec[key]
            print(f"{name:26s} {key}: {r['within_0.01_of_best']}/{r['n']} at the best "
                  f"({best:.3f}); ELBOs {np.round(sorted(r['elbo']), 2).tolist()}; "
                  f"median {np.median(r['cpu_s']):.1f} s CPU", flush=True)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
