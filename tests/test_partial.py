"""Direct associations: partial correlations, the graphical lasso, the network plot."""
import warnings

import numpy as np
import pandas as pd
import pytest

import jsdm
from jsdm.analysis.partial import _cov2cor, direct_covariance, glasso_path, graphical_lasso


def _fit(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        return jsdm.gllvm(*args, **kwargs)


@pytest.fixture(scope="module")
def nb_fit():
    com, _ = jsdm.simulate_community(60, 10, num_lv=2, family="nb", n_covariates=1, seed=21,
                                     intercept=1.0)
    return _fit(com, family="nb", num_lv=2, seed=1)


def _random_correlation(p, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((3 * p, p)) @ (np.eye(p) + 0.4 * np.diag(np.ones(p - 1), 1))
    return np.corrcoef(A, rowvar=False)


# --- the graphical lasso ----------------------------------------------------------------------
@pytest.mark.parametrize("penalty", [0.02, 0.1, 0.3])
def test_graphical_lasso_satisfies_its_optimality_conditions(penalty):
    S = _random_correlation(12, 3)
    Z, info = graphical_lasso(S, penalty, tol=1e-9)
    assert info["converged"]
    W = np.linalg.inv(info["X"])
    off = ~np.eye(12, dtype=bool)
    nz = (Z != 0) & off
    # KKT: W = S + penalty * sign(P) on the support, |W - S| <= penalty off it, W_jj = S_jj
    assert np.allclose((W - S)[nz], penalty * np.sign(Z[nz]), atol=1e-5)
    assert np.all(np.abs(W - S)[~nz & off] <= penalty + 1e-5)
    assert np.allclose(np.diag(W), np.diag(S), atol=1e-5)
    assert np.allclose(Z, Z.T)


def test_graphical_lasso_limits():
    S = _random_correlation(8, 4)
    Z0, _ = graphical_lasso(S, 0.0, tol=1e-10)
    assert np.allclose(Z0, np.linalg.inv(S), rtol=1e-5, atol=1e-6)
    big = np.abs(S[~np.eye(8, dtype=bool)]).max()
    Zb, _ = graphical_lasso(S, big * 1.01)
    assert np.count_nonzero(Zb - np.diag(np.diag(Zb))) == 0
    assert np.allclose(np.diag(Zb), 1.0 / np.diag(S), rtol=1e-5)


def test_glasso_path_is_monotone_in_sparsity():
    S = _random_correlation(10, 5)
    _, path = glasso_path(S, np.geomspace(0.5, 0.01, 12), n=30)
    assert path["penalty"].is_monotonic_decreasing
    assert path["edges"].iloc[-1] > path["edges"].iloc[0]     # (not monotone step by step)
    assert np.all(np.diff(path["loglik"]) >= -1e-6)              # less penalty, better fit


# --- partial correlations of a fit --------------------------------------------------------------
def test_inverse_partial_correlations(nb_fit):
    pc = nb_fit.partial_correlation(method="inverse")
    th = nb_fit.loadings.to_numpy()
    # the covariance whose correlations residual_correlation() reports by default
    S = nb_fit.residual_covariance(add_family_variance="observation").to_numpy()
    assert np.allclose(S - th @ th.T, np.diag(np.diag(S - th @ th.T)))
    assert np.allclose(_cov2cor(S), nb_fit.residual_correlation().to_numpy())
    P = np.linalg.inv(S)
    expect = -P / np.sqrt(np.outer(np.diag(P), np.diag(P)))
    np.fill_diagonal(expect, 1.0)
    assert np.allclose(pc.to_numpy(), expect, atol=1e-10)
    assert pc.index.equals(nb_fit.species) and np.allclose(pc, pc.T)
    gl = direct_covariance(nb_fit, diagonal="lognormal")[1]
    assert np.allclose(gl, np.log1p(nb_fit.dispersion.to_numpy()))        # R gllvm's term


def test_glasso_partial_correlations_are_sparse(nb_fit):
    pc = nb_fit.partial_correlation()
    path = pc.attrs["path"]
    assert pc.attrs["method"] == "glasso" and pc.attrs["select"] == "bic"
    assert pc.attrs["penalty"] == path.loc[path["bic"].idxmin(), "penalty"]
    iu = np.triu_indices(10, 1)
    assert (pc.to_numpy()[iu] == 0).sum() > 0
    assert pc.attrs["edges"] == (pc.to_numpy()[iu] != 0).sum()
    fixed = nb_fit.partial_correlation(penalty=0.0)
    assert np.allclose(fixed, nb_fit.partial_correlation(method="inverse"), atol=1e-4)
    cv = nb_fit.partial_correlation(select="cv", n_folds=3)
    assert "cv_loglik" in cv.attrs["path"].columns and np.isfinite(cv.attrs["penalty"])


def test_partial_correlation_errors():
    com, _ = jsdm.simulate_community(40, 6, num_lv=1, family="poisson", seed=2)
    fit = _fit(com, family="poisson", num_lv=1, seed=1)
    with pytest.raises(jsdm.JSDMError, match="singular"):
        fit.partial_correlation(diagonal="lognormal")       # Poisson: no gllvm family term
    assert np.isfinite(fit.partial_correlation(method="inverse").to_numpy()).all()
    with pytest.raises(jsdm.JSDMError, match="method"):
        fit.partial_correlation(method="ridge")
    with pytest.raises(jsdm.JSDMError, match="select"):
        fit.partial_correlation(select="aic")
    with pytest.raises(jsdm.JSDMError, match="6 non-negative"):
        fit.partial_correlation(diagonal=[1.0, 2.0])


# --- recovery of a sparse precision matrix (bench/partial_recovery.py has the full study) -----
def sparse_precision(m, rng):
    """Chain plus a few random edges, strong partial correlations (smallest eigenvalue 0.15)."""
    A = np.zeros((m, m))
    A[np.arange(m - 1), np.arange(1, m)] = rng.choice([-1, 1], m - 1) * rng.uniform(0.6, 1.0, m - 1)
    iu = np.triu_indices(m, 2)
    pick = rng.random(len(iu[0])) < 0.03
    A[iu[0][pick], iu[1][pick]] = rng.choice([-1, 1], pick.sum()) * rng.uniform(0.6, 1.0, pick.sum())
    A = A + A.T
    return A + np.eye(m) * (0.15 - np.linalg.eigvalsh(A).min())


@pytest.mark.slow
def test_partial_correlations_beat_thresholded_correlations():
    from jsdm.results.crossval import _auc

    res = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        Om = sparse_precision(15, rng)
        S = np.linalg.inv(Om)
        R = S / np.sqrt(np.outer(np.diag(S), np.diag(S)))
        Y = rng.multivariate_normal(np.zeros(15), R, size=400)
        com = jsdm.Community(pd.DataFrame(Y, columns=[f"sp{j:02d}" for j in range(15)]))
        fit = _fit(com, family="gaussian", num_lv=4, seed=1, n_init=1)
        iu = np.triu_indices(15, 1)
        truth = (Om[iu] != 0).astype(float)
        pc = fit.partial_correlation(method="inverse").to_numpy()[iu]
        cor = fit.residual_correlation().to_numpy()[iu]
        res.append((_auc(truth, np.abs(pc)), _auc(truth, np.abs(cor))))
    res = np.array(res)
    assert res[:, 0].mean() > res[:, 1].mean()


# --- the network plot ---------------------------------------------------------------------------
def test_network_plot(nb_fit):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jsdm.plotting import plot_network

    pc = nb_fit.partial_correlation()
    ax = nb_fit.plot_network(layout="spring")
    edges = [c for c in ax.collections if c.get_gid() == "edges"]
    assert len(edges) == 1 and len(edges[0].get_segments()) == pc.attrs["edges"]
    labels = [t for t in ax.texts if t.get_gid() == "labels"]
    assert sorted(t.get_text() for t in labels) == sorted(map(str, nb_fit.species))
    m = pd.DataFrame(np.eye(40), index=[f"s{i}" for i in range(40)],
                     columns=[f"s{i}" for i in range(40)])
    m.iloc[0, 1] = m.iloc[1, 0] = -0.4
    ax2 = plot_network(m, layout="circle", labels=False)
    seg = [c for c in ax2.collections if c.get_gid() == "edges"][0]
    assert len(seg.get_segments()) == 1
    with pytest.raises(jsdm.JSDMError, match="layout"):
        plot_network(m, layout="tree")
    plt.close("all")
