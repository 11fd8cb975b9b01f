"""Benchmark: time of ``fit.report()`` against the length of the labels (issue 13).

Before issue 13 the figures drew labels in full, and a report took minutes at
2,000-character labels (``jsdm fit`` hung over 600 s at 5,000). Figures now draw
labels shortened to ``jsdm.plotting._util.LABEL_WIDTH`` characters, so the time
should not depend on the label length. The same Poisson community (20 sites x 6
species, one covariate, 2 latent variables) is fitted once per length, with
site, species and covariate names padded to that length, and the report is
written ``--repeat`` times; the CPU time (``time.process_time``) of each report
is recorded. Prints a table and writes ``bench/results/report_labels.json``.

Usage (from the repository root)::

    python bench/bench_report_labels.py                       # lengths 10, 200, 1000, 2000, 5000
    python bench/bench_report_labels.py --lengths 10,5000 --repeat 5
"""
import argparse
import json
import platform
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

import jsdm

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "report_labels.json"


def community(length, seed=0):
    rng = np.random.default_rng(seed)
    pad = "x" * max(0, length - 6)
    Y = pd.DataFrame(rng.poisson(2, (20, 6)).astype(float),
                     index=[f"s{i:02d}{pad}" for i in range(20)],
                     columns=[f"sp{j}{pad}" for j in range(6)])
    X = pd.DataFrame({f"temp{pad}": rng.normal(size=20)}, index=Y.index)
    return jsdm.Community(Y, X)


def run(length, repeat):
    import matplotlib
    matplotlib.use("Agg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        fit = jsdm.gllvm(community(length), num_lv=2, n_init=1)
        times = []
        with tempfile.TemporaryDirectory() as d:
            for _ in range(repeat):
                t0 = time.process_time()
                fit.report(Path(d) / "r.html")
                times.append(time.process_time() - t0)
    return {"label_length": len(fit.species[0]), "report_cpu_s": times,
            "median_cpu_s": float(np.median(times))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="10,200,1000,2000,5000")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = [run(int(k), args.repeat) for k in args.lengths.split(",")]
    print(f"{'label length':>12}  {'report CPU s (median)':>22}  all")
    for r in rows:
        print(f"{r['label_length']:>12}  {r['median_cpu_s']:>22.2f}  "
              + ", ".join(f"{t:.2f}" for t in r["report_cpu_s"]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "note": "shared 2-core machine; CPU time of the report only",
        "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
