"""The term interface (jsdm.model.terms): gradients term by term, scopes, specs, the formula's
list of terms, and a new term written outside the package that fits without engine edits."""
import warnings

import numpy as np
import pandas as pd
import pytest

import jsdm
from jsdm.model.fit import fit_problem
from jsdm.model.objective import evaluate
from jsdm.model.params import Layout
from jsdm.model.problem import Problem
from jsdm.model.terms import (LatentVariables, Reported, Slot, SpeciesIntercepts, Term,
                              default_terms, make_term)
from jsdm.model.terms.slots import SCOPES
from _engine_helpers import family_or_skip
from test_engine_bound import nb_logpmf


def _problem(family="negative_binomial", link=None, *, n=7, m=5, p=2, d=2, row_effect=None,
             extra=(), seed=0, missing=0.15):
    fam = family_or_skip(family, link)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    eta = 0.3 + rng.normal(0.0, 0.7, (n, m))
    s = None
    if fam.has_dispersion:      # ordinal: cut points 0, 1, 2 (four categories)
        disp = np.tile([0.0, 1.0, 2.0], (m, 1)) if family == "ordinal" else np.full(m, 0.6)
        s = fam.dispersion_param(disp)
    Y = np.asarray(fam.sample(eta, s, None, rng), dtype=float)
    if family == "ordinal":
        Y[:4] = np.arange(4)[:, None]          # every category present for every species
    W = (rng.random((n, m)) > missing).astype(float)
    terms = default_terms(tuple(f"x{k}" for k in range(p)), d, row_effect) + tuple(extra)
    return Problem(Y=Y, W=W, X=X, family=fam, num_lv=d, row_effect=row_effect,
                   sites=pd.Index([f"s{i}" for i in range(n)]),
                   species=pd.Index([f"sp{j}" for j in range(m)]),
                   terms=tuple(f"x{k}" for k in range(p)),
                   offset=rng.normal(0.0, 0.3, (n, m)), model_terms=terms)


def _slot_gradient_check(prob, x, layout, slots=None, rel_step=1e-5):
    """Max |analytic - central difference| / scale over the entries of the given slots."""
    P = layout.unpack(x)
    g = layout.pack_grad(evaluate(prob, P).grad, P)
    worst = 0.0
    for s in layout.slots if slots is None else slots:
        for k in range(layout.slices[s.name].start, layout.slices[s.name].stop):
            h = rel_step * max(1.0, abs(x[k]))
            xp, xm = x.copy(), x.copy()
            xp[k] += h
            xm[k] -= h
            num = (evaluate(prob, layout.unpack(xp), grad=False).value
                   - evaluate(prob, layout.unpack(xm), grad=False).value) / (2 * h)
            worst = max(worst, abs(num - g[k]) / max(1.0, abs(num)))
    return worst


@pytest.mark.parametrize("row_effect", [None, "fixed", "random"])
@pytest.mark.parametrize("family", ["negative_binomial", "poisson", "ordinal"])
def test_every_slot_of_every_term_has_the_finite_difference_gradient(family, row_effect):
    """Term by term (intercepts, slopes, loadings, scores, row effects, sigma, dispersion, the
    joint L): the analytic gradient equals central differences of the ELBO."""
    prob = _problem(family, row_effect=row_effect, seed=3)
    layout = Layout(prob.predictor)
    x = np.random.default_rng(5).normal(0.0, 0.4, layout.size)
    names = [s.name for s in layout.slots if s.size]
    expected = {"beta0", "B", "theta", "a", "L"} | ({"s"} if prob.family.has_dispersion else set())
    expected |= {"fixed": {"alpha_fixed"}, "random": {"log_sigma", "alpha_random"}}.get(row_effect, set())
    assert set(names) == expected
    for s in layout.slots:
        if s.size:
            assert _slot_gradient_check(prob, x, layout, [s]) < 2e-6, s.name


def test_slots_declare_scopes_and_the_packing_round_trips():
    prob = _problem(row_effect="random")
    pred, layout = prob.predictor, Layout(prob.predictor)
    for s in layout.slots:
        assert s.scope in SCOPES
        shape = getattr(pred.zeros(), s.field)
        if s.scope == "species":
            assert np.shape(shape)[0] == prob.m, s.name
        elif s.scope == "site":
            assert np.shape(shape)[0] == prob.n, s.name
    model = [s.name for s in layout.slots if s.model]
    assert model == ["beta0", "B", "theta", "s", "log_sigma"]            # packed order
    x = np.random.default_rng(0).normal(size=layout.size)
    np.testing.assert_allclose(layout.pack(layout.unpack(x)), x, rtol=1e-14)
    assert pred.kr == 3 and pred.kv == 3 and pred.ks == 1 + 2 + 2       # LV1, LV2, alpha
    assert pred.coord_names() == ["LV1", "LV2", "alpha"]


@pytest.mark.parametrize("term", default_terms(("a", "b"), 3, "fixed")
                         + default_terms((), 0, "random"), ids=repr)
def test_term_specs_rebuild_the_term(term):
    assert make_term(term.spec()) == term
    assert isinstance(term.lme4("plot", "taxon"), str)


def test_unknown_term_kind_is_a_clear_error():
    with pytest.raises(jsdm.JSDMError, match="unknown term kind 'nope'"):
        make_term({"kind": "nope"})


def test_parse_formula_lists_the_terms_a_fit_reports_and_a_saved_fit_stores(tmp_path):
    from jsdm.model.formula import parse_formula

    com = jsdm.datasets.load_mite()
    long = com.to_long(response="count")
    formula = "count ~ species + species:WatrCont + rr(0 + species | site, d = 1) + (1 | site)"
    parsed = parse_formula(formula)
    text = str(parsed)
    assert "terms of the linear predictor" in text
    for t in parsed.model_terms:
        assert t.lme4() in text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = jsdm.gllvm(long, family="poisson", formula=formula, site="site", species="species",
                         n_init=1)
    assert [t.kind for t in fit.model_terms] == [t.kind for t in parsed.model_terms] == [
        "intercepts", "slopes", "lv", "row_random"]
    assert fit.model_terms[2] == parsed.model_terms[2] == LatentVariables(1)
    path = fit.save(tmp_path / "f.jsdm")
    back = jsdm.load(path)
    assert list(back.problem.model_terms) == list(fit.problem.model_terms)


# --- a term written outside the package ------------------------------------------------------
class SiteByTrait(Term):
    """u_i t_j: a random site effect scaled by a known species trait, u_i ~ N(0, tau^2).

    A site-local random term: it joins the site's joint q with the latent variables
    (and any random row effect). Nothing in jsdm knows it.
    """

    kind = "test_site_by_trait"
    table = "test_tau"
    hyper_fields = ("log_tau",)

    def __init__(self, trait=()):
        self.trait = tuple(float(t) for t in trait)

    def spec(self):
        return {"kind": self.kind, "trait": list(self.trait)}

    def lme4(self, site="site", species="species"):
        return f"(0 + trait | {site})"

    def fields(self, ctx):
        return {"u": (ctx.n,), "log_tau": ()}

    def slots(self, ctx):
        return [Slot("log_tau", "log_tau", (), model=True, scope="global"),
                Slot("u", "u", (ctx.n,), model=False, scope="site", label=("u_mean", ["u"]))]

    def mean(self, ctx, P, rows, cols):
        return P.u[rows, None] * np.asarray(self.trait)[cols]

    def site_width(self, ctx):
        return 1

    def site_design(self, ctx, P, cols=slice(None)):
        return np.asarray(self.trait)[cols][:, None]

    def get_site(self, P):
        return P.u[:, None]

    def set_site(self, P, values):
        P.u = np.array(values[:, 0], dtype=float)

    def prior_precision(self, ctx, P):
        return np.array([np.exp(-2.0 * P.log_tau)])

    def prior_logdet(self, ctx, P):
        return 2.0 * float(P.log_tau)

    def hyper_gradient(self, ctx, P, mu, sq):
        return {"log_tau": float((sq[:, 0] * np.exp(-2.0 * P.log_tau) - 1.0).sum())}

    def hyper_update(self, ctx, P, mu, sq):
        P.log_tau = 0.5 * np.log(np.mean(sq[:, 0]))

    def hyper_curvature(self, ctx, P, mu, L_rows):
        t2 = np.exp(2.0 * P.log_tau)
        sq = mu[:, 0] ** 2 + (L_rows[:, 0, :] ** 2).sum(1)
        return {"hh": np.array([[-2.0 * (sq / t2).sum()]]), "hmu": (2.0 * mu / t2)[:, None, :],
                "hL": (2.0 * L_rows / t2)[:, None, :, :]}

    def curvature_hyper(self, ctx, P):
        return {"log_tau": 2.0 * ctx.n}

    def start(self, ctx, P, init):
        P.u = np.zeros(ctx.n)
        P.log_tau = np.log(0.5)

    def start_sd(self, ctx):
        return np.array([0.3])

    def reported(self, ctx, P, layout):
        tau = float(np.exp(P.log_tau))
        return [Reported("test_tau", [0], [("", "tau")], [tau], [layout.slices["log_tau"].start],
                         [tau], transform=np.exp)]


def _direct_elbo(prob, P, trait, n_quad=120):
    """Loop-by-site ELBO with q(z_i, u_i) joint (d latent variables, then u), independent NB pmf."""
    z, w = np.polynomial.hermite_e.hermegauss(n_quad)
    w = w / w.sum()
    phi = np.exp(P.s)
    d, total = P.a.shape[1], 0.0
    for i in range(prob.n):
        S = P.L[i] @ P.L[i].T
        for j in range(prob.m):
            if prob.W[i, j] == 0:
                continue
            Uj = np.r_[P.theta[j], trait[j]]
            mean = (P.beta0[j] + prob.X[i] @ P.B[j] + prob.offset[i, j] + P.a[i] @ P.theta[j]
                    + P.u[i] * trait[j])
            eta = mean + np.sqrt(Uj @ S @ Uj) * z
            total += w @ nb_logpmf(prob.Y[i, j], eta, phi[j])
        mu = np.r_[P.a[i], P.u[i]]
        prec = np.r_[np.ones(d), np.exp(-2.0 * P.log_tau)]
        total -= 0.5 * (np.sum(prec * np.diag(S)) + mu @ (prec * mu) - (d + 1)
                        - np.linalg.slogdet(S)[1] + 2.0 * P.log_tau)
    return total


def test_a_new_site_term_joins_the_joint_q_and_fits_without_engine_edits():
    rng = np.random.default_rng(11)
    n, m = 40, 8
    trait = rng.normal(size=m)
    extra = SiteByTrait(trait)
    prob = _problem("negative_binomial", n=n, m=m, p=1, d=1, extra=[extra], seed=2, missing=0.0)
    # data with a true site-by-trait effect (tau = 0.8)
    eta = (0.5 + rng.normal(0.0, 0.5, m) + np.outer(rng.normal(size=n), rng.normal(0, 0.6, m))
           + np.outer(rng.normal(0.0, 0.8, n), trait) + prob.offset)
    Y = prob.family.sample(eta, np.full(m, np.log(0.3)), None, rng)
    prob = Problem(**{**{f: getattr(prob, f) for f in prob.__dataclass_fields__}, "Y": Y})
    pred = prob.predictor
    assert pred.kr == 2 and pred.coord_names() == ["LV1", "test_site_by_trait"]
    layout = Layout(pred)
    # its ELBO is the direct one (joint q) and its gradient the finite-difference one
    x = np.random.default_rng(0).normal(0.0, 0.3, layout.size)
    P = layout.unpack(x)
    assert evaluate(prob, P, grad=False).value == pytest.approx(_direct_elbo(prob, P, trait),
                                                                rel=1e-8)
    assert _slot_gradient_check(prob, x, layout, [s for s in layout.slots if s.name in (
        "log_tau", "u", "L", "theta")]) < 2e-6
    # the optimiser fits it: block Newton, Schur complement, closed-form tau, labels, SEs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        state = fit_problem(prob, seed=1)
        fit = jsdm.GLLVMResults(prob, state, {})
        assert state.converged
        assert 0.4 < np.exp(state.params.log_tau) < 1.6
        assert fit.params.loc[("test_tau", "", "tau")] == pytest.approx(np.exp(state.params.log_tau))
        se = fit.bse.loc[("test_tau", "", "tau")]
        lo, hi = fit.conf_int().loc[("test_tau", "", "tau")]
    assert np.isfinite(se) and 0 < lo < np.exp(state.params.log_tau) < hi
    # without the term the bound is lower (the data have the effect; the latent variable
    # takes up part of it: measured 2.8 nats lower)
    plain = Problem(**{**{f: getattr(prob, f) for f in prob.__dataclass_fields__},
                       "model_terms": prob.model_terms[:-1]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        assert fit_problem(plain, seed=1).value < state.value - 1.0


def test_two_intercept_terms_are_refused():
    with pytest.raises(ValueError, match="same parameter"):
        _problem(extra=[SpeciesIntercepts()])


def test_extra_terms_through_build_problem_save_and_load(tmp_path):
    """build_problem(extra_terms=...) appends a term; a saved fit names it; loading needs it
    registered (a clear error otherwise) and then restores the same fit."""
    from jsdm.model import terms as T
    from jsdm.model.problem import build_problem

    com, _ = jsdm.simulate_community(25, 6, num_lv=1, family="poisson", n_covariates=1, seed=4)
    trait = np.linspace(-1.0, 1.0, 6)
    prob = build_problem(com, family="poisson", num_lv=1, extra_terms=[SiteByTrait(trait)])
    assert [t.kind for t in prob.model_terms][-1] == "test_site_by_trait"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        fit = jsdm.GLLVMResults(prob, fit_problem(prob, seed=0), {})
    path = fit.save(tmp_path / "extra.jsdm")
    T._TERMS.pop("test_site_by_trait", None)
    with pytest.raises(jsdm.JSDMError, match="unknown term kind 'test_site_by_trait'"):
        jsdm.load(path)
    T.register_term(SiteByTrait)
    try:
        back = jsdm.load(path)
    finally:
        T._TERMS.pop("test_site_by_trait", None)
    assert back.llf == fit.llf and back.model_terms == fit.model_terms
    np.testing.assert_array_equal(back.state.params.u, fit.state.params.u)
