"""Study: how often one start finds the best optimum, per ordination type, on the mite data.

Negative binomial (constrained num_rr=2, concurrent num_lv_c=2, lv_formula ~ SubsDens +
WatrCont, no species slopes) and quadratic responses (num_lv=2, quadratic="lv" and True;
Poisson with species slopes on both covariates, and Poisson, NB and binomial
(presence/absence) without covariates): fits from seeds 0..S-1 with n_init=1 and with
the default starts (n_init=3; quadratic responses: the linear fit from 3 starts, then
all d + 2 quadratic starts, where n_init=1 runs one); the final ELBO of each, the best
over all, and how many fits end within 0.01 of it. Writes
bench/results/study_ordination_ninit.json.

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
        "quadratic LV (Poisson, no covariates)": (dict(family="poisson", num_lv=2, quadratic="lv",
                                                       X=None), args.quadratic_seeds),
        "quadratic TRUE (Poisson, no covariates)": (dict(family="poisson", num_lv=2,
                                                         quadratic=True, X=None),
                                                    args.quadratic_seeds),
        "quadratic TRUE (NB, no covariates)": (dict(family="negative_binomial", num_lv=2,
                                                    quadratic=True, X=None),
                                               args.quadratic_seeds),
        "quadratic TRUE (binomial, no covariates)": (dict(family="binomial", num_lv=2,
                                                          quadratic=True, X=None, pa=True),
                                                     args.quadratic_seeds),
    }
    words = [w for w in args.cases.split(",") if w]
    if words:
        cases = {k: v for k, v in cases.items() if any(w in k for w in words)}
    out = {}
    for name, (kw, n_seeds) in cases.items():
        rec = {}
        kw = dict(kw)
        Xc = kw.pop("X", X)
        Y = (com.Y > 0).astype(int) if kw.pop("pa", False) else com.Y
        for n_init in (1, None):
            vals, secs = [], []
            for seed in range(n_seeds):
                t0 = time.process_time()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fit = jsdm.gllvm(Y, Xc, n_init=n_init, seed=seed, **kw)
                secs.append(time.process_time() - t0)
                vals.append(float(fit.llf))
                if n_init is None and seed == 0 and fit.state.quadratic_starts:
                    # each quadratic start's ELBO (to the screening tolerance), in the
                    # order of the D patterns: 0.5 and 1 on every LV, 1 on LV k alone
                    rec["quadratic_start_values_seed0"] = [float(v) for v in fit.state.start_values]
            rec["n_init=1" if n_init == 1 else "default"] = {"elbo": vals, "cpu_s": secs}
        best = max(max(r["elbo"]) for k, r in rec.items() if k in ("n_init=1", "default"))
        for key, r in ((k, rec[k]) for k in ("n_init=1", "default")):
            r["within_0.01_of_best"] = int(sum(v >= best - 0.01 for v in r["elbo"]))
            r["n"] = len(r["elbo"])
        rec["best"] = best
        out[name] = rec
        for key in ("n_init=1", "default"):
            r = rec[key]
            print(f"{name:26s} {key}: {r['within_0.01_of_best']}/{r['n']} at the best "
                  f"({best:.3f}); ELBOs {np.round(sorted(r['elbo']), 2).tolist()}; "
                  f"median {np.median(r['cpu_s']):.1f} s CPU", flush=True)
        if "quadratic_start_values_seed0" in rec:
            print(f"{'':26s} quadratic starts (default, seed 0): "
                  f"{np.round(rec['quadratic_start_values_seed0'], 2).tolist()}", flush=True)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
