"""Species random effects (jsdm.model.terms.species_random): gradients of every slot against
finite differences, the joint species q, the closed-form prior updates, specs."""
import numpy as np
import pandas as pd
import pytest

from jsdm.model.objective import evaluate
from jsdm.model.params import Layout
from jsdm.model.problem import Problem
from jsdm.model.terms import SpeciesRandom, default_terms, make_term
from _engine_helpers import family_or_skip
from test_terms import _slot_gradient_check


def _problem(family="negative_binomial", *, term, n=9, m=6, p=2, d=2, row_effect=None, seed=0,
             traits=False):
    fam = family_or_skip(family, None)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    eta = 0.3 + rng.normal(0.0, 0.7, (n, m))
    s = fam.dispersion_param(np.full(m, 0.6)) if fam.has_dispersion else None
    Y = np.asarray(fam.sample(eta, s, None, rng), dtype=float)
    W = (rng.random((n, m)) > 0.15).astype(float)
    covs = tuple(f"x{k}" for k in range(p))
    info = {}
    if traits:
        info = {"traits": rng.normal(size=(m, 2)), "trait_names": ("t1", "t2")}
    terms = default_terms(covs, d, row_effect, species_random=term)
    return Problem(Y=Y, W=W, X=X, family=fam, num_lv=d, row_effect=row_effect,
                   sites=pd.Index([f"s{i}" for i in range(n)]),
                   species=pd.Index([f"sp{j}" for j in range(m)]), terms=covs,
                   offset=rng.normal(0.0, 0.3, (n, m)), model_terms=terms, info=info)


TERMS = {
    "int": SpeciesRandom(("1",)),
    "slope0": SpeciesRandom(("x0",), mean=(False,)),
    "int+slope": SpeciesRandom(("1", "x0"), blocks=((0,), (1,))),
    "cor": SpeciesRandom(("1", "x0")),
    "cor3": SpeciesRandom(("1", "x0", "x1")),
    "mixed": SpeciesRandom(("1", "x0", "x1"), blocks=((0, 2), (1,)), mean=(True, False, True)),
    "traits": SpeciesRandom(("1", "x0"), traits=(("x0", ("t1", "t2")), ("1", ("t1",)))),
}


@pytest.mark.parametrize("d", [0, 2])
@pytest.mark.parametrize("name", list(TERMS))
def test_every_slot_has_the_finite_difference_gradient(name, d):
    prob = _problem(term=TERMS[name], d=d, traits=name == "traits", seed=4)
    layout = Layout(prob.predictor)
    x = np.random.default_rng(7).normal(0.0, 0.4, layout.size)
    names = {s.name for s in layout.slots if s.size}
    assert {"b_mu", "Lsp", "sp_logsd"} <= names
    for s in layout.slots:
        if s.size:
            assert _slot_gradient_check(prob, x, layout, [s]) < 2e-6, s.name


def test_the_fixed_species_coefficients_on_random_columns_are_held_at_zero():
    prob = _problem(term=TERMS["cor"], d=1)
    pred, layout = prob.predictor, Layout(prob.predictor)
    names = [s.name for s in layout.slots if s.size]
    assert "beta0" not in names                            # random intercepts replace them
    assert layout.slices["B"].stop - layout.slices["B"].start == prob.m   # only x1 is fixed
    P = layout.unpack(np.random.default_rng(0).normal(size=layout.size))
    assert np.all(P.beta0 == 0) and np.all(P.B[:, 0] == 0)
    assert pred.ksr == 2 and P.Lsp.shape == (prob.m, 2, 2)


def test_the_species_kl_is_that_of_two_gaussians():
    """KL_j from the predictor equals the closed form with Sigma built independently."""
    prob = _problem(term=TERMS["mixed"], d=0)
    pred, layout = prob.predictor, Layout(prob.predictor)
    P = layout.unpack(np.random.default_rng(2).normal(0, 0.5, layout.size))
    t = TERMS["mixed"]
    Sig = t.covariance(P)
    assert abs(Sig[0, 1]) < 1e-15 and abs(Sig[1, 2]) < 1e-15 and abs(Sig[0, 2]) > 0
    mean = np.zeros((prob.m, 3))
    mean[:, 0], mean[:, 2] = P.sp_gamma[0], P.sp_gamma[1]
    for j in range(prob.m):
        S = P.Lsp[j] @ P.Lsp[j].T
        r = P.b_mu[j] - mean[j]
        kl = 0.5 * (np.log(np.linalg.det(Sig) / np.linalg.det(S)) + np.trace(np.linalg.solve(Sig, S))
                    + r @ np.linalg.solve(Sig, r) - 3)
        assert abs(kl - pred.species_kl(P)[j]) < 1e-10


def test_the_closed_form_prior_update_maximises_the_elbo():
    prob = _problem(term=TERMS["traits"], d=0, traits=True)
    pred, layout = prob.predictor, Layout(prob.predictor)
    P = layout.unpack(np.random.default_rng(3).normal(0, 0.5, layout.size))
    pred.species_hyper_update(P)
    g = layout.pack_grad(evaluate(prob, P).grad, P)
    for f in ("sp_logsd", "sp_corr", "sp_gamma"):
        sl = layout.slices[f]
        assert np.abs(g[sl]).max() < 1e-6, f


@pytest.mark.parametrize("name", list(TERMS))
def test_term_specs_rebuild_the_term(name):
    t = TERMS[name]
    assert make_term(t.spec()) == t
    assert "| species)" in t.lme4()


# --- community slopes and the fixed fourth corner ----------------------------------------------
from jsdm.model.terms import CommunitySlopes  # noqa: E402

CS = CommunitySlopes(("x0", "x1"), traits=(("x0", ("t1", "t2")), ("x1", ("t1",))))


def _problem_cs(family="negative_binomial", d=2, random=None, seed=0):
    fam = family_or_skip(family, None)
    rng = np.random.default_rng(seed)
    n, m, p = 9, 6, 2
    X = rng.normal(size=(n, p))
    s = fam.dispersion_param(np.full(m, 0.6)) if fam.has_dispersion else None
    Y = np.asarray(fam.sample(0.3 + rng.normal(0.0, 0.7, (n, m)), s, None, rng), dtype=float)
    covs = ("x0", "x1")
    terms = default_terms(covs, d, None, species_random=random, community=CS)
    return Problem(Y=Y, W=np.ones((n, m)), X=X, family=fam, num_lv=d, row_effect=None,
                   sites=pd.Index([f"s{i}" for i in range(n)]),
                   species=pd.Index([f"sp{j}" for j in range(m)]), terms=covs, offset=None,
                   model_terms=terms,
                   info={"traits": rng.normal(size=(m, 2)), "trait_names": ("t1", "t2")})


@pytest.mark.parametrize("random", [None, SpeciesRandom(("1",))], ids=["fixed", "with (1|sp)"])
@pytest.mark.parametrize("family", ["negative_binomial", "binomial"])
def test_community_slopes_have_the_finite_difference_gradient(family, random):
    prob = _problem_cs(family, random=random, seed=2)
    layout = Layout(prob.predictor)
    x = np.random.default_rng(3).normal(0.0, 0.4, layout.size)
    assert "tc_gamma" in {s.name for s in layout.slots if s.size}
    for s in layout.slots:
        if s.size:
            assert _slot_gradient_check(prob, x, layout, [s]) < 2e-6, s.name


def test_fixed_fourth_corner_probit_glm_is_the_exact_likelihood():
    """Without latent variables the fixed fourth-corner model is a GLM: the ELBO is its exact
    log-likelihood, checked against statsmodels' probit GLM on the long table."""
    sm = pytest.importorskip("statsmodels.api")
    from jsdm.model.fit import fit_problem

    rng = np.random.default_rng(5)
    n, m = 60, 10
    X = rng.normal(size=(n, 2))
    T = rng.normal(size=(m, 2))
    eta = rng.normal(0, 0.5, m)[None, :] + X @ (np.array([[0.5, 0.3], [-0.4, 0.1]]) @ T.T
                                                 + np.array([[0.2], [-0.3]]))
    fam = family_or_skip("binomial", "probit")
    Y = (rng.random((n, m)) < fam.mean(eta)).astype(float)
    terms = default_terms(("x0", "x1"), 0, None, community=CS)
    prob = Problem(Y=Y, W=np.ones((n, m)), X=X, family=fam, num_lv=0, row_effect=None,
                   sites=pd.Index(range(n)), species=pd.Index(range(m)), terms=("x0", "x1"),
                   model_terms=terms, info={"traits": T, "trait_names": ("t1", "t2")})
    st = fit_problem(prob, gtol=1e-6)
    assert st.converged
    # long design: species dummies, x0, x1, x0:t1, x0:t2, x1:t1 (the names of CS)
    ii, jj = np.meshgrid(np.arange(n), np.arange(m), indexing="ij")
    ii, jj = ii.ravel(), jj.ravel()
    D = np.column_stack([np.eye(m)[jj], X[ii, 0], X[ii, 1], X[ii, 0] * T[jj, 0],
                         X[ii, 0] * T[jj, 1], X[ii, 1] * T[jj, 0]])
    glm = sm.GLM(Y.ravel(), D, family=sm.families.Binomial(sm.families.links.Probit())).fit(
        tol=1e-12)
    assert abs(st.value - glm.llf) < 1e-5
    np.testing.assert_allclose(st.params.tc_gamma, glm.params[m:], atol=1e-4)
    np.testing.assert_allclose(st.params.beta0, glm.params[:m], atol=1e-4)
