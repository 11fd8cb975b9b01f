"""A model fitted on a Dask cluster (``jsdm.gllvm(..., client=client)``).

The species-level estimates (coefficients, loadings, dispersions, the row-effect
sd) live on the driver and every table built from them works as for an in-memory
fit: ``coef``, ``loadings``, ``params``, ``summary()`` with standard errors,
``residual_correlation()`` with intervals, ``association_table()``. The data and the
site parameters stay on the workers: ``lv`` / ``site_scores()`` bring the site
scores back (or write them to Parquet), ``sample_sites(k)`` gives an in-memory fit
on k sites (data and site parameters) for residual plots and the report. A cluster
fit saved with ``fit.save(path)`` keeps the site scores and the curvature the
standard errors come from, and loads without a cluster (``jsdm.load``).

Standard errors: the negative Schur complement of the Hessian over the site blocks,
-S = -H_pp + sum_i H_pv,i H_vv,i^-1 H_vp,i, is a sum over sites; every chunk computes
its part with the in-memory engine's :func:`jsdm.model.hessian.hessian_blocks` and
the driver adds them up and inverts as :mod:`jsdm.results.inference` does.
"""
import numpy as np
import pandas as pd

from ..exceptions import JSDMError
from .fitted import GLLVMResults

_NEEDS_DATA = ("fitted", "linear_predictor", "residuals", "predict", "predict_interval",
               "predict_conditional", "loglik_is", "cross_validate", "simulate", "plot_residuals",
               "plot_ordination", "ordination", "report", "diagnose", "environmental_covariance",
               "environmental_correlation", "variance_partition", "plot_variance_partition")


def _needs_data(name):
    def method(self, *args, **kwargs):
        raise JSDMError(
            f"fit.{name}() needs the data at every site, which stay on the cluster for a "
            "cluster fit; use fit.sample_sites(1000).{name}(...) for an in-memory fit on a "
            "sample of sites (same estimates), or fit.site_scores() for the site scores.".replace(
                "{name}", name))
    method.__name__ = name
    method.__doc__ = (f"Not available on a cluster fit (the data stay on the workers); "
                      f"``fit.sample_sites(k).{name}(...)`` works on a sample of sites.")
    return method


class ClusterGLLVMResults(GLLVMResults):
    """A GLLVM fitted on a Dask cluster; species-level results on the driver.

    Parameters
    ----------
    problem : Problem
        The model on zero sites (labels, terms, family); the data stay on the cluster.
    state : FitState
        Species and global estimates (the site arrays are empty here).
    settings : dict
        The call's options; ``settings["cluster"]`` holds the site labels, the
        number of observed cells and, once computed (or after loading), the site
        scores and the negative Schur complement.
    cluster : jsdm.model.distributed.ClusterState, optional
        The chunks on the cluster (None after loading).
    """

    def __init__(self, problem, state, settings, cluster=None):
        super().__init__(problem, state, settings)
        object.__setattr__(self, "_cluster", cluster)
        object.__setattr__(self, "_extra", {})

    # --- identity --------------------------------------------------------------
    @property
    def cluster_info(self):
        """dict: site labels, nobs, iterations' bytes and time (``rounds``), and what is stored."""
        return self._settings["cluster"]

    @property
    def attached(self):
        """True while the fit holds its chunks on a live cluster."""
        return self._cluster is not None

    @property
    def sites(self):
        """Site labels (pandas Index, n), from the chunks."""
        return pd.Index(self.cluster_info["sites"])

    @property
    def nobs(self):
        return int(self.cluster_info["nobs"])

    @property
    def df(self):
        extra = len(self.sites) - 1 if self.row_effect == "fixed" else 0
        return int(self.state.layout.n_model) + extra

    def __repr__(self):
        return (f"<ClusterGLLVMResults: {self.family.name}({self.family.link}), {len(self.sites)} "
                f"sites x {len(self.species)} species, {self.num_lv} LVs, ELBO {self.llf:.3f}, "
                f"{'on a cluster' if self.attached else 'detached'}>")

    # --- site scores -------------------------------------------------------------
    def site_scores(self, path=None):
        """Site scores (latent-variable means), sites x LV.

        Parameters
        ----------
        path : str, optional
            A folder: each chunk writes its sites to ``part-<k>.parquet`` there (on
            the workers; the folder must be reachable from them) and the path is
            returned. Without it the scores come back as a DataFrame.
        """
        if path is not None:
            if not self.attached:
                self.lv.to_parquet(f"{path}/part-0.parquet")
                return path
            from ..model.distributed import write_scores
            cl = self._cluster
            cl.call(write_scores, str(path), self.lv_names)
            return path
        return self.lv

    @property
    def lv(self):
        """Sites x LV variational means (fetched from the workers once, then kept)."""
        a = self.cluster_info.get("lv")
        if a is None:
            a = self._fetch("a")
            self._extra["lv"] = a
        return pd.DataFrame(np.asarray(a), index=self.sites, columns=self.lv_names)

    def _fetch(self, name):
        if "lv" in self._extra and name == "a":
            return self._extra["lv"]
        if not self.attached:
            raise JSDMError("the site scores were not stored with this cluster fit")
        from ..model.distributed import site_fields
        cl = self._cluster
        parts = cl.call(site_fields, [name])
        return np.concatenate([p[name] for p in parts], axis=0)

    def sample_sites(self, k=1000, seed=0):
        """An in-memory :class:`GLLVMResults` on about k sites (their data and site parameters)
        with the cluster's species estimates: residuals, plots and predictions on a sample.

        Its ``llf`` is the ELBO of those sites only.
        """
        if not self.attached:
            raise JSDMError("sample_sites() needs the fit's cluster (the data stay there); it is "
                            "not available on a loaded cluster fit")
        from ..model.distributed import sample_problem
        prob, state = sample_problem(self, k, seed)
        settings = {k2: v for k2, v in self._settings.items() if k2 != "cluster"}
        settings["sampled_from_cluster"] = True
        return GLLVMResults(prob, state, settings)

    # --- inference -------------------------------------------------------------------
    def _cluster_information(self):
        """The Information of jsdm.results.inference, from the chunks' Schur parts."""
        info = self.cluster_info
        negS, bad = info.get("neg_schur"), info.get("bad_sites", [])
        if negS is None:
            negS, bad = self._extra.get("neg_schur"), self._extra.get("bad_sites", [])
        if negS is None:
            if not self.attached:
                raise JSDMError("this cluster fit was saved without its curvature; standard "
                                "errors need the cluster")
            from ..model.distributed import schur_sum
            negS, bad = schur_sum(self._cluster)
            self._extra["neg_schur"], self._extra["bad_sites"] = negS, bad
        from .inference import information_from
        return information_from(self, np.asarray(negS), [self.sites[i] for i in bad])

    def save(self, path):
        """Save the fit (estimates, site scores, curvature); it loads without a cluster."""
        from .inference import information
        from .io import save

        info = information(self)
        data = dict(self.cluster_info)
        data["lv"] = np.asarray(self.lv.to_numpy(), dtype=float)
        data["neg_schur"] = np.asarray(info.neg_schur, dtype=float)
        data["bad_sites"] = [int(np.flatnonzero(self.sites == s)[0]) for s in info.bad_sites]
        data.pop("rounds", None)
        data.pop("products", None)
        data.pop("joint", None)
        settings = dict(self._settings)
        settings["cluster"] = data
        return save(_Saving(self, settings), path)


class _Saving:
    """What io.save reads of a fit, with the cluster settings completed."""

    def __init__(self, fit, settings):
        self._fit, self.settings = fit, settings

    def __getattr__(self, name):
        return getattr(self._fit, name)


for _name in _NEEDS_DATA:
    setattr(ClusterGLLVMResults, _name, _needs_data(_name))


def fit_on_cluster(prob, client, settings, *, chunks=None, n_init=1, seed=0, maxiter=5000,
                   gtol=1e-3, verbose=False, hook=None, specs=None):
    """Fit ``prob`` (or the chunks ``specs``) on the cluster of ``client``; a
    :class:`ClusterGLLVMResults`."""
    from ..model import distributed as dist

    st = dist.run(prob, client, chunks=chunks, n_init=n_init, seed=seed, maxiter=maxiter,
                  gtol=gtol, verbose=verbose, hook=hook, specs=specs)
    cl = st.cluster
    model = cl.specs[0].model
    prob0 = dist.driver_problem(model, len(model["terms"]))
    state = dist.to_fit_state(st, prob0)
    settings = dict(settings)
    settings["cluster"] = {
        "sites": [s for spec in cl.specs for s in spec.sites],
        "nobs": dist.nobs_of(cl), "chunks": len(cl.specs),
        "recoveries": cl.recoveries, "interrupted": bool(st.interrupted),
        "rounds": [list(r) for r in cl.rounds],
        "products": [list(r) for r in cl.products],
        "joint": dict(getattr(cl, "joint", None) or {})}
    return ClusterGLLVMResults(prob0, state, settings, cluster=cl)


def gllvm_on_cluster(data, X, *, client, chunks, family, trials, call, n_init, seed, maxiter,
                     gtol, verbose, prior_sd, formula):
    """``jsdm.gllvm(..., client=client)``: validate as in memory (or per chunk for
    :class:`~jsdm.data.cluster.ClusterData`), then fit on the cluster."""
    from ..model.fit import DEFAULT_SEED
    from ..model.problem import build_problem

    seed = DEFAULT_SEED if seed is None else seed
    if not isinstance(seed, (int, np.integer)):
        raise JSDMError(f"with client= the seed must be an int (each chunk draws from "
                        f"(seed, chunk)); got {type(seed).__name__}")
    settings = dict(family=family.name, link=family.link, num_lv=call["num_lv"], formula=formula,
                    cutpoints=getattr(family, "cut_structure", None),
                    row_effect=call["row_effect"], n_init=n_init, seed=seed, maxiter=maxiter,
                    gtol=gtol, prior_sd=prior_sd)
    if call["formula"] != formula:
        settings["site_formula"] = call["formula"]
    specs, prob = None, None
    if hasattr(data, "chunk_specs"):            # jsdm.model.cluster_data.ClusterData
        if any(call.get(k) for k in ("species_random", "community_slopes", "site_effects")):
            raise JSDMError("random_species=, fourth_corner= and site_effects= are not available "
                            "with ClusterData yet; fit them in memory")
        specs = data.chunk_specs(family=family, num_lv=call["num_lv"],
                                 row_effect=call["row_effect"], formula=call["formula"],
                                 client=client, chunks=chunks)
    else:
        prob = build_problem(data, X, family=family, trials=trials, **call)
        if prior_sd is not None:
            prob.info["prior_sd"] = float(prior_sd)
    return fit_on_cluster(prob, client, settings, chunks=chunks, n_init=n_init, seed=seed,
                          maxiter=maxiter, gtol=gtol, verbose=verbose, specs=specs)


def _cluster_species_mean(self, beta0=None, B=None, theta=None, s=None):
    """Species means over observed sites, summed over the chunks (``species_mean``)."""
    if not self.attached:
        raise JSDMError("the observation-level variance needs the species' mean responses over "
                        "the sites, which stay on the cluster: with a loaded cluster fit use "
                        "add_family_variance=False (or 'trigamma' / 'lognormal')")
    from ..analysis.associations import _chunk_species_mean
    cl = self._cluster
    parts = cl.call(_chunk_species_mean, (beta0, B, theta, s), self.row_sigma)
    tot = sum(p[0] for p in parts)
    w = sum(p[1] for p in parts)
    return tot / np.maximum(w, 1.0)


ClusterGLLVMResults._cluster_species_mean = _cluster_species_mean
ClusterGLLVMResults.row_effects = property(
    lambda self: None if self.state.params.alpha is None or self.row_effect is None else
    pd.Series(self._fetch("alpha"), index=self.sites, name="row_effect"),
    doc="Site effects (fixed estimates or random-effect predictions), fetched from the workers.")
