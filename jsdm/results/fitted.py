"""The fitted GLLVM: estimates as labelled tables, information criteria, fitted values.

Derived statistics are cached; the convenience methods at the bottom are
one-line delegations to results/, analysis/, plotting/ and report/.
"""
from functools import cached_property

import numpy as np
import pandas as pd

from ..model.objective import moments


class GLLVMResults:
    """Result of :func:`jsdm.gllvm`. Never mutated after construction.

    Parameters
    ----------
    problem : jsdm.model.problem.Problem
    state : jsdm.model.fit.FitState
    settings : dict
        The call's options (seed, n_init, ...), kept for reports and refits.
    """

    def __init__(self, problem, state, settings=None):
        self.problem = problem
        self.state = state
        self.settings = dict(settings or {})

    # --- identity ---------------------------------------------------------------
    @property
    def family(self):
        return self.problem.family

    @property
    def families(self):
        """Series species -> family of each species ("poisson", "binomial(probit)", ...).

        One value throughout unless the model has a family per species (``family=``
        a mapping), where it says which family each species was fitted with.
        """
        from ..families.mixed import _label

        own = getattr(self.family, "species_families", None)
        if own is not None:
            return own().rename("family")
        return pd.Series(_label(self.family), index=self.species, name="family")

    @property
    def num_lv(self):
        return self.problem.d

    @property
    def row_effect(self):
        return self.problem.row_effect

    @property
    def sites(self):
        return self.problem.sites

    @property
    def species(self):
        return self.problem.species

    @property
    def terms(self):
        return list(self.problem.terms)

    @property
    def community(self):
        return self.problem.info.get("community")

    @property
    def lv_names(self):
        return [f"LV{k + 1}" for k in range(self.num_lv)]

    def __repr__(self):
        fam = getattr(self.family, "composition", f"{self.family.name}({self.family.link})")
        return (f"<GLLVMResults: {fam}, {self.problem.n} sites x "
                f"{self.problem.m} species, num_lv={self.num_lv}, ELBO={self.llf:.3f}, "
                f"{'converged' if self.converged else 'NOT converged'}>")

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
        """Number of model parameters, counted as R gllvm counts them."""
        prob = self.problem
        m, d = prob.m, prob.d
        k = m * (1 + prob.p) + m * d - d * (d - 1) // 2
        if prob.family.has_dispersion:      # the estimated ones (ordinal: free cut points)
            sl = self.state.layout.slices["s"]
            k += sl.stop - sl.start
        if prob.row_effect == "fixed":
            k += prob.n - 1
        elif prob.row_effect == "random":
            k += 1
        from .profile import profiled_df
        return int(k + profiled_df(self.settings))        # e.g. a Tweedie power shared by all

    @property
    def nobs(self):
        """Number of observed site x species cells."""
        return self.problem.nobs

    @property
    def aic(self):
        return -2.0 * self.llf + 2.0 * self.df

    @property
    def aicc(self):
        k, n = self.df, self.nobs
        return self.aic + 2.0 * k * (k + 1) / max(n - k - 1, 1)

    @property
    def bic(self):
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
        return self.state.elapsed

    # --- estimates as labelled tables ------------------------------------------
    @property
    def params_raw(self):
        """The natural-form parameter arrays (:class:`jsdm.model.params.Params`)."""
        return self.state.params

    @cached_property
    def coef(self):
        """Species x (Intercept, covariate terms) DataFrame."""
        P = self.state.params
        vals = np.column_stack([P.beta0, P.B])
        return pd.DataFrame(vals, index=self.species, columns=["Intercept", *self.terms])

    @cached_property
    def loadings(self):
        """Species x LV loadings (theta; zero above the diagonal, positive diagonal)."""
        return pd.DataFrame(self.state.params.theta, index=self.species, columns=self.lv_names)

    @cached_property
    def lv(self):
        """Sites x LV variational means (site scores)."""
        return pd.DataFrame(self.state.params.a, index=self.sites, columns=self.lv_names)

    @cached_property
    def lv_cov(self):
        """Variational covariances of the site scores, ndarray (n, d, d)."""
        return self.state.params.A

    @cached_property
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
    COMMON = "(common)"

    def _vector_dispersion(self):
        """[((species, term), value)] of the estimated entries of a vector dispersion, in the
        packed order: the free cut points tau_2 < ... of each species (or the common set)."""
        fam, s, free = self.family, self.state.params.s, self.state.layout.s_free
        names = [self.COMMON] if s.shape[0] == 1 and self.problem.m > 1 else list(self.species)
        out = []
        if not hasattr(fam, "free_cutpoints"):    # zinb, hurdles, ordered beta, mixed: as reported
            q = s.shape[1]
            vals, labels = fam.dispersion(s)[:, -q:], self._dispersion_labels(q)
            return [((names[j], labels[k]), float(vals[j, k])) for j, k in zip(*np.nonzero(free))]
        vals = fam.free_cutpoints(s)
        labels = fam.free_cutpoint_labels(s.shape[0])
        for j, k in zip(*np.nonzero(free)):
            term = labels[j, k] if labels is not None else self._dispersion_labels(k + 2)[k + 1]
            out.append(((names[j], term), float(vals[j, k])))
        return out

    def _dispersion_labels(self, k):
        labels = getattr(self.family, "dispersion_labels", None)
        return list(labels(k)) if labels is not None else [f"cut{i + 1}" for i in range(k)]

    @property
    def size(self):
        """Negative binomial size 1/phi per species (None for other families)."""
        if self.family.name != "negative_binomial":
            return None
        return (1.0 / self.dispersion).rename("size")

    @cached_property
    def row_effects(self):
        """Site effects (fixed estimates or random-effect predictions), or None."""
        a = self.state.params.alpha
        return None if a is None else pd.Series(a, index=self.sites, name="row_effect")

    @property
    def row_sigma(self):
        """Standard deviation of random row effects (None otherwise)."""
        ls = self.state.params.log_sigma
        return None if ls is None else float(np.exp(ls))

    @cached_property
    def params(self):
        """All model parameters as a Series indexed by (block, species, term)."""
        rows = []
        for sp, r in self.coef.iterrows():
            rows += [(("coef", sp, t), v) for t, v in r.items()]
        P, tri = self.state.params, np.tril(np.ones((self.problem.m, self.num_lv), bool))
        for j, sp in enumerate(self.species):
            rows += [(("loading", sp, f"LV{k + 1}"), P.theta[j, k]) for k in range(self.num_lv) if tri[j, k]]
        disp = self.dispersion
        if isinstance(disp, pd.DataFrame):      # the estimated cut points (ordinal: tau_1 = 0 is not)
            rows += [((("dispersion",) + lab), v) for lab, v in self._vector_dispersion()]
        elif disp is not None:
            rows += [(("dispersion", sp, disp.name), v) for sp, v in disp.items()]
        if self.row_effect == "fixed":
            rows += [(("row_effect", st, "alpha"), v) for st, v in list(self.row_effects.items())[1:]]
        elif self.row_effect == "random":
            rows += [(("row_sigma", "", "sigma"), self.row_sigma)]
        idx = pd.MultiIndex.from_tuples([r[0] for r in rows], names=["block", "species", "term"])
        return pd.Series([r[1] for r in rows], index=idx, name="estimate")

    # --- fitted values -----------------------------------------------------------
    @cached_property
    def _moments(self):
        return moments(self.problem, self.state.params)

    def linear_predictor(self):
        """Sites x species DataFrame of the linear predictor at the site scores."""
        return pd.DataFrame(self._moments[0], index=self.sites, columns=self.species)

    def fitted(self, type="response"):
        """Fitted values conditional on the site scores (variational means).

        type : "response" (mean of y; ordinal: the expected category) or "link"
            (linear predictor)
        """
        eta = self._moments[0]
        if type == "link":
            vals = eta
        elif type == "response":
            from .predict import response_mean
            vals = response_mean(self.family, eta, self.problem.trials, self.state.params.s)
        else:
            raise ValueError(f"type must be 'response' or 'link', got {type!r}")
        return pd.DataFrame(vals, index=self.sites, columns=self.species)

    # --- inference (results/inference.py, results/summary.py) --------------------
    def cov_params(self):
        """Covariance of the model parameters (DataFrame indexed like ``params``)."""
        from .inference import cov_params
        return cov_params(self)

    @property
    def bse(self):
        """Standard errors of ``params``."""
        from .inference import bse
        return bse(self)

    def conf_int(self, alpha=0.05):
        """Wald confidence intervals for ``params`` (DataFrame with lower, upper)."""
        from .inference import conf_int
        return conf_int(self, alpha=alpha)

    @property
    def tvalues(self):
        from .inference import tvalues
        return tvalues(self)

    @property
    def pvalues(self):
        from .inference import pvalues
        return pvalues(self)

    def summary(self, **kwargs):
        """Summary with coefficients, SEs, z, p, CIs, dispersions and loadings."""
        from .summary import summary
        return summary(self, **kwargs)

    def diagnose(self, **kwargs):
        """Check gradient, Hessian, scaling, collapsed LVs, sparse species; say what to do."""
        from ..analysis.diagnostics import diagnose
        return diagnose(self, **kwargs)

    def predict(self, newdata=None, **kwargs):
        """Predictions on the link or response scale (see :func:`jsdm.results.predict.predict`)."""
        from .predict import predict
        return predict(self, newdata=newdata, **kwargs)

    def predict_conditional(self, newdata, observed, **kwargs):
        """Predict every species at new sites given the species observed there
        (see :func:`jsdm.results.conditional.predict_conditional`)."""
        from .conditional import predict_conditional
        return predict_conditional(self, newdata, observed, **kwargs)

    def loglik_is(self, n_draws=1000, seed=0, **kwargs):
        """Importance-sampling estimate of the marginal log-likelihood at the fitted parameters,
        with its Monte Carlo SE and the per-site gap to the ELBO
        (see :func:`jsdm.results.likelihood.loglik_is`)."""
        from .likelihood import loglik_is
        return loglik_is(self, n_draws=n_draws, seed=seed, **kwargs)

    def cross_validate(self, k=5, **kwargs):
        """K-fold cross-validation by sites of this model (see :func:`jsdm.cross_validate`)."""
        from .crossval import cross_validate
        return cross_validate(self, k=k, **kwargs)

    def simulate(self, n=1, **kwargs):
        """Draw response tables from the fitted model."""
        from .predict import simulate
        return simulate(self, n=n, **kwargs)

    def residuals(self, kind="dunn-smyth", **kwargs):
        """Residuals as a sites x species DataFrame ('dunn-smyth', 'response', 'pearson')."""
        from .residuals import residuals
        return residuals(self, kind=kind, **kwargs)

    # --- associations and ordination (analysis/) --------------------------------
    def residual_covariance(self, **kwargs):
        from ..analysis.associations import residual_covariance
        return residual_covariance(self, **kwargs)

    def residual_correlation(self, **kwargs):
        from ..analysis.associations import residual_correlation
        return residual_correlation(self, **kwargs)

    def residual_trace(self, **kwargs):
        from ..analysis.associations import residual_trace
        return residual_trace(self, **kwargs)

    def environmental_covariance(self, **kwargs):
        from ..analysis.associations import environmental_covariance
        return environmental_covariance(self, **kwargs)

    def environmental_correlation(self, **kwargs):
        from ..analysis.associations import environmental_correlation
        return environmental_correlation(self, **kwargs)

    def variance_partition(self, **kwargs):
        from ..analysis.associations import variance_partition
        return variance_partition(self, **kwargs)

    def association_table(self, **kwargs):
        from ..analysis.associations import association_table
        return association_table(self, **kwargs)

    def partial_correlation(self, **kwargs):
        """Direct associations: partial correlations, sparse by default (graphical lasso)
        (see :func:`jsdm.analysis.partial.partial_correlation`)."""
        from ..analysis.partial import partial_correlation
        return partial_correlation(self, **kwargs)

    def ordination(self, **kwargs):
        from ..analysis.ordination import ordination
        return ordination(self, **kwargs)

    # --- plots (plotting/) ------------------------------------------------------
    def plot_ordination(self, **kwargs):
        from ..plotting import plot_ordination
        return plot_ordination(self, **kwargs)

    def plot_associations(self, **kwargs):
        from ..plotting import plot_associations
        return plot_associations(self, **kwargs)

    def plot_residuals(self, **kwargs):
        from ..plotting import plot_residuals
        return plot_residuals(self, **kwargs)

    def plot_coefficients(self, **kwargs):
        from ..plotting import plot_coefficients
        return plot_coefficients(self, **kwargs)

    def plot_network(self, **kwargs):
        """Network of direct associations (see :func:`jsdm.plotting.network.plot_network`)."""
        from ..plotting.network import plot_network
        return plot_network(self, **kwargs)

    def plot_variance_partition(self, **kwargs):
        from ..plotting import plot_variance_partition
        return plot_variance_partition(self, **kwargs)

    # --- report and persistence (report/, results/io.py) ------------------------
    def report(self, path, **kwargs):
        """Write the one-file HTML species association report."""
        from ..report import write_report
        return write_report(self, path, **kwargs)

    def save(self, path):
        """Save to an open, versioned format (JSON + npz); reload with :func:`jsdm.load`."""
        from .io import save
        return save(self, path)
