"""CPU time of small fits at default settings (the per-fit fixed costs and the extra starts).

Cases: a 28 x 12 negative binomial community with 2 latent variables (the size of the
hunting-spider data; simulated, 5 seeds) and a 28 x 12 probit one (2 seeds), each fitted
with ``jsdm.gllvm(Y, family=..., num_lv=2)`` at the defaults (``n_init=3``) and with
``n_init=1``; plus mite (70 x 35, NB, 2 LVs). CPU time (``time.process_time``) of the
fit call, median of ``--repeat`` runs, with the ELBO, the starts' ELBOs and which starts
joined an earlier start's optimum (``fit.state.start_joined``).

Target (issue 14): a 28 x 12 NB 2-LV fit at default settings under 0.3 s CPU.

Usage: ``python bench/bench_small.py [--repeat 5]``; writes bench/results/bench_small.json.
"""
import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

import jsdm

OUT = Path(__file__).resolve().parent / "results" / "bench_small.json"
TARGET = 0.3


def cases():
    for seed in range(1, 6):
        com, _ = jsdm.simulate_community(28, 12, num_lv=2, family="negative_binomial",
                                         n_covariates=0, seed=seed)
        yield f"nb28x12 seed {seed}", com, dict(family="negative_binomial")
    for seed in range(1, 3):
        com, _ = jsdm.simulate_community(28, 12, num_lv=2, family="binomial", n_covariates=0,
                                         seed=seed, link="probit")
        yield f"probit28x12 seed {seed}", com, dict(family="binomial", link="probit")
    yield "mite NB", jsdm.datasets.load_mite().Y, dict(family="negative_binomial")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    rows = []
    print(f"{'case':22s} {'n_init':>6s} {'CPU s':>7s} {'ELBO':>12s}  starts (joined)")
    for name, data, kw in cases():
        for n_init in (1, 3):
            cpu = []
            for _ in range(args.repeat):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t0 = time.process_time()
                    fit = jsdm.gllvm(data, num_lv=2, n_init=n_init, **kw)
                    cpu.append(time.process_time() - t0)
            st = fit.state
            row = dict(case=name, n_init=n_init, cpu_median=statistics.median(cpu), cpu=cpu,
                       llf=float(fit.llf), converged=bool(fit.converged),
                       start_values=[float(v) for v in st.start_values],
                       start_joined=list(st.start_joined))
            rows.append(row)
            print(f"{name:22s} {n_init:6d} {row['cpu_median']:7.3f} {fit.llf:12.4f}  "
                  f"{np.round(st.start_values, 3).tolist()} {st.start_joined}")
    nb3 = [r["cpu_median"] for r in rows if r["case"].startswith("nb28") and r["n_init"] == 3]
    under = sum(t < TARGET for t in nb3)
    verdict = "met" if statistics.median(nb3) < TARGET else "NOT met"
    print(f"28 x 12 NB 2 LVs, default settings: median CPU {statistics.median(nb3):.3f} s over "
          f"{len(nb3)} communities (target {TARGET} s: {verdict} by the median; {under} of "
          f"{len(nb3)} under it, worst {max(nb3):.3f} s)")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(dict(
        meta=dict(date=time.strftime("%Y-%m-%dT%H:%M:%S"), repeat=args.repeat,
                  python=platform.python_version(), target_cpu_s=TARGET,
                  note="CPU time of the fit call; shared 2-core machine"),
        results=rows), indent=1))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
