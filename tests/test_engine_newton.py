"""The joint Newton step: the matrix-free Schur complement equals the dense one."""
import warnings

import numpy as np
import pytest

import jsdm
from jsdm.model import newton as nt
from jsdm.model.blocks import cell_eval


def _operator(row_effect, shift=0.05):
    com, _ = jsdm.simulate_community(60, 8, num_lv=2, family="negative_binomial",
                                     n_covariates=2, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        fit = jsdm.gllvm(com, family="nb", num_lv=2, row_effect=row_effect, n_init=1, seed=1)
    prob, P = fit.problem, fit.state.params.copy()
    P.beta0 = P.beta0 + shift                      # a little away from the optimum
    ce = cell_eval(prob, P)
    Xt = np.column_stack([np.ones(prob.n), prob.X, P.a])
    U = nt._site_design(prob, P)
    free = np.ones((prob.m, Xt.shape[1]))
    free[:, 1 + prob.p:] = np.tril(np.ones((prob.m, prob.d)))
    Hbb, gb = nt._species_blocks(prob, P, ce, Xt)
    D, gu = nt._site_blocks(prob, P, ce, U)
    op = nt._Schur(prob, ce, Xt, U, free, Hbb, np.linalg.inv(D))
    return prob, ce, op, gb * free - op.c(op.dinv(gu))


@pytest.mark.parametrize("row_effect", [None, "fixed", "random"], ids=["none", "fixed", "random"])
def test_matrix_free_schur_products_equal_the_dense_matrix(row_effect):
    prob, ce, op, _ = _operator(row_effect)
    S = nt._dense_schur(prob, ce, op)
    x = np.random.default_rng(2).normal(size=op.free.shape)
    np.testing.assert_allclose(op.neg_schur(x).ravel(), -(S @ x.ravel()), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("row_effect", [None, "random"], ids=["none", "random"])
def test_conjugate_gradients_solve_the_newton_system_near_the_optimum(row_effect):
    prob, ce, op, rhs = _operator(row_effect)
    S = nt._dense_schur(prob, ce, op)
    direct = nt._solve_nd(S, -rhs.ravel())
    cg = op.solve_cg(rhs, rtol=1e-12, maxiter=1000).ravel()
    np.testing.assert_allclose(cg, direct, rtol=1e-7, atol=1e-10)


def test_both_solvers_reach_the_same_optimum(monkeypatch):
    com, _ = jsdm.simulate_community(150, 40, num_lv=2, family="negative_binomial",
                                     n_covariates=2, seed=5)
    fits = {}
    for limit in (10, 10 ** 6):
        monkeypatch.setattr(nt, "_DIRECT_MAX", limit)
        fits[limit] = jsdm.gllvm(com, family="nb", num_lv=2, n_init=1, seed=1)
    assert fits[10].converged and fits[10 ** 6].converged
    assert abs(fits[10].llf - fits[10 ** 6].llf) < 1e-5 * abs(fits[10].llf)
