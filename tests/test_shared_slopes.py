"""Community-level (shared) slopes on their own: a bare x is one slope for all species,
species:x stays species-specific, both in one model (the CommunitySlopes term without traits)."""
import warnings

import numpy as np
import pandas as pd
import pytest

import jsdm
from jsdm.model.formula import parse_formula


def _sim(n=80, m=6, seed=0):
    rng = np.random.default_rng(seed)
    x, z = rng.normal(size=n), rng.normal(size=n)
    eta = rng.normal(0.5, 0.5, m)[None] + 0.7 * x[:, None] + z[:, None] * rng.normal(0, 0.5, m)[None]
    Y = pd.DataFrame(rng.poisson(np.exp(eta)).astype(float), index=[f"s{i}" for i in range(n)],
                     columns=[f"sp{j}" for j in range(m)])
    X = pd.DataFrame({"x": x, "z": z}, index=Y.index)
    long = (Y.stack().rename("y").rename_axis(["site", "species"]).reset_index()
            .merge(X.rename_axis("site").reset_index()))
    return Y, X, long


def test_shared_and_species_slopes_parse_and_print():
    p = parse_formula("y ~ species + x + species:z")
    assert p.community is not None and p.community.columns == ("x",) and p.slopes == ("z",)
    assert "community slope on x" in str(p)
    q = parse_formula("y ~ species * x")          # same covariate both ways: absorbed
    assert q.community is None and q.absorbed == ("x",)


def test_shared_slope_poisson_equals_the_glm():
    """No latent variables: a Poisson GLM on the long table (species dummies, x, species:z), so
    the ELBO is its log-likelihood and the shared slope and its SE are statsmodels' (measured
    0.672031 vs 0.672031, SE 0.030086); the wide call is the same fit."""
    sm = pytest.importorskip("statsmodels.api")
    Y, X, long = _sim()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = jsdm.gllvm(long, formula="y ~ species + x + species:z", family="poisson", n_init=1)
        wide = jsdm.gllvm(Y, X, family="poisson", formula="~ z + x", fourth_corner="x", num_lv=0,
                          n_init=1)
    assert fit.converged
    D = pd.get_dummies(long.species).astype(float)
    Xd = pd.concat([D, long[["x"]], D.mul(long.z, axis=0).add_suffix(":z")], axis=1)
    g = sm.GLM(long.y, Xd, family=sm.families.Poisson()).fit()
    est = fit.params.xs("fixef", level="block")
    se = fit.bse.xs("fixef", level="block")
    assert abs(float(est.iloc[0]) - g.params["x"]) < 1e-4
    assert abs(float(se.iloc[0]) - g.bse["x"]) < 1e-4
    assert abs(fit.llf - g.llf) < 1e-5
    assert abs(fit.llf - wide.llf) < 1e-8
    new = pd.DataFrame({"x": [1.0], "z": [0.0]}, index=["new"])
    pn = fit.predict(new, type="link")
    assert np.allclose(pn.to_numpy()[0], fit.coef["Intercept"].to_numpy() + float(est.iloc[0]),
                       atol=1e-6)


def test_shared_slope_next_to_grouped_site_effects_and_latent_variables():
    Y, X, long = _sim(n=40, m=4, seed=2)
    long["plot"] = long["site"].str[1:].astype(int) // 5
    long["plot"] = "p" + long["plot"].astype(str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = jsdm.gllvm(long, formula="y ~ species + x + species:z + (1 | plot) + "
                         "rr(0 + species | site, d = 1)", family="poisson", n_init=1)
    kinds = [t.kind for t in fit.model_terms]
    assert "community_slopes" in kinds and "group" in kinds
    assert np.isfinite(fit.bse.xs("fixef", level="block")).all()
