"""Do partial correlations recover a sparse precision matrix better than thresholded correlations?

Each replicate draws a sparse precision matrix Omega on ``--species`` species
(a chain plus a few random edges, partial correlations up to about 0.5; its
smallest eigenvalue is set to 0.15 so that indirect paths produce strong
marginal correlations), and link-scale residuals with correlation
R = cov2cor(Omega^-1) at ``--sites`` sites:

- gaussian: y_i ~ N(0, R);
- probit: y_ij = 1[e_ij + u_ij > 0], e_i ~ N(0, cR - I), u_ij ~ N(0, 1), so the latent
  normal has correlation R (its total covariance is cR; c = max(2, 1.1 / smallest
  eigenvalue of R) keeps cR - I positive definite).

A GLLVM with ``--num-lv`` latent variables is fitted, and species pairs are
ranked by |partial correlation| (``fit.partial_correlation(method="inverse")``)
and by |residual correlation| (``fit.residual_correlation()``, the same covariance).
Reported, against the true edges (Omega_jk != 0):

- AUC of each ranking (threshold-free);
- F1 of the top-E pairs of each ranking, E = the true number of edges;
- F1 of the graphical-lasso support (penalty by BIC and by EBIC) and of the
  correlation matrix thresholded to the same number of edges.

Prints a table and writes ``bench/results/partial_recovery.json``.

Usage (from the repository root; about 1 s per replicate)::

    python bench/partial_recovery.py
    python bench/partial_recovery.py --reps 50 --species 20 --num-lv 5
"""
import argparse
import time
import warnings

import numpy as np
import pandas as pd

import jsdm
from jsdm.results.crossval import _auc
from _common17 import write


def sparse_precision(m, rng, extra=0.03):
    A = np.zeros((m, m))
    A[np.arange(m - 1), np.arange(1, m)] = rng.choice([-1, 1], m - 1) * rng.uniform(0.6, 1.0, m - 1)
    iu = np.triu_indices(m, 2)
    pick = rng.random(len(iu[0])) < extra
    A[iu[0][pick], iu[1][pick]] = rng.choice([-1, 1], pick.sum()) * rng.uniform(0.6, 1.0, pick.sum())
    A = A + A.T
    return A + np.eye(m) * (0.15 - np.linalg.eigvalsh(A).min())


def simulate(family, m, n, rng):
    Om = sparse_precision(m, rng)
    S = np.linalg.inv(Om)
    R = S / np.sqrt(np.outer(np.diag(S), np.diag(S)))
    if family == "gaussian":
        Y = rng.multivariate_normal(np.zeros(m), R, size=n)
    else:
        c = max(2.0, 1.1 / np.linalg.eigvalsh(R).min())
        E = rng.multivariate_normal(np.zeros(m), c * R - np.eye(m), size=n)
        Y = (E + rng.standard_normal((n, m)) > 0).astype(float)
    sp = [f"sp{j:02d}" for j in range(m)]
    return Om, jsdm.Community(pd.DataFrame(Y, columns=sp, index=[f"s{i:03d}" for i in range(n)]))


def f1(sel, truth):
    tp = int((sel & truth).sum())
    return 2.0 * tp / max(int(sel.sum()) + int(truth.sum()), 1)


def top(score, k):
    sel = np.zeros(score.size, dtype=bool)
    if k > 0:
        sel[np.argsort(-score, kind="stable")[:k]] = True
    return sel


def one(family, rep, args):
    rng = np.random.default_rng(10_000 * (family == "probit") + rep)
    Om, com = simulate(family, args.species, args.sites, rng)
    fam = "gaussian" if family == "gaussian" else jsdm.get_family("binomial", link="probit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        fit = jsdm.gllvm(com, family=fam, num_lv=args.num_lv, seed=1, n_init=1)
    iu = np.triu_indices(args.species, 1)
    truth = Om[iu] != 0
    pc = np.abs(fit.partial_correlation(method="inverse").to_numpy()[iu])
    cor = np.abs(fit.residual_correlation().to_numpy()[iu])
    row = {"family": family, "rep": rep, "true_edges": int(truth.sum()),
           "converged": bool(fit.converged),
           "auc_partial": _auc(truth.astype(float), pc), "auc_correlation": _auc(truth.astype(float), cor),
           "f1_partial_topE": f1(top(pc, truth.sum()), truth),
           "f1_correlation_topE": f1(top(cor, truth.sum()), truth)}
    for sel in ("bic", "ebic"):
        gl = fit.partial_correlation(select=sel)
        support = gl.to_numpy()[iu] != 0
        row[f"edges_glasso_{sel}"] = int(support.sum())
        row[f"f1_glasso_{sel}"] = f1(support, truth)
        row[f"f1_correlation_same_edges_{sel}"] = f1(top(cor, support.sum()), truth)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=25)
    ap.add_argument("--species", type=int, default=15)
    ap.add_argument("--sites", type=int, default=400)
    ap.add_argument("--num-lv", type=int, default=4)
    ap.add_argument("--families", nargs="+", default=["gaussian", "probit"])
    args = ap.parse_args(argv)
    t0, c0 = time.time(), time.process_time()
    rows = [one(fam, rep, args) for fam in args.families for rep in range(args.reps)]
    df = pd.DataFrame(rows)
    cols = ["auc_partial", "auc_correlation", "f1_partial_topE", "f1_correlation_topE",
            "f1_glasso_bic", "f1_correlation_same_edges_bic", "edges_glasso_bic",
            "f1_glasso_ebic", "f1_correlation_same_edges_ebic", "edges_glasso_ebic", "true_edges"]
    summary = df.groupby("family")[cols].mean()
    wins = df.groupby("family").apply(lambda g: float((g["auc_partial"] > g["auc_correlation"]).mean()),
                                      include_groups=False)
    summary["share_auc_partial_better"] = wins
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(summary.T.round(3))
    elapsed = {"wall_s": time.time() - t0, "cpu_s": time.process_time() - c0}
    path = write("partial_recovery.json", {"settings": vars(args),
                                           "summary": summary.T.round(4).to_dict(),
                                           "replicates": rows, "elapsed": elapsed})
    print(f"wrote {path} ({elapsed['wall_s']:.0f} s wall)")


if __name__ == "__main__":
    main()
