"""Cluster fit (issue 18): NB, 2 LVs, 2 covariates, data written to Parquet by the simulator,
fitted on a LocalCluster of 2 workers (1 thread each). Records per size n: wall time, the
iterations and evaluations (round trips), time and bytes per round trip, the workers'
peak memory, the ELBO and convergence.

    python bench/bench_cluster.py --sites 2000 5000 --species 200
    python bench/bench_cluster.py --sites 100000 --species 1000     # the issue's target

Writes bench/results/bench_cluster.json (appends one record per size).
"""
import argparse
import json
import os
import resource
import tempfile
import time
import warnings

import numpy as np


def _peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024      # bytes (Linux)


def write_parquet(n, m, folder, seed=1, files=None):
    import jsdm

    com, _ = jsdm.simulate_community(n, m, num_lv=2, family="nb", n_covariates=2, seed=seed)
    files = files or max(4, int(np.ceil(n * m / 5e6)))
    paths = []
    for k, rows in enumerate(np.array_split(np.arange(n), files)):
        Y = com.Y.iloc[rows]
        long = Y.stack().rename("count").reset_index()
        long.columns = ["site", "species", "count"]
        paths.append(os.path.join(folder, f"part{k:03d}.parquet"))
        long.to_parquet(paths[-1])
    return paths, com.X


def run(n, m, maxiter):
    import jsdm
    from distributed import Client, LocalCluster
    from jsdm.model.cluster_data import ClusterData

    import dask

    # the chunks' data and site parameters live in the worker processes, outside Dask's
    # managed memory: its spill/pause thresholds (60 / 80 % of the limit) would pause a
    # worker holding them for good; the limit itself (terminate at 95 %) stays
    dask.config.set({"distributed.worker.memory.target": False,
                     "distributed.worker.memory.spill": False,
                     "distributed.worker.memory.pause": False})
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        paths, X = write_parquet(n, m, folder)
        t_write = time.perf_counter() - t0
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None, memory_limit="6GiB") as lc, Client(lc) as c:
            t0 = time.perf_counter()
            data = ClusterData.from_parquet(paths, site="site", species="species",
                                            response="count", covariates=X, client=c)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = jsdm.gllvm(data, family="nb", num_lv=2, n_init=1, client=c,
                                 maxiter=maxiter, checks=False, verbose=True)
            wall = time.perf_counter() - t0
            peaks = c.run(_peak_rss)
        rounds = np.array(fit.cluster_info["rounds"])
        prods = np.array(fit.cluster_info.get("products") or [[np.nan, np.nan]])
    return {"n": n, "m": m, "cells": n * m, "files": len(paths), "write_s": round(t_write, 1),
            "wall_s": round(wall, 1), "iterations": fit.n_iter, "evaluations": len(rounds),
            "s_per_round": float(rounds[:, 0].mean()),
            "worker_cpu_s_per_round": float(rounds[:, 3].mean()),
            "bytes_to_workers_per_round": float(rounds[:, 1].mean()),
            "bytes_back_per_round": float(rounds[:, 2].mean()),
            "site_newton_per_round": float(rounds[:, 4].mean()),
            "schur_products": int(np.isfinite(prods[:, 0]).sum()),
            "s_per_product": float(np.nanmean(prods[:, 0])),
            "bytes_per_product": float(np.nanmean(prods[:, 1])),
            "worker_peak_rss_gib": [round(v / 2**30, 3) for v in peaks.values()],
            "elbo": fit.llf, "converged": fit.converged, "scaled_grad": fit.scaled_grad,
            "joint": _joint_record(fit.cluster_info.get("joint") or {})}


def _joint_record(j):
    """The joint Newton phase's counts: iterations, round trips, CG products, time and bytes
    per iteration."""
    if not j:
        return {}
    it = max(1, j["iterations"])
    sec = j.get("seconds") or [np.nan]
    return {"sweeps": j.get("sweeps", 0), "iterations": j["iterations"],
            "round_trips": j["rounds"],
            "cg_products": j["products"], "line_search_trials": j["line_search"],
            "converged_in_phase": j["converged"], "elapsed_s": round(j["elapsed"], 1),
            "s_per_iteration": [round(v, 2) for v in sec],
            "mean_s_per_iteration": float(np.mean(sec)),
            "bytes_to_workers_per_iteration": j.get("bytes_to", 0) / it,
            "bytes_back_per_iteration": j.get("bytes_back", 0) / it}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, nargs="+", default=[2000, 5000])
    ap.add_argument("--species", type=int, default=200)
    ap.add_argument("--maxiter", type=int, default=5000)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "bench_cluster.json"))
    ap.add_argument("--note", default="shared 2-core machine (other engineers' jobs running): "
                    "wall times are noisy")
    args = ap.parse_args()
    out = args.out
    old = json.load(open(out)) if os.path.exists(out) else []
    print(f"{'n':>8} {'m':>6} {'wall s':>8} {'iter':>5} {'evals':>6} {'s/round':>8} "
          f"{'KB out':>8} {'KB back':>8} {'peak GiB':>9} converged")
    for n in args.sites:
        r = run(n, args.species, args.maxiter)
        r["note"] = args.note
        old.append(r)
        print(json.dumps(r.get("joint")))
        print(f"{r['n']:>8} {r['m']:>6} {r['wall_s']:>8} {r['iterations']:>5} "
              f"{r['evaluations']:>6} {r['s_per_round']:>8.3f} "
              f"{r['bytes_to_workers_per_round'] / 1e3:>8.1f} {r['bytes_back_per_round'] / 1e3:>8.1f} "
              f"{max(r['worker_peak_rss_gib']):>9} {r['converged']}")
        with open(out, "w") as f:
            json.dump(old, f, indent=1)


if __name__ == "__main__":
    main()
