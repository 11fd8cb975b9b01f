"""Fits and helpers shared by the association, ordination and plotting tests."""
import dataclasses
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import jsdm
from jsdm.results.fitted import GLLVMResults


def reference_dir():
    """The R reference fits: $JSDM_REFERENCE or the repository's sibling ``shared/reference``."""
    env = os.environ.get("JSDM_REFERENCE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def load_reference(name):
    """The ``fit`` record of one reference JSON, or None when the file is absent."""
    path = reference_dir() / f"{name}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())["fit"]


def mite_x2():
    """Mite community and SubsDens, WatrCont standardised as R's scale() does (ddof=1)."""
    com = jsdm.datasets.load_mite()
    X = com.X[["SubsDens", "WatrCont"]].astype(float)
    return com, (X - X.mean()) / X.std(ddof=1)


def quiet_fit(*args, **kwargs):
    """jsdm.gllvm with jsdm's warnings silenced (tests here check the analysis layer)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        return jsdm.gllvm(*args, **kwargs)


def fit_mite_poisson():
    com, X = mite_x2()
    return quiet_fit(com.Y, X, family="poisson", num_lv=2, seed=1)


def cor_from(theta):
    """cov2cor(theta theta') as an ndarray."""
    th = np.asarray(theta, dtype=float)
    C = th @ th.T
    s = np.sqrt(np.diag(C))
    return C / np.outer(s, s)


def random_rotation(d, seed, reflect=False):
    """A random d x d orthogonal matrix (a reflection when ``reflect``)."""
    Q, R = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    Q = Q * np.sign(np.diag(R))
    if (np.linalg.det(Q) < 0) != reflect:
        Q[:, 0] = -Q[:, 0]
    return Q


def rotated_fit(fit, Q):
    """A copy of ``fit`` whose loadings and site scores are rotated by Q (A_i -> Q' A_i Q)."""
    P = fit.state.params.copy()
    P.theta = P.theta @ Q
    P.a = P.a @ Q
    P.L = np.swapaxes(Q, 0, 1)[None] @ P.L
    state = dataclasses.replace(fit.state, params=P)
    return GLLVMResults(fit.problem, state, fit.settings)


def upper(M):
    """Strict upper-triangle entries of a square array or DataFrame."""
    M = np.asarray(M, dtype=float)
    return M[np.triu_indices_from(M, 1)]


__all__ = ["reference_dir", "load_reference", "mite_x2", "quiet_fit", "fit_mite_poisson", "cor_from",
           "random_rotation", "rotated_fit", "upper", "pd"]


def mite_long():
    """The mite data in long form, as ``../shared/data/mite/mite_long.csv`` (built by the R
    script ``wave2_mite_aravo.R``), from the bundled copy (``jsdm.datasets.load_mite``).

    One row per site x species (site varies fastest): site, species, count, SubsDens and
    WatrCont standardised (mean 0, sd with n - 1, R's ``scale()``), Substrate, Shrub, Topo
    (as text), pa = (count > 0), logy1 = log(count + 1). ``tests/test_group_effects.py``
    checks it equals the shared CSV when that is there.
    """
    import numpy as np
    import pandas as pd

    com = jsdm.datasets.load_mite()
    X = com.X
    rows = []
    for sp in com.Y.columns:
        part = pd.DataFrame({"site": com.Y.index.astype(str), "species": sp,
                             "count": com.Y[sp].to_numpy()})
        for c in ("SubsDens", "WatrCont"):
            x = X[c].astype(float)
            part[c] = ((x - x.mean()) / x.std(ddof=1)).to_numpy()
        for c in ("Substrate", "Shrub", "Topo"):
            part[c] = X[c].astype(str).to_numpy()
        rows.append(part)
    long = pd.concat(rows, ignore_index=True)
    long["pa"] = (long["count"] > 0).astype(int)
    long["logy1"] = np.log1p(long["count"].astype(float))
    return long
