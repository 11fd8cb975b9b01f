"""The results layer (site_latent, loglik_is, predict, cross-validation) on models with the
newer terms: quadratic responses, species random effects, grouped site effects and
constrained / concurrent ordination. Each check compares two independent routes: the
engine's ELBO, scipy quadrature, Monte Carlo over the latent variables, or the same model
fitted by hand."""
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special, stats

import jsdm
from jsdm.exceptions import JSDMError
from jsdm.model.objective import cell_eval
from jsdm.results import marginal
from jsdm.results.latent import SiteLatent, site_latent
from _analysis_helpers import quiet_fit


def _mite(n_sites=30, n_species=10):
    com = jsdm.datasets.load_mite()
    Y = com.Y.loc[com.sites[:n_sites]]
    sp = Y.sum().sort_values(ascending=False).index[:n_species]
    X = com.X.loc[Y.index].copy()
    X["water"] = (X["WatrCont"] - X["WatrCont"].mean()) / X["WatrCont"].std()
    X["subs"] = (X["SubsDens"] - X["SubsDens"].mean()) / X["SubsDens"].std()
    X["plot"] = [f"plot{i // 5}" for i in range(n_sites)]         # blocks of 5 cores
    return Y[sp], X


@pytest.fixture(scope="module")
def quad_poisson():
    Y, _ = _mite()
    return quiet_fit(Y, family="poisson", num_lv=1, quadratic=True, n_init=1)


# --- quadratic responses -----------------------------------------------------------------------
@pytest.mark.parametrize("family,mode,num_lv", [("poisson", True, 1), ("poisson", "lv", 2),
                                                ("negative_binomial", True, 2),
                                                ("binomial", "lv", 1)])
def test_site_elbo_of_a_quadratic_fit_is_the_engines(family, mode, num_lv):
    """site_latent's closed-form moments (jsdm/results/latent.py: q_moments) give each site the
    ELBO the engine computed (log link: the E[e^eta]-matching variance; probit / logit: the
    variance of eta), so the IS check compares the right bound."""
    Y, _ = _mite()
    if family == "binomial":
        Y = (Y > 0).astype(float)
    fit = quiet_fit(Y, family=family, num_lv=num_lv, quadratic=mode, n_init=1)
    sl = site_latent(fit)
    assert sl.quad is not None and np.all(sl.quad >= 0) and np.any(sl.quad > 0)
    ours = marginal.site_elbo(sl, fit.problem.Y, fit.problem.W)
    engine = cell_eval(fit.problem, fit.state.params)["site"]
    np.testing.assert_allclose(ours, engine, rtol=1e-9, atol=1e-8)


def _scipy_site_logp(fit, i):
    """log p(y_i) for a 1-LV Poisson quadratic fit by scipy's adaptive quadrature over z."""
    P = fit.state.params
    D = np.broadcast_to(P.D_q, P.theta.shape)[:, 0]
    y = fit.problem.Y[i]
    b0, th = P.beta0, P.theta[:, 0]

    def integrand(z, shift):
        eta = b0 + th * z - D * z * z
        return np.exp((y * eta - np.exp(eta) - special.gammaln(y + 1)).sum() - shift) \
            * stats.norm.pdf(z)

    grid = np.linspace(-8, 8, 801)
    logs = [np.log(max(integrand(z, 0.0), 1e-300)) for z in grid]
    shift = max(logs)
    val, _ = integrate.quad(integrand, -12, 12, args=(shift,), points=[grid[int(np.argmax(logs))]],
                            limit=200, epsabs=0, epsrel=1e-10)
    return np.log(val) + shift


def test_loglik_is_of_a_quadratic_fit_against_scipy_quadrature(quad_poisson):
    """Importance sampling (fit.loglik_is) and the library's quadrature (log_marginal) of
    log p(y_i) under quadratic responses against scipy.integrate.quad, site by site; and
    the Poisson ELBO (exact closed form) below it."""
    fit = quad_poisson
    est = fit.loglik_is(n_draws=4000, seed=3)
    sl = site_latent(fit)
    quad = marginal.log_marginal(sl, fit.problem.Y, fit.problem.W, method="quadrature")
    ref = np.array([_scipy_site_logp(fit, i) for i in range(fit.problem.n)])
    np.testing.assert_allclose(quad.logp, ref, atol=1e-6)
    assert np.all(np.abs(est.sites["loglik"].to_numpy() - ref) < 4 * est.sites["se"] + 1e-3)
    assert np.all(est.sites["elbo"].to_numpy() <= ref + 1e-8)


def test_predict_of_a_quadratic_fit(quad_poisson):
    """Conditional predictions are the fitted values (E_q[eta] with the quadratic part); the
    marginal mean at a new site is E[exp(eta)] over z ~ N(0, 1) (checked by scipy quadrature);
    prediction intervals draw z and evaluate the quadratic exactly."""
    fit = quad_poisson
    np.testing.assert_allclose(fit.predict(type="link").to_numpy(),
                               fit.fitted(type="link").to_numpy(), atol=1e-10)
    new = pd.DataFrame(index=pd.Index(["new1", "new2"], name="site"))
    pred = fit.predict(new, type="response")
    P = fit.state.params
    D = np.broadcast_to(P.D_q, P.theta.shape)[:, 0]
    for j in range(fit.problem.m):
        ref, _ = integrate.quad(lambda z: np.exp(P.beta0[j] + P.theta[j, 0] * z - D[j] * z * z)
                                * stats.norm.pdf(z), -12, 12, epsrel=1e-11)
        np.testing.assert_allclose(pred.iloc[:, j], ref, rtol=1e-8)
    link = fit.predict(new, type="link")
    np.testing.assert_allclose(link.to_numpy(), np.broadcast_to(P.beta0 - D, (2, fit.problem.m)),
                               atol=1e-10)
    iv = fit.predict(new, type="response", interval="prediction", n_draws=4000, seed=1)
    assert np.all(iv["lower"] <= iv["upper"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)    # (a species flagged: NaN there)
        ci = fit.predict(new, type="response", interval="confidence").dropna()
    assert len(ci) and np.all(ci["lower"] < ci["prediction"]) and \
        np.all(ci["prediction"] < ci["upper"])


def test_cross_validation_cells_of_a_quadratic_fit_against_scipy(quad_poisson):
    """The per-cell marginal scores of a held-out site (marginal.prior_cells) against scipy
    quadrature of p(y_ij) = E_z[Poisson(y_ij | exp(eta_ij(z)))]; the whole-site log p(y_i)
    (score_sites, centred on the Laplace approximation) against scipy too."""
    from jsdm.results.conditional import score_sites

    fit = quad_poisson
    P = fit.state.params
    D = np.broadcast_to(P.D_q, P.theta.shape)[:, 0]
    new = pd.DataFrame(index=pd.Index(["a", "b", "c"], name="site"))
    sl = site_latent(fit, new)
    Y = fit.problem.Y[[0, 5, 9]]
    W = np.ones_like(Y)
    sc = score_sites(sl, Y, W, method="quadrature", conditional=False)
    for i in range(3):
        for j in range(fit.problem.m):
            def f(z):
                eta = P.beta0[j] + P.theta[j, 0] * z - D[j] * z * z
                return stats.poisson.pmf(Y[i, j], np.exp(eta)) * stats.norm.pdf(z)
            ref, _ = integrate.quad(f, -12, 12, epsabs=0, epsrel=1e-10, limit=200)
            assert sc["lpd_cell"][i, j] == pytest.approx(np.log(ref), abs=1e-6)
    ref_site = [_scipy_site_logp(fit, i) for i in (0, 5, 9)]
    np.testing.assert_allclose(sc["lpd"], ref_site, atol=1e-6)


def test_laplace_q_finds_the_mode():
    """fit_q with quadratic responses: the Laplace mode has zero gradient of
    log p(y | u) + log N(u; 0, I) (checked by central differences)."""
    rng = np.random.default_rng(2)
    m, k = 8, 4
    lam = rng.normal(0, 1, (m, 2))
    D = rng.uniform(0.05, 0.5, (m, 2))
    F = rng.normal(1, 0.5, (k, m))
    fam = jsdm.families.get_family("poisson")
    sl = SiteLatent(F, lam, np.eye(2), None, None, fam, None, None, pd.RangeIndex(k),
                    pd.RangeIndex(m), ("LV1", "LV2"), D, None)
    Y = rng.poisson(2.0, (k, m)).astype(float)
    W = np.ones_like(Y)
    a, A = marginal.fit_q(sl, Y, W)

    def h(u):
        return np.array([stats.poisson.logpmf(Y[i], np.exp(sl.rows([i]).eta(u[i][None])[0])).sum()
                         - 0.5 * u[i] @ u[i] for i in range(k)])
    eps = 1e-5
    for c in range(2):
        e = np.zeros((k, 2))
        e[:, c] = eps
        grad = (h(a + e) - h(a - e)) / (2 * eps)
        assert np.all(np.abs(grad) < 1e-4)
    assert np.all(np.linalg.eigvalsh(A) > 0)


# --- random effects shared between sites --------------------------------------------------------
@pytest.fixture(scope="module")
def mixed_fits():
    Y, X = _mite(n_sites=40, n_species=8)
    sr = quiet_fit(Y, X, family="poisson", num_lv=1, formula="~ water",
                   random_species="(1 + water | species)", n_init=1)
    gr = quiet_fit(Y, X, family="poisson", num_lv=1, formula="~ water", site_effects="plot",
                   n_init=1)
    return sr, gr, X


def test_loglik_is_refuses_random_effects_shared_between_sites(mixed_fits):
    sr, gr, _ = mixed_fits
    with pytest.raises(JSDMError, match="species random effects"):
        sr.loglik_is(n_draws=100)
    with pytest.raises(JSDMError, match="grouped site effects"):
        gr.loglik_is(n_draws=100)
    for fit in (sr, gr):                        # diagnose reports it instead of failing
        report = fit.diagnose()
        assert "not checked" in str(report.stats["variational approximation"])


def test_new_sites_see_species_random_effects_and_groups(mixed_fits):
    """site_latent at new sites (the scoring of cross-validation) holds the same fixed part as
    predict(newdata) for species random effects, and a grouped site effect as a latent
    coordinate with the level's variance (q for a seen level, sigma^2 for a new one)."""
    sr, gr, X = mixed_fits
    new = X.iloc[:5]
    sl = site_latent(sr, new)
    np.testing.assert_allclose(sl.F, sr.predict(new, type="link").to_numpy(), atol=1e-10)
    new_g = X.iloc[:4].copy()
    new_g.index = [f"n{i}" for i in range(4)]
    new_g["plot"] = list(new_g["plot"].iloc[:3]) + ["never seen"]
    sl = site_latent(gr, new_g)
    assert sl.latent_names[-1] == "group" and sl.prior_cov.shape == (4, 2, 2)
    term = gr.problem.predictor.group_terms[0]
    sigma2 = term.sigma(gr.state.params) ** 2
    assert sl.prior_cov[3, 1, 1] == pytest.approx(sigma2)
    assert np.all(sl.prior_cov[:3, 1, 1] < sigma2)
    # the link-scale prediction's fixed part is the same
    np.testing.assert_allclose(sl.F, gr.predict(new_g, type="link").to_numpy(), atol=1e-10)


def test_cross_validation_refits_every_term(mixed_fits):
    """Each fold refits the model the user fitted (species random effects, grouped site
    effects, constrained ordination), not a plain one."""
    sr, gr, X = mixed_fits
    Y = sr.community.Y
    rr = quiet_fit(Y, X, family="poisson", num_lv=0, num_rr=1, lv_formula="~ water + subs",
                   formula="~ 1", n_init=1)
    cv = jsdm.cross_validate({"species random": sr, "groups": gr, "constrained": rr}, k=2,
                             n_jobs=1, keep_fits=True, conditional=False)
    fold_fits = {}
    for (name, _), f in cv.fits.items():            # (model, fold) -> fit
        fold_fits.setdefault(name, []).append(f)
    assert {len(v) for v in fold_fits.values()} == {2}
    for f in fold_fits["species random"]:
        assert f.problem.predictor.species_random_terms
    for f in fold_fits["groups"]:
        assert f.problem.predictor.group_terms
    for f in fold_fits["constrained"]:
        assert f.settings.get("num_rr") == 1
    assert np.all(np.isfinite(cv.table["lpd"]))


def test_cross_validation_with_blocked_groups(mixed_fits):
    """Blocked CV by the grouping itself: every held-out level is new, its effect integrated."""
    _, gr, _ = mixed_fits
    cv = jsdm.cross_validate(gr, k=4, by="plot", n_jobs=1, conditional=False)
    assert np.isfinite(cv.table["lpd"].iloc[0])


def test_fit_q_survives_huge_loadings():
    """A held-out site under loadings of separated species (prior variance of eta in the
    hundreds): the variational fit starts narrowed and returns a finite posterior (it used
    to stop with a singular matrix)."""
    m, k = 6, 3
    lam = np.full((m, 2), 20.0)
    lam[:, 1] = np.linspace(-20, 20, m)
    fam = jsdm.families.get_family("poisson")
    sl = SiteLatent(np.zeros((k, m)), lam, np.eye(2), None, None, fam, None, None,
                    pd.RangeIndex(k), pd.RangeIndex(m), ("LV1", "LV2"))
    Y = np.array([[0, 3, 0, 1, 0, 2], [5, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0]], float)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        a, A = marginal.fit_q(sl, Y, np.ones_like(Y))
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(A))
    assert np.all(np.linalg.eigvalsh(A) > 0)


def test_compare_ordinations_by_cross_validation():
    Y, X = _mite(n_sites=40, n_species=8)
    tab, fits = jsdm.compare_ordinations(Y, X[["water", "subs"]], lv_formula="~ water + subs",
                                         d=1, formula="~ 1", n_init=1, cv=2)
    assert set(tab.index) == {"unconstrained", "concurrent", "constrained"}
    assert np.all(np.isfinite(tab["lpd"])) and tab["lpd_diff"].max() == 0.0
    cv = tab.attrs["cv"]
    assert list(cv.table.index) == list(fits)


def test_cross_validation_cells_with_two_quadratic_lvs_against_a_grid():
    """r = 2: each cell's log p(y_ij) by the mixture of the prior and the cell's Laplace
    approximation (importance sampling) against a fine 2-D grid over z (spacing 0.01).
    Measured Monte Carlo error (three seeds): sd about 0.025 with 4000 draws, 0.008 with
    40000 and no visible bias; asserted with 40000 draws within 0.04 (5 sd)."""
    Y, _ = _mite()
    fit = quiet_fit(Y, family="poisson", num_lv=2, quadratic="lv", n_init=1)
    P = fit.state.params
    D = np.broadcast_to(P.D_q, P.theta.shape)
    new = pd.DataFrame(index=pd.Index(["a", "b"], name="site"))
    sl = site_latent(fit, new)
    Yn = fit.problem.Y[[2, 7]]
    lpd = marginal.prior_cells(sl, Yn, np.ones_like(Yn), n_draws=40000, seed=1)[0]
    z = np.linspace(-8, 8, 1601)
    Z1, Z2 = np.meshgrid(z, z, indexing="ij")
    w = stats.norm.pdf(Z1) * stats.norm.pdf(Z2) * (z[1] - z[0]) ** 2
    for i in range(2):
        for j in range(fit.problem.m):
            eta = (P.beta0[j] + P.theta[j, 0] * Z1 + P.theta[j, 1] * Z2
                   - D[j, 0] * Z1 ** 2 - D[j, 1] * Z2 ** 2)
            ref = np.log((stats.poisson.pmf(Yn[i, j], np.exp(eta)) * w).sum())
            assert lpd[i, j] == pytest.approx(ref, abs=0.04)


def test_standard_errors_of_ordinal_cutpoints_with_species_random_effects():
    """Ordinal cut points (a vector dispersion, reported through a Jacobian) with species random
    effects, whose q joins the model block of the covariance: fit.bse used to fail with a
    dimension mismatch. The cut points' SEs equal the delta method J Cov J' by hand."""
    aravo = jsdm.datasets.load_aravo()
    com = aravo.subset(species=list(aravo.species[:12])).drop_empty()
    fit = quiet_fit(com, family="ordinal", num_lv=1, formula="~ scale(Snow)",
                    random_species="(1 + scale(Snow) | species)", n_init=1)
    se = fit.bse
    assert len(se) == len(fit.params)
    cut = se.index.get_level_values(0) == "dispersion"          # the cut points
    assert cut.any() and np.all(np.isfinite(se[cut])) and np.all(se[cut] > 0)
    from jsdm.results.inference import information
    info = information(fit)
    J = info.jmat.toarray()
    C = np.where(np.isfinite(info.cov_packed), info.cov_packed, 0.0)
    np.testing.assert_allclose(se[cut].to_numpy(), np.sqrt(np.diag(J @ C @ J.T))[cut], rtol=1e-10)


def test_cross_validation_reports_categories_unseen_in_training():
    """An ordinal category a species shows only at held-out sites has probability 0 under the
    refitted model (its model merged the category away): the cell is left out of every score
    and reported (count, species, a warning), not turned into -inf or a silently skipped site."""
    rng = np.random.default_rng(5)
    n, m = 40, 5
    z = rng.normal(size=n)
    Y = np.clip(np.round(1 + 0.8 * z[:, None] + rng.normal(0, 0.7, (n, m))), 0, 2)
    Y[0, 0] = 3.0                                    # species s0 shows category 3 once
    Y = pd.DataFrame(Y, index=[f"site{i}" for i in range(n)], columns=[f"s{j}" for j in range(m)])
    fit = quiet_fit(Y, family="ordinal", num_lv=1, n_init=1)
    with pytest.warns(jsdm.JSDMWarning, match="left out of every score"):
        cv = jsdm.cross_validate(fit, k=2, n_jobs=1, conditional=False)
    # expected: held-out cells whose category the species does not show in the fold's training
    folds = cv.folds.reindex(Y.index).to_numpy()
    expected = 0
    for f in np.unique(folds):
        train, test = Y[folds != f], Y[folds == f]
        for sp in Y.columns:
            expected += int((~test[sp].isin(set(train[sp]))).sum())
    assert expected >= 1
    assert cv.table["cells_excluded"].iloc[0] == expected
    assert cv.table["sites_unscored"].iloc[0] == 0
    assert np.all(np.isfinite(cv.sites["lpd"]))
    assert "s0" in " ".join(cv.fold_info["excluded_species"])


def test_traits_transformed_in_the_formula():
    """A trait transformed in the formula (scale(SLA), np.log1p(Height)) is the same model as the
    transformed trait given as a column; a trait that is not there is still refused clearly;
    an interaction without its covariate's main effect gets fourth-corner advice."""
    aravo = jsdm.datasets.load_aravo()
    com = aravo.subset(species=list(aravo.species[:20])).drop_empty()
    T = com.traits.copy()
    T["sla_std"] = (T["SLA"] - T["SLA"].mean()) / T["SLA"].std()
    T["log_height"] = np.log1p(T["Height"])
    com2 = jsdm.Community(com.Y, com.X, traits=T)
    kw = dict(family="ordinal", num_lv=1, formula="~ scale(Snow)", n_init=1)
    a = quiet_fit(com, fourth_corner="scale(Snow) + scale(Snow):(scale(SLA) + np.log1p(Height))", **kw)
    b = quiet_fit(com2, fourth_corner="scale(Snow) + scale(Snow):(sla_std + log_height)", **kw)
    assert a.llf == pytest.approx(b.llf, rel=1e-9)
    with pytest.raises(JSDMError, match="not in the community's traits"):
        quiet_fit(com, fourth_corner="scale(Snow) + scale(Snow):leafsize", **kw)
    with pytest.raises(JSDMError, match="give each covariate's community slope"):
        quiet_fit(com, fourth_corner="scale(Snow):scale(SLA)", **kw)


def test_confidence_intervals_cover_every_model_term(mixed_fits, quad_poisson):
    """Marginal confidence intervals of models beyond intercepts, slopes, loadings and row
    effects take the gradient in every model coordinate (central differences). On models
    the analytic delta method covers both agree (1e-6 relative; measured 4e-7 at most).
    For constrained ordination the intervals are wider than the intercepts-only ones the
    analytic method gave before (median link-scale width 0.54 on mite); species random
    effects and quadratic responses get intervals around the prediction; grouped site
    effects are refused with the reason."""
    from jsdm.results import predict as pr

    sr, gr, X = mixed_fits
    Y, _ = _mite(n_sites=40, n_species=8)
    new = X.iloc[:3]
    plain = quiet_fit(Y, X, family="negative_binomial", num_lv=1, formula="~ water",
                      row_effect="random", n_init=1)
    for kind in ("link", "response"):
        F, _, extra, _, tr = pr._setup(plain, new, "marginal", None, None)
        var = (plain.state.params.theta ** 2).sum(1)[None, :] + extra[:, None]
        a = pr._confidence(plain, new, F, var, kind, 0.95, tr)
        b = pr._confidence_numeric(plain, new, F, var, kind, 0.95, tr)
        np.testing.assert_allclose(b[0], a[0], rtol=1e-6)
        np.testing.assert_allclose(b[1], a[1], rtol=1e-6)
    # constrained ordination without latent variables: eta_ij = beta0_j + x_i' C theta_j, whose
    # gradient is written out here by hand (beta0_j: 1; C: x_i theta_j'; theta_j: C' x_i)
    from jsdm.results.inference import information

    rr = quiet_fit(Y, X, family="poisson", num_lv=0, num_rr=2, formula="~ 1",
                   lv_formula="~ water + subs", n_init=1)
    ci = rr.predict(new, type="link", interval="confidence", alpha=0.05)
    lay, P = rr.state.layout, rr.state.params
    cov = information(rr).cov_packed
    model = np.arange(lay.n_model)          # the model entries come first in the packed order
    at = {name: np.searchsorted(model, np.arange(lay.slices[name].start, lay.slices[name].stop))
          for name in ("beta0", "C_rr", "theta_rr")}
    free = next(sl for sl in lay.slots if sl.name == "theta_rr").mask
    Xlv = pr.new_lv_design(rr, new)
    se = np.empty((len(new), rr.problem.m))
    for i in range(len(new)):
        for j in range(rr.problem.m):
            g = np.zeros(model.size)
            g[at["beta0"][j]] = 1.0
            g[at["C_rr"]] = np.outer(Xlv[i], P.theta_rr[j]).ravel()
            dt = np.zeros_like(P.theta_rr)
            dt[j] = P.C_rr.T @ Xlv[i]
            g[at["theta_rr"]] = dt[free]
            se[i, j] = np.sqrt(g @ cov @ g)
    z = stats.norm.isf(0.025)
    width = (ci["upper"] - ci["lower"]).to_numpy().reshape(se.shape)
    np.testing.assert_allclose(width, 2 * z * se, rtol=1e-5)
    for fit, newdata in ((sr, new), (quad_poisson, None)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", jsdm.JSDMWarning)   # (HessianWarning: flagged)
            out = fit.predict(newdata, lv="marginal", type="response", interval="confidence")
        # NaN exactly for the species with parameters the Hessian flags as not identified
        # (the quadratic fit: LCIL, whose D is 0.03)
        flagged = {lab[1] for lab in information(fit).flagged}
        nan = out["lower"].isna() | out["upper"].isna()
        assert set(out.index[nan].get_level_values("species")) == flagged
        ok = out[~nan]
        assert len(ok) and np.all(ok["lower"] < ok["prediction"]) and \
            np.all(ok["prediction"] < ok["upper"])
    with pytest.raises(JSDMError, match="grouped site effects"):
        gr.predict(new, type="link", interval="confidence")
