"""The fitted GLLVM: estimates as labelled tables, information criteria, fitted values.

A :class:`GLLVMResults` is immutable: its arrays are read-only, its parameter
records refuse assignment, and derived statistics are computed once and
handed out as copies. The convenience methods at the bottom are delegations
to results/, analysis/, plotting/ and report/ (imported inside the method)
that spell out the arguments of the function they call.
"""
import functools

import numpy as np
import pandas as pd

from ._frozen import freeze
from ..model.objective import moments


def _cached(func):
    """A derived statistic: computed once per fit, each access returns a copy.

    DataFrames and Series are copied (so that editing one cannot change the
    fit); arrays come back as read-only views.
    """
    key = "_cached_" + func.__name__

    @functools.wraps(func)
    def getter(self):
        store = self.__dict__
        if key not in store:
            store[key] = func(self)
        val = store[key]
        if isinstance(val, (pd.DataFrame, pd.Series)):
            return val.copy()
        if isinstance(val, np.ndarray):
            view = val.view()
            view.setflags(write=False)
            return view
        return val

    return property(getter, doc=func.__doc__)


class GLLVMResults:
    """A fitted GLLVM, as returned by :func:`jsdm.gllvm` and :func:`jsdm.load`.

    Estimates are labelled tables (species, sites, covariate terms, latent
    variables); methods give inference, predictions, residuals, associations,
    ordination, plots and the report. The object never changes after
    construction: its arrays are read-only and derived statistics are cached.

    Parameters
    ----------
    problem : jsdm.model.problem.Problem
        The data and model specification the engine fitted.
    state : jsdm.model.fit.FitState
        What the optimiser found (parameters, gradient, history).
    settings : dict, optional
        The call's options (seed, n_init, ...), kept for reports and refits.
    """

    def __init__(self, problem, state, settings=None):
        object.__setattr__(self, "_problem", freeze(problem))
        object.__setattr__(self, "_state", freeze(state))
        object.__setattr__(self, "_settings", dict(settings or {}))

    def __setattr__(self, name, value):
        raise AttributeError(f"a fitted GLLVMResults is read-only (cannot set {name!r}); refit "
                             "with jsdm.gllvm() to change the model")

    def __delattr__(self, name):
        raise AttributeError(f"a fitted GLLVMResults is read-only (cannot delete {name!r})")

    @property
    def problem(self):
        """The data and model specification the engine fitted (read-only arrays)."""
        return self._problem

    @property
    def state(self):
        """The optimiser's result (:class:`jsdm.model.fit.FitState`, read-only)."""
        return self._state

    @property
    def settings(self):
        """The call's options (family, num_lv, formula, seed, n_init, ...), as a new dict."""
        return dict(self._settings)

    # --- identity ---------------------------------------------------------------
    @property
    def family(self):
        """The response family (:class:`jsdm.families.Family`), with its link."""
        return self.problem.family

    @property
    def families(self):
        """Series species -> family of each species ("poisson", "binomial(probit)", ...).

        One value throughout unless the model has a family per species (``family=``
        a mapping), where it says which family each species was fitted with.
        """
        out = pd.Series("", index=self.species, name="family", dtype=object)
        for fam, cols in self.family.column_groups(len(self.species)):
            out.iloc[cols] = fam.label()
        return out

    @property
    def num_lv(self):
        """Number of latent variables d (int)."""
        return self.problem.d

    @property
    def row_effect(self):
        """Site intercepts: None, "fixed" or "random"."""
        return self.problem.row_effect

    @property
    def sites(self):
        """Site labels (pandas Index, n)."""
        return self.problem.sites

    @property
    def species(self):
        """Species labels (pandas Index, m)."""
        return self.problem.species

    @property
    def terms(self):
        """Names of the covariate columns of the design (list of str, p), e.g. "WatrCont"."""
        return list(self.problem.terms)

    @property
    def community(self):
        """The :class:`jsdm.Community` the model was fitted to (None if not kept)."""
        return self.problem.info.get("community")

    @property
    def lv_names(self):
        """Names of the latent variables: ["LV1", ..., "LVd"] (concurrent ones first, as
        "CLV1", ...)."""
        lv = self.problem.predictor.lv
        if lv is not None and lv.kind != "lv":
            return list(lv.coord_names(self.problem.predictor))
        return [f"LV{k + 1}" for k in range(self.num_lv)]

    def __repr__(self):
        fam = getattr(self.family, "composition", f"{self.family.name}({self.family.link})")
        return (f"<GLLVMResults: {fam}, {self.problem.n} sites x "
                f"{self.problem.m} species, num_lv={self.num_lv}, ELBO={self.llf:.3f}, "
                f"{'converged' if self.converged else 'NOT converged'}>")

    def _repr_html_(self):
        """A compact card for Jupyter: model, sizes, fit statistics, convergence."""
        import html

        conv = ("<span style='color:#1a7f37'>converged</span>" if self.converged else
                "<b style='color:#b00020'>NOT converged</b> (see fit.diagnose())")
        rows = [("Family", f"{self.family.name} ({self.family.link} link)"),
                ("Data", f"{self.problem.n} sites &times; {self.problem.m} species, "
                         f"{self.nobs} observed cells"),
                ("Covariates", html.escape(", ".join(self.terms)) or "none"),
                ("Latent variables", str(self.num_lv)),
                ("Ordination", self.ordination_type),
                ("Row effect", html.escape(str(self.row_effect or "none"))),
                ("ELBO (log-lik bound)", f"{self.llf:.3f}"),
                ("df / AIC / BIC", f"{self.df} / {self.aic:.2f} / {self.bic:.2f}"),
                ("Optimiser", f"{conv}, max scaled gradient {self.scaled_grad:.2g}, "
                              f"{self.n_iter} iterations")]
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>"
                       f"{v}</td></tr>" for k, v in rows)
        return (f"<div><b>GLLVMResults</b><table>{body}</table><small>fit.summary() for "
                "coefficients, SEs and intervals</small></div>")

    # --- fit quality -------------------------------------------------------------
    @property
    def llf(self):
        """The evidence lower bound at the optimum (a lower bound of the log-likelihood).

        With ``prior_sd`` (a penalised fit) this is the ELBO without the penalty,
        at the penalised estimates.
        """
        from ..model import penalty

        return self.state.value - penalty.value(self.problem, self.state.params)

    @property
    def prior_sd(self):
        """The sd of the weak Gaussian penalty on loadings and per-sd slopes, or None."""
        from ..model import penalty

        return penalty.prior_sd(self.problem)

    @property
    def df(self):
        """Number of model parameters (every term's free model parameters), counted as R
        gllvm counts them: loadings m d - d (d - 1) / 2, fixed row effects n - 1, a random
        row effect's sd 1; plus parameters estimated by profiling (a Tweedie power shared
        by all species, :func:`jsdm.profile_power`)."""
        profiled = self._settings.get("profiled") or {}     # estimated outside the engine
        return int(self.state.layout.n_model + len(profiled))

    @property
    def nobs(self):
        """Number of observed site x species cells."""
        return self.problem.nobs

    @property
    def aic(self):
        """Akaike information criterion -2 ELBO + 2 df (float)."""
        return -2.0 * self.llf + 2.0 * self.df

    @property
    def aicc(self):
        """AIC with the small-sample correction 2 df (df + 1) / (nobs - df - 1) (float)."""
        k, n = self.df, self.nobs
        return self.aic + 2.0 * k * (k + 1) / max(n - k - 1, 1)

    @property
    def bic(self):
        """Bayesian information criterion -2 ELBO + log(nobs) df (float)."""
        return -2.0 * self.llf + np.log(self.nobs) * self.df

    @property
    def converged(self):
        """True when the largest curvature-scaled gradient (``scaled_grad``) is at most ``gtol``.

        The scaled gradient of parameter k is |g_k| / sqrt(max(h_k, 1)), with g
        the gradient of the ELBO and h_k its curvature along k: a step of about
        |g_k| / h_k would change the ELBO by about (scaled gradient)^2 / 2. The
        raw ``max_grad`` can exceed ``gtol`` in a converged fit (parameters with
        large curvature, e.g. intercepts of abundant species).
        """
        return self.state.converged

    @property
    def scaled_grad(self):
        """Largest curvature-scaled gradient max_k |g_k| / sqrt(max(h_k, 1)) at the estimates:
        the quantity compared with ``gtol`` to decide ``converged``."""
        return float(self.state.scaled_grad)

    @property
    def n_iter(self):
        """Optimiser iterations, all phases and starts of the kept fit together (int)."""
        return self.state.n_iter

    @property
    def max_grad(self):
        """Largest raw |gradient| of the ELBO at the estimates (not what ``converged`` checks)."""
        return self.state.max_grad

    @property
    def history(self):
        """Optimiser history as a DataFrame (iteration, -ELBO, max |gradient|, seconds)."""
        return pd.DataFrame(self.state.history, columns=["iteration", "neg_elbo", "max_abs_grad", "seconds"])

    @property
    def fit_time(self):
        """Seconds the fit took (float; wall clock)."""
        return self.state.elapsed

    # --- estimates as labelled tables ------------------------------------------
    @property
    def params_raw(self):
        """The natural-form parameter arrays (:class:`jsdm.model.params.Params`)."""
        return self.state.params

    @property
    def model_terms(self):
        """The terms of the linear predictor (``jsdm.model.terms``), as fitted."""
        return [t for t in self.problem.model_terms if t.active(self.problem.predictor)]

    @_cached
    def _reported(self):
        """The terms' reported parameter rows (labels, values, packed positions, Jacobians)."""
        return self.problem.predictor.reported(self.state.params, self.state.layout)

    @_cached
    def coef(self):
        """Species x (Intercept, covariate terms) DataFrame: the fixed species coefficients.

        With random species effects or community slopes (the fourth corner) these are each
        species' own coefficients, as lme4's ``coef()``: fixed species coefficients plus the
        variational means of its random ones, plus its community (and trait) slopes.
        """
        pred = self.problem.predictor
        if getattr(pred, "ksr", 0) or getattr(pred, "global_terms", None):
            from .random_effects import species_coefficients
            return species_coefficients(self)
        rep = self._reported
        sel = [k for k, lab in enumerate(rep["labels"]) if lab[0] == "coef"]
        cols = list(dict.fromkeys(rep["labels"][k][2] for k in sel))
        vals = rep["values"][sel].reshape(len(self.species), len(cols))
        return pd.DataFrame(vals, index=self.species, columns=cols)

    @_cached
    def loadings(self):
        """Species x LV loadings (theta; zero above the diagonal, positive diagonal)."""
        return pd.DataFrame(self.state.params.theta, index=self.species, columns=self.lv_names)

    @_cached
    def lv(self):
        """Sites x LV variational means (site scores)."""
        return pd.DataFrame(self.state.params.a, index=self.sites, columns=self.lv_names)

    # --- constrained / concurrent / quadratic ordination (results/ordination_terms.py) ---
    @property
    def ordination_type(self):
        """The ordination fitted, in words ("unconstrained", "constrained", "concurrent",
        combinations, with "(quadratic)" for unimodal responses)."""
        from .ordination_terms import ordination_type
        return ordination_type(self)

    @_cached
    def canonical(self):
        """Canonical coefficients of the constrained (``num_rr``) and concurrent (``num_lv_c``)
        latent variables with standard errors: DataFrame indexed by (covariate, lv) with
        estimate, std_err, z, lower, upper (see ``canonical_coefficients`` in
        ``jsdm/results/ordination_terms.py`` for the conventions)."""
        from .ordination_terms import canonical_coefficients
        return canonical_coefficients(self)

    @_cached
    def ordination_scores(self):
        """Sites x LV scores of every latent variable (concurrent: C'x_i + a_i; constrained:
        C'x_i; unconstrained: a_i)."""
        from .ordination_terms import ordination_scores
        return ordination_scores(self)

    @_cached
    def ordination_loadings(self):
        """Species x LV loadings matching ``ordination_scores``."""
        from .ordination_terms import ordination_loadings
        return ordination_loadings(self)

    @_cached
    def optima(self):
        """Species x LV optima u_jk = theta_jk / (2 D_jk) of quadratic responses (NaN where the
        response is monotone, D_jk = 0); SEs in :meth:`quadratic_table`."""
        return self.quadratic_table(se=False)["optimum"].unstack("lv").reindex(
            index=self.species, columns=self.lv_names)

    @_cached
    def tolerances(self):
        """Species x LV tolerances t_jk = 1 / sqrt(2 D_jk) of quadratic responses (inf where
        D_jk = 0); SEs in :meth:`quadratic_table`."""
        return self.quadratic_table(se=False)["tolerance"].unstack("lv").reindex(
            index=self.species, columns=self.lv_names)

    def quadratic_table(self, se=True):
        """Quadratic coefficients, optima and tolerances with delta-method SEs.

        Parameters
        ----------
        se : bool
            Add the standard errors (D_se, optimum_se, tolerance_se).

        Returns
        -------
        DataFrame
            Indexed by (species, lv); see ``quadratic_table`` in ``jsdm/results/ordination_terms.py``.
        """
        from .ordination_terms import quadratic_table
        return quadratic_table(self, se=se)

    @_cached
    def gradient_length(self):
        """Gradient length (turnover) per latent variable of a quadratic fit: the range of the
        site scores in units of the species' median tolerance (Series)."""
        from .ordination_terms import gradient_length
        return gradient_length(self)

    @_cached
    def lv_cov(self):
        """Variational covariances of the site scores, ndarray (n, d, d)."""
        return self.state.params.A

    @_cached
    def dispersion(self):
        """Per-species dispersion (NB: phi with Var = mu + phi mu^2; Gaussian: sd), or None.

        A Series over species, except for families with a vector of dispersion
        parameters per species: ordinal gives a species x cut-point DataFrame
        with columns "0|1", "1|2", ..., "K-2|K-1" (the cut points tau_1 = 0 <
        tau_2 < ... between consecutive categories, on the scale of the linear
        predictor; P(y <= k) = F(tau_(k+1) - eta)). The first finite cut point is 0
        by definition (the intercept sets the location): the thresholds of R's
        ``ordinal::clm`` / ``MASS::polr`` parameterisation are tau_k - intercept.
        Categories a species never uses were merged (see the family's warning):
        its cut points are -inf below its smallest category, +inf above its
        largest, and equal around an unused middle one. With common cut points
        (``cutpoints="common"``) every row is the same.
        """
        s = self.state.params.s
        if s is None:
            return None
        name = self.family.dispersion_name or "dispersion"
        val = self.family.dispersion(s)
        if np.ndim(val) == 2:
            val = np.broadcast_to(val, (self.problem.m, val.shape[1]))
            cols = self._dispersion_labels(val.shape[1])
            return pd.DataFrame(val, index=self.species,
                                columns=pd.Index(cols, name=name))
        return pd.Series(val, index=self.species, name=name)

    #: species label of a dispersion shared by all species (ordinal common cut points)
    _COMMON = "(common)"

    def _dispersion_labels(self, k):
        labels = getattr(self.family, "dispersion_labels", None)
        return list(labels(k)) if labels is not None else [f"cut{i + 1}" for i in range(k)]

    @property
    def size(self):
        """Negative binomial size 1/phi per species (None for other families)."""
        disp = self.dispersion
        size = None if disp is None or isinstance(disp, pd.DataFrame) else self.family.size(disp)
        return None if size is None else pd.Series(np.asarray(size, dtype=float),
                                                   index=self.species, name="size")

    @_cached
    def row_effects(self):
        """Site effects (fixed estimates or random-effect predictions), or None."""
        a = self.state.params.alpha
        return None if a is None else pd.Series(a, index=self.sites, name="row_effect")

    def ranef(self, condsd=False):
        """Predicted random effects per grouping (variational means).

        See ``jsdm.results.ranef.ranef``. For species random effects these are the
        shrunken deviations from the community (and trait) mean, as lme4's ``ranef``.

        Parameters
        ----------
        condsd : bool
            Also return the variational sds, as one tidy table.

        Returns
        -------
        dict of DataFrame, or DataFrame
            {grouping: levels x variables}; with ``condsd=True`` one DataFrame with
            columns grpvar, term, grp, condval, condsd.
        """
        from .ranef import ranef
        return ranef(self, condsd)

    def varcorr(self):
        """Variances and correlations of the random effects.

        Returns
        -------
        DataFrame
            One row per (group, var1, var2) with columns group, var1, var2, vcov, sdcor,
            as R's ``as.data.frame(VarCorr(fit))`` (var2 empty: a variance, sdcor its sd;
            else a covariance, sdcor the correlation). ``summary()`` adds standard errors.
        """
        from .ranef import varcorr
        return varcorr(self)

    @property
    def row_sigma(self):
        """Standard deviation of random row effects (None otherwise)."""
        ls = self.state.params.log_sigma
        return None if ls is None else float(np.exp(ls))

    @_cached
    def params(self):
        """All model parameters as a Series indexed by (block, species, term).

        Blocks in order: "coef" (intercepts and slopes), "loading", "dispersion", then
        the site terms' ("row_effect" for fixed, "row_sigma" for random row effects);
        each term supplies its rows (``Term.reported``).
        """
        rep = self._reported
        idx = pd.MultiIndex.from_tuples(rep["labels"], names=["block", "species", "term"])
        return pd.Series(rep["values"], index=idx, name="estimate")

    # --- fitted values -----------------------------------------------------------
    @_cached
    def _moments(self):
        """(mean, variance) of the linear predictor under q, read-only arrays (n, m)."""
        out = moments(self.problem, self.state.params)
        for arr in out:
            if isinstance(arr, np.ndarray):
                arr.setflags(write=False)
        return out

    def linear_predictor(self):
        """The linear predictor at the site scores (the variational means).

        Returns
        -------
        DataFrame, shape (n_sites, n_species)
            eta_ij = offset + intercept + slopes + row effect + a_i' theta_j.
        """
        return pd.DataFrame(np.array(self._moments[0]), index=self.sites, columns=self.species)

    def fitted(self, type="response"):
        """Fitted values conditional on the site scores (variational means).

        The same values as ``predict(type=type)`` for the fitted sites.

        Parameters
        ----------
        type : {"response", "link"}
            "response": the mean of y (binomial: out of its trials; ordinal:
            the expected category); "link": the linear predictor.

        Returns
        -------
        DataFrame, shape (n_sites, n_species)
        """
        eta = self._moments[0]
        if type == "link":
            vals = np.array(eta)
        elif type == "response":
            from .predict import response_mean
            vals = response_mean(self.family, eta, self.problem.trials, self.state.params.s)
        else:
            raise ValueError(f"type must be 'response' or 'link', got {type!r}")
        return pd.DataFrame(vals, index=self.sites, columns=self.species)

    # --- inference (results/inference.py, results/summary.py) --------------------
    def cov_params(self):
        """Covariance of the model parameters (inverse negative Hessian of the ELBO).

        Returns
        -------
        DataFrame, shape (k, k)
            Indexed and columned like :attr:`params`; see
            :func:`jsdm.results.inference.cov_params`.
        """
        from .inference import cov_params
        return cov_params(self)

    @property
    def bse(self):
        """Standard errors of :attr:`params` (Series, same index)."""
        from .inference import bse
        return bse(self)

    def conf_int(self, alpha=0.05):
        """Wald confidence intervals for :attr:`params`.

        Parameters
        ----------
        alpha : float
            1 - confidence level (0.05 gives 95% intervals).

        Returns
        -------
        DataFrame, shape (k, 2)
            Columns ``lower`` and ``upper``, indexed like :attr:`params`.
            Dispersions and the row-effect sd use the interval on their
            unconstrained scale, transformed back.
        """
        from .inference import conf_int
        return conf_int(self, alpha=alpha)

    @property
    def tvalues(self):
        """Wald z statistics estimate / SE (Series indexed like :attr:`params`)."""
        from .inference import tvalues
        return tvalues(self)

    @property
    def pvalues(self):
        """Two-sided normal p-values of :attr:`tvalues` (Series indexed like :attr:`params`)."""
        from .inference import pvalues
        return pvalues(self)

    def fourth_corner(self, se=False, alpha=0.05):
        """Fourth-corner coefficients: covariates x traits.

        See ``jsdm.results.random_effects.fourth_corner``.

        Parameters
        ----------
        se : bool
            Return a long table with standard errors, z, p and Wald intervals.
        alpha : float
            Intervals at level 1 - alpha.

        Returns
        -------
        DataFrame
            Covariates x traits, or (``se=True``) one row per interaction.
        """
        from .random_effects import fourth_corner
        return fourth_corner(self, se=se, alpha=alpha)

    def plot_fourth_corner(self, ax=None, alpha=0.05):
        """Heatmap of the fourth-corner coefficients with significant cells marked.

        Parameters
        ----------
        ax : matplotlib Axes, optional
        alpha : float
            A cell is marked when its 1 - alpha Wald interval excludes 0.

        Returns
        -------
        matplotlib Axes
        """
        from ..plotting.fourth_corner import plot_fourth_corner
        return plot_fourth_corner(self, ax=ax, alpha=alpha)

    def summary(self, alpha=0.05):
        """Summary tables: coefficients, SEs, z, p, CIs; dispersions; loadings; convergence.

        Parameters
        ----------
        alpha : float
            1 - confidence level of the intervals.

        Returns
        -------
        jsdm.results.summary.Summary
            Prints as text, renders as HTML in notebooks; ``.tables`` and
            ``.to_frame()`` give the DataFrames.
        """
        from .summary import summary
        return summary(self, alpha=alpha)

    def diagnose(self, hessian=True, approximation=True, n_draws=500, seed=0):
        """Check gradient, Hessian, scaling, collapsed LVs, sparse species; say what to do.

        Parameters
        ----------
        hessian : bool
            Include the checks that need the Hessian (identifiability, huge
            standard errors); the cheap checks always run.
        approximation : bool
            Check the variational approximation against an importance-sampling
            estimate of the log-likelihood.
        n_draws : int
            Importance-sampling draws per site for that check.
        seed : int
            Seed of those draws.

        Returns
        -------
        jsdm.analysis.diagnostics.Diagnosis
            ``.ok``, ``.problems`` (each with message, evidence and remedy),
            ``.to_frame()``; see :func:`jsdm.analysis.diagnostics.diagnose`.
        """
        from ..analysis.diagnostics import diagnose
        return diagnose(self, hessian=hessian, approximation=approximation, n_draws=n_draws,
                        seed=seed)

    def predict(self, newdata=None, type=None, lv=None, interval=None, alpha=None, offset=None,
                trials=None, n_draws=1000, seed=None, summary="mean", *, level=None):
        """Predictions for the fitted sites or new sites, on the response or link scale.

        Parameters
        ----------
        newdata : DataFrame (k sites x covariates), optional
            New sites' covariates; None predicts the fitted sites.
        type : {"response", "link"}
            Scale: the mean of y (default; the scale of :meth:`fitted`) or the
            linear predictor. Leaving it out gives a FutureWarning until a
            later version (the default was "link" before jsdm 0.2).
        lv : {"conditional", "marginal"}, optional
            Plug in the fitted site scores ("conditional", the default for
            fitted sites) or integrate the latent variables out ("marginal",
            the only choice for new sites).
        interval : {None, "confidence", "prediction"}
            Deprecated here: use :meth:`predict_interval`, whose table always
            has the interval columns (FutureWarning).
        alpha : float, optional
            1 - coverage of the interval (with ``interval``).
        offset : array (k,) or (k, m), optional
            Offset for new sites (fitted sites use the fit's offset).
        trials : array, optional
            Binomial trials for new sites (default 1: probabilities).
        n_draws : int
            Monte Carlo draws for prediction intervals.
        seed : int or Generator, optional
            Seed of those draws.
        summary : {"mean", "median", "presence"} or float in (0, 1)
            With the latent variables integrated out, which summary of the
            site's expected response: its mean (default), median or a quantile
            over the latent variables, or P(y > 0) ("presence"); see
            :func:`jsdm.results.predict.predict`.
        level : float, optional
            Deprecated: coverage; use ``alpha = 1 - level``.

        Returns
        -------
        DataFrame, shape (n_sites or k, n_species)
            Sites x species (with the deprecated ``interval``: the long table
            of :meth:`predict_interval`). See
            :func:`jsdm.results.predict.predict`.
        """
        from .predict import predict
        if interval is not None:
            import warnings

            warnings.warn("predict(interval=...) is deprecated and will be removed in a future "
                          "version; use fit.predict_interval(..., interval=...), which always "
                          "returns the long table with lower and upper", FutureWarning, stacklevel=2)
        return predict(self, newdata=newdata, type=type, lv=lv, interval=interval, alpha=alpha,
                       offset=offset, trials=trials, n_draws=n_draws, seed=seed, summary=summary,
                       level=level)

    def predict_interval(self, newdata=None, *, interval="confidence", type="response", lv=None,
                         alpha=0.05, offset=None, trials=None, n_draws=1000, seed=None,
                         summary="mean"):
        """Predictions with intervals, one row per site and species.

        Parameters
        ----------
        newdata : DataFrame (k sites x covariates), optional
            New sites' covariates; None predicts the fitted sites.
        interval : {"confidence", "prediction"}
            "confidence": delta-method interval for the predicted mean
            (``lv="marginal"`` only); "prediction": central interval of a new
            response y, from ``n_draws`` simulated draws.
        type : {"response", "link"}
            Scale of the prediction.
        lv : {"conditional", "marginal"}, optional
            As in :meth:`predict`; confidence intervals need "marginal".
        alpha : float
            1 - coverage of the interval.
        offset : array (k,) or (k, m), optional
            Offset for new sites.
        trials : array, optional
            Binomial trials for new sites (default 1).
        n_draws : int
            Monte Carlo draws for prediction intervals.
        seed : int or Generator, optional
            Seed of those draws.
        summary : {"mean", "median"} or float in (0, 1)
            The summary predicted (confidence intervals: "mean" or "median").

        Returns
        -------
        DataFrame, shape (n_sites * n_species, 3)
            Indexed by (site, species); columns ``prediction``, ``lower``,
            ``upper``.
        """
        from .predict import predict
        if interval not in ("confidence", "prediction"):
            from ..exceptions import JSDMError
            raise JSDMError(f"interval must be 'confidence' or 'prediction', got {interval!r}")
        return predict(self, newdata=newdata, type=type, lv=lv, interval=interval, alpha=alpha,
                       offset=offset, trials=trials, n_draws=n_draws, seed=seed, summary=summary)

    def predict_conditional(self, newdata, observed, type="response", summary="mean",
                            offset=None, trials=None, method="auto", n_draws=2000, seed=0):
        """Predict every species at new sites given the species observed there.

        Parameters
        ----------
        newdata : DataFrame (k sites x covariates) or None
            Covariates of the new sites (None only for a model without
            covariates; the sites are then those of ``observed``).
        observed : DataFrame (k sites x species)
            Responses seen at the new sites, NaN where a species was not
            observed.
        type : {"response", "link"}
            Scale of the prediction.
        summary : {"mean", "median", "presence"} or float in (0, 1)
            Posterior predictive mean, median or quantile of the expected
            response, or P(y > 0 | observed).
        offset : array (k,) or (k, m), optional
            Offset for the new sites.
        trials : array, optional
            Binomial trials for the new sites.
        method : {"auto", "quadrature", "is"}
            Integration over the site's latent vector.
        n_draws : int
            Importance-sampling draws.
        seed : int
            Seed of the draws (default 0: deterministic).

        Returns
        -------
        DataFrame, shape (k, n_species)
            See :func:`jsdm.results.conditional.predict_conditional`.
        """
        from .conditional import predict_conditional
        return predict_conditional(self, newdata, observed, type=type, summary=summary,
                                   offset=offset, trials=trials, method=method, n_draws=n_draws,
                                   seed=seed)

    def loglik_is(self, n_draws=1000, seed=0, df=5.0, scale=1.5):
        """Importance-sampling estimate of the marginal log-likelihood at the fitted parameters.

        Parameters
        ----------
        n_draws : int
            Draws per site.
        seed : int or None
            Seed of the draws (default 0: deterministic).
        df : float
            Degrees of freedom of the multivariate t proposal.
        scale : float
            Widening of the proposal relative to q's covariance.

        Returns
        -------
        jsdm.results.likelihood.LoglikIS
            ``.value``, ``.se``, ``.elbo``, ``.gap`` and per-site ``.sites``;
            see :func:`jsdm.results.likelihood.loglik_is`.
        """
        from .likelihood import loglik_is
        return loglik_is(self, n_draws=n_draws, seed=seed, df=df, scale=scale)

    def cross_validate(self, k=5, seed=0, by=None, conditional=True, method="auto", n_draws=1000,
                       n_jobs=None, keep_fits=False):
        """K-fold cross-validation by sites of this model.

        Parameters
        ----------
        k : int
            Number of folds.
        seed : int
            Seed of the fold assignment and of any importance sampling.
        by : str, Series or None
            Blocked CV: a site covariate name or group labels by site.
        conditional : bool
            Also score each species given the others at the held-out site.
        method : {"auto", "quadrature", "is"}
            Integration over a held-out site's latent variables.
        n_draws : int
            Importance-sampling draws per site.
        n_jobs : int or None
            Processes for the folds (results do not depend on it).
        keep_fits : bool
            Keep the per-fold fits.

        Returns
        -------
        jsdm.results.crossval.CVResult
            See :func:`jsdm.cross_validate`.
        """
        from .crossval import cross_validate
        return cross_validate(self, k=k, seed=seed, by=by, conditional=conditional, method=method,
                              n_draws=n_draws, n_jobs=n_jobs, keep_fits=keep_fits)

    def simulate(self, n=1, conditional=True, seed=None):
        """Draw response tables from the fitted model.

        Parameters
        ----------
        n : int
            Number of tables.
        conditional : bool
            True: given the fitted site scores; False: fresh latent variables
            (and random row effects) for every table.
        seed : int or Generator, optional
            Seed of the draws.

        Returns
        -------
        DataFrame
            n == 1: sites x species. n > 1: rows indexed by (draw, site),
            shape (n * n_sites, n_species).
        """
        from .predict import simulate
        return simulate(self, n=n, conditional=conditional, seed=seed)

    def residuals(self, kind="dunn-smyth", seed=None):
        """Residuals conditional on the site scores.

        Parameters
        ----------
        kind : {"dunn-smyth", "response", "pearson"}
            Randomised quantile residuals (standard normal under the model),
            y - mu, or (y - mu) / sqrt(Var(y | mu)).
        seed : int or Generator, optional
            Randomisation of the Dunn-Smyth residuals of discrete families.

        Returns
        -------
        DataFrame, shape (n_sites, n_species)
            NaN where the response is missing.
        """
        from .residuals import residuals
        return residuals(self, kind=kind, seed=seed)

    # --- associations and ordination (analysis/) --------------------------------
    def residual_covariance(self, add_family_variance=False):
        """Residual covariance Theta Theta' between species (link scale).

        Parameters
        ----------
        add_family_variance : bool or {"observation", "lognormal", "trigamma"}
            Add the family's observation-level variance on the diagonal (see
            :func:`jsdm.analysis.associations.family_variance`).

        Returns
        -------
        DataFrame, shape (n_species, n_species)
        """
        from ..analysis.associations import residual_covariance
        return residual_covariance(self, add_family_variance=add_family_variance)

    def residual_correlation(self, add_family_variance="observation"):
        """Residual correlation between species (the association matrix).

        Parameters
        ----------
        add_family_variance : {"observation", "lognormal", "trigamma"} or bool
            The association measure: "observation" (default) adds each
            species' observation-level variance to the diagonal; False gives
            cov2cor(Theta Theta'); True is R gllvm's getResidualCor
            ("lognormal"). See :func:`jsdm.analysis.associations.residual_correlation`.

        Returns
        -------
        DataFrame, shape (n_species, n_species)
            Symmetric, unit diagonal.
        """
        from ..analysis.associations import residual_correlation
        return residual_correlation(self, add_family_variance=add_family_variance)

    def residual_trace(self, add_family_variance=False):
        """Trace of the residual covariance and its share per latent variable.

        Parameters
        ----------
        add_family_variance : bool or {"observation", "lognormal", "trigamma"}
            Add a ``family`` row with the sum of the family terms.

        Returns
        -------
        DataFrame, shape (num_lv + 1 or + 2, 4)
            Rows LV1..LVd[, family], total; columns ``variance``, ``share``,
            ``principal``, ``principal_share``.
        """
        from ..analysis.associations import residual_trace
        return residual_trace(self, add_family_variance=add_family_variance)

    def environmental_covariance(self, terms=None):
        """Covariance across sites of the covariate parts x_i' beta_j of two species.

        Parameters
        ----------
        terms : str or list of str, optional
            Covariate terms to include (default all).

        Returns
        -------
        DataFrame, shape (n_species, n_species)
        """
        from ..analysis.associations import environmental_covariance
        return environmental_covariance(self, terms=terms)

    def environmental_correlation(self, terms=None):
        """Correlation across sites of the covariate parts x_i' beta_j of two species.

        Parameters
        ----------
        terms : str or list of str, optional
            Covariate terms to include (default all).

        Returns
        -------
        DataFrame, shape (n_species, n_species)
        """
        from ..analysis.associations import environmental_correlation
        return environmental_correlation(self, terms=terms)

    def variance_partition(self, groups=None, normalize=True):
        """Share of each species' linear-predictor variance by component.

        Parameters
        ----------
        groups : None, "terms" or dict of str to list of str
            How covariate terms are grouped: all together, one component per
            term, or named groups.
        normalize : bool
            Shares (rows sum to 1) rather than variances.

        Returns
        -------
        DataFrame, shape (n_species, n_components)
        """
        from ..analysis.associations import variance_partition
        return variance_partition(self, groups=groups, normalize=normalize)

    def association_table(self, alpha=0.05, method="delta", add_family_variance="observation",
                          min_records=None, n_boot=200, seed=None, transform="angle"):
        """Species pairs with their residual correlation, interval and headline flag.

        Parameters
        ----------
        alpha : float
            1 - confidence level of the intervals.
        method : {"delta", "bootstrap"}
            Delta-method Wald intervals, or a parametric bootstrap.
        add_family_variance : {"observation", "lognormal", "trigamma"} or bool
            The association measure (see :meth:`residual_correlation`).
        min_records : int, optional
            Informative records a species needs for ``headline`` (default 5).
        n_boot : int
            Bootstrap refits (``method="bootstrap"``).
        seed : int, optional
            Seed of the bootstrap.
        transform : {"angle", "fisher", "none"}
            Scale of the delta-method interval.

        Returns
        -------
        DataFrame, shape (m (m - 1) / 2, 10)
            species_1, species_2, estimate, se, lower, upper, excludes_zero,
            prevalence_1, prevalence_2, headline; sorted by |estimate|.
        """
        from ..analysis.associations import association_table
        return association_table(self, alpha=alpha, method=method,
                                 add_family_variance=add_family_variance, min_records=min_records,
                                 n_boot=n_boot, seed=seed, transform=transform)

    def partial_correlation(self, method="glasso", diagonal="observation", select="bic",
                            penalty=None, penalties=None, n_folds=5, seed=0):
        """Direct associations: partial correlations, sparse by default (graphical lasso).

        Parameters
        ----------
        method : {"glasso", "inverse"}
            A sparse estimate by the graphical lasso, or all partial
            correlations from the inverse of Theta Theta' + diag(delta).
        diagonal : {"observation", "lognormal", "trigamma"} or array (m,)
            The observation-level variances delta.
        select : {"bic", "ebic", "cv"}
            How the glasso penalty is chosen when ``penalty`` is None.
        penalty : float, optional
            A fixed penalty instead of selection.
        penalties : array, optional
            The path searched.
        n_folds : int
            Folds for ``select="cv"``.
        seed : int
            Seed for ``select="cv"``.

        Returns
        -------
        DataFrame, shape (n_species, n_species)
            Unit diagonal; see :func:`jsdm.analysis.partial.partial_correlation`.
        """
        from ..analysis.partial import partial_correlation
        return partial_correlation(self, method=method, diagonal=diagonal, select=select,
                                   penalty=penalty, penalties=penalties, n_folds=n_folds,
                                   seed=seed)

    def ordination(self, scaling="symmetric", exponent=0.5, covariates=True, *, alpha=None):
        """Site and species scores on principal axes (model-based ordination).

        Parameters
        ----------
        scaling : {"symmetric", "sites", "species"}
            Biplot scaling: "sites" is exponent 1, "species" exponent 0.
        exponent : float in [0, 1]
            Exponent of the singular values given to the site scores
            (symmetric scaling).
        covariates : bool
            Add the correlations of the site covariates with the site scores.
        alpha : float, optional
            Deprecated name of ``exponent`` (FutureWarning).

        Returns
        -------
        jsdm.analysis.ordination.Ordination
            ``.sites`` (n, d), ``.species`` (m, d), ``.share``, ``.site_cov``.
        """
        from ..analysis.ordination import ordination
        return ordination(self, scaling=scaling, exponent=exponent, covariates=covariates,
                          alpha=alpha)

    # --- plots (plotting/) ------------------------------------------------------
    def plot_ordination(self, biplot=True, color=None, ellipses=False, ax=None, *, axes=(0, 1),
                        scaling="symmetric", exponent=0.5, species_scale="auto",
                        covariate_arrows=False, alpha=None, site_labels=False, species=None,
                        label_species="auto", level=None):
        """Ordination plot: sites as points, species as labelled arrows (a biplot).

        Parameters
        ----------
        biplot : bool
            Draw species as arrows.
        color : str, Series or array-like, optional
            Site covariate name or values per site to colour the points.
        ellipses : bool
            Draw (1 - ``alpha``) prediction ellipses of the site scores.
        ax : matplotlib Axes, optional
            Axes to draw on (default: a new figure).
        axes : (int, int)
            Principal axes to show (0-based).
        scaling : {"symmetric", "sites", "species"}
            Biplot scaling.
        exponent : float in [0, 1]
            Exponent of the singular values given to the site scores.
        species_scale : "auto" or float
            Display factor of the species scores.
        covariate_arrows : bool
            Arrows for the covariates' correlations with the site scores.
        alpha : float, optional
            1 - coverage of the ellipses (default 0.05).
        site_labels : bool
            Write site names next to the points.
        species : list, optional
            Species drawn as arrows.
        label_species : "auto", bool or int
            Which species are named at their arrow.
        level : float, optional
            Deprecated: coverage of the ellipses; use ``alpha``.

        Returns
        -------
        matplotlib Axes
            See :func:`jsdm.plotting.plot_ordination`.
        """
        from .ordination_terms import ordination_parts
        parts, quadratic = ordination_parts(self)
        if quadratic:     # optima in the fitted axes (a rotation changes the model)
            from ..plotting.ordination_terms import plot_optima
            return plot_optima(self, ax=ax, axes=axes, color=color, species=species)
        if parts & {"constrained", "concurrent"}:
            from ..plotting.ordination_terms import plot_constrained
            return plot_constrained(self, ax=ax, axes=axes, scaling=scaling, exponent=exponent,
                                    color=color, biplot=biplot,
                                    covariate_arrows=True,      # (the point of these plots)
                                    species=species, label_species=label_species,
                                    species_scale=species_scale)
        from ..plotting import plot_ordination
        return plot_ordination(self, biplot=biplot, color=color, ellipses=ellipses, ax=ax,
                               axes=axes, scaling=scaling, exponent=exponent,
                               species_scale=species_scale, covariate_arrows=covariate_arrows,
                               alpha=alpha, site_labels=site_labels, species=species,
                               label_species=label_species, level=level)

    def plot_response_curves(self, lv=0, species=None, ax=None, scale="response"):
        """Expected response of each species along one latent variable (bell-shaped with
        quadratic responses).

        Parameters
        ----------
        lv : int or str
            The latent variable (index or name); the others are held at 0.
        species : list, optional
            Species to draw (default: all up to 20, else the 20 with the largest peaks).
        ax : matplotlib Axes, optional
        scale : {"response", "link"}
            Expected response or linear predictor.

        Returns
        -------
        matplotlib Axes
            See ``plot_response_curves`` in ``jsdm/plotting/ordination_terms.py``.
        """
        from ..plotting.ordination_terms import plot_response_curves
        return plot_response_curves(self, lv=lv, species=species, ax=ax, scale=scale)

    def plot_associations(self, cluster=True, only_significant=False, ax=None, *, alpha=0.05,
                          method="delta", add_family_variance="observation", cmap="RdBu_r",
                          species=None, labels="auto", n_boot=200, seed=None, transform="angle"):
        """Heatmap of residual correlations (lower triangle) with a colour bar.

        Parameters
        ----------
        cluster : bool
            Order species by hierarchical clustering.
        only_significant : bool
            Blank out pairs whose (1 - alpha) interval contains 0.
        ax : matplotlib Axes, optional
            Axes to draw on (default: a new figure).
        alpha : float
            1 - confidence level (with ``only_significant``).
        method : {"delta", "bootstrap"}
            Interval method (with ``only_significant``).
        add_family_variance : {"observation", "lognormal", "trigamma"} or bool
            The association measure.
        cmap : str
            Diverging colour map.
        species : list, optional
            Species to show (default all).
        labels : "auto" or bool
            Species names on the axes.
        n_boot : int
            Bootstrap refits (``method="bootstrap"``).
        seed : int, optional
            Seed of the bootstrap.
        transform : {"angle", "fisher", "none"}
            Scale of the delta-method interval.

        Returns
        -------
        matplotlib Axes
            See :func:`jsdm.plotting.plot_associations`.
        """
        from ..plotting import plot_associations
        return plot_associations(self, cluster=cluster, only_significant=only_significant, ax=ax,
                                 alpha=alpha, method=method,
                                 add_family_variance=add_family_variance, cmap=cmap,
                                 species=species, labels=labels, n_boot=n_boot, seed=seed,
                                 transform=transform)

    def plot_residuals(self, seed=None, *, figsize=(13.0, 7.5)):
        """Dunn-Smyth residual panels (against eta, Q-Q, by site, by species, scale-location).

        Parameters
        ----------
        seed : int, optional
            Seed of the randomisation (discrete families).
        figsize : (float, float)
            Figure size in inches.

        Returns
        -------
        matplotlib Figure
            Five Axes; see :func:`jsdm.plotting.plot_residuals`.
        """
        from ..plotting import plot_residuals
        return plot_residuals(self, seed=seed, figsize=figsize)

    def plot_coefficients(self, term=None, ax=None, *, alpha=0.05, species=None, per_panel=40,
                          max_species=120):
        """Forest plot of the species' slopes with (1 - alpha) Wald intervals.

        Parameters
        ----------
        term : str, optional
            One covariate term (default: a row of panels per term).
        ax : matplotlib Axes, optional
            Draw one term on these Axes (needs ``term``).
        alpha : float
            1 - confidence level.
        species : list, optional
            Species to consider (default all).
        per_panel : int
            Species per panel.
        max_species : int
            At most this many species per term (largest |z| kept).

        Returns
        -------
        matplotlib Figure
            See :func:`jsdm.plotting.plot_coefficients`.
        """
        from ..plotting import plot_coefficients
        return plot_coefficients(self, term=term, ax=ax, alpha=alpha, species=species,
                                 per_panel=per_panel, max_species=max_species)

    def plot_network(self, ax=None, *, layout="auto", threshold=0.0, labels=True, seed=0,
                     max_width=4.0, method="glasso", diagonal="observation", select="bic",
                     penalty=None, penalties=None, n_folds=5):
        """Network of direct associations (the sparse partial correlations).

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Axes to draw on (default: a new figure).
        layout : {"auto", "spring", "circle"}
            Node placement.
        threshold : float
            Edges with |association| <= threshold are not drawn.
        labels : bool
            Label the nodes.
        seed : int
            Seed of the spring layout (and of ``select="cv"``).
        max_width : float
            Line width of the strongest edge.
        method, diagonal, select, penalty, penalties, n_folds
            The partial correlations drawn (see :meth:`partial_correlation`).

        Returns
        -------
        matplotlib Axes
            See :func:`jsdm.plotting.network.plot_network`.
        """
        from ..plotting.network import plot_network
        M = self.partial_correlation(method=method, diagonal=diagonal, select=select,
                                     penalty=penalty, penalties=penalties, n_folds=n_folds,
                                     seed=seed)
        return plot_network(M, ax=ax, layout=layout, threshold=threshold, labels=labels, seed=seed,
                            max_width=max_width)

    def plot_variance_partition(self, ax=None, *, groups=None, sort=False, colors=None,
                                species=None, labels="auto"):
        """Stacked bars per species: share of linear-predictor variance by component.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Axes to draw on (default: a new figure).
        groups : None, "terms" or dict of str to list of str
            Grouping of covariate terms (see :meth:`variance_partition`).
        sort : bool
            Sort species by their latent share.
        colors : list, optional
            One colour per component.
        species : list, optional
            Species to show (default all).
        labels : "auto" or bool
            Species names on the axis.

        Returns
        -------
        matplotlib Axes
            See :func:`jsdm.plotting.plot_variance_partition`.
        """
        from ..plotting import plot_variance_partition
        return plot_variance_partition(self, ax=ax, groups=groups, sort=sort, colors=colors,
                                       species=species, labels=labels)

    # --- report and persistence (report/, results/io.py) ------------------------
    def report(self, path, select_table=None, title=None, notes=None, alpha=0.05, top_pairs=15,
               dpi=100, criterion=None, strict=False, min_records=None, progress=None, cv=None):
        """Write the one-file HTML species association report.

        Parameters
        ----------
        path : str or Path
            HTML file to write (its folder must exist).
        select_table : DataFrame, optional
            Candidate models (e.g. ``jsdm.select_num_lv(...).table``).
        title : str, optional
            Report title.
        notes : list of str, optional
            Sentences about the data preparation.
        alpha : float
            1 - confidence level of all intervals.
        top_pairs : int
            Number of strongest species associations listed.
        dpi : int
            Resolution of the embedded figures.
        criterion : str, optional
            Column of ``select_table`` whose minimum marks the chosen model.
        strict : bool
            Raise when a section fails (default: a note and a warning).
        min_records : int, optional
            Informative records a species needs for headline tables.
        progress : callable, optional
            Called with one line of text after each section.
        cv : CVResult, optional
            Cross-validation results (:func:`jsdm.cross_validate`) for the
            section on predictive performance.

        Returns
        -------
        pathlib.Path
            The file written; see :func:`jsdm.report.write_report`.
        """
        from ..report import write_report
        return write_report(self, path, select_table=select_table, title=title, notes=notes,
                            alpha=alpha, top_pairs=top_pairs, dpi=dpi, criterion=criterion,
                            strict=strict, min_records=min_records, progress=progress, cv=cv)

    def save(self, path):
        """Save to an open, versioned format (JSON + npz); reload with :func:`jsdm.load`.

        Parameters
        ----------
        path : str or Path
            File to write (conventionally ``*.jsdm``).

        Returns
        -------
        pathlib.Path
            The file written.
        """
        from .io import save
        return save(self, path)
