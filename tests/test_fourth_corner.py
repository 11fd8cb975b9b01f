"""The fourth corner: community slopes with species-trait interactions (fixed) and trait-explained
random slopes, on aravo against R gllvm (../shared/reference, WAVE2.md A9a / A9b).

gllvm's binomial-probit VA maximises a looser bound than jsdm's exact one (a latent-normal
augmentation with a factorised q; see tests/test_reference_mite.py), so on the same model our
bound must be at least as high; the coefficients then differ (the bounds have different
optima), so only their signs are compared. A9b (randomX) did not converge in R (WAVE2.md:
its random-slope variance collapsed to 1e-9 with |gradient| 4.2)."""
import json

import numpy as np
import pandas as pd
import pytest

import jsdm

from _analysis_helpers import reference_dir

REF = reference_dir()
TRAITS_FORMULA = "Snow + Slope + (Snow + Slope):(Height + SLA)"


def _aravo():
    aravo = jsdm.datasets.load_aravo()      # the bundled copy of ../shared/data/aravo
    spe = aravo.Y
    X = aravo.X[["Snow", "Slope"]].astype(float)
    T = aravo.traits[["Height", "SLA"]].astype(float)
    # as wave2_mite_aravo.R: scale() with sd (n - 1)
    return jsdm.Community((spe > 0).astype(float), (X - X.mean()) / X.std(),
                          (T - T.mean()) / T.std())


def _ref(name):
    path = REF / name
    if not path.exists():
        pytest.skip("reference fits not available")
    return json.loads(path.read_text())["fit"]


@pytest.fixture(scope="module")
def fixed_fit():
    with pytest.warns(Warning):          # rare species: DataWarning / large coefficients
        return jsdm.gllvm(_aravo(), family="binomial", link="probit", num_lv=2,
                          formula="~ Snow + Slope", fourth_corner=TRAITS_FORMULA, n_init=1)


def test_fixed_fourth_corner_on_aravo_against_gllvm(fixed_fit):
    ref = _ref("wave2_aravo_gllvm_probit_fourthcorner_lv2.json")
    fit = fixed_fit
    assert fit.converged
    assert fit.df == ref["df"]                               # 251 parameters, as gllvm
    assert fit.llf >= ref["logLik"]                          # exact bound >= gllvm's looser one
    fc = fit.fourth_corner()
    assert list(fc.index) == ["Snow", "Slope"] and list(fc.columns) == ["Height", "SLA"]
    r = np.array(ref["fourth_corner"]["values"])
    assert (np.sign(fc.to_numpy()) == np.sign(r)).all()
    tab = fit.fourth_corner(se=True)
    assert list(tab.columns) == ["covariate", "trait", "estimate", "std_err", "z", "p_value",
                                 "lower", "upper"]
    assert (tab["std_err"] > 0).all() and (tab["lower"] < tab["estimate"]).all()


@pytest.mark.slow        # 25 s; the mite formulas check formula = wide call by default
def test_the_long_formula_is_the_wide_call(fixed_fit):
    com = _aravo()
    long = com.to_long()
    resp = [c for c in long.columns if c not in ("site", "species", "Snow", "Slope", "Height",
                                                 "SLA")][0]
    with pytest.warns(Warning):
        fit = jsdm.gllvm(long, formula=f"{resp} ~ 0 + species + {TRAITS_FORMULA} "
                                      "+ rr(0 + species | site, d = 2)",
                         family="binomial", link="probit", n_init=1)
    assert abs(fit.llf - fixed_fit.llf) < 1e-6 * abs(fixed_fit.llf)


def test_fourth_corner_plot_marks_significant_cells(fixed_fit):
    import matplotlib
    matplotlib.use("Agg")
    ax = fixed_fit.plot_fourth_corner()
    marks = [t for t in ax.texts if t.get_gid() == "significant"]
    tab = fixed_fit.fourth_corner(se=True)
    assert len(marks) == int(((tab["lower"] > 0) | (tab["upper"] < 0)).sum())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Height", "SLA"]


@pytest.mark.slow
def test_trait_explained_random_slopes_on_aravo_against_gllvm_randomx():
    ref = _ref("wave2_aravo_gllvm_probit_fourthcorner_randomX_lv2.json")
    with pytest.warns(Warning):
        fit = jsdm.gllvm(_aravo(), family="binomial", link="probit", num_lv=2,
                         formula="~ Snow + Slope", n_init=1,
                         random_species=TRAITS_FORMULA + " + (0 + Snow + Slope | species)")
    assert fit.converged
    assert fit.df == ref["df"]                                # 254: + 2 sds, 1 correlation
    assert fit.llf >= ref["logLik"]
    fc = fit.fourth_corner()
    assert fc.shape == (2, 2)
    vc = fit.varcorr()
    assert (vc.loc[vc["var2"].isna(), "sdcor"] > 0.05).all()  # R's collapse to 1e-9 not repeated


def _small(seed=0, n=50, m=12):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 2)), columns=["x1", "x2"])
    T = pd.DataFrame(rng.normal(size=(m, 1)), columns=["h"], index=[f"sp{j}" for j in range(m)])
    slope = 0.3 + 0.4 * T["h"].to_numpy()
    eta = rng.normal(0, 1, m)[None, :] + X[["x1"]].to_numpy() * slope[None, :]
    Y = pd.DataFrame(rng.poisson(np.exp(eta)), columns=T.index)
    return jsdm.Community(Y, X, T)


@pytest.mark.parametrize("kw", [dict(fourth_corner="x1 + x2 + x1:h"),
                                dict(random_species="x1 + x1:h + (0 + x1 | species)")],
                         ids=["fixed", "random slopes"])
def test_fourth_corner_fits_predict_and_save_load(kw, tmp_path):
    import warnings
    com = _small()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = jsdm.gllvm(com, family="poisson", num_lv=1, formula="~ x1 + x2", **kw)
    fc = fit.fourth_corner()
    assert fc.shape == (1, 1) and abs(fc.iloc[0, 0] - 0.4) < 0.15
    new = com.X.iloc[:4]
    eta = fit.predict(new, type="link").to_numpy()
    C = fit.coef
    want = C["Intercept"].to_numpy()[None, :] + new.to_numpy() @ C[["x1", "x2"]].to_numpy().T
    np.testing.assert_allclose(eta, want, rtol=1e-10)
    fit.save(tmp_path / "f.jsdm")
    back = jsdm.load(tmp_path / "f.jsdm")
    assert back.llf == fit.llf
    pd.testing.assert_frame_equal(back.fourth_corner(), fc)


def test_report_shows_fixed_effects_random_effects_and_the_fourth_corner(tmp_path):
    import warnings
    com = _small()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = jsdm.gllvm(com, family="poisson", num_lv=1, formula="~ x1 + x2",
                         random_species="x1 + x1:h + (1 + x1 | species)")
    path = tmp_path / "r.html"
    with warnings.catch_warnings():
        warnings.simplefilter("error", jsdm.JSDMWarning)     # no section may fail
        warnings.filterwarnings("ignore", category=jsdm.DataWarning)
        fit.report(path)
    text = path.read_text()
    for needle in ("Community-level fixed effects", "Random species effects", "fourth corner"):
        assert needle in text


def test_reordered_species_carry_their_traits():
    """The optimiser works on species reordered by their loadings (anchor species first,
    ``fit._reordered_problem``); the species traits must move with them."""
    import warnings

    from jsdm.model.fit import _reordered_problem, make_layout, reorder_species
    from jsdm.model.formula import parse_fourth_corner
    from jsdm.model.problem import build_problem

    com = _small(seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prob = build_problem(com, family="poisson", num_lv=1, formula="~ x1 + x2",
                             community_slopes=parse_fourth_corner("x1 + x2 + x1:h"))
    layout = make_layout(prob)
    P = layout.unpack(np.random.default_rng(0).normal(0, 0.3, layout.size))
    order = np.arange(prob.m)[::-1]
    work = _reordered_problem(prob, order)
    Q = reorder_species(P, order, layout)
    np.testing.assert_allclose(work.predictor.mean(Q), prob.predictor.mean(P)[:, order],
                               rtol=1e-12)
