"""CPU time of the same fits under two versions of jsdm, interleaved (for a shared machine).

Each repetition runs every case once under each version, alternating, each fit in a
fresh subprocess that imports jsdm from the given source folder; the fit's CPU time
(``time.process_time``, all threads of that process), its ELBO and iterations are
recorded. Interleaving exposes both versions to the same load, so their ratio is
meaningful on a busy machine where absolute timings are not.

Usage (from the repository root)::

    git archive 5e42c47 jsdm | tar -x -C /tmp/jsdm_before      # the version to compare with
    python bench/bench_compare.py --old /tmp/jsdm_before --new . --repeat 5
    python bench/bench_compare.py --old /tmp/jsdm_before --new . --cases nb28x12,mite --repeat 9

Cases: ``nb28x12`` (simulated, the size of the hunting-spider data; NB, 2 LVs, no
covariates), ``mite`` (70 x 35 NB 2 LVs), ``mite_X2`` (+ 2 standardised covariates),
``mite_row`` (random row effects), ``probit28x12``, and sizes ``NxM`` (NB, 2 LVs, 2
covariates, as in bench_fit.py). ``--n-init`` sets the number of starts (default 1).
Writes ``bench/results/bench_compare.json``.
"""
import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "bench_compare.json"
DEFAULT_CASES = ["nb28x12", "probit28x12", "mite", "mite_X2", "mite_row", "200x50", "500x100",
                 "1000x300"]


def worker(case, n_init, seed):
    import warnings

    import jsdm

    kw = dict(family="negative_binomial", num_lv=2, n_init=n_init, seed=0)
    if case.startswith("mite"):
        com = jsdm.datasets.load_mite()
        data = (com.Y,)
        if case == "mite_X2":
            X = com.X[["SubsDens", "WatrCont"]].astype(float)
            data = (com.Y, (X - X.mean()) / X.std(ddof=1))
        if case == "mite_row":
            kw["row_effect"] = "random"
    elif case in ("nb28x12", "probit28x12"):
        fam = "binomial" if case.startswith("probit") else "negative_binomial"
        com, _ = jsdm.simulate_community(28, 12, num_lv=2, family=fam, n_covariates=0, seed=seed,
                                         link="probit" if fam == "binomial" else None)
        data = (com,)
        kw.update(family=fam, link="probit" if fam == "binomial" else None)
    else:
        n, m = (int(v) for v in case.split("x"))
        com, _ = jsdm.simulate_community(n, m, num_lv=2, family="negative_binomial",
                                         n_covariates=2, seed=seed)
        data = (com,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.process_time()
        fit = jsdm.gllvm(*data, **kw)
        cpu = time.process_time() - t0
    print(json.dumps({"cpu": cpu, "llf": float(fit.llf), "n_iter": int(fit.n_iter),
                      "converged": bool(fit.converged)}))


def run(src, case, n_init, seed):
    code = (f"import sys; sys.path.insert(0, {str(Path(src).resolve())!r}); "
            f"sys.path.insert(1, {str(Path(__file__).resolve().parent)!r}); "
            f"import bench_compare as b; b.worker({case!r}, {n_init}, {seed})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="folder holding the jsdm package to compare with")
    ap.add_argument("--new", default=str(ROOT), help="folder holding the new jsdm package")
    ap.add_argument("--cases", default=",".join(DEFAULT_CASES))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--n-init", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    res = {c: {"old": [], "new": []} for c in cases}
    for r in range(args.repeat):
        for c in cases:
            for which in (("old", "new") if r % 2 == 0 else ("new", "old")):
                res[c][which].append(run(getattr(args, which), c, args.n_init, args.seed))
    rows = []
    print(f"{'case':12s} {'old cpu':>8s} {'new cpu':>8s} {'new/old':>8s} {'old it':>6s} {'new it':>6s} "
          f"{'old ELBO':>14s} {'new ELBO':>14s}")
    for c in cases:
        o, n = res[c]["old"], res[c]["new"]
        mo, mn = statistics.median(x["cpu"] for x in o), statistics.median(x["cpu"] for x in n)
        row = {"case": c, "old_cpu_median": mo, "new_cpu_median": mn, "ratio": mn / mo,
               "old_cpu": [x["cpu"] for x in o], "new_cpu": [x["cpu"] for x in n],
               "old_iter": o[0]["n_iter"], "new_iter": n[0]["n_iter"], "old_llf": o[0]["llf"],
               "new_llf": n[0]["llf"], "old_converged": o[0]["converged"],
               "new_converged": n[0]["converged"]}
        rows.append(row)
        print(f"{c:12s} {mo:8.3f} {mn:8.3f} {mn / mo:8.3f} {row['old_iter']:6d} {row['new_iter']:6d} "
              f"{row['old_llf']:14.4f} {row['new_llf']:14.4f}")
    meta = {"old": str(Path(args.old).resolve()), "new": str(Path(args.new).resolve()),
            "repeat": args.repeat, "n_init": args.n_init, "seed": args.seed,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "note": "shared machine; CPU time of the fit only"}
    Path(args.out).write_text(json.dumps({"meta": meta, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
