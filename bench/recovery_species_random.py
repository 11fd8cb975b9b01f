"""Recovery and interval coverage for species random effects and the fourth corner.

Truth (drawn once): n sites x m species, two standardised site covariates x1, x2 and two
species traits t1, t2; species coefficients b_j = (intercept, slope x1, slope x2) ~
N(M_j gamma, Sigma) with Sigma an unstructured 3 x 3 covariance (sds 1.0, 0.6, 0.4,
correlations 0.3, -0.4, 0.2) and means gamma = (0.5, -0.3, 0.2) plus the fourth corner
x1:t1 = 0.4, x1:t2 = -0.25, x2:t1 = 0.15; Poisson responses. Every replicate draws fresh
species coefficients and responses (covariates and traits fixed), fits
``(1 + x1 + x2 | species)`` with the trait interactions in the slopes' means, and
records the estimates and 95% intervals of the sds, correlations, gamma and the fourth-
corner coefficients. Prints bias, RMSE and coverage (with its Monte Carlo standard error)
and writes ``bench/results/recovery_species_random.json``.

Usage (from the repository root; a few minutes with the defaults)::

    python bench/recovery_species_random.py
    python bench/recovery_species_random.py --reps 100 --sites 200 --species 40
"""
import argparse
import json
import platform
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

import jsdm

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "recovery_species_random.json"

SD = np.array([1.0, 0.6, 0.4])
COR = np.array([[1.0, 0.3, -0.4], [0.3, 1.0, 0.2], [-0.4, 0.2, 1.0]])
GAMMA = {"(Intercept)": 0.5, "x1": -0.3, "x2": 0.2, "x1:t1": 0.4, "x1:t2": -0.25, "x2:t1": 0.15}
FORMULA = "x1 + x2 + x1:t1 + x1:t2 + x2:t1 + (1 + x1 + x2 | species)"


def truth_rows():
    rows = {("sd", "(Intercept)"): SD[0], ("sd", "x1"): SD[1], ("sd", "x2"): SD[2],
            ("cor", "(Intercept)", "x1"): COR[0, 1], ("cor", "(Intercept)", "x2"): COR[0, 2],
            ("cor", "x1", "x2"): COR[1, 2]}
    rows.update({("fixef", k): v for k, v in GAMMA.items()})
    return rows


def draw(X, T, rng):
    m = T.shape[0]
    mean = np.column_stack([np.full(m, GAMMA["(Intercept)"]),
                            GAMMA["x1"] + GAMMA["x1:t1"] * T["t1"] + GAMMA["x1:t2"] * T["t2"],
                            GAMMA["x2"] + GAMMA["x2:t1"] * T["t1"]])
    cov = COR * np.outer(SD, SD)
    b = mean + rng.multivariate_normal(np.zeros(3), cov, size=m)
    eta = b[:, 0][None, :] + X.to_numpy() @ b[:, 1:].T
    Y = pd.DataFrame(rng.poisson(np.exp(eta)), index=X.index, columns=T.index)
    return jsdm.Community(Y, X, T)


def one(com, level):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = jsdm.gllvm(com, family="poisson", num_lv=0, formula="~ x1 + x2",
                         random_species=FORMULA, n_init=1)
        from jsdm.results.random_effects import varcorr_se
        vc = varcorr_se(fit, alpha=1 - level)
        ci = fit.conf_int(alpha=1 - level).xs("fixef", level="block").droplevel(0)
    out = {}
    for _, r in vc.iterrows():
        key = ("sd", r["var1"]) if pd.isna(r["var2"]) else ("cor", r["var1"], r["var2"])
        out[key] = (r["sdcor"], r["lower"], r["upper"])
    est = fit.params.xs("fixef", level="block").droplevel(0)
    for k in GAMMA:
        out[("fixef", k)] = (est[k], ci.loc[k, "lower"], ci.loc[k, "upper"])
    return out, fit.converged


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=60)
    ap.add_argument("--sites", type=int, default=200)
    ap.add_argument("--species", type=int, default=40)
    ap.add_argument("--level", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    X = pd.DataFrame(rng.standard_normal((args.sites, 2)), columns=["x1", "x2"],
                     index=[f"s{i}" for i in range(args.sites)])
    T = pd.DataFrame(rng.standard_normal((args.species, 2)), columns=["t1", "t2"],
                     index=[f"sp{j}" for j in range(args.species)])
    truth = truth_rows()
    rec = {k: [] for k in truth}
    conv, t0 = 0, time.process_time()
    for _ in range(args.reps):
        out, ok = one(draw(X, T, rng), args.level)
        conv += ok
        for k in truth:
            rec[k].append(out[k])
    cpu = time.process_time() - t0
    rows = []
    for k, v in truth.items():
        a = np.array(rec[k], dtype=float)
        cov = float(np.mean((a[:, 1] <= v) & (v <= a[:, 2])))
        rows.append({"parameter": " ".join(k), "truth": v, "mean": a[:, 0].mean(),
                     "bias": a[:, 0].mean() - v, "rmse": float(np.sqrt(((a[:, 0] - v) ** 2).mean())),
                     "coverage": cov, "mc_se": float(np.sqrt(cov * (1 - cov) / len(a)))})
    tab = pd.DataFrame(rows)
    print(f"{args.reps} replicates, {args.sites} sites x {args.species} species, Poisson; "
          f"{conv} converged; CPU {cpu:.1f} s (machine shared)")
    print(tab.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.platform(), "args": vars(args), "converged": conv,
        "cpu_seconds": cpu, "level": args.level, "rows": rows}, indent=1))
    return tab


if __name__ == "__main__":
    main()
