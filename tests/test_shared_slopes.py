"""Community-level (shared) slopes: a bare x is one slope for all species; species:x stays
species-specific; both in one model (jsdm/model/terms/shared_slopes.py)."""
import warnings

import numpy as np
import pandas as pd
import pytest

import jsdm
from jsdm.exceptions import JSDMError
from jsdm.model.formula import parse_formula
from jsdm.model.params import Layout
from jsdm.model.problem import build_problem


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
    assert p.shared == ("x",) and p.slopes == ("z",)
    text = str(p)
    assert "slope shared by all species on site covariate x" in text
    assert "shared_formula='~ x'" in text
    # the same covariate both ways: the shared one is absorbed (species*x)
    q = parse_formula("y ~ species * x")
    assert q.shared == () and q.absorbed == ("x",)


def test_shared_slope_poisson_equals_the_glm():
    """No latent variables: the model is a Poisson GLM on the long table (species dummies, x,
    species:z), so the ELBO is its log-likelihood and gamma, its SE are statsmodels' (measured
    0.672027 vs 0.672031, SE 0.030085 vs 0.030086); the wide call is the same fit."""
    sm = pytest.importorskip("statsmodels.api")
    Y, X, long = _sim()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = jsdm.gllvm(long, formula="y ~ species + x + species:z", family="poisson", n_init=1)
        wide = jsdm.gllvm(Y, X, family="poisson", formula="~ z", shared_formula="~ x", num_lv=0,
                          n_init=1)
    assert fit.converged
    D = pd.get_dummies(long.species).astype(float)
    Xd = pd.concat([D, long[["x"]], D.mul(long.z, axis=0).add_suffix(":z")], axis=1)
    g = sm.GLM(long.y, Xd, family=sm.families.Poisson()).fit()
    gamma = fit.params[("shared_coef", "(all species)", "x")]
    assert abs(gamma - g.params["x"]) < 1e-4
    assert abs(fit.bse[("shared_coef", "(all species)", "x")] - g.bse["x"]) < 1e-4
    assert abs(fit.llf - g.llf) < 1e-5
    assert abs(fit.llf - wide.llf) < 1e-8
    new = pd.DataFrame({"x": [1.0], "z": [0.0]}, index=["new"])
    pn = fit.predict(new, type="link")
    assert np.allclose(pn.to_numpy()[0], fit.coef["Intercept"].to_numpy() + gamma)
    assert "shared covariates" in fit.variance_partition().columns


def test_shared_slope_gradient_with_groups_and_latent_variables():
    from test_terms import _slot_gradient_check

    rng = np.random.default_rng(0)
    n, m = 12, 4
    Y = pd.DataFrame(rng.poisson(2.0, (n, m)).astype(float),
                     index=[f"s{i}" for i in range(n)], columns=[f"sp{j}" for j in range(m)])
    X = pd.DataFrame({"x": rng.normal(size=n), "w": rng.normal(size=n),
                      "a": list("aabbccddeeff")}, index=Y.index)
    prob = build_problem(Y, X, family="negative_binomial", num_lv=1, formula="~ x",
                         shared_formula="~ w", site_effects="a")
    layout = Layout(prob.predictor)
    x = np.random.default_rng(5).normal(0.0, 0.4, layout.size)
    assert _slot_gradient_check(prob, x, layout, [s for s in layout.slots if s.name == "shared_gamma"]) < 2e-6
    assert _slot_gradient_check(prob, x, layout) < 2e-6


def test_shared_and_species_slope_on_one_covariate_is_refused():
    Y, X, _ = _sim(n=20, m=3)
    with pytest.raises(JSDMError, match="not identified"):
        jsdm.gllvm(Y, X, family="poisson", formula="~ x + z", shared_formula="~ x", num_lv=0)
