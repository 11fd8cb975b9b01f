"""The terms architecture reproduces the pre-refactor engine (issue 14).

Reference values were recorded with main's engine before the linear predictor became a
sum of terms (commit 71ba003; first at 5e42c47, again after main's optimiser changed) by
``tests/data/make_pre_refactor.py`` (see its docstring for the exact command); the
data, parameter points and results are in ``tests/data/pre_refactor.npz`` / ``.json``.

- At 1248 random parameter points (13 family/link combinations x num_lv 0..3 x row
  effect none/fixed/random x 0 or 2 covariates x missing cells x offset; ordinal with
  its vector of cut points) the ELBO equals the recorded one to 1e-10 (relative), and
  for models without random row effects the packed gradient too. With random row
  effects the old q (latent variables independent of the row effect) is the special
  case of the joint q with zero covariance: evaluated there, the ELBO is the same.
- Complete fits from the same start reach the same optimum: ELBO to 1e-8 (relative;
  measured <= 1e-15), the same iterations and the same standard errors (1e-6). (Against
  the 5e42c47 recording, whose optimiser ended with L-BFGS, two long polishes took 287
  instead of 286 and 95 instead of 91 iterations; with main's full Newton phase all agree.)
- Fits with random row effects: the joint q per site can only raise the bound; on the
  mite data it rises by about 13 (NB, 2 LVs) and 20 (Poisson, 2 LVs) nats.
"""
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import jsdm
from jsdm.families import get_family
from jsdm.model import fit as fit_module
from jsdm.model.objective import evaluate
from jsdm.model.params import Layout, Params
from jsdm.model.problem import Problem

DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(DATA))
from make_pre_refactor import unpack  # noqa: E402

META = json.loads((DATA / "pre_refactor.json").read_text())
NPZ = np.load(DATA / "pre_refactor.npz")


def _case(key):
    return unpack(NPZ, META["parts"], key)


def _frames(a, p=None):
    Y = a["Y"]
    Ydf = pd.DataFrame(Y, index=[f"s{i}" for i in range(Y.shape[0])],
                       columns=[f"sp{j}" for j in range(Y.shape[1])])
    X = a.get("X")
    names = (lambda k: f"x{k}") if p is not None else (lambda k: f"x{k + 1}")
    Xdf = None if X is None else pd.DataFrame(X, index=Ydf.index,
                                              columns=[names(k) for k in range(X.shape[1])])
    return Ydf, Xdf


def _params(a):
    return Params(**{k[2:]: (float(v) if k == "P_log_sigma" else v)
                     for k, v in a.items() if k.startswith("P_")})


def _problem(a, fam, c):
    """The Problem ``build_problem`` makes of the recorded data, built directly (fast)."""
    Y = a["Y"]
    W = np.isfinite(Y).astype(float)
    if W.all():
        W = np.broadcast_to(1.0, Y.shape)
    X = a.get("X", np.zeros((Y.shape[0], 0)))
    info = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fam = fam.prepare(Y, species=[f"sp{j}" for j in range(Y.shape[1])])   # as build_problem
    if fam.has_dispersion:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            info["n_dispersion"] = fam.n_dispersion(Y)
    return Problem(Y=np.where(W > 0, Y, fam.missing_fill), W=W, X=X, family=fam,
                   num_lv=c["num_lv"], row_effect=c["row_effect"],
                   sites=pd.Index([f"s{i}" for i in range(Y.shape[0])]),
                   species=pd.Index([f"sp{j}" for j in range(Y.shape[1])]),
                   terms=tuple(f"x{k}" for k in range(X.shape[1])), offset=a.get("offset"),
                   trials=a.get("trials"), info=info)


FAMILY_IDS = list(dict.fromkeys(c["case"].split("|")[0] for c in META["points"]))


@pytest.mark.parametrize("fid", FAMILY_IDS)
def test_elbo_and_gradient_equal_the_pre_refactor_engine(fid):
    cases = [c for c in META["points"] if c["case"].split("|")[0] == fid]
    assert len(cases) == 96
    fam = get_family(cases[0]["family"], link=cases[0]["link"])
    checked = fixed = 0
    for c in cases:
        a = _case(c["key"])
        prob = _problem(a, fam, c)
        P = _params(a)
        with np.errstate(all="ignore"):
            ev = evaluate(prob, P)
        if not np.isfinite(c["value"]):     # the old engine: NaN for gamma/beta with missing
            assert np.isfinite(ev.value), c["case"]     # cells (filled with an invalid 0)
            fixed += 1
            continue
        assert ev.value == pytest.approx(c["value"], rel=1e-10, abs=1e-10), c["case"]
        if c["row_effect"] != "random":
            layout = Layout(prob.predictor)
            g, g0 = layout.pack_grad(ev.grad, P), a["grad"]
            assert g.shape == g0.shape, c["case"]
            assert np.abs(g - g0).max() <= 1e-9 * (1.0 + np.abs(g0).max()), c["case"]
        checked += 1
    assert checked + fixed == 96 and (fixed == 0 or fid in ("gamma", "beta"))


def _refit(c, gtol=1e-3):
    a = _case(c["key"])
    Ydf, Xdf = _frames(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = jsdm.gllvm(Ydf, Xdf, family=c["family"], link=c["link"], num_lv=c["num_lv"],
                         row_effect=c["row_effect"], offset=a.get("offset"),
                         trials=a.get("trials"), n_init=1, seed=0, checks=False, gtol=gtol)
    return fit, a


FITS = [c for c in META["fits"] if c["row_effect"] != "random"]
SLOW = ("nb-lv3", "zip-lv2", "mite-nb-lv2-X2", "mite-nb-lv2-fixedrow")


@pytest.mark.parametrize("c", [pytest.param(c, marks=pytest.mark.slow) if c["case"] in SLOW
                               else c for c in FITS], ids=[c["case"] for c in FITS])
def test_fits_reach_the_pre_refactor_optimum(c, monkeypatch):
    # the pre-refactor path: 15 joint mean steps before the full Newton phase also on
    # small problems (since changed to 5: see the test below)
    monkeypatch.setattr(fit_module, "NEWTON_ITERATIONS_SMALL", fit_module.NEWTON_ITERATIONS)
    fit, a = _refit(c)
    assert fit.converged == c["converged"]
    assert fit.llf == pytest.approx(c["llf"], rel=1e-8)
    assert fit.n_iter == c["n_iter"]
    assert fit.df == c["df"]
    if "bse" in a:
        se = fit.bse
        assert ["/".join(map(str, lab)) for lab in se.index] == c["bse_labels"]
        # a dispersion parked on its box (phi = exp(-20): Poisson-like species) has an SE
        # set by a nearly flat direction; it is left out of the comparison
        x = fit.state.layout.pack(fit.state.params)[fit._reported["positions"]]
        lo, hi = fit.state.layout.bounds()
        pos = fit._reported["positions"]
        live = (x > lo[pos] + 1e-6) & (x < hi[pos] - 1e-6)
        np.testing.assert_allclose(se.to_numpy()[live], a["bse"][live], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("c", [pytest.param(c, marks=pytest.mark.slow) if c["case"] in SLOW
                               else c for c in FITS], ids=[c["case"] for c in FITS])
def test_todays_path_reaches_the_pre_refactor_optimum(c):
    # small problems now hand over to the full Newton phase after 5 joint mean steps;
    # run on to a tight tolerance, the fit must reach at least the pre-refactor optimum
    # (which stopped at gtol 1e-3, up to 3.4e-3 nats short of the optimum on flat
    # ridges of the ELBO: nb-lv3) and not wander far above it
    fit, _ = _refit(c, gtol=1e-6)
    assert fit.converged
    assert fit.llf >= c["llf"] - 1e-6
    assert fit.llf - c["llf"] <= 1e-2


RANDOM = [c for c in META["fits"] if c["row_effect"] == "random"]


@pytest.mark.parametrize("c", [pytest.param(c, marks=pytest.mark.slow)
                               if c["case"].startswith("mite-poisson") else c for c in RANDOM],
                         ids=[c["case"] for c in RANDOM])
def test_random_row_effects_joint_q_bound_is_at_least_the_old_one(c):
    fit, a = _refit(c)
    assert fit.converged
    # the old optimum is a point of the new family of q (zero LV-row covariance) with the
    # same ELBO, so the new optimum cannot be lower (beyond the optimiser's tolerance)
    old_P = _params(a)
    assert evaluate(fit.problem, old_P, grad=False).value == pytest.approx(c["llf"], rel=1e-10)
    assert fit.llf >= c["llf"] - 1e-6 * abs(c["llf"])
    if c["case"] == "mite-nb-lv2-randomrow":
        assert fit.llf - c["llf"] > 10.0        # measured: +12.95 nats
        assert fit.row_sigma > 0.1               # measured: sigma 0.47 (old q), 0.49 (joint)
