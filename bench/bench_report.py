"""Benchmark: time to write the HTML report, per section (issue 12: < 15 s for 50 x 225).

Each case fits one community (as the command line does: ``prior_sd=5`` unless
``--no-penalty``), then writes the report ``--repeat`` times and records, per
section, the wall and CPU (process) seconds of the fastest repeat, plus the
whole report. Cases: the shapes of issue 12 (``bci_like`` 50 x 225 NB 2 LVs
with 40% singletons, ``spider_like`` 28 x 12 NB 1 LV, ``aravo_pa`` real
presence/absence 75 x 82 when ../shared/data/aravo is there) and the mite
data (70 x 35, NB, 2 LVs, two covariates).

The first section ("what to be careful about") pays for what the others
share: the Hessian (standard errors), fit.diagnose() and the association
table; later sections reuse them.

Usage (from the repository root)::

    python bench/bench_report.py                 # all cases, 3 repeats
    python bench/bench_report.py --cases bci_like --repeat 5
    python bench/bench_report.py --no-penalty    # maximum-likelihood fits

Writes bench/results/bench_report.json (machine: cores and load average; the
machine may be shared, so CPU seconds are the steadier number).
"""
import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
RESULTS = ROOT / "bench" / "results" / "bench_report.json"
TARGET_S = 15.0


def mite():
    import jsdm

    com = jsdm.datasets.load_mite()
    X = com.X[["SubsDens", "WatrCont"]].astype(float)
    com = jsdm.Community(com.Y, (X - X.mean()) / X.std())
    return com, dict(family="negative_binomial", num_lv=2, formula="~ SubsDens + WatrCont")


def case(name):
    import _shapes

    return mite() if name == "mite" else _shapes.SHAPES[name]()


def run(name, repeat, prior_sd):
    import matplotlib

    matplotlib.use("Agg")
    import jsdm
    from jsdm.report import write_report

    com, kw = case(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0, c0 = time.perf_counter(), time.process_time()
        fit = jsdm.gllvm(com, seed=1, prior_sd=prior_sd, **kw)
        fit_wall, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
        best = None
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(repeat):
                clone = jsdm.load(fit.save(Path(tmp) / "f.jsdm"))    # nothing cached between repeats
                cpu = {}
                last = [time.process_time()]

                def progress(line):
                    now = time.process_time()
                    cpu[line.split(": ", 1)[1].rsplit(" (", 1)[0]] = now - last[0]
                    last[0] = now

                t0, c0 = time.perf_counter(), time.process_time()
                write_report(clone, Path(tmp) / "r.html", progress=progress)
                rec = dict(wall=time.perf_counter() - t0, cpu=time.process_time() - c0,
                           sections_wall=dict(write_report.timings), sections_cpu=cpu,
                           html_mb=(Path(tmp) / "r.html").stat().st_size / 2 ** 20)
                if best is None or rec["wall"] < best["wall"]:
                    best = rec
    return dict(case=name, sites=com.n_sites, species=com.n_species, family=kw["family"],
                num_lv=kw["num_lv"], prior_sd=prior_sd, fit_wall=fit_wall, fit_cpu=fit_cpu,
                converged=bool(fit.converged), report_wall=best["wall"], report_cpu=best["cpu"],
                html_mb=best["html_mb"], sections_wall=best["sections_wall"],
                sections_cpu=best["sections_cpu"], repeats=repeat)


def main(argv=None):
    import _shapes

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="bci_like,spider_like,aravo_pa,mite")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-penalty", action="store_true")
    args = ap.parse_args(argv)
    names = [c for c in args.cases.split(",") if c != "aravo_pa" or _shapes.aravo_available()]
    prior_sd = None if args.no_penalty else 5.0
    rows = []
    for name in names:
        r = run(name, args.repeat, prior_sd)
        rows.append(r)
        print(f"{name:12s} {r['sites']:4d} x {r['species']:4d}  fit {r['fit_wall']:5.1f} s  "
              f"report {r['report_wall']:5.1f} s wall / {r['report_cpu']:5.1f} s CPU  "
              f"({r['html_mb']:.1f} MB)  target {TARGET_S:g} s: "
              f"{'ok' if r['report_wall'] < TARGET_S else 'MISSED'}", flush=True)
        print("    " + ", ".join(f"{k} {v:.2f}" for k, v in r["sections_wall"].items()))
    res = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": {"cores": os.cpu_count(), "load_average": os.getloadavg(),
                       "python": platform.python_version(), "note": "shared machine"},
           "target_s": TARGET_S, "results": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
