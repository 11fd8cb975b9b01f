"""Coverage of the residual-correlation intervals, by simulation.

    python bench/coverage_correlations.py [--reps 100] [--families poisson negative_binomial]
        [--n 200] [--m 12] [--boot-reps 0] [--n-boot 100]

For each replicate: draw a community from a GLLVM with known loadings
(``jsdm.simulate_community``, d = 2, one covariate, seeded), fit the same
model, and check whether each 95% interval covers the true correlation.
``--measure theta`` (the default here, as in the first study) checks
cor(Theta Theta'); ``--measure observation`` checks jsdm's default association
measure, cor(Theta Theta' + diag(sigma_j^2)) with each species' observation-level
variance at its true mean (docs/associations.md). Intervals compared:

- ``delta_angle``: jsdm's default: delta-method SE from ``fit.cov_params()``,
  Wald interval for the angle arccos(r) between the two species' loading vectors;
- ``delta_fisher``: the same SE, Wald interval on Fisher's z = atanh(r) scale;
- ``delta_none``: the same SE, Wald interval on the correlation scale (clipped);
- ``bootstrap`` (optional, ``--boot-reps`` replicates): parametric bootstrap
  percentile intervals with ``--n-boot`` refits each.

Prints a table (coverage overall and by |true correlation|, median width)
and writes bench/results/coverage_correlations.json and
docs/coverage_correlations.png.
"""
import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np

import jsdm
from jsdm.analysis import associations as A

ROOT = Path(__file__).resolve().parents[1]
BINS = [0.0, 0.3, 0.6, 0.8, 0.9, 1.0]


def true_correlation(theta, truth=None, X=None, family=None):
    """cor(Theta Theta') or, given the truth, the observation measure at the true parameters."""
    C = theta @ theta.T
    if truth is not None:
        fam = jsdm.get_family(family)
        eta = truth.beta0.to_numpy() + X @ truth.B.to_numpy().T
        mu = np.exp(eta + 0.5 * (theta ** 2).sum(1)).mean(0)
        s = None if truth.dispersion is None else fam.dispersion_param(truth.dispersion.to_numpy())
        C = C + np.diag(fam.observation_variance(mu, s))
    s = np.sqrt(np.diag(C))
    return C / np.outer(s, s)


def one_replicate(family, n, m, seed, n_boot=0, measure="theta"):
    """Records (method, |r_true|, covered, width, finite) for every species pair of one draw."""
    com, truth = jsdm.simulate_community(n, m, 2, family, 1, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = jsdm.gllvm(com, family=family, num_lv=2, seed=seed, n_init=1)
        obs = measure == "observation"
        R0 = true_correlation(truth.theta.loc[fit.species].to_numpy(), truth if obs else None,
                              com.X.to_numpy(), family)
        iu = np.triu_indices(m, 1)
        r0 = R0[iu]
        kind = "observation" if obs else False
        ci = A.residual_correlation_intervals(fit, alpha=0.05, add_family_variance=kind)
        est, se = ci.estimate.to_numpy()[iu], ci.se.to_numpy()[iu]
        out = {f"delta_{t}": A.wald_interval(est, se, 0.05, t) for t in ("angle", "fisher", "none")}
        if n_boot:
            b = A.residual_correlation_intervals(fit, alpha=0.05, method="bootstrap", n_boot=n_boot,
                                                 seed=seed, add_family_variance=kind)
            out["bootstrap"] = (b.lower.to_numpy()[iu], b.upper.to_numpy()[iu])
    recs = []
    for method, (lo, hi) in out.items():
        ok = np.isfinite(lo) & np.isfinite(hi)
        cov = (lo <= r0) & (r0 <= hi)
        recs.append(dict(method=method, abs_true=np.abs(r0), covered=cov, width=hi - lo, finite=ok,
                         converged=bool(fit.converged)))
    return recs


def summarise(recs):
    """Coverage overall and by |true r| bin, per method."""
    table = {}
    for method in sorted({r["method"] for r in recs}):
        rs = [r for r in recs if r["method"] == method]
        a = np.concatenate([r["abs_true"] for r in rs])
        c = np.concatenate([r["covered"] for r in rs])
        w = np.concatenate([r["width"] for r in rs])
        f = np.concatenate([r["finite"] for r in rs])
        row = {"pairs": int(f.sum()), "replicates": len(rs), "coverage": float(c[f].mean()),
               "median_width": float(np.median(w[f])), "finite_share": float(f.mean()),
               "converged_share": float(np.mean([r["converged"] for r in rs])), "by_abs_true": {}}
        for lo, hi in zip(BINS[:-1], BINS[1:]):
            sel = f & (a >= lo) & (a < hi if hi < 1 else a <= hi)
            row["by_abs_true"][f"{lo:.1f}-{hi:.1f}"] = {
                "pairs": int(sel.sum()), "coverage": float(c[sel].mean()) if sel.any() else None,
                "median_width": float(np.median(w[sel])) if sel.any() else None}
        table[method] = row
    return table


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def print_table(family, table):
    print(f"\n{family}: 95% intervals for residual correlations")
    bins = list(table[next(iter(table))]["by_abs_true"])
    print(f"{'method':<14}{'pairs':>7}{'coverage':>10}{'width':>8}" + "".join(f"{'|r| ' + b:>13}" for b in bins))
    for method, row in table.items():
        cells = "".join(f"{_fmt(v['coverage'], '.3f'):>13}" for v in row["by_abs_true"].values())
        print(f"{method:<14}{row['pairs']:>7}{row['coverage']:>10.3f}{row['median_width']:>8.3f}{cells}")


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = list(results)
    fig, axs = plt.subplots(1, len(fams), figsize=(5.2 * len(fams), 4.0), squeeze=False, sharey=True)
    mids = [(lo + hi) / 2 for lo, hi in zip(BINS[:-1], BINS[1:])]
    for ax, fam in zip(axs[0], fams):
        for method, row in results[fam]["table"].items():
            cov = [v["coverage"] for v in row["by_abs_true"].values()]
            ax.plot(mids, [np.nan if c is None else c for c in cov], "o-",
                    label=f"{method} (overall {row['coverage']:.3f})")
        ax.axhline(0.95, color="0.3", ls="--", lw=0.8)
        s = results[fam]["settings"]
        ax.set(title=f"{fam}: n={s['n']}, m={s['m']}, d=2, {s['reps']} reps", xlabel="|true correlation|",
               ylim=(0.5, 1.0))
        ax.legend(fontsize=8, loc="lower left")
    axs[0, 0].set_ylabel("coverage of 95% intervals")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--families", nargs="+", default=["poisson", "negative_binomial"])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--m", type=int, default=12)
    ap.add_argument("--boot-reps", type=int, default=0, help="replicates that also get bootstrap intervals")
    ap.add_argument("--n-boot", type=int, default=100)
    ap.add_argument("--measure", choices=["theta", "observation"], default="theta")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "coverage_correlations.json")
    ap.add_argument("--figure", type=Path, default=ROOT / "docs" / "coverage_correlations.png")
    args = ap.parse_args()
    results = {}
    for fam in args.families:
        t0, recs = time.perf_counter(), []
        failed = []
        for k in range(args.reps):
            try:
                recs += one_replicate(fam, args.n, args.m, seed=1000 + k,
                                      n_boot=args.n_boot if k < args.boot_reps else 0,
                                      measure=args.measure)
            except Exception as exc:  # an engine failure is recorded, not hidden
                failed.append({"seed": 1000 + k, "error": f"{type(exc).__name__}: {exc}"})
                print(f"  {fam} seed {1000 + k}: fit failed ({type(exc).__name__}: {exc})")
        table = summarise(recs)
        results[fam] = {"settings": {"n": args.n, "m": args.m, "d": 2, "n_covariates": 1, "reps": args.reps,
                                     "boot_reps": args.boot_reps, "n_boot": args.n_boot, "level": 0.95,
                                     "measure": args.measure,
                                     "seconds": round(time.perf_counter() - t0, 1)},
                        "failed_fits": failed, "table": table}
        print_table(fam, table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "jsdm": jsdm.__version__, "machine": platform.machine()}
    args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    plot(results, args.figure)
    print(f"\nwrote {args.json} and {args.figure}")


if __name__ == "__main__":
    main()
