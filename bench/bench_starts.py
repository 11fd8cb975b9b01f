"""Do the default starting values find the best optimum? A study by data set and family.

For each case (data set, family, 2 latent variables, no covariates) the default call
``jsdm.gllvm(Y, family=..., num_lv=2, seed=S)`` (``n_init=3``) is compared with the best
ELBO over many starts (``n_init=--n-ref`` with seeds S + 100 and S + 1000), and with the
previous default (three starts without the related-family start of
``jsdm.model.fit.related_start``, emulated by switching it off). The table reports the
gaps (best - default), how many of the reference starts ended within ``--tol`` of the
best, and what ``fit.diagnose()`` says about the default fit's starts.

Data: the bundled mite counts (70 x 35) and dune cover classes (20 x 30), aravo cover
classes 0-5 (75 x 82, ``../shared/data/aravo``; skipped when absent), "spider-like"
communities (28 sites x 12 species of overdispersed counts, as R gllvm's hunting-spider
data; simulated NB, seeds 1..7) and communities simulated from each family of issue 16
(80 x 15, 2 latent variables, seed 1).

    python bench/bench_starts.py                      # everything (long on a shared machine)
    python bench/bench_starts.py --cases spider --n-ref 10
    python bench/bench_starts.py --cases mite,dune --seeds 1,2
    python bench/bench_starts.py --cases spider,mite --families zip,zinb --update  # redo some

Writes bench/results/bench_starts.json after every case (settings, machine, one record
per case and seed).
"""
import argparse
import json
import os
import platform
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import jsdm

HERE = Path(__file__).resolve().parent
ARAVO = HERE.parent.parent / "shared" / "data" / "aravo" / "aravo_spe.csv"


def datasets():
    """name -> (DataFrame of responses, trials or None) for each case's family."""
    mite = jsdm.datasets.load_mite().Y.astype(float)
    dune = jsdm.datasets.load_dune().Y.astype(float)
    out = {"mite": mite, "dune": dune}
    if ARAVO.is_file():
        out["aravo"] = pd.read_csv(ARAVO, index_col=0).astype(float)
    return out


# (data, family, transform of the responses, trials)
REAL = [
    ("mite", "poisson", None, None), ("mite", "negative_binomial", None, None),
    ("mite", "nb1", None, None), ("mite", "zip", None, None), ("mite", "zinb", None, None),
    ("mite", "hurdle_poisson", None, None), ("mite", "hurdle_nb", None, None),
    ("mite", "tweedie", None, None), ("mite", "tweedie_power", None, None),
    ("dune", "tweedie", None, None), ("dune", "poisson", None, None), ("dune", "zip", None, None),
    ("dune", "binomial", "presence", None), ("dune", "ordered_beta", "div9", None),
    ("dune", "beta_hurdle", "div10", None),
    ("aravo", "tweedie", None, None), ("aravo", "zip", None, None),
    ("aravo", "binomial", "presence", None), ("aravo", "beta_binomial", None, 5),
]
SPIDER = [("spider-like", fam, seed) for seed in range(1, 8)
          for fam in ("zip", "zinb", "hurdle_poisson", "hurdle_nb", "tweedie")]
SIMULATED = ["zinb", "nb1", "hurdle_poisson", "hurdle_nb", "exponential", "ordered_beta",
             "beta_hurdle", "beta_binomial", "tweedie_power", "truncated_poisson", "truncated_nb",
             "zip", "tweedie"]
TRANSFORMS = {None: lambda Y: Y, "presence": lambda Y: (Y > 0).astype(float),
              "div9": lambda Y: Y / 9.0, "div10": lambda Y: Y / 10.0}


def spider_like(seed):
    """28 sites x 12 species of overdispersed counts with two latent variables (NB)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        com, _ = jsdm.simulate_community(28, 12, num_lv=2, family="negative_binomial", n_covariates=0,
                                         seed=seed, intercept=0.5, intercept_sd=1.5, loading_sd=1.2,
                                         dispersion=1.0)
    return com.Y


def cases(select, families=None):
    """The cases whose data set (or family) is in ``select`` and family in ``families``."""
    data = datasets()
    out = []

    def keep(name, fam):
        return (not select or name in select or fam in select) and (not families or fam in families)

    for name, fam, seed in SPIDER:
        if keep("spider", fam):
            out.append((f"{name}-{seed}", fam, spider_like(seed), None, None))
    for name, fam, tf, trials in REAL:
        if name in data and keep(name, fam):
            out.append((name, fam, TRANSFORMS[tf](data[name]), trials, tf))
    for fam in SIMULATED:
        if keep("simulated", fam):
            trials = 10 if fam == "beta_binomial" else None
            kw = {} if fam in ("ordered_beta", "beta_hurdle", "beta_binomial", "exponential") \
                else {"intercept": 0.5}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                com, _ = jsdm.simulate_community(80, 15, num_lv=2, family=fam, n_covariates=0,
                                                 seed=1, trials=trials, **kw)
            out.append(("simulated", fam, com.Y, trials, None))
    return out


def fit(Y, fam, trials, n_init, seed, related=True):
    """A fit and its CPU time; ``related=False``: without the related-family start."""
    from unittest import mock

    import jsdm.model.fit as engine

    t0 = time.process_time()
    with warnings.catch_warnings(), mock.patch.object(
            engine, "related_start", engine.related_start if related else (lambda *a: None)):
        warnings.simplefilter("ignore")
        res = jsdm.gllvm(Y, family=fam, num_lv=2, n_init=n_init, seed=seed, trials=trials,
                         checks=False)
    return res, time.process_time() - t0


def start_note(res):
    """What diagnose() says about the starts (the 'starts' problem's statement, or '')."""
    from jsdm.analysis.diagnostics import check_starts

    probs = check_starts(res)
    return probs[0].evidence if probs else ""


def run(args, write):
    rows = []
    commit = machine()["commit"]
    seeds = [int(s) for s in args.seeds.split(",")]
    for name, fam, Y, trials, tf in cases(args.cases.split(",") if args.cases else None,
                                          args.families.split(",") if args.families else None):
        ref, t_ref, ref_values = None, 0.0, []
        try:
            from jsdm.model.problem import build_problem     # do the data suit the family?
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                build_problem(Y, family=fam, num_lv=2, trials=trials)
        except jsdm.JSDMError as err:
            print(f"{name:14s} {fam:18s} refused: {err}", flush=True)
            rows.append({"data": name, "family": fam, "refused": str(err)})
            write(rows)
            continue
        for rs in (seeds[0] + 100, seeds[0] + 1000):
            r, t = fit(Y, fam, trials, args.n_ref, rs)
            ref_values += list(r.state.start_values)
            t_ref += t
            ref = r if ref is None or r.llf > ref.llf else ref
        for seed in seeds:
            d, t_def = fit(Y, fam, trials, 3, seed)
            old, t_old = fit(Y, fam, trials, 3, seed, related=False)
            best = max(ref.llf, d.llf, old.llf)
            vals = np.asarray(ref_values)
            row = {"data": name, "family": fam, "response": tf or "as is",
                   "size": f"{Y.shape[0]}x{Y.shape[1]}", "seed": seed,
                   "elbo_default": d.llf, "elbo_previous_default": old.llf, "elbo_best": best,
                   "gap": best - d.llf, "gap_previous": best - old.llf,
                   "default_starts": [float(v) for v in d.state.start_values],
                   "default_converged": bool(d.converged), "n_ref": len(vals),
                   "ref_within_tol": int((vals >= best - args.tol).sum()),
                   "ref_spread": float(vals.max() - vals.min()),
                   "diagnose_starts": start_note(d), "diagnose_starts_previous": start_note(old),
                   "cpu_default_s": t_def, "cpu_previous_s": t_old, "cpu_ref_s": t_ref,
                   "commit": commit}
            rows.append(row)
            write(rows)
            print(f"{name:14s} {fam:18s} {row['size']:>6s} seed {seed}: default {d.llf:12.4f} "
                  f"(previous {old.llf:12.4f})  best {best:12.4f}  gap {row['gap']:8.4f} "
                  f"(previous {row['gap_previous']:8.4f})  within {row['ref_within_tol']:2d}/{len(vals)}"
                  f"  {t_def:5.1f}s vs {t_old:5.1f}s", flush=True)
    return rows


def machine():
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=HERE).stdout.strip()
    except OSError:
        commit = None
    return {"cores": os.cpu_count(), "loadavg": os.getloadavg(), "python": platform.python_version(),
            "numpy": np.__version__, "jsdm": jsdm.__version__, "commit": commit}


def table(rows):
    """A markdown table (no tabulate needed)."""
    cols = ["data", "family", "response", "size", "seed", "elbo_best", "gap", "gap_previous",
            "ref_within_tol", "n_ref", "ref_spread", "cpu_default_s", "cpu_previous_s"]
    fmt = {"elbo_best": "{:.3f}", "gap": "{:.4f}", "gap_previous": "{:.4f}", "ref_spread": "{:.3f}",
           "cpu_default_s": "{:.1f}", "cpu_previous_s": "{:.1f}"}
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        if "refused" in r:
            lines.append(f"| {r['data']} | {r['family']} | refused: {r['refused'][:60]}... |")
            continue
        lines.append("| " + " | ".join(fmt.get(c, "{}").format(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="", help="comma list of data sets, families or 'simulated'")
    ap.add_argument("--families", default="", help="comma list of families to keep")
    ap.add_argument("--n-ref", type=int, default=10, help="starts per reference run (two runs)")
    ap.add_argument("--seeds", default="1", help="seeds of the default fits")
    ap.add_argument("--tol", type=float, default=0.05, help="ELBO tolerance for 'the same optimum'")
    ap.add_argument("--out", default=str(HERE / "results" / "bench_starts.json"))
    ap.add_argument("--update", action="store_true",
                    help="keep the other rows of --out; replace those of the cases run now")
    args = ap.parse_args()
    old = []
    if args.update and Path(args.out).is_file():
        old = json.loads(Path(args.out).read_text())["rows"]

    def key(r):
        return (r["data"], r["family"], r.get("seed"))

    def write(rows):
        new = {key(r) for r in rows}
        kept = [r for r in old if key(r) not in new]
        for r in kept:
            r.setdefault("run", "earlier run")
        Path(args.out).write_text(json.dumps({"settings": vars(args), "machine": machine(),
                                              "rows": kept + rows}, indent=1))

    rows = run(args, write)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
