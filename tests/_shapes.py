"""Communities shaped like the real data sets of issue 12, for tests, bench/ and docs/.

The spider (28 x 12), Barro Colorado (50 x 225) and lichen data are not
available offline, so they are simulated to the same shape and sparsity; the
aravo alpine plants (75 x 82, Choler 2005, via ade4) are real and read from
``../shared/data/aravo`` (or ``jsdm.datasets.load_aravo`` once it exists).

- :func:`spider_like`: 28 sites x 12 species of NB counts from one latent
  variable and two covariates; 8 of the 12 species are drawn with phi = 1e-8
  (Poisson: no over-dispersion), so their fitted NB dispersion goes to its lower bound, as
  11 of 12 did on the real spider data.
- :func:`bci_like`: 50 plots x 225 tree species, 2 latent variables, no
  covariates; 90 species (40%) are singletons (seen in one plot, count 1-2),
  most others rare or common NB counts.
- :func:`aravo_pa`: the real aravo presence/absence, Snow and Slope standardised.
- :func:`separated_pa`: a presence/absence community (60 x 15, one covariate)
  with one species perfectly separated by the covariate and one present at a
  single site; the likelihood has no finite optimum for either.

Every function is deterministic (fixed seeds).
"""
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import jsdm

ARAVO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "aravo"


def spider_like(seed=12):
    """(Community, fit options): 28 x 12 NB counts, 1 LV, 2 covariates, 8 Poisson species."""
    phi = np.r_[np.full(4, 0.8), np.full(8, 1e-8)]
    com, _ = jsdm.simulate_community(28, 12, num_lv=1, family="negative_binomial", n_covariates=2,
                                     seed=seed, intercept=1.0, intercept_sd=1.2, loading_sd=0.9,
                                     coef_sd=0.6, dispersion=phi)
    Y = com.Y.copy()
    Y.columns = [f"Sp{k + 1:02d}" for k in range(12)]
    return jsdm.Community(Y, com.X), dict(family="negative_binomial", num_lv=1,
                                          formula="~ x1 + x2")


def bci_like(seed=50, n_single=90, truth=False):
    """(Community, fit options[, truth]): 50 x 225 NB counts, 2 LVs, 40% singletons, no covariates.

    ``truth=True`` adds the SimulationTruth of the regular (non-singleton)
    species, relabelled to their names in the community.
    """
    n, m = 50, 225
    reg = m - n_single
    with warnings.catch_warnings():     # a few regular species come out empty: fixed below
        warnings.simplefilter("ignore", jsdm.DataWarning)
        com, tr = jsdm.simulate_community(n, reg, num_lv=2, family="negative_binomial",
                                          n_covariates=0, seed=seed, intercept=-0.5,
                                          intercept_sd=1.6, loading_sd=0.8, dispersion=0.4)
    rng = np.random.default_rng(seed + 1)
    Yr = com.Y.to_numpy().copy()
    # regular species must be seen in at least two plots (else they are singletons too)
    for j in np.flatnonzero((Yr > 0).sum(0) < 2):
        Yr[rng.choice(n, 2, replace=False), j] = 1.0
    Ys = np.zeros((n, n_single))
    Ys[rng.integers(0, n, n_single), np.arange(n_single)] = rng.choice([1.0, 1.0, 1.0, 2.0], n_single)
    perm = rng.permutation(m)
    Y = np.column_stack([Yr, Ys])[:, perm]
    cols = [f"T{k + 1:03d}" for k in range(m)]
    out = (jsdm.Community(pd.DataFrame(Y, index=com.sites, columns=cols)),
           dict(family="negative_binomial", num_lv=2))
    if not truth:
        return out
    where = np.argsort(perm)[:reg]            # column of each regular species in Y
    names = pd.Index([cols[k] for k in where])
    for attr in ("beta0", "dispersion"):
        setattr(tr, attr, getattr(tr, attr).set_axis(names))
    tr.theta = tr.theta.set_axis(names)
    tr.B = tr.B.set_axis(names)
    tr.eta = tr.eta.set_axis(names, axis=1)
    return (*out, tr)


def aravo_available():
    """Always true now: aravo is bundled (``jsdm.datasets.load_aravo``)."""
    return hasattr(jsdm.datasets, "load_aravo") or (ARAVO / "aravo_spe.csv").is_file()


def aravo_pa():
    """(Community, fit options): the real aravo data as presence/absence, Snow + Slope standardised."""
    load = getattr(jsdm.datasets, "load_aravo", None)
    if load is not None:
        com = load()
        Y, X = com.Y, com.X
    else:
        Y = pd.read_csv(ARAVO / "aravo_spe.csv", index_col=0)
        X = pd.read_csv(ARAVO / "aravo_env.csv", index_col=0)
    X = X[["Snow", "Slope"]].astype(float)
    X = (X - X.mean()) / X.std()
    Y = (Y > 0).astype(float)
    return jsdm.Community(Y, X), dict(family="binomial", num_lv=2, formula="~ Snow + Slope")


def separated_pa(seed=3, truth=False):
    """(Community, fit options[, truth]): 60 x 15 presence/absence, 2 LVs, x1; 'sep' is
    separated by x1 (present exactly where x1 is in its top 40%), 'single' present at one
    site. ``truth=True`` adds the SimulationTruth of the 13 regular species sp01..sp13."""
    com, tr = jsdm.simulate_community(60, 13, num_lv=2, family="binomial", n_covariates=1,
                                      seed=seed, loading_sd=1.0, coef_sd=0.8)
    Y, X = com.Y.copy(), com.X
    x = X["x1"].to_numpy()
    Y["sep"] = (x > np.quantile(x, 0.6)).astype(float)
    single = np.zeros(60)
    single[int(np.argmin(np.abs(x)))] = 1.0
    Y["single"] = single
    out = (jsdm.Community(Y, X), dict(family="binomial", num_lv=2, formula="~ x1"))
    return (*out, tr) if truth else out


SHAPES = {"spider_like": spider_like, "bci_like": bci_like, "aravo_pa": aravo_pa,
          "separated_pa": separated_pa}
