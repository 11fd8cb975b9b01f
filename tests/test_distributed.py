"""The fit on a Dask cluster (issue 18) equals the in-memory fit; faults; save/load.

Each test module starts its own LocalCluster (2 worker processes, one thread each)
and closes it. Skipped when dask.distributed is not installed (``pip install
'jsdm[dask]'``).
"""
import os
import signal
import warnings

import numpy as np
import pytest

import jsdm
from jsdm.exceptions import JSDMError

distributed = pytest.importorskip("distributed")

GTOL = 1e-5        # both fits converged tightly: parameters comparable to ~1e-4


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as lc, distributed.Client(lc) as c:
        yield c


def _community(family, n=50, m=6, p=2, seed=3, **kw):
    com, _ = jsdm.simulate_community(n, m, num_lv=2, family=family, n_covariates=p, seed=seed,
                                     **kw)
    return com


def _pair(client, com, chunks=3, **kw):
    opts = dict(num_lv=2, n_init=1, gtol=GTOL, checks=False, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        mem = jsdm.gllvm(com, **opts)
        cl = jsdm.gllvm(com, client=client, chunks=chunks, **opts)
    return mem, cl


def _theta_tt(fit):
    th = fit.loadings.to_numpy()
    return th @ th.T


CASES = {
    "poisson-covariates": dict(family="poisson"),
    "nb-covariates": dict(family="nb"),
    "binomial-random-rows": dict(family="binomial", row_effect="random"),
    "ordinal-covariates": dict(family="ordinal"),
    "poisson-random-rows": dict(family="poisson", row_effect="random"),
    "poisson-fixed-rows": dict(family="poisson", row_effect="fixed", p=0),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_cluster_fit_equals_in_memory(client, case):
    kw = dict(CASES[case])
    p = kw.pop("p", 2)
    com = _community(kw["family"], p=p)
    mem, cl = _pair(client, com, **kw)
    assert cl.converged and mem.converged
    if kw.get("row_effect") != "random":        # the joint Newton phase ran (not only L-BFGS)
        joint = cl.cluster_info["joint"]
        assert joint.get("sweeps", 0) + joint["iterations"] >= 1
    assert abs(cl.llf - mem.llf) <= 1e-6 * abs(mem.llf)
    np.testing.assert_allclose(_theta_tt(cl), _theta_tt(mem), atol=2e-3)
    np.testing.assert_allclose(cl.coef.to_numpy(), mem.coef.to_numpy(), atol=2e-3)
    if mem.dispersion is not None:
        np.testing.assert_allclose(np.asarray(cl.dispersion), np.asarray(mem.dispersion),
                                   atol=5e-3, rtol=1e-3)
    if kw.get("row_effect") == "random":
        assert cl.row_sigma == pytest.approx(mem.row_sigma, abs=2e-3)
    # labels survive; the site scores come back on request (rotation-invariant: a theta')
    assert list(cl.sites) == list(mem.sites) and list(cl.species) == list(mem.species)
    np.testing.assert_allclose(cl.lv.to_numpy() @ cl.loadings.to_numpy().T,
                               mem.lv.to_numpy() @ mem.loadings.to_numpy().T, atol=5e-3)
    assert cl.nobs == mem.nobs and cl.df == mem.df


def test_standard_errors_and_correlation_equal_in_memory(client):
    com = _community("nb", seed=5)
    mem, cl = _pair(client, com)
    ok = np.isfinite(mem.bse.to_numpy())
    assert ok.sum() > 20
    np.testing.assert_allclose(cl.bse.to_numpy()[ok], mem.bse.to_numpy()[ok], rtol=2e-2,
                               atol=1e-3)
    assert list(cl.params.index) == list(mem.params.index)
    np.testing.assert_allclose(cl.residual_correlation().to_numpy(),
                               mem.residual_correlation().to_numpy(), atol=2e-3)
    text = str(cl.summary())
    assert "Loadings" in text and "sp01" in text


def test_save_loads_without_cluster(client, tmp_path):
    com = _community("poisson", seed=7)
    _, cl = _pair(client, com)
    path = cl.save(tmp_path / "cluster.jsdm")
    bse, lv, params = cl.bse, cl.lv, cl.params
    back = jsdm.load(path)            # no client involved
    assert not back.attached
    np.testing.assert_array_equal(back.params.to_numpy(), params.to_numpy())
    np.testing.assert_allclose(back.bse.to_numpy(), bse.to_numpy(), equal_nan=True)
    np.testing.assert_array_equal(back.lv.to_numpy(), lv.to_numpy())
    assert list(back.lv.index) == list(com.Y.index)
    with pytest.raises(JSDMError, match="sample_sites"):
        back.residuals()
    assert back.llf == cl.llf


def test_sample_and_scores_to_parquet(client, tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    com = _community("poisson", seed=11)
    _, cl = _pair(client, com)
    small = cl.sample_sites(20)
    assert small.problem.n >= 18 and set(small.sites) <= set(com.Y.index)
    assert small.residuals().shape == (small.problem.n, com.Y.shape[1])
    out = cl.site_scores(tmp_path / "scores")
    got = pd.concat(pd.read_parquet(os.path.join(out, f)) for f in sorted(os.listdir(out)))
    np.testing.assert_array_equal(got.to_numpy(), cl.lv.to_numpy())
    assert list(got.index) == list(com.Y.index)


def test_interrupt_returns_last_state(client):
    from jsdm.results.cluster import fit_on_cluster
    from jsdm.model.problem import build_problem

    com = _community("poisson", seed=13)
    prob = build_problem(com, family="poisson", num_lv=2)

    def hook(it, cluster):
        if it == 3:
            raise KeyboardInterrupt

    with pytest.warns(jsdm.ConvergenceWarning, match="interrupted"):
        fit = fit_on_cluster(prob, client, {"family": "poisson"}, chunks=2, hook=hook)
    assert not fit.converged and "interrupted by the user" in fit.state.message
    assert np.isfinite(fit.llf) and fit.cluster_info["interrupted"]


def test_refusals(client):
    com = _community("poisson", n=20, m=4)
    with pytest.raises(JSDMError, match="client"):
        jsdm.gllvm(com, chunks=2)
    with pytest.raises(JSDMError, match="prior_sd"):
        jsdm.gllvm(com, client=client, prior_sd=5.0)


def test_worker_killed_mid_fit_recovers():
    """A worker process is killed during the fit: its chunks are re-created from their data,
    their sites re-derived from the species parameters, and the fit reaches the ELBO of the
    undisturbed (in-memory) fit."""
    from jsdm.model.problem import build_problem
    from jsdm.results.cluster import fit_on_cluster

    com = _community("nb", n=40, m=5, seed=17)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        plain = jsdm.gllvm(com, family="nb", num_lv=2, n_init=1, gtol=GTOL, checks=False)
    prob = build_problem(com, family="nb", num_lv=2)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as lc, distributed.Client(lc) as c:
        killed = []

        def hook(it, cluster):
            if it == 5 and not killed:
                pids = c.run(os.getpid)
                addr = sorted(pids)[0]
                os.kill(pids[addr], signal.SIGKILL)
                killed.append(addr)

        with pytest.warns(RuntimeWarning, match="worker was lost"):
            fit = fit_on_cluster(prob, c, {"family": "nb"}, chunks=4, gtol=GTOL, hook=hook)
        assert killed and fit.cluster_info["recoveries"] >= 1
        assert fit.converged
        assert abs(fit.llf - plain.llf) <= 1e-6 * abs(plain.llf)


def test_parquet_files_and_dask_array_inputs(client, tmp_path):
    """Long tables in three Parquet files (and a dask array) fit as the in-memory table does;
    labels survive; bad values are reported with their file."""
    pytest.importorskip("pyarrow")
    import dask.array as da

    from jsdm.model.cluster_data import ClusterData

    com = _community("poisson", n=45, m=5, seed=19)
    long = com.Y.stack().rename("count").reset_index()
    long.columns = ["site", "species", "count"]
    paths = []
    for k, part in enumerate(np.array_split(np.arange(45), 3)):
        sel = long[long["site"].isin(com.Y.index[part])]
        paths.append(str(tmp_path / f"part{k}.parquet"))
        sel.to_parquet(paths[-1])
    opts = dict(family="poisson", num_lv=2, n_init=1, gtol=GTOL, checks=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        mem = jsdm.gllvm(com, **opts)
        data = ClusterData.from_parquet(paths, site="site", species="species", response="count",
                                        covariates=com.X, client=client)
        cl = jsdm.gllvm(data, client=client, **opts)
        arr = ClusterData.from_array(da.from_array(com.Y.to_numpy(), chunks=(15, 5)),
                                     sites=com.Y.index, species=com.Y.columns, covariates=com.X)
        cl2 = jsdm.gllvm(arr, client=client, **opts)
    for fit in (cl, cl2):
        assert abs(fit.llf - mem.llf) <= 1e-6 * abs(mem.llf)
        assert list(fit.sites) == list(com.Y.index)
        assert list(fit.coef.index) == list(com.Y.columns)
        assert list(fit.coef.columns) == list(mem.coef.columns)
    bad = long.copy()
    bad.loc[bad.index[0], "count"] = -1.0
    bad.to_parquet(tmp_path / "bad.parquet")
    data = ClusterData.from_parquet([tmp_path / "bad.parquet"], site="site", species="species",
                                    response="count")
    with pytest.raises(JSDMError, match="bad.parquet"):
        jsdm.gllvm(data, family="poisson", num_lv=1, n_init=1, client=client, checks=False)
