"""The term interface: one additive piece of the linear predictor.

    eta_ij = offset_ij + sum over terms t of eta^t_ij

Under the variational distribution q every term is Gaussian, so eta_ij ~ N(m_ij, v_ij)
with m_ij the sum of the terms' means and v_ij the variance of the random
coordinates they put into the blocks of q. A family only ever sees ell(y, m, v).

A term is a small, immutable *specification* (its options: which covariates, how
many latent variables, ...). Everything that depends on the data is passed in at
call time as ``ctx``, the :class:`~jsdm.model.terms.predictor.LinearPredictor`
of the problem (``ctx.n``, ``ctx.m``, ``ctx.X``, ...). Parameter values live in a
:class:`~jsdm.model.params.Params` (``P``): each term owns some of its fields.

Scopes. A term's parameters belong to blocks that the optimiser updates by
batched Newton steps:

- **species** block (one per species j): coordinates phi^t_j entering the mean
  linearly with a site design, m^t_ij = x^t_i' phi^t_j (``species_design``):
  species intercepts (x = 1), species slopes (x = covariates), loadings (x = the
  site scores a_i).
- **site** block (one per site i): coordinates u^t_i with a species design,
  m^t_ij = c^t_j' u^t_i (``site_design``): fixed row effects (model coordinates,
  c = 1), random row effects and latent variables (random coordinates). All
  random site coordinates of all terms share ONE joint Gaussian q per site,
  N(mu_i, L_i L_i') (``Params.L``), with the prior N(0, C_t) of each term
  block-diagonal; the KL of that block is computed once, by the predictor.
- **global** parameters (``hyper_fields``): prior scales and other parameters
  shared by all sites and species (the random row effects' sd).

A term with both species and site coordinates whose designs are each other's
values (the latent variables: m = a_i' theta_j) declares ``bilinear = True``;
the predictor then adds the curvature and cross terms that couple the two blocks.
"""
import numpy as np


class Term:
    """Base class of the linear predictor's terms (see the module docstring).

    Subclasses set ``kind`` and override what they need; the defaults describe a
    term without parameters in that role. Shapes: n sites, m species; ``rows``
    and ``cols`` select sites and species (slices or index arrays).
    """

    #: registry key (saved fits, descriptions)
    kind = "term"
    #: output table its model parameters go to ("coef", "loading", ...), see ``reported``
    table = None
    #: True when its species coordinates are the design of its site coordinates and
    #: vice versa (latent variables)
    bilinear = False
    #: True when its site coordinates are random (variational, with a prior); False
    #: for fixed (model) site coordinates
    site_random = True
    #: True when the per-species GLMs of the starting values include it
    in_glm_start = False
    #: Params fields of its global (hyper)parameters
    hyper_fields = ()
    #: True when the prior of its random site coordinates is N(0, I) (lets the
    #: predictor use the cheaper KL formula)
    unit_prior = False

    # --- specification --------------------------------------------------------------
    def spec(self):
        """dict: ``{"kind": ..., **options}``; ``make_term(spec)`` rebuilds the term."""
        return {"kind": self.kind}

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in self.spec().items() if k != "kind")
        return f"{type(self).__name__}({opts})"

    def __eq__(self, other):
        return type(self) is type(other) and self.spec() == other.spec()

    def __hash__(self):
        return hash(repr(self))

    def lme4(self, site="site", species="species"):
        """The term in lme4 / glmmTMB syntax on long data."""
        raise NotImplementedError

    def describe(self):
        """One line of plain English for printed term lists."""
        return self.kind

    def active(self, ctx):
        """False when the term has no parameters and no contribution (e.g. 0 latent variables)."""
        return True

    # --- parameters -------------------------------------------------------------------
    def fields(self, ctx):
        """{Params field: shape} of every array the term owns (zeros before ``start``)."""
        return {}

    def slots(self, ctx):
        """The term's packed parameter blocks (``jsdm.model.terms.slots.Slot`` objects)."""
        return []

    # --- contribution to the mean ------------------------------------------------------
    def mean(self, ctx, P, rows, cols):
        """Its part of m_ij for sites ``rows`` x species ``cols``, broadcastable
        ((r, 1), (1, c) or (r, c)); None when it contributes nothing."""
        return None

    # --- species block -------------------------------------------------------------------
    def species_width(self, ctx):
        """Number of species-block coordinates per species."""
        return 0

    def species_design(self, ctx, P, rows=slice(None)):
        """d m_ij / d phi^t_j for the sites ``rows``: (r, species_width)."""
        raise NotImplementedError

    def species_free(self, ctx):
        """(m, species_width) bool: coordinates free to move (None: all)."""
        return None

    def penalty_weights(self, ctx, tau):
        """Diagonal (species_width,) of the optional weak Gaussian penalty on its species
        coordinates for prior sd ``tau`` (``gllvm(prior_sd=tau)``), or None: not penalised."""
        return None

    def get_species(self, P):
        """Its species coordinates as (m, species_width)."""
        raise NotImplementedError

    def set_species(self, P, values):
        """Write (m, species_width) species coordinates into P (in place)."""
        raise NotImplementedError

    # --- site block ------------------------------------------------------------------------
    def site_width(self, ctx):
        """Number of site-block coordinates per site."""
        return 0

    def site_design(self, ctx, P, cols=slice(None)):
        """d m_ij / d u^t_i for the species ``cols``: (c, site_width)."""
        raise NotImplementedError

    def get_site(self, P):
        """Its site coordinates (variational means, or fixed effects) as (n, site_width)."""
        raise NotImplementedError

    def set_site(self, P, values):
        """Write (n, site_width) site coordinates into P (in place)."""
        raise NotImplementedError

    def site_pinned(self, ctx):
        """[(site, coordinate)] fixed at their value (fixed row effects: site 0's)."""
        return []

    def coord_names(self, ctx):
        """Names of its site coordinates (labels of the site block): (site_width,)."""
        w = self.site_width(ctx)
        return [self.kind] if w == 1 else [f"{self.kind}{k + 1}" for k in range(w)]

    # --- prior of random site coordinates: N(0, C_t), C_t diagonal ------------------------------
    def prior_precision(self, ctx, P):
        """Diagonal of C_t^-1: (site_width,)."""
        return np.ones(self.site_width(ctx))

    def prior_logdet(self, ctx, P):
        """log det C_t (per site)."""
        return 0.0

    # --- global (hyper)parameters -------------------------------------------------------------
    def hyper_gradient(self, ctx, P, mu, sq):
        """{field: d ELBO / d field} of the prior's part, given the term's site means ``mu``
        (n, k) and second moments' diagonal ``sq`` = E_q[u^2] (n, k)."""
        return {}

    def hyper_update(self, ctx, P, mu, sq):
        """Closed-form maximiser of the ELBO in the hyperparameters, written into P."""

    def hyper_curvature(self, ctx, P, mu, L_rows):
        """Second derivatives of the ELBO (its prior part) for the Hessian, as a dict:
        ``"hh"`` (h, h), ``"hmu"`` (n, h, k) and ``"hL"`` (n, h, k, kr) (raw L entries of
        the term's rows ``L_rows`` (n, k, kr)); h = len(hyper_fields)."""
        return {}

    def curvature_hyper(self, ctx, P):
        """Approximate curvature of the ELBO along each hyperparameter (scaling)."""
        return {}

    # --- global model coordinates (canonical coefficients) ------------------------------------
    # Terms with ``global_cell = True`` (community slopes, canonical coefficients) have
    # global model coordinates entering the cells: ``global_gradient``, ``global_newton``
    # (gradient and Hessian, flattened in the order of ``global_fields``) and
    # ``curvature_global``; ``blocks.global_step`` steps them.
    def global_fields(self, ctx):
        """Params fields that ``global_newton`` steps, in its order; () means all of the
        term's fields (community slopes). A term naming them (canonical coefficients) also
        keeps the analytic Hessian, with its global rows by differences of the gradient."""
        return ()

    # --- starting values ----------------------------------------------------------------------
    def start(self, ctx, P, init):
        """Write starting values into P (in place). ``init``: dict with "glm" (the
        per-species GLM coefficients by term), "s", "rng", "jitter", "eta0" (GLM linear
        predictor), "prob"."""

    def start_sd(self, ctx):
        """Starting sd of each random site coordinate (n,) or scalar per coordinate: (k,)."""
        return np.full(self.site_width(ctx), 0.5)

    # --- outputs ------------------------------------------------------------------------------
    def reported(self, ctx, P, layout):
        """Its model parameters as shown in ``fit.params``: list of ``Reported`` rows."""
        return []


class Reported:
    """Rows of ``fit.params`` from one term.

    Attributes
    ----------
    block : str
        First level of the params index ("coef", "loading", "dispersion", ...).
    major : ndarray (k,) int
        Species (or site) index of each row; rows of one block are sorted by
        (major, term order, position within the term).
    labels : list of (str, str)
        (species or site label, parameter label) of each row.
    values : ndarray (k,)
        Reported values.
    positions : ndarray (k,) int
        Packed position of the parameter behind each row.
    jac : ndarray (k,)
        d reported / d packed (the delta method; 1 where reported as estimated).
    transform : callable or None
        The map from the packed (unconstrained) value to the reported one, when it
        is not the identity (exp for an sd, the family's dispersion map): Wald
        intervals are built on the packed scale and mapped through it.
    """

    def __init__(self, block, major, labels, values, positions, jac=None, transform=None):
        self.block, self.major, self.labels = block, np.asarray(major, dtype=int), list(labels)
        self.values = np.asarray(values, dtype=float)
        self.positions = np.asarray(positions, dtype=int)
        self.jac = np.ones(len(self.values)) if jac is None else np.asarray(jac, dtype=float)
        self.transform = transform
