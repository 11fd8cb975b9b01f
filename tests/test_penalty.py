"""The optional weak penalty on loadings and slopes (``gllvm(..., prior_sd=tau)``).

- the penalised objective's analytic gradient and Hessian equal finite
  differences of its value / gradient (so every engine path optimises the same
  function);
- the penalty is what the docs say: -sum((B sd_x)^2 + theta^2) / (2 tau^2);
- a separated species gets finite estimates, well-informed species barely
  move, ``fit.llf`` is the unpenalised ELBO, and save/load keeps the setting.
"""
import warnings

import numpy as np
import pandas as pd
import pytest

import jsdm
from _engine_helpers import fd_hessian
from _shapes import separated_pa
from jsdm.model import penalty
from jsdm.model.fit import make_layout, neg_elbo
from jsdm.model.objective import evaluate
from jsdm.model.problem import build_problem
from jsdm.model.hessian import hessian_blocks

pytestmark = pytest.mark.filterwarnings("ignore::jsdm.exceptions.JSDMWarning")

CASES = [("poisson", None, 2), ("nb", None, 1), ("binomial", "random", 2), ("nb", "fixed", 2),
         ("gaussian", None, 0)]


def _problem(fam, row_effect, d, tau=1.5, seed=4):
    rng = np.random.default_rng(seed)
    n, m = 7, 4
    Y = rng.poisson(2.0, (n, m)).astype(float)
    if fam == "binomial":
        Y = (Y > 1).astype(float)
    Y[1, 2] = np.nan
    X = pd.DataFrame(rng.normal(0.0, [1.0, 3.0], size=(n, 2)), columns=["x1", "x2"])
    prob = build_problem(pd.DataFrame(Y), X, family=jsdm.get_family(fam), num_lv=d,
                         row_effect=row_effect)
    prob.info["prior_sd"] = tau
    return prob, rng


@pytest.mark.parametrize("fam,row_effect,d", CASES, ids=str)
def test_penalised_gradient_matches_finite_differences(fam, row_effect, d):
    prob, rng = _problem(fam, row_effect, d)
    layout = make_layout(prob)
    x = rng.normal(scale=0.6, size=layout.size)
    f = neg_elbo(prob, layout)
    g = f(x)[1]
    h = 1e-6
    fd = np.array([(f(x + h * e)[0] - f(x - h * e)[0]) / (2 * h) for e in np.eye(x.size)])
    assert np.abs(g - fd).max() <= 1e-5 * max(1.0, np.abs(fd).max())


@pytest.mark.parametrize("fam,row_effect,d", CASES[:3], ids=str)
def test_penalised_hessian_matches_finite_differences(fam, row_effect, d):
    prob, rng = _problem(fam, row_effect, d)
    layout = make_layout(prob)
    x = rng.normal(scale=0.3, size=layout.size)
    H = hessian_blocks(prob, layout.unpack(x), layout).dense(layout.size)
    Hfd = fd_hessian(neg_elbo(prob, layout), x)
    assert np.abs(H - Hfd).max() <= 1e-6 * np.abs(Hfd).max()


def test_penalty_value_is_the_documented_ridge():
    prob, rng = _problem("poisson", None, 2, tau=2.0)
    layout = make_layout(prob)
    P = layout.unpack(rng.normal(scale=0.5, size=layout.size))
    sd = prob.X.std(axis=0)
    want = -(((P.B * sd) ** 2).sum() + (P.theta ** 2).sum()) / (2 * 2.0 ** 2)
    assert penalty.value(prob, P) == pytest.approx(want, rel=1e-12)
    plain = evaluate(prob, P, grad=False).value
    prob.info.pop("prior_sd")
    assert evaluate(prob, P, grad=False).value == pytest.approx(plain - want, rel=1e-12)


@pytest.fixture(scope="module")
def separated_fits():
    com, kw = separated_pa()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = jsdm.gllvm(com, seed=1, n_init=1, **kw)
        pen = jsdm.gllvm(com, seed=1, n_init=1, prior_sd=5.0, **kw)
    return plain, pen


def test_penalty_keeps_a_separated_species_finite(separated_fits):
    plain, pen = separated_fits
    # without the penalty the separated species' slope runs away (per sd of x1: > 50)
    assert abs(plain.coef.loc["sep", "x1"]) > 50
    assert pen.converged
    assert abs(pen.coef.loc["sep", "x1"]) < 25
    assert np.abs(pen.linear_predictor().to_numpy()).max() < 60
    assert np.isfinite(pen.bse).all()


def test_penalty_barely_moves_well_informed_species(separated_fits):
    plain, pen = separated_fits
    keep = [s for s in plain.species if s not in ("sep", "single")]
    d_slope = (plain.coef.loc[keep, "x1"] - pen.coef.loc[keep, "x1"]).abs()
    se = plain.bse.xs("coef", level="block").xs("x1", level="term").loc[keep]
    assert (d_slope / se).median() < 0.2
    r0 = plain.residual_correlation().loc[keep, keep].to_numpy()
    r1 = pen.residual_correlation().loc[keep, keep].to_numpy()
    assert np.median(np.abs(r0 - r1)) < 0.05


def test_llf_is_the_unpenalised_elbo_and_save_load_keeps_the_penalty(separated_fits, tmp_path):
    _, pen = separated_fits
    plain_value = evaluate(pen.problem, pen.state.params, grad=False).value
    assert pen.state.value == pytest.approx(plain_value, rel=1e-12)    # objective is penalised
    llf = pen.llf
    pen.problem.info.pop("prior_sd")
    try:
        assert llf == pytest.approx(evaluate(pen.problem, pen.state.params, grad=False).value)
    finally:
        pen.problem.info["prior_sd"] = 5.0
    assert pen.prior_sd == 5.0 and pen.llf > pen.state.value
    back = jsdm.load(pen.save(tmp_path / "pen.jsdm"))
    assert back.prior_sd == 5.0 and back.llf == pytest.approx(pen.llf)


@pytest.mark.parametrize("bad", [0, -1.0, np.inf, "5", True])
def test_bad_prior_sd_is_refused(bad):
    com, kw = separated_pa()
    with pytest.raises(jsdm.JSDMError, match="prior_sd"):
        jsdm.gllvm(com, prior_sd=bad, **kw)
