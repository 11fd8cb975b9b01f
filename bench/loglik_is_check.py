"""Is the importance-sampling log-likelihood right? Exact cases, brute-force quadrature, the ELBO.

1. Exact cases: a Gaussian GLLVM (marginal likelihood: multivariate normal,
   scipy) and Poisson without latent variables (sum of Poisson log-pmfs).
   ``fit.loglik_is`` with ``--seeds`` seeds: mean and sd of the z-scores
   (estimate - exact) / reported SE; unbiased with an honest SE gives mean ~0, sd ~1.
2. Spider-sized subsets of the mite data (``--subsets`` random draws of 28 sites
   x 12 species, empty species/sites avoided), negative binomial, Poisson and
   presence/absence (logit), 1 and 2 latent variables: the IS estimate against
   a brute-force trapezoid grid over z (independent code: family.loglik,
   coefficients and loadings only), as z-scores, and the gap to the ELBO.

Prints tables and writes ``bench/results/loglik_is_check.json``.

Usage (from the repository root; a few minutes)::

    python bench/loglik_is_check.py
"""
import argparse
import time
import warnings

import numpy as np
import pandas as pd
from scipy import special, stats

import jsdm
from _common17 import write


def fit_quiet(*a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        return jsdm.gllvm(*a, **k)


def brute_force(fit, n_grid, half=9.0):
    """log p(y_i) per site by a trapezoid grid in the eigen-directions of q(z_i), +- half sd."""
    fam, d = fit.family, fit.num_lv
    th = fit.loadings.to_numpy()
    F = fit.coef["Intercept"].to_numpy() + fit.problem.X @ fit.coef[list(fit.terms)].to_numpy().T
    s = None if fit.dispersion is None else fam.dispersion_param(fit.dispersion.to_numpy())
    Y = np.where(fit.problem.W > 0, fit.problem.Y, 0.0)
    g = np.linspace(-half, half, n_grid)
    tw = np.full(n_grid, g[1] - g[0])
    tw[[0, -1]] *= 0.5
    LW = sum(np.meshgrid(*([np.log(tw)] * d), indexing="ij")).ravel()
    G = np.stack(np.meshgrid(*([g] * d), indexing="ij"), -1).reshape(-1, d)
    out = []
    for i in range(fit.problem.n):
        ev, V = np.linalg.eigh(fit.lv_cov[i])
        Z = fit.lv.to_numpy()[i] + G @ (V * np.sqrt(ev)).T
        eta = F[i] + Z @ th.T
        ll = fam.loglik(np.broadcast_to(Y[i], eta.shape), eta, s).sum(1)
        ll += -0.5 * (Z ** 2).sum(1) - 0.5 * d * np.log(2 * np.pi)
        out.append(special.logsumexp(ll + LW) + 0.5 * np.log(ev).sum())
    return np.array(out)


def exact_cases(args):
    rows = []
    com, _ = jsdm.simulate_community(60, 6, num_lv=2, family="gaussian", n_covariates=1, seed=1)
    fit = fit_quiet(com, family="gaussian", num_lv=2, seed=1)
    F = fit.coef["Intercept"].to_numpy() + fit.problem.X @ fit.coef[list(fit.terms)].to_numpy().T
    th = fit.loadings.to_numpy()
    cov = th @ th.T + np.diag(fit.dispersion.to_numpy() ** 2)
    exact = sum(stats.multivariate_normal(F[i], cov).logpdf(fit.problem.Y[i]) for i in range(60))
    for s in range(args.seeds):
        e = fit.loglik_is(n_draws=args.draws_exact, seed=s)
        rows.append({"case": "gaussian 60x6, 2 LVs", "seed": s, "estimate": e.value, "exact": exact,
                     "se": e.se, "z": (e.value - exact) / e.se, "elbo": fit.llf})
    com, _ = jsdm.simulate_community(60, 6, num_lv=0, family="poisson", n_covariates=1, seed=2)
    fit = fit_quiet(com, family="poisson", num_lv=0, seed=1)
    exact = stats.poisson.logpmf(fit.problem.Y, fit.fitted().to_numpy()).sum()
    e = fit.loglik_is(n_draws=10, seed=0)
    rows.append({"case": "poisson 60x6, 0 LVs", "seed": 0, "estimate": e.value, "exact": exact,
                 "se": e.se, "z": np.nan, "elbo": fit.llf})
    return pd.DataFrame(rows)


def subsets(args):
    mite = jsdm.datasets.load_mite()
    X = mite.X[["SubsDens", "WatrCont"]]
    X = (X - X.mean()) / X.std()
    rng = np.random.default_rng(17)
    rows = []
    for b in range(args.subsets):
        while True:
            sites = np.sort(rng.choice(70, 28, replace=False))
            Ysub = mite.Y.iloc[sites]
            cand = Ysub.columns[(Ysub > 0).sum() >= 4]
            sp = rng.choice(cand, 12, replace=False)
            if ((Ysub[sp] > 0).sum(axis=1) > 0).all():
                break
        for family in ("nb", "poisson", "binomial"):
            Y = Ysub[sp] if family != "binomial" else (Ysub[sp] > 0).astype(float)
            com = jsdm.Community(Y, X.iloc[sites])
            for d in (1, 2):
                fit = fit_quiet(com, family=family, num_lv=d, seed=1, n_init=1)
                brute = brute_force(fit, 2001 if d == 1 else 201)
                e = fit.loglik_is(n_draws=args.draws, seed=b)
                rows.append({"subset": b, "family": family, "num_lv": d, "elbo": fit.llf,
                             "loglik_is": e.value, "se": e.se, "brute_force": brute.sum(),
                             "z": (e.value - brute.sum()) / e.se, "gap": brute.sum() - fit.llf,
                             "max_site_z": float(np.max(np.abs(e.sites["loglik"] - brute)
                                                        / e.sites["se"])),
                             "min_ess": e.min_ess, "converged": fit.converged})
        print(f"subset {b}: done", flush=True)
    return pd.DataFrame(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--draws-exact", type=int, default=300)
    ap.add_argument("--subsets", type=int, default=5)
    ap.add_argument("--draws", type=int, default=2000)
    args = ap.parse_args(argv)
    t0 = time.time()
    ex = exact_cases(args)
    g = ex[ex["case"].str.startswith("gaussian")]
    print(f"Gaussian (exact marginal likelihood), {len(g)} seeds: z mean {g['z'].mean():.3f} "
          f"(se {g['z'].std() / np.sqrt(len(g)):.3f}), z sd {g['z'].std():.3f}, "
          f"|ELBO - exact| {abs(g['elbo'].iloc[0] - g['exact'].iloc[0]):.2e}")
    p = ex[ex["case"].str.startswith("poisson")].iloc[0]
    print(f"Poisson, no LVs: estimate - exact {p['estimate'] - p['exact']:.2e}, se {p['se']}")
    sub = subsets(args)
    summary = sub.groupby(["family", "num_lv"]).agg(
        mean_z=("z", "mean"), max_abs_z=("z", lambda z: np.abs(z).max()),
        max_site_z=("max_site_z", "max"), mean_gap=("gap", "mean"), mean_se=("se", "mean"),
        min_ess=("min_ess", "min"))
    with pd.option_context("display.width", 160):
        print(summary.round(3))
    path = write("loglik_is_check.json", {
        "settings": vars(args),
        "gaussian": {"z_mean": g["z"].mean(), "z_sd": g["z"].std(), "n": len(g),
                     "elbo_minus_exact": float(g["elbo"].iloc[0] - g["exact"].iloc[0])},
        "poisson_no_lv": {"estimate_minus_exact": float(p["estimate"] - p["exact"]),
                          "se": float(p["se"])},
        "subsets_summary": summary.reset_index().to_dict(orient="records"),
        "subsets": sub.to_dict(orient="records"), "elapsed": {"wall_s": time.time() - t0}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
