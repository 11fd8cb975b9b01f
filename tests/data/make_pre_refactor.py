"""Record ELBOs, gradients and fits of the engine BEFORE the terms refactor (issue 14).

The terms architecture must reproduce today's models exactly (random row effects
excepted, whose bound may only rise). This script records, with the pre-refactor
engine, what the refactored one is tested against (``tests/test_terms_identity.py``):

A. the ELBO and its packed gradient at random parameter points, over families x
   num_lv 0..3 x row effect (none, fixed, random) x covariates (0 or 2) x missing
   cells x offset, on tiny problems (7 sites x 5 species);
B. complete fits (``jsdm.gllvm``, one start, seed 0) of small simulated communities
   and of the mite data: ELBO, iterations, convergence and, for some, the standard
   errors and the fitted natural parameters.

The problem data (Y with NaN, X, offset, trials) and the parameter points are stored
with the results, so the tests do not depend on simulation code staying the same.

It was first run at commit 5e42c47 (the pre-refactor head of branch issue-14). When
main's optimiser changed (issue 11: a full Newton phase; ordinal categories merged) the
reference was recorded again from main at 71ba003, the last main without the terms
refactor, which is what the files hold now:

    git archive 71ba003 jsdm | tar -x -C /tmp/jsdm_pre      # or run it in that checkout
    python tests/data/make_pre_refactor.py --src /tmp/jsdm_pre --commit 71ba003

It writes ``tests/data/pre_refactor.npz`` and ``tests/data/pre_refactor.json`` and only
uses the pre-refactor internals (``build_problem``, ``make_layout``, ``evaluate``).
"""
import argparse
import itertools
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

# (id, family, link, trials)
FAMILIES = [
    ("poisson", "poisson", None, None),
    ("nb", "negative_binomial", None, None),
    ("binomial-logit", "binomial", "logit", None),
    ("binomial-probit", "binomial", "probit", None),
    ("binomial-cloglog", "binomial", "cloglog", None),
    ("binomial-logit-trials4", "binomial", "logit", 4),
    ("gaussian", "gaussian", None, None),
    ("gamma", "gamma", None, None),
    ("tweedie", "tweedie", None, None),
    ("zip", "zip", None, None),
    ("beta", "beta", None, None),
    ("ordinal-probit", "ordinal", "probit", None),
    ("ordinal-logit", "ordinal", "logit", None),
]
PARAM_NAMES = ("beta0", "B", "theta", "a", "L", "s", "alpha", "log_sigma", "log_rho")


def _dispersion_s(fam, m, rng):
    if not fam.has_dispersion:
        return None
    if fam.name == "ordinal":                 # K = 4 categories: two free log gaps
        return np.log(np.full((m, 2), 0.8))
    disp = {"beta": 5.0, "zip": 0.3}.get(fam.name, 0.6)
    return fam.dispersion_param(np.full(m, disp))


def tiny_data(fam, trials, n=7, m=5, p=2, missing=0.2, offset=True, seed=0):
    """(Y with NaN, X, offset, trials) drawn from the family."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    eta = 0.2 + rng.normal(0.0, 0.7, (n, m))
    tr = None if trials is None else np.full((n, m), float(trials))
    Y = np.asarray(fam.sample(eta, _dispersion_s(fam, m, rng), tr, rng), dtype=float)
    if fam.name == "ordinal":                 # every category present for every species
        Y[:4] = np.arange(4)[:, None]
    if missing:
        W = rng.random((n, m)) > missing
        W[0, 0] = False
        W[:, 0] |= np.arange(n) >= 2          # keep the ordinal categories observed
        Y = np.where(W, Y, np.nan)
    off = rng.normal(0.0, 0.3, (n, m)) if offset else None
    return Y, X, off, tr


def point_cases(jsdm):
    """A: ELBO and packed gradient at a random point for every combination."""
    import pandas as pd
    from jsdm.families import get_family
    from jsdm.model.fit import make_layout
    from jsdm.model.objective import evaluate
    from jsdm.model.problem import build_problem

    out, arrays = [], {}
    grid = itertools.product(FAMILIES, range(4), (None, "fixed", "random"), (0, 2), (0.0, 0.2),
                             (False, True))
    for k, ((fid, fname, link, trials), d, row, p, miss, off) in enumerate(grid):
        fam = get_family(fname, link=link)
        Y, X, offset, tr = tiny_data(fam, trials, p=max(p, 1), missing=miss, offset=off,
                                     seed=k % 17)
        X = X[:, :p]
        Ydf = pd.DataFrame(Y, index=[f"s{i}" for i in range(Y.shape[0])],
                           columns=[f"sp{j}" for j in range(Y.shape[1])])
        Xdf = pd.DataFrame(X, index=Ydf.index, columns=[f"x{c}" for c in range(p)]) if p else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prob = build_problem(Ydf, Xdf, family=fam, num_lv=d, row_effect=row, offset=offset,
                                 trials=tr)
        layout = make_layout(prob)          # (the engine's own: held dispersion entries left out)
        x = np.random.default_rng(1000 + k).normal(0.0, 0.5, layout.size)
        P = layout.unpack(x)
        ev = evaluate(prob, P, grad=True)
        g = layout.pack_grad(ev.grad, P)
        cid = f"{fid}|d{d}|{row}|p{p}|miss{miss}|off{int(off)}"
        key = f"A{k}"
        arrays[f"{key}/Y"], arrays[f"{key}/x"], arrays[f"{key}/grad"] = Y, x, g
        if p:
            arrays[f"{key}/X"] = X
        if offset is not None:
            arrays[f"{key}/offset"] = offset
        if tr is not None:
            arrays[f"{key}/trials"] = tr
        for name in PARAM_NAMES:
            v = getattr(P, name)
            if v is not None:
                arrays[f"{key}/P_{name}"] = np.asarray(v, dtype=float)
        out.append({"key": key, "case": cid, "family": fname, "link": fam.link, "trials": trials,
                    "num_lv": d, "row_effect": row, "p": p, "missing": miss, "offset": off,
                    "value": ev.value})
    return out, arrays


FIT_CASES = [
    # (id, family, link, num_lv, row_effect, n_cov, missing, offset, trials)
    ("poisson-lv2", "poisson", None, 2, None, 2, 0.0, False, None),
    ("nb-lv0", "negative_binomial", None, 0, None, 2, 0.0, False, None),
    ("nb-lv1", "negative_binomial", None, 1, None, 2, 0.0, False, None),
    ("nb-lv2", "negative_binomial", None, 2, None, 2, 0.0, False, None),
    ("nb-lv3", "negative_binomial", None, 3, None, 1, 0.0, False, None),
    ("nb-lv2-missing", "negative_binomial", None, 2, None, 2, 0.1, False, None),
    ("nb-lv2-offset", "negative_binomial", None, 2, None, 2, 0.0, True, None),
    ("nb-lv2-fixedrow", "negative_binomial", None, 2, "fixed", 0, 0.0, False, None),
    ("nb-lv2-randomrow", "negative_binomial", None, 2, "random", 2, 0.0, False, None),
    ("nb-lv0-randomrow", "negative_binomial", None, 0, "random", 2, 0.0, False, None),
    ("probit-lv2", "binomial", "probit", 2, None, 2, 0.0, False, None),
    ("logit-trials3-lv1", "binomial", "logit", 1, None, 2, 0.1, False, 3),
    ("cloglog-lv2-fixedrow", "binomial", "cloglog", 2, "fixed", 0, 0.0, False, None),
    ("gaussian-lv2", "gaussian", None, 2, None, 2, 0.0, False, None),
    ("gaussian-lv1-randomrow", "gaussian", None, 1, "random", 1, 0.0, False, None),
    ("gamma-lv1", "gamma", None, 1, None, 2, 0.0, False, None),
    ("tweedie-lv2", "tweedie", None, 2, None, 1, 0.0, False, None),
    ("zip-lv2", "zip", None, 2, None, 2, 0.0, False, None),
    ("beta-lv1", "beta", None, 1, None, 2, 0.0, False, None),
    ("ordinal-probit-lv2", "ordinal", "probit", 2, None, 2, 0.0, False, None),
    ("ordinal-logit-lv1-missing", "ordinal", "logit", 1, None, 1, 0.1, False, None),
    ("poisson-lv2-randomrow-offset", "poisson", None, 2, "random", 2, 0.1, True, None),
]
SE_CASES = ("nb-lv2", "nb-lv2-fixedrow", "probit-lv2", "ordinal-probit-lv2", "gaussian-lv2",
            "nb-lv0")


def fit_cases(jsdm):
    """B: complete fits of simulated communities (40 sites x 10 species)."""
    out, arrays = [], {}
    for k, (fid, fname, link, d, row, p, miss, off, trials) in enumerate(FIT_CASES):
        kw = {}
        if fname == "ordinal":
            kw["dispersion"] = (0.0, 1.0, 2.0)
        com, _ = jsdm.simulate_community(40, 10, num_lv=2, family=fname, link=link,
                                         n_covariates=max(p, 1), seed=100 + k, trials=trials,
                                         **kw)
        Y = com.Y.to_numpy(dtype=float)
        rng = np.random.default_rng(200 + k)
        if miss:
            Y = np.where(rng.random(Y.shape) < miss, np.nan, Y)
            Y[:, :][np.isnan(Y).all(1)] = 0.0
        X = com.X.to_numpy()[:, :p]
        offset = rng.normal(0.0, 0.3, Y.shape) if off else None
        tr = None if trials is None else np.full(Y.shape, float(trials))
        res = _fit(jsdm, Y, X, fname, link, d, row, offset, tr, fid in SE_CASES or row == "random")
        key = f"B{k}"
        arrays[f"{key}/Y"] = Y
        if p:
            arrays[f"{key}/X"] = X
        if offset is not None:
            arrays[f"{key}/offset"] = offset
        if tr is not None:
            arrays[f"{key}/trials"] = tr
        arrays.update({f"{key}/{n}": v for n, v in res.pop("arrays").items()})
        out.append({"key": key, "case": fid, "family": fname, "link": link, "num_lv": d,
                    "row_effect": row, "p": p, "missing": miss, "offset": off, "trials": trials,
                    **res})
    return out, arrays


MITE_CASES = [
    # (id, family, num_lv, row_effect, covariates)
    ("mite-nb-lv2", "negative_binomial", 2, None, ()),
    ("mite-nb-lv2-X2", "negative_binomial", 2, None, ("SubsDens", "WatrCont")),
    ("mite-nb-lv2-randomrow", "negative_binomial", 2, "random", ()),
    ("mite-nb-lv1-randomrow-X2", "negative_binomial", 1, "random", ("SubsDens", "WatrCont")),
    ("mite-poisson-lv2-randomrow", "poisson", 2, "random", ()),
    ("mite-nb-lv2-fixedrow", "negative_binomial", 2, "fixed", ()),
]


def mite_cases(jsdm):
    com = jsdm.datasets.load_mite()
    Y = com.Y.to_numpy(dtype=float)
    out, arrays = [], {}
    for k, (fid, fname, d, row, covs) in enumerate(MITE_CASES):
        X = com.X[list(covs)].to_numpy(dtype=float) if covs else np.zeros((Y.shape[0], 0))
        X = (X - X.mean(0)) / X.std(0) if covs else X
        res = _fit(jsdm, Y, X, fname, None, d, row, None, None, True)
        key = f"C{k}"
        arrays[f"{key}/Y"] = Y
        if covs:
            arrays[f"{key}/X"] = X
        arrays.update({f"{key}/{n}": v for n, v in res.pop("arrays").items()})
        out.append({"key": key, "case": fid, "family": fname, "link": None, "num_lv": d,
                    "row_effect": row, "p": len(covs), "missing": 0.0, "offset": False,
                    "trials": None, **res})
    return out, arrays


def _fit(jsdm, Y, X, fname, link, d, row, offset, trials, with_se):
    import pandas as pd

    Ydf = pd.DataFrame(Y, index=[f"s{i}" for i in range(Y.shape[0])],
                       columns=[f"sp{j}" for j in range(Y.shape[1])])
    Xdf = pd.DataFrame(X, index=Ydf.index, columns=[f"x{c + 1}" for c in range(X.shape[1])]) \
        if X.shape[1] else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = jsdm.gllvm(Ydf, Xdf, family=fname, link=link, num_lv=d, row_effect=row,
                         offset=offset, trials=trials, n_init=1, seed=0, checks=False)
        arrays = {f"P_{n}": np.asarray(getattr(fit.state.params, n), dtype=float)
                  for n in PARAM_NAMES if getattr(fit.state.params, n) is not None}
        res = {"llf": fit.llf, "n_iter": int(fit.n_iter), "converged": bool(fit.converged),
               "scaled_grad": float(fit.state.scaled_grad), "df": int(fit.df)}
        if with_se and row != "random":
            se = fit.bse
            arrays["bse"] = se.to_numpy()
            res["bse_labels"] = ["/".join(map(str, lab)) for lab in se.index]
    return {**res, "arrays": arrays}


def pack(arrays):
    """One float vector per case (few zip entries: a small file) and {case: [(name, shape)]}."""
    cases = {}
    for name, arr in arrays.items():
        key, part = name.split("/", 1)
        cases.setdefault(key, []).append((part, np.asarray(arr, dtype=float)))
    packed = {k: np.concatenate([a.ravel() for _, a in v]) for k, v in cases.items()}
    parts = {k: [(p, list(a.shape)) for p, a in v] for k, v in cases.items()}
    return packed, parts


def unpack(npz, parts, key):
    """The arrays of one case as a dict (inverse of ``pack``)."""
    flat, out, at = npz[key], {}, 0
    for name, shape in parts[key]:
        size = int(np.prod(shape)) if shape else 1
        out[name] = flat[at:at + size].reshape(shape)
        at += size
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", help="folder holding the jsdm package to record (default: this checkout)")
    ap.add_argument("--out", default=str(HERE / "pre_refactor"))
    ap.add_argument("--commit", help="commit the --src folder was exported from (recorded)")
    args = ap.parse_args(argv)
    if args.src:
        sys.path.insert(0, args.src)
    import jsdm

    src = Path(jsdm.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "jsdm"],
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        commit, dirty = "?", ""
    points, arrays = point_cases(jsdm)
    fits, fa = fit_cases(jsdm)
    mites, ma = mite_cases(jsdm)
    arrays.update(fa)
    arrays.update(ma)
    commit = args.commit or commit
    packed, parts = pack(arrays)
    meta = {"jsdm_source": str(src), "commit": commit, "jsdm_dirty": bool(dirty),
            "numpy": np.__version__, "points": points, "fits": fits + mites, "parts": parts}
    np.savez_compressed(args.out + ".npz", **packed)
    Path(args.out + ".json").write_text(json.dumps(meta, separators=(",", ":")))
    print(f"{len(points)} points, {len(fits) + len(mites)} fits from jsdm at {commit} "
          f"({'dirty' if dirty else 'clean'}) -> {args.out}.npz/.json")


if __name__ == "__main__":
    main()
