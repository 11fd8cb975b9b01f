"""The unstructured JSDM (0 + species | site): a full-rank factor model, num_lv = m."""
import warnings

import numpy as np
import pandas as pd
import pytest

import jsdm
from jsdm.exceptions import DataWarning, JSDMError
from jsdm.model.formula import parse_formula


def _sim(n=150, m=4, seed=0):
    rng = np.random.default_rng(seed)
    Th = np.tril(rng.normal(0.0, 0.6, (m, m)))
    Th[np.arange(m), np.arange(m)] = np.abs(Th[np.arange(m), np.arange(m)]) + 0.3
    eta = 0.8 + rng.normal(0.0, 1.0, (n, m)) @ Th.T
    Y = pd.DataFrame(rng.poisson(np.exp(eta)).astype(float), index=[f"s{i}" for i in range(n)],
                     columns=[f"sp{j}" for j in range(m)])
    long = Y.stack().rename("y").rename_axis(["site", "species"]).reset_index()
    return Th @ Th.T, Y, long


def test_unstructured_parses_and_prints_its_translation():
    p = parse_formula("y ~ species + species:x + (0 + species | site)")
    assert p.num_lv == "species"
    text = str(p)
    assert "(0 + species | site)" in text and "num_lv='species'" in text


@pytest.mark.parametrize("formula, match", [
    ("y ~ species + (species | site)", "no intercept"),
    ("y ~ species + (0 + species | site) + rr(0 + species | site, d = 2)", "keep one"),
])
def test_unstructured_refusals_name_the_term(formula, match):
    with pytest.raises(JSDMError, match=match):
        parse_formula(formula)


def test_unstructured_fits_and_recovers_the_covariance():
    """150 sites x 4 species, Poisson: Theta Theta' (10 parameters) within 0.35 of the true
    covariance entry by entry (the sds of the estimates are ~0.1-0.2 here); the formula and
    the wide call num_lv="species" are the same fit."""
    S, Y, long = _sim()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = jsdm.gllvm(long, formula="y ~ species + (0 + species | site)", family="poisson",
                         n_init=1)
        wide = jsdm.gllvm(Y, family="poisson", num_lv="species", n_init=1)
    assert fit.num_lv == 4 and fit.converged
    L = fit.loadings.to_numpy()
    assert np.abs(L @ L.T - S).max() < 0.35
    assert abs(fit.llf - wide.llf) < 1e-8


def test_unstructured_warns_when_parameters_are_many_for_the_data():
    _, Y, long = _sim(n=12, m=4)
    with pytest.warns(DataWarning, match=r"rr\(0 \+ species \| site, d = 2\)"):
        jsdm.gllvm(long, formula="y ~ species + (0 + species | site)", family="poisson",
                   n_init=1, maxiter=50, checks=False)
