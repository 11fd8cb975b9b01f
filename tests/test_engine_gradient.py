"""The analytic ELBO gradient against central finite differences of the ELBO value.

Every family x link, with covariates, an offset, row effects (none, fixed,
random), missing cells (W = 0) and d = 0, 1, 2 latent variables, on tiny
problems built directly as :class:`jsdm.model.problem.Problem` objects. The
difference is taken over the packed parameter vector (``Layout.pack`` /
``unpack``), so the chain rule of the packing (log-diagonal of L, the fixed
zeros of theta, the pinned first fixed row effect) is checked as well.
"""
import numpy as np
import pandas as pd
import pytest

from jsdm.model.objective import evaluate
from jsdm.model.params import Layout
from jsdm.model.problem import Problem
from _engine_helpers import family_or_skip

# (id, family name, link, trials)
FAMILIES = [
    ("poisson", "poisson", None, None),
    ("nb", "negative_binomial", None, None),
    ("binomial-logit", "binomial", "logit", None),
    ("binomial-probit", "binomial", "probit", None),
    ("binomial-cloglog", "binomial", "cloglog", None),
    ("binomial-logit-trials4", "binomial", "logit", 4),
    ("binomial-probit-trials4", "binomial", "probit", 4),
    ("gaussian", "gaussian", None, None),
]
ROW_EFFECTS = [None, "fixed", "random"]


def tiny_problem(fam, *, n=6, m=5, p=2, d=2, row_effect=None, trials=None, seed=0,
                 missing=0.2, offset=True):
    """A small Problem with responses drawn from the family and ~20% missing cells."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    eta = 0.3 + rng.normal(0.0, 0.7, (n, m))
    tr = None if trials is None else np.full((n, m), float(trials))
    s = None
    if fam.has_dispersion:
        s = fam.dispersion_param(np.full(m, 0.6))
    Y = np.asarray(fam.sample(eta, s, tr, rng), dtype=float)
    W = (rng.random((n, m)) > missing).astype(float)
    W[0, 0] = 0.0                                   # at least one missing cell
    return Problem(Y=Y, W=W, X=X, family=fam, num_lv=d, row_effect=row_effect,
                   sites=pd.Index([f"s{i}" for i in range(n)]),
                   species=pd.Index([f"sp{j}" for j in range(m)]),
                   terms=tuple(f"x{k}" for k in range(p)),
                   offset=rng.normal(0.0, 0.3, (n, m)) if offset else None, trials=tr)


def layout_of(prob):
    return Layout(prob.n, prob.m, prob.p, prob.d, prob.family.has_dispersion, prob.row_effect)


def random_point(layout, seed=1, scale=0.5):
    """A random packed parameter vector (valid by construction: L's diagonal is exp(.))."""
    return np.random.default_rng(seed).normal(0.0, scale, layout.size)


def elbo_value(prob, layout, x):
    return evaluate(prob, layout.unpack(x), grad=False).value


def analytic_grad(prob, layout, x):
    P = layout.unpack(x)
    ev = evaluate(prob, P, grad=True)
    return layout.pack_grad(ev.grad, P)


def numeric_grad(prob, layout, x, rel_step=1e-5):
    g = np.empty_like(x)
    for k in range(x.size):
        h = rel_step * max(1.0, abs(x[k]))
        xp, xm = x.copy(), x.copy()
        xp[k] += h
        xm[k] -= h
        g[k] = (elbo_value(prob, layout, xp) - elbo_value(prob, layout, xm)) / (2.0 * h)
    return g


def block_of(layout, k):
    for name, sl in layout.slices.items():
        if sl.start <= k < sl.stop:
            return name
    return "?"


def assert_grad_matches(prob, layout, x, rtol=1e-5):
    ga = analytic_grad(prob, layout, x)
    gn = numeric_grad(prob, layout, x)
    assert ga.shape == gn.shape == (layout.size,)
    assert np.all(np.isfinite(ga)), "analytic gradient is not finite"
    scale = max(1.0, float(np.max(np.abs(gn))))
    err = np.abs(ga - gn)
    bad = np.flatnonzero(err > rtol * scale)
    if bad.size:
        rows = [f"  {block_of(layout, k)}[{k}]: analytic {ga[k]:.8g} vs numeric {gn[k]:.8g}"
                for k in bad[:12]]
        pytest.fail(f"{bad.size} of {layout.size} gradient entries differ (scale {scale:.3g}):\n"
                    + "\n".join(rows))


@pytest.mark.parametrize("row_effect", ROW_EFFECTS, ids=lambda r: f"row-{r}")
@pytest.mark.parametrize("d", [0, 1, 2], ids=lambda d: f"d{d}")
@pytest.mark.parametrize("fid,name,link,trials", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_gradient_matches_finite_differences(fid, name, link, trials, d, row_effect):
    fam = family_or_skip(name, link)
    prob = tiny_problem(fam, d=d, row_effect=row_effect, trials=trials)
    layout = layout_of(prob)
    assert_grad_matches(prob, layout, random_point(layout))


@pytest.mark.parametrize("fid,name,link,trials", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_gradient_without_covariates_or_offset(fid, name, link, trials):
    fam = family_or_skip(name, link)
    prob = tiny_problem(fam, p=0, d=2, offset=False, missing=0.0, seed=3)
    layout = layout_of(prob)
    assert_grad_matches(prob, layout, random_point(layout, seed=4))


@pytest.mark.parametrize("fid,name,link,trials", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_gradient_at_extreme_linear_predictor(fid, name, link, trials):
    """Large |eta| (rare and very common species): value and gradient stay finite and agree."""
    fam = family_or_skip(name, link)
    prob = tiny_problem(fam, d=1, seed=5)
    layout = layout_of(prob)
    x = random_point(layout, seed=6, scale=0.3)
    beta0 = layout.slices["beta0"]
    x[beta0] = np.linspace(-6.0, 6.0, prob.m)
    if name in ("poisson", "negative_binomial", "gaussian"):
        x[beta0] = np.linspace(-6.0, 4.0, prob.m)
    assert np.isfinite(elbo_value(prob, layout, x))
    assert_grad_matches(prob, layout, x, rtol=1e-4)


@pytest.mark.parametrize("row_effect", ROW_EFFECTS, ids=lambda r: f"row-{r}")
@pytest.mark.parametrize("fid,name,link,trials", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_missing_cells_do_not_contribute(fid, name, link, trials, row_effect):
    """Changing y in cells with W = 0 changes neither the ELBO nor its gradient."""
    fam = family_or_skip(name, link)
    prob = tiny_problem(fam, d=2, row_effect=row_effect, trials=trials, missing=0.3)
    layout = layout_of(prob)
    x = random_point(layout)
    rng = np.random.default_rng(9)
    tr = prob.trials
    other = np.asarray(fam.sample(rng.normal(1.0, 1.0, prob.Y.shape),
                                  None if not fam.has_dispersion else
                                  fam.dispersion_param(np.full(prob.m, 0.6)), tr, rng), dtype=float)
    Y2 = np.where(prob.W > 0, prob.Y, other)
    assert not np.array_equal(Y2, prob.Y) or fid.startswith("binomial")
    prob2 = Problem(Y=Y2, W=prob.W, X=prob.X, family=fam, num_lv=prob.d, row_effect=row_effect,
                    sites=prob.sites, species=prob.species, terms=prob.terms, offset=prob.offset,
                    trials=tr)
    assert elbo_value(prob2, layout, x) == pytest.approx(elbo_value(prob, layout, x), rel=1e-13)
    np.testing.assert_allclose(analytic_grad(prob2, layout, x), analytic_grad(prob, layout, x),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fid,name,link,trials", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_pack_unpack_roundtrip(fid, name, link, trials):
    fam = family_or_skip(name, link)
    for row_effect in ROW_EFFECTS:
        prob = tiny_problem(fam, d=2, row_effect=row_effect, trials=trials)
        layout = layout_of(prob)
        x = random_point(layout)
        P = layout.unpack(x)
        assert np.all(np.triu(P.theta, 1) == 0.0)
        assert np.all(np.diagonal(P.L, axis1=1, axis2=2) > 0)
        assert np.all(np.triu(P.L[0], 1) == 0.0)
        np.testing.assert_allclose(layout.pack(P), x, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("s_value", [-72.0, -30.0, -10.0, 10.0, 25.0],
                         ids=lambda s: f"log-phi{s:+g}")
def test_nb_gradient_near_poisson_limit_and_huge_dispersion(s_value):
    """Fits drive phi of rare species to ~0 (r = 1/phi ~ 1e31) or very large: stay exact."""
    fam = family_or_skip("negative_binomial", None)
    prob = tiny_problem(fam, d=2, seed=7)
    layout = layout_of(prob)
    x = random_point(layout, seed=8)
    x[layout.slices["s"]] = s_value
    assert np.isfinite(elbo_value(prob, layout, x))
    assert_grad_matches(prob, layout, x)
