"""The family contract: everything the engine needs from a response distribution.

The VA engine sees a family only through the scalar function

    ell(y, m, v) = E[log f(y | eta)],   eta ~ N(m, v)

evaluated cell-wise on (n, m) arrays, with its derivatives in m and v (and in
the species' unconstrained dispersion parameter ``s`` when the family has one).
By Price's theorem d ell/dm = E[h'(eta)] and d ell/dv = E[h''(eta)] / 2 where
h(eta) = log f(y | eta); note also d2 ell/dm2 = 2 d ell/dv exactly, which the
engine uses for Newton steps.

Conventions (all families):
- ``y``, ``m``, ``v`` are float arrays of one shape (usually (n, m)); ``y`` is
  never NaN here: the engine fills missing cells with a valid value and gives
  them zero weight.
- ``s`` is the unconstrained dispersion parameter, one per species, shape (m,),
  broadcasting along the last axis. ``dispersion(s)`` maps it to the reported
  value (NB: phi with Var = mu + phi mu^2; Gaussian: residual sd).
- ``trials`` is None or an array broadcastable to ``y`` (binomial only).

Everything else jsdm needs to know about a family is asked of it, never decided
by its name outside ``jsdm/families/``: starting values (``start_intercept``,
``dispersion_start``), the fill value of missing cells (``missing_fill``), how
the dispersion is reported (``dispersion_name``, ``dispersion_labels``,
``dispersion``, ``size``, ``n_dispersion`` for a vector per species), its
link-scale residual variance for association matrices (``link_variance`` and its
derivative), data checks (``dispersion_is_response_sd``, ``informative_records``),
diagnostics (``dispersion_can_vanish``), simulation defaults
(``default_dispersion``) and the methods text of reports (``description``).
Adding a family means writing one file here and registering it.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import special

from .._numerics import binned_expectation, gh_rule, uniform_expectation
from ..exceptions import JSDMError


@dataclass
class ELL:
    """E_q[log f] per cell and its derivatives (arrays shaped like y).

    ``d_s`` and ``d_ss`` are None for families without dispersion; ``d_ss`` is
    only filled when ``order=2`` was requested.
    """

    value: np.ndarray
    d_m: np.ndarray
    d_v: np.ndarray
    d_s: Optional[np.ndarray] = None
    d_ss: Optional[np.ndarray] = None


class Family:
    """Base class. Subclasses set the class attributes and implement the methods.

    A family whose ``ell`` has no closed form can implement just ``logpdf_eta``
    (h and its first two eta-derivatives, and the s-derivatives) and inherit the
    quadrature ``ell`` below (binned Hermite + composite rule for wide normals).
    """

    name = "family"
    aliases: tuple = ()
    links: tuple = ()
    default_link: str = ""
    has_dispersion = False
    uses_trials = False     # True where y counts successes out of ``trials`` (binomial)
    dispersion_name: Optional[str] = None
    discrete = False
    #: a valid response the engine puts in missing cells (they get weight 0, but
    #: ell must stay finite there: 0 is not a valid gamma or beta response)
    missing_fill = 0.0

    def __init__(self, link=None):
        link = self.default_link if link is None else str(link)
        if link not in self.links:
            raise JSDMError(
                f"family {self.name!r} has no link {link!r}; valid links: {', '.join(self.links)}"
            )
        self.link = link

    def __repr__(self):
        return f"{type(self).__name__}(link={self.link!r})"

    # --- what the engine calls -------------------------------------------------
    # Hermite rules by variance ((v_max, nodes), ...); wider normals use the composite
    # rule ``uniform_expectation``, exact to ~1e-12 for any h analytic within ~1 of
    # the real axis. Families with closed forms or kinks override ``ell``.
    quad_table = ((0.05, 10), (0.2, 16), (0.5, 24), (1.0, 32))

    def ell(self, y, m, v, s=None, trials=None, order=1) -> ELL:
        """Expected log-density under eta ~ N(m, v), by quadrature of ``logpdf_eta``.

        Cells are grouped by variance; each group is integrated with a Hermite
        rule sized for it (or the composite rule when wide), in cache-sized
        blocks, so only a few (nodes x block) temporaries exist at a time.
        """
        y, m, v = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in (y, m, v)))
        extra = [y]
        if self.has_dispersion:
            extra.append(np.broadcast_to(np.asarray(s, dtype=float), y.shape))
        if trials is not None:
            extra.append(np.broadcast_to(np.asarray(trials, dtype=float), y.shape))
        n_out = 3 + (1 + (order >= 2) if self.has_dispersion else 0)
        res = binned_expectation(m, v, self._quad_bins(order, trials is not None), n_out, extra=extra)
        d_s = res[3] if self.has_dispersion else None
        d_ss = res[4] if n_out == 5 else None
        return ELL(res[0], res[1], 0.5 * res[2], d_s, d_ss)

    def _quad_bins(self, order, with_trials):
        key = (order >= 2, with_trials)
        cache = self.__dict__.setdefault("_bins_cache", {})
        if key not in cache:
            n_out = 3 + (1 + (order >= 2) if self.has_dispersion else 0)

            def fun(u, y, *rest):
                s = rest[0] if self.has_dispersion else None
                tr = rest[-1] if with_trials else None
                return tuple(self.logpdf_eta(y, u, s, tr, order=order)[:n_out])

            point = ((0.0, lambda mu, sd, *ex: fun(np.array(mu, dtype=float), *ex)),)
            wide = ((np.inf, lambda mu, sd, *ex: uniform_expectation(fun, mu, sd, ex)),)
            cache[key] = point + tuple((vv, gh_rule(fun, k)) for vv, k in self.quad_table) + wide
        return cache[key]

    def logpdf_eta(self, y, eta, s=None, trials=None, order=1):
        """(h, dh/deta, d2h/deta2[, dh/ds[, d2h/ds2]]) at eta (arrays broadcasting together).

        ``eta`` is (nodes, cells) inside ``ell``; ``y``, ``s``, ``trials`` are per cell.
        """
        raise NotImplementedError

    # --- used by starts, residuals, simulation, prediction -----------------------
    def check_y(self, y, trials=None):
        """Raise JSDMError when y holds values the family cannot take (NaN allowed)."""

    def loglik(self, y, eta, s=None, trials=None):
        """log f(y | eta) cell-wise (exact, no latent variables)."""
        raise NotImplementedError

    def mean(self, eta, trials=None, s=None):
        """Response-scale mean E[y | eta] (``s`` only matters for zero-inflated families)."""
        raise NotImplementedError

    def variance(self, mu, s=None, trials=None):
        """Var[y | eta] as a function of the mean (for Pearson residuals)."""
        raise NotImplementedError

    def cdf(self, y, eta, s=None, trials=None):
        """P(Y <= y | eta)."""
        raise NotImplementedError

    def cdf_lower(self, y, eta, s=None, trials=None):
        """P(Y < y | eta): ``cdf(y - 1)`` (0 at y = 0) when discrete, else ``cdf(y)``.

        Dunn-Smyth residuals draw uniformly between ``cdf_lower`` and ``cdf``.
        """
        if not self.discrete:
            return self.cdf(y, eta, s, trials)
        y = np.asarray(y, dtype=float)
        lo = self.cdf(np.maximum(y - 1.0, 0.0), eta, s, trials)
        return np.where(y > 0, lo, 0.0)

    def sample(self, eta, s=None, trials=None, rng=None):
        """Random draws of y given eta (shape of eta)."""
        raise NotImplementedError

    def dispersion(self, s):
        """Reported dispersion from the unconstrained parameter s."""
        return None if s is None else np.exp(s)

    def dispersion_param(self, disp):
        """Unconstrained parameter s from a reported dispersion."""
        return np.log(disp)

    # --- a vector of nuisance parameters per species: what fit.params reports for each entry --
    def reported_dispersion(self, s):
        """(rows, q): the reported value behind each entry of a vector ``s`` (rows, q): by
        default the last q columns of ``dispersion(s)``; NaN where an entry is held."""
        s = np.asarray(s, dtype=float)
        return np.asarray(self.dispersion(s), dtype=float)[:, -s.shape[1]:]

    def reported_dispersion_labels(self, rows, q):
        """(rows, q) labels of the entries of a vector ``s`` (default: ``dispersion_labels(q)``
        on every row)."""
        labels = getattr(self, "dispersion_labels", None)
        names = list(labels(q)) if labels is not None else [f"dispersion{k + 1}" for k in range(q)]
        out = np.empty((rows, q), dtype=object)
        out[:] = names
        return out

    def dispersion_jacobian(self, s, h=1e-6):
        """d reported_dispersion(s) / d s per row, (rows, q, q); default: central differences
        (exact families override it)."""
        s = np.asarray(s, dtype=float)
        rows, q = s.shape
        D = np.empty((rows, q, q))
        for i in range(q):
            step = np.zeros_like(s)
            step[:, i] = h * (1.0 + np.abs(s[:, i]))
            with np.errstate(invalid="ignore", over="ignore"):
                diff = self.reported_dispersion(s + step) - self.reported_dispersion(s - step)
            D[:, :, i] = diff / (2.0 * step[:, i:i + 1])
        return D

    def n_dispersion(self, y, species=None):
        """Length q of each species' dispersion vector, or None when ``s`` is a scalar per species.

        The engine stores ``s`` as (m,) when this is None (every family but
        ordinal) and as (m, q) otherwise; q may depend on the data ``y`` (n, m;
        NaN for missing cells). ``species`` (labels) is only used in messages.
        """
        return None

    def label(self):
        """Short label: the name, with the link where it is not the default
        ("poisson", "binomial(probit)")."""
        return self.name if self.link == self.default_link else f"{self.name}({self.link})"

    def column_groups(self, m):
        """[(family, column indices)]: which family models which of the ``m`` species columns.

        One family: ``[(self, arange(m))]``. A mixed family (a family per species) returns
        one pair per distinct member family; layers that need a family's per-species
        answers (its data checks, its default dispersion) ask each member for its columns.
        """
        return [(self, np.arange(m))]

    def bind(self, species):
        """The family for a response table with these species (columns), in their order.

        Every family but the mixed one (a family per species: ``family=`` a mapping) returns
        itself; ``build_problem`` binds before checking the responses (each species is
        checked by its own family), then ``prepare`` binds to the values.
        """
        return self

    # --- data-dependent structure (only ordinal uses these today) --------------
    #: True when one dispersion parameter (vector) is shared by all species: s is then (1, q)
    shared_dispersion = False

    def prepare(self, y, species=None):
        """The family bound to the responses ``y`` (n, m; NaN missing), when its parameters
        depend on them (ordinal: the categories each species uses); a copy, never ``self``
        modified. Default: ``self``."""
        return self

    def with_cutpoints(self, cutpoints):
        """The family with the cut-point structure ``cutpoints`` (``gllvm(cutpoints=)``); only
        families with cut points have one (ordinal: "species" or "common")."""
        raise JSDMError(f"cutpoints={cutpoints!r} applies to family='ordinal' only, not "
                        f"{self.name!r}; leave it out")

    def take_species(self, order):
        """The bound family with its species in ``order`` (default: ``self``)."""
        return self

    def free_dispersion(self):
        """Boolean mask of the entries of ``s`` that the fit estimates (shape of ``s``), or None
        for all; the others are held fixed and left out of the parameter vector."""
        return None

    def start_intercept(self, y, w, trials=None):
        """Starting species intercepts (m,) from responses ``y`` (n, m) with weights ``w``.

        Default: the link of the species mean (log of the mean, floored at 0.05, for
        log links; the mean itself otherwise). Families whose mean is not a simple
        transform of the intercept (binomial, ordinal) override this.
        """
        ybar = (w * y).sum(0) / np.maximum(w.sum(0), 1)
        if self.link == "log":
            return np.log(np.maximum(ybar, 0.05))
        return ybar

    def dispersion_start(self, y, mu):
        """Per-species moment estimate of ``s`` (shape (m,)) from y and fitted means.

        ``y`` (n, m) may hold NaN for missing cells; ``mu`` is broadcastable to it.
        Returns None for families without dispersion.
        """
        return None

    # link-scale variance of the residual for a latent-normal reading of the model
    # (probit 1, logit pi^2/3; 0 where the family has none)
    link_residual_variance = 0.0

    # a family whose GLLVM fit (one start) gives a better start for this one where the
    # likelihood has many local optima (zero inflation, hurdles); None: no such start
    start_family = None

    # True where E[y | eta] depends on the dispersion s as well (zero inflation, hurdles,
    # point masses): response-scale means need s, and g^-1(eta) is not the mean of y
    mean_uses_dispersion = False
    # --- what the layers above ask of a family (never its name) -------------------------
    #: plain-text phrase for a methods paragraph ("a Poisson distribution", ...)
    description = None
    #: reported dispersion used by ``simulate_community`` when none is given (None: 1.0)
    default_dispersion = None
    #: the dispersion is the residual sd on the response scale (the data's sd is range-checked)
    dispersion_is_response_sd = False
    #: the fitted residual variance can shrink to zero (``diagnose`` flags such species)
    dispersion_can_vanish = False
    #: names of the ``method`` options of ``link_variance`` (the first is the default)
    link_variance_methods = ()
    #: a continuous family with a point mass at y = 0 (Tweedie): "presence" means y > 0
    zero_atom = False
    #: plain-text formula of ``observation_variance`` for reports, where it has its own
    #: (None: the generic log(1 + Var(y)/mu^2), Var(y) or delta-method wording by link)
    observation_variance_formula = None

    def describe(self):
        """The methods-text phrase: ``description`` or "a <name> distribution"."""
        return self.description or f"a {self.name} distribution"

    def link_variance(self, dispersion, m, method=None):
        """Link-scale residual variance per species (m,), added on the diagonal of the
        residual covariance when asked (``fit.residual_covariance(add_family_variance=)``).

        ``dispersion``: the reported dispersion (m,) or None. Default: the constant
        ``link_residual_variance``.
        """
        return np.full(m, float(self.link_residual_variance or 0.0))

    def link_variance_derivative(self, dispersion, method=None):
        """d link_variance / d dispersion (m,), or None when it does not depend on it."""
        return None

    def size(self, dispersion):
        """The dispersion in R's ``size`` convention where the family has one (NB: 1 / phi),
        else None."""
        return None

    def informative_records(self, y, trials=None):
        """Records per species (m,) that inform its parameters (y NaN where missing), or None
        when every record does (continuous responses). Default: the non-zero records."""
        return np.nansum(y > 0, axis=0)

    # --- family-specific words and numbers for the analysis layer (associations, diagnostics) --
    #: what a dispersion at the lower end of its range means, in words (diagnostics, report)
    dispersion_floor_meaning: Optional[str] = None
    #: ... and at the upper end (a precision there: the species' values fitted exactly)
    dispersion_ceiling_meaning: Optional[str] = None

    def observation_variance(self, mu, s=None, trials=None):
        """Variance of one observation around its mean, on the link scale.

        The "distribution-specific variance" of Nakagawa, Johnson & Schielzeth
        (2017, J. R. Soc. Interface 14: 20170213), used for latent-scale
        correlations: a family with a latent-threshold reading (binomial,
        ordinal) returns its ``link_residual_variance`` (probit 1, logit
        pi^2/3, cloglog pi^2/6); a log link the lognormal approximation
        log(1 + Var(y) / mu^2) (Poisson log(1 + 1/mu), negative binomial
        log(1 + 1/mu + phi), gamma log(1 + phi)); an identity link Var(y)
        (Gaussian sd^2); other links the delta method Var(y) g'(mu)^2.

        Parameters
        ----------
        mu : ndarray
            Mean(s) on the response scale.
        s : ndarray, optional
            Unconstrained dispersion parameter(s), broadcasting with ``mu``.
        trials : ndarray, optional

        Returns
        -------
        ndarray shaped like ``mu`` (NaN where undefined)
        """
        mu = np.asarray(mu, dtype=float)
        if self.link_residual_variance:
            return np.full(mu.shape, float(self.link_residual_variance))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            var = np.asarray(self.variance(mu, s, trials), dtype=float)
            if self.link == "log":
                return np.log1p(var / (mu * mu))
            if self.link == "identity":
                return var
            if self.link == "logit":
                return var / (mu * (1.0 - mu)) ** 2
        return np.full(np.broadcast(mu, var).shape, np.nan)


def _check_nonneg_int(y, name):
    yy = np.asarray(y, dtype=float)
    ok = np.isnan(yy) | ((yy >= 0) & (np.floor(yy) == yy) & np.isfinite(yy))
    if not ok.all():
        bad = np.unique(yy[~ok])[:5]
        raise JSDMError(
            f"family {name!r} needs non-negative whole-number counts; found {bad.tolist()}. "
            "Use family='gaussian' (or 'tweedie') for continuous data, or round the counts."
        )


class LogitLogPair:
    """Mixin: two nuisance parameters per species, a probability and a positive scale.

    Reported as (expit(s_0), exp(s_1)) and packed as (logit, log): the zero-inflated
    negative binomial (pi, phi), the NB hurdle and the beta hurdle (p_present, phi).
    """

    def dispersion(self, s):
        """(m, 2): expit(s_0), exp(s_1)."""
        if s is None:
            return None
        s = np.asarray(s, dtype=float)
        return np.stack([special.expit(s[..., 0]), np.exp(s[..., 1])], axis=-1)

    def dispersion_param(self, disp):
        """s = (logit of the probability, log of the scale) from (m, 2) reported values."""
        disp = np.asarray(disp, dtype=float)
        return np.stack([special.logit(disp[..., 0]), np.log(disp[..., 1])], axis=-1)
