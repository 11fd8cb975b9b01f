"""The ELBO is what it claims to be: the exact variational bound of the marginal likelihood.

1. Its value equals a direct, loop-by-site computation written independently of
   the engine (scipy.stats log-densities, high-order Gauss-Hermite quadrature of
   E_q[log f], explicit KL with a log-determinant).
2. At the optimum it lies below the marginal log-likelihood, site by site. The
   marginal log-likelihood of each site is estimated by importance sampling with
   the (inflated) variational posterior as proposal, and computed
   deterministically by adaptive Gauss-Hermite quadrature over the latent
   variables (tensor grid around q); the two must agree, and the ELBO must lie
   below both. For the Gaussian family the optimal q is the exact posterior, so
   the gap must vanish.
"""
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

import jsdm
from jsdm.families import get_family
from jsdm.model.objective import evaluate
from jsdm.model.params import Layout
from jsdm.model.problem import Problem
from _engine_helpers import family_or_skip

# (id, family, link, trials)
FAMILIES = [
    ("poisson", "poisson", None, None),
    ("nb", "negative_binomial", None, None),
    ("binomial-logit", "binomial", "logit", None),
    ("binomial-probit", "binomial", "probit", None),
    ("binomial-cloglog", "binomial", "cloglog", None),
    ("binomial-logit-trials4", "binomial", "logit", 4),
    ("gaussian", "gaussian", None, None),
]


# --- reference log-densities, independent of jsdm's family code ---------------------------
def log_probs(link, eta):
    """(log p, log(1 - p)) for the binomial success probability p = g^-1(eta), stably."""
    if link == "logit":
        return special.log_expit(eta), special.log_expit(-eta)
    if link == "probit":
        return special.log_ndtr(eta), special.log_ndtr(-eta)
    if link == "cloglog":
        with np.errstate(divide="ignore"):
            return np.log(-np.expm1(-np.exp(eta))), -np.exp(eta)
    raise ValueError(link)


def ref_logpdf(fam, y, eta, disp, trials):
    """log f(y | eta) with scipy.stats; ``disp`` is the reported dispersion (phi or sd)."""
    if fam.name == "poisson":
        return stats.poisson.logpmf(y, np.exp(eta))
    if fam.name == "negative_binomial":
        return nb_logpmf(y, eta, disp)
    if fam.name == "binomial":
        n = 1.0 if trials is None else trials
        logp, log1mp = log_probs(fam.link, eta)
        comb = special.gammaln(n + 1.0) - special.gammaln(y + 1.0) - special.gammaln(n - y + 1.0)
        return comb + np.where(y > 0, y * logp, 0.0) + np.where(n - y > 0, (n - y) * log1mp, 0.0)
    if fam.name == "gaussian":
        return stats.norm.logpdf(y, eta, disp)
    raise ValueError(fam.name)


def nb_logpmf(y, eta, phi):
    """NB2 log-pmf, accurate up to the Poisson limit (phi -> 0, where scipy's nbinom
    returns -inf): lgamma(y + r) - lgamma(r) - y log r = sum_{k<y} log1p(k / r)."""
    y, eta, r = np.broadcast_arrays(np.asarray(y, float), np.asarray(eta, float),
                                    1.0 / np.asarray(phi, float))
    big = r > 1e6
    rs = np.where(big, 1.0, r)
    lr = np.where(big, 0.0, special.gammaln(y + rs) - special.gammaln(rs) - y * np.log(rs))
    if big.any():
        yb, rb = y[big], r[big]
        acc = np.zeros_like(yb)
        for k in range(int(yb.max())):
            acc += np.where(k < yb, np.log1p(k / rb), 0.0)
        lr = lr.copy()
        lr[big] = acc
    mu_r = np.exp(eta) / r
    return lr - special.gammaln(y + 1.0) - r * np.log1p(mu_r) + y * (eta - np.log1p(mu_r))


# --- 1. the value --------------------------------------------------------------------------
def tiny_problem(fam, *, n=7, m=4, p=2, d=2, row_effect=None, trials=None, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    tr = None if trials is None else np.full((n, m), float(trials))
    s = fam.dispersion_param(np.full(m, 0.6)) if fam.has_dispersion else None
    Y = np.asarray(fam.sample(0.3 + rng.normal(0.0, 0.7, (n, m)), s, tr, rng), dtype=float)
    W = (rng.random((n, m)) > 0.2).astype(float)
    return Problem(Y=Y, W=W, X=X, family=fam, num_lv=d, row_effect=row_effect,
                   sites=pd.Index(range(n)), species=pd.Index(range(m)),
                   terms=tuple(f"x{k}" for k in range(p)),
                   offset=rng.normal(0.0, 0.3, (n, m)), trials=tr)


def direct_elbo(prob, P, n_quad=200):
    """sum_i [sum_j w_ij E_q log f(y_ij | eta_ij) - KL_i], one site and one species at a time.

    q of site i is one Gaussian over (z_i, alpha_i) (alpha only with random row effects):
    mean (a_i, alpha_i), covariance S_i = L_i L_i' (latent variables first).
    """
    fam = prob.family
    z, w = np.polynomial.hermite_e.hermegauss(n_quad)
    w = w / w.sum()
    disp = None if P.s is None else np.broadcast_to(fam.dispersion(P.s), (prob.m,))
    rand = prob.row_effect == "random"
    d = prob.d
    total = 0.0
    for i in range(prob.n):
        S = P.L[i] @ P.L[i].T
        for j in range(prob.m):
            if prob.W[i, j] == 0:
                continue
            mean = P.beta0[j] + prob.X[i] @ P.B[j] + prob.offset[i, j] + P.a[i] @ P.theta[j]
            u = np.r_[P.theta[j], 1.0] if rand else P.theta[j]
            var = u @ S @ u
            if prob.row_effect is not None:
                mean += P.alpha[i]
            eta = mean + np.sqrt(var) * z
            tr = None if prob.trials is None else prob.trials[i, j]
            total += w @ ref_logpdf(fam, prob.Y[i, j], eta, None if disp is None else disp[j], tr)
        mu = np.r_[P.a[i], P.alpha[i]] if rand else P.a[i]
        prec = np.r_[np.ones(d), np.exp(-2.0 * P.log_sigma)] if rand else np.ones(d)
        k = len(mu)
        if k:
            logdet_prior = 2.0 * P.log_sigma if rand else 0.0
            total -= 0.5 * (np.trace(np.diag(prec) @ S) + mu @ (prec * mu) - k
                            - np.linalg.slogdet(S)[1] + logdet_prior)
    return total


@pytest.mark.parametrize("row_effect", [None, "fixed", "random"], ids=lambda r: f"row-{r}")
@pytest.mark.parametrize("d", [0, 1, 2], ids=lambda d: f"d{d}")
@pytest.mark.parametrize("fid,name,link,trials", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_elbo_value_matches_direct_computation(fid, name, link, trials, d, row_effect):
    fam = family_or_skip(name, link)
    prob = tiny_problem(fam, d=d, row_effect=row_effect, trials=trials)
    layout = Layout(prob.n, prob.m, prob.p, prob.d, fam.has_dispersion, row_effect)
    P = layout.unpack(np.random.default_rng(2).normal(0.0, 0.5, layout.size))
    ev = evaluate(prob, P, grad=False)
    assert ev.value == pytest.approx(direct_elbo(prob, P), rel=1e-7, abs=1e-7)
    assert ev.site_terms.sum() == pytest.approx(ev.value, rel=1e-12)


# --- 2. the bound ----------------------------------------------------------------------------
def site_log_marginal(prob, P, u, logw, inflate):
    """log p(y_i) per site from points u (K, D) with log-weights logw (K,) for E over N(0, I_D).

    The latent vector of site i is (z_i, alpha_i) (alpha only with random row effects);
    each point is mapped through the inflated joint variational posterior
    N(mu_i, inflate * L_i L_i'), so sum_k exp(logw_k) g(x_k) / r_i(x_k) estimates the
    integral of g. Returns (n,) log-integrals and (n,) delta-method standard errors
    (meaningful for equal weights).
    """
    fam, n, d = prob.family, prob.n, prob.d
    disp = None if P.s is None else fam.dispersion(P.s)
    rand = prob.row_effect == "random"
    F = P.beta0 + prob.X @ P.B.T
    if prob.offset is not None:
        F = F + prob.offset
    if prob.row_effect == "fixed":
        F = F + P.alpha[:, None]
    out, se = np.empty(n), np.empty(n)
    c = np.sqrt(inflate)
    for i in range(n):
        mu = np.r_[P.a[i], P.alpha[i]] if rand else P.a[i]
        x = mu + c * u @ P.L[i].T                            # (K, D): joint draws
        z = x[:, :d]
        eta = F[i] + z @ P.theta.T                          # (K, m)
        logr = -0.5 * (u ** 2).sum(1) - np.log(c) * u.shape[1] - np.log(np.diag(P.L[i])).sum()
        logprior = -0.5 * (z ** 2).sum(1)
        if rand:
            sig = np.exp(P.log_sigma)
            al = x[:, d]
            eta = eta + al[:, None]
            logprior = logprior - 0.5 * (al / sig) ** 2 - np.log(sig)
        tr = None if prob.trials is None else prob.trials[i]
        ll = ref_logpdf(fam, prob.Y[i], eta, disp, tr)     # (K, m)
        lw = (prob.W[i] * ll).sum(1) + logprior - logr + logw
        out[i] = special.logsumexp(lw)
        r = np.exp(lw - out[i])                              # normalised weights
        se[i] = np.sqrt(max(np.sum(r ** 2) - 1.0 / len(r), 0.0))
    return out, se


def gh_grid(dim, k):
    z, w = np.polynomial.hermite_e.hermegauss(k)
    lw = np.log(w / w.sum())
    grids = np.meshgrid(*([z] * dim), indexing="ij")
    wgrids = np.meshgrid(*([lw] * dim), indexing="ij")
    return (np.column_stack([g.ravel() for g in grids]),
            np.sum([g.ravel() for g in wgrids], axis=0))


BOUND_CASES = [   # (id, family, link, trials, row effect, d)
    ("poisson-d1", "poisson", None, None, None, 1),
    ("poisson-d2", "poisson", None, None, None, 2),
    ("poisson-row-random-d2", "poisson", None, None, "random", 2),
    ("nb-d1", "negative_binomial", None, None, None, 1),
    ("nb-d2", "negative_binomial", None, None, None, 2),
    ("binomial-probit-d2", "binomial", "probit", None, None, 2),
    ("binomial-logit-trials4-d2", "binomial", "logit", 4, None, 2),
    ("gaussian-d2", "gaussian", None, None, None, 2),
    # random row effects share the site's joint q with the latent variables
    ("nb-row-random-d2", "negative_binomial", None, None, "random", 2),
    ("binomial-probit-row-random-d1", "binomial", "probit", None, "random", 1),
    ("gaussian-row-random-d1", "gaussian", None, None, "random", 1),
]


def fit_simulated(name, link, trials, row_effect, d, n=40, m=8, seed=17):
    """Fit data simulated from the model (with N(0, 0.6^2) site effects for random rows)."""
    kw = dict(intercept=0.5) if name in ("poisson", "negative_binomial") else {}
    com, truth = jsdm.simulate_community(n, m, num_lv=d, family=name, link=link, n_covariates=1,
                                         seed=seed, trials=trials, **kw)
    if row_effect == "random":
        fam = get_family(name, link=link)
        rng = np.random.default_rng(seed + 1)
        eta = truth.eta.to_numpy() + rng.normal(0.0, 0.6, (n, 1))
        s = None if truth.dispersion is None else fam.dispersion_param(truth.dispersion.to_numpy())
        Y = pd.DataFrame(fam.sample(eta, s, truth.trials, rng), index=com.sites,
                         columns=com.species)
        com = jsdm.Community(Y, com.X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.DataWarning)
        warnings.simplefilter("ignore", jsdm.ConvergenceWarning)
        return jsdm.gllvm(com, family=name, link=link, num_lv=d, trials=trials,
                          row_effect=row_effect, n_init=1, seed=0, checks=False)


@pytest.mark.parametrize("fid,name,link,trials,row_effect,d", BOUND_CASES,
                         ids=[c[0] for c in BOUND_CASES])
def test_elbo_below_marginal_loglik(fid, name, link, trials, row_effect, d):
    family_or_skip(name, link)
    fit = fit_simulated(name, link, trials, row_effect, d)
    prob, P = fit.problem, fit.params_raw
    elbo_i = evaluate(prob, P, grad=False).site_terms
    assert elbo_i.sum() == pytest.approx(fit.llf, rel=1e-10)
    dim = d + (row_effect == "random")
    # deterministic: adaptive tensor Gauss-Hermite quadrature around q
    u, lw = gh_grid(dim, {1: 60, 2: 30, 3: 16}[dim])
    quad_i, _ = site_log_marginal(prob, P, u, lw, inflate=1.5)
    # stochastic: importance sampling from the inflated q
    K = 20000
    u = np.random.default_rng(123).standard_normal((K, dim))
    is_i, se_i = site_log_marginal(prob, P, u, np.full(K, -np.log(K)), inflate=2.0)
    gap = quad_i - elbo_i
    assert np.median(se_i) < 0.02, f"importance sampling too noisy: median se {np.median(se_i):.3g}"
    # IS and quadrature agree within Monte Carlo error where q is a good proposal (on sites
    # whose posterior is far from q both underestimate, quadrature by missing mass)
    easy = se_i < 0.01
    assert easy.mean() > 0.5
    np.testing.assert_array_less(np.abs(is_i - quad_i)[easy], 6 * se_i[easy] + 2e-3)
    # the bound holds site by site (against the deterministic quadrature, which can only
    # underestimate log p by missing mass) and in total against importance sampling
    np.testing.assert_array_less(elbo_i, quad_i + 1e-6)
    assert elbo_i.sum() <= is_i.sum() + 5 * np.sqrt(np.sum(se_i ** 2)) + 1e-6
    if name == "gaussian":
        # optimal q is the exact posterior: the bound is tight at the optimum (with random
        # row effects only because q is joint over the latent variables and the row effect:
        # their posterior is correlated)
        assert np.abs(gap).max() < 1e-3, f"Gaussian gap should vanish, got {gap.max():.3g}"
    else:
        assert gap.sum() > 1e-3, "the bound should be strictly below the likelihood"
        assert gap.mean() < 1.0, f"the bound is unexpectedly loose: mean gap {gap.mean():.3g}"


@pytest.mark.parametrize("s_value", [-72.0, -30.0, 10.0, 25.0], ids=lambda s: f"log-phi{s:+g}")
def test_nb_elbo_value_at_extreme_dispersion(s_value):
    """phi -> 0 (the Poisson limit, where fits of rare species often go) and phi huge,
    at variances v of the linear predictor up to about 2 (as in fits)."""
    fam = family_or_skip("negative_binomial", None)
    prob = tiny_problem(fam, d=2, seed=3)
    layout = Layout(prob.n, prob.m, prob.p, prob.d, True, None)
    x = np.random.default_rng(4).normal(0.0, 0.3, layout.size)
    x[layout.slices["s"]] = s_value
    P = layout.unpack(x)
    assert evaluate(prob, P, grad=False).value == pytest.approx(direct_elbo(prob, P), rel=1e-9,
                                                                 abs=1e-9)
