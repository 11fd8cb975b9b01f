"""Benchmark: ordinal (cover-class) GLLVM fits, 2 latent variables, both cut-point structures.

Cases (each with cut points per species and with one common set, ``cutpoints=``):

- ``dune``: the bundled dune meadows, 20 sites x 30 species, cover classes 0-9;
- ``aravo``: the bundled alpine plants (``jsdm.datasets.load_aravo``), 75 x 82, classes 0-5;
- ``doubs_sim``: a *simulated* community of the Doubs fish table's size (30 x 27, six
  classes 0-5; the Doubs data themselves were not available offline): 54% zeros, 15 of
  27 species missing some class, the rarest species at 2 sites;
- ``sim500x100``: a simulated 500 x 100 community, six classes, 68% zeros.

No covariates (the fits of issue 11). Each case runs in a fresh Python subprocess;
the fit is repeated ``--repeat`` times and the median CPU time (``time.process_time``:
all threads of the process) and wall time are reported with the iterations, the
ELBO, convergence (scaled gradient <= gtol = 1e-3), the number of parameters and
AIC. One start per fit (``n_init=1``, R gllvm's default; ``--n-init`` to change).
R gllvm 2.0.5 (VA, quoted from issue 11, same machine) took 1.2 s CPU on the Doubs
fish data and 10.3 s on aravo (where it switched to common cut points).

Usage (from the repository root)::

    python bench/bench_ordinal.py                       # all cases, both structures
    python bench/bench_ordinal.py --cases dune,aravo --repeat 5

Results: a table on stdout and ``bench/results/bench_ordinal.json`` (settings,
machine, load average, git commit, one record per case and structure).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "bench_ordinal.json"
CASES = ["dune", "aravo", "doubs_sim", "sim500x100"]
STRUCTURES = ["species", "common"]
#: issue 11's targets (CPU seconds, converged 2-LV fits) = R gllvm 2.0.5's times there
TARGETS_CPU_S = {"doubs_sim": 1.2, "aravo": 10.0}
R_GLLVM_CPU_S = {"doubs_sim": 1.2, "aravo": 10.3}
CUTS6 = (0.0, 0.7, 1.4, 2.1, 2.8)


def load_case(case):
    """(Y DataFrame, description) for a case."""
    import jsdm

    if case == "dune":
        return jsdm.datasets.load_dune().Y, "bundled, Jongman et al. 1987"
    if case == "aravo":
        return jsdm.datasets.load_aravo().Y, "bundled, Choler 2005 (ade4)"
    if case == "doubs_sim":
        com, _ = jsdm.simulate_community(30, 27, num_lv=2, family="ordinal", n_covariates=0,
                                         seed=11, dispersion=CUTS6, intercept=-0.2,
                                         intercept_sd=1.2, loading_sd=1.0)
        return com.Y, "simulated, Doubs-sized"
    if case == "sim500x100":
        com, _ = jsdm.simulate_community(500, 100, num_lv=2, family="ordinal", n_covariates=0,
                                         seed=5, dispersion=(0.0, 0.8, 1.6, 2.4, 3.2),
                                         intercept=-0.6, intercept_sd=1.0, loading_sd=1.0)
        return com.Y, "simulated"
    raise SystemExit(f"unknown case {case!r}; cases: {', '.join(CASES)}")


def worker(args):
    import warnings

    import numpy as np

    import jsdm

    Y, source = load_case(args.case)
    A = Y.to_numpy()
    K = int(np.nanmax(A)) + 1
    used = np.stack([(A == k).any(axis=0) for k in range(K)], axis=1)
    cpu, wall, warns, fit = [], [], set(), None
    for _ in range(args.repeat):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            c0, t0 = time.process_time(), time.perf_counter()
            fit = jsdm.gllvm(Y, family="ordinal", num_lv=2, cutpoints=args.structure,
                             n_init=args.n_init, seed=1)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - t0)
        warns.update(f"{w.category.__name__}: {str(w.message)[:160]}" for w in rec)
    st = fit.state
    out = {"case": args.case, "structure": args.structure, "source": source,
           "n_sites": int(A.shape[0]), "n_species": int(A.shape[1]), "classes": K,
           "zeros": float((A == 0).mean()),
           "species_lacking_classes": int((~used).any(axis=1).sum()),
           "cpu_median_s": float(np.median(cpu)), "cpu_s": [round(c, 3) for c in cpu],
           "wall_median_s": float(np.median(wall)), "n_init": args.n_init,
           "elbo": float(fit.llf), "n_iter": int(fit.n_iter), "converged": bool(fit.converged),
           "scaled_grad": float(st.scaled_grad), "message": st.message, "df": int(fit.df),
           "aic": float(fit.aic), "warnings": sorted(warns)}
    print("BENCH-RESULT " + json.dumps(out))


def run_case(case, structure, args):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--case", case,
           "--structure", structure, "--repeat", str(args.repeat), "--n-init", str(args.n_init)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"case": case, "structure": structure, "status": f"timeout after {args.timeout} s"}
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("BENCH-RESULT "):
            return {**json.loads(line[len("BENCH-RESULT "):]), "status": "ok"}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"case": case, "structure": structure,
            "status": f"failed (exit {proc.returncode}): {' | '.join(tail)}"}


def machine():
    import numpy
    import scipy

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=ROOT).stdout.strip()
    except OSError:
        commit = None
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "load_average_start": list(os.getloadavg()), "python": platform.python_version(),
            "numpy": numpy.__version__, "scipy": scipy.__version__, "git_commit": commit}


def table(records):
    head = (f"{'case':<11} {'cut points':<10} {'size':>7} {'K':>2} {'zeros':>6} {'lack':>5} "
            f"{'CPU s':>7} {'wall s':>7} {'iter':>5} {'ELBO':>12} {'conv':>5} {'df':>5} "
            f"{'AIC':>10} {'target':>7}")
    lines = [head, "-" * len(head)]
    for r in records:
        if r.get("status") != "ok":
            lines.append(f"{r['case']:<11} {r['structure']:<10} {r['status']}")
            continue
        tgt = TARGETS_CPU_S.get(r["case"])
        lines.append(
            f"{r['case']:<11} {r['structure']:<10} {r['n_sites']:>3}x{r['n_species']:<3} "
            f"{r['classes']:>2} {r['zeros']:>6.2f} {r['species_lacking_classes']:>5} "
            f"{r['cpu_median_s']:>7.2f} {r['wall_median_s']:>7.2f} {r['n_iter']:>5} "
            f"{r['elbo']:>12.3f} {'yes' if r['converged'] else 'NO':>5} {r['df']:>5} "
            f"{r['aic']:>10.1f} {'' if tgt is None else f'<{tgt:g}':>7}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--structures", default=",".join(STRUCTURES))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--n-init", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--structure", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    info = machine()
    records = []
    for case in args.cases.split(","):
        for structure in args.structures.split(","):
            records.append(run_case(case, structure, args))
            print(table(records[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(records))
    print(f"\nCPU = median of {args.repeat} fits (time.process_time, all threads); n_init="
          f"{args.n_init}; load average at start {info['load_average_start']} on "
          f"{info['cpu_count']} cores (shared machine: timings vary). R gllvm 2.0.5 (issue 11): "
          + ", ".join(f"{k} {v} s CPU" for k, v in R_GLLVM_CPU_S.items())
          + " (doubs_sim: the real Doubs fish data).")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    out = {"benchmark": "ordinal GLLVM, num_lv=2, no covariates",
           "settings": {"repeat": args.repeat, "n_init": args.n_init, "seed": 1, "gtol": 1e-3},
           "machine": info, "load_average_end": list(os.getloadavg()),
           "targets_cpu_s": TARGETS_CPU_S, "r_gllvm_2_0_5_cpu_s": R_GLLVM_CPU_S,
           "results": records}
    RESULTS.write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
