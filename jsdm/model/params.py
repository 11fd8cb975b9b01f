"""Parameter values of the terms, and their packing into one vector.

A :class:`Params` is a namespace of the arrays the terms own (see
``jsdm.model.terms``); with the classic terms they are

- ``beta0`` (m,), ``B`` (m, p): species intercepts and slopes
- ``theta`` (m, d): loadings, zero above the diagonal
- ``s`` (m,), (m, q), (1, q) or None: the family's unconstrained dispersion parameters,
  one per species, a vector of q per species (ordinal cut points, q = K - 2) or one
  vector shared by all species (ordinal common cut points; a global parameter); only
  the entries in ``s_free`` are packed
- ``alpha`` (n,) or None: fixed row effects (alpha[0] == 0) or, for random row
  effects, the variational means of the site effects
- ``log_sigma`` float or None: log sd of random row effects
- ``a`` (n, d): variational means of the latent variables
- ``L`` (n, kr, kr): Cholesky factors (lower triangular, positive diagonal) of the
  joint variational covariance of each site's random coordinates: the d latent
  variables first, then the random row effect when there is one (kr = d + 1).

``P.A`` is the latent variables' covariance (the leading d x d block of L L') and
``P.log_rho`` the log sd of the random row effect's variational marginal.

A :class:`Layout` lays the terms' packed blocks (``jsdm.model.terms.slots``) end
to end: model parameters first (species-local, then the dispersion, then
site-local and global ones), then the variational ones, then L (its lower
triangle with the diagonal on the log scale).
"""
import numpy as np

from .terms.dispersion import S_BOUNDS  # noqa: F401  (re-exported: the dispersion box)

_OPTIONAL = ("s", "alpha", "log_sigma")


class Params:
    """Named parameter arrays (attributes). Unset optional parts (``s``, ``alpha``,
    ``log_sigma``) read as None.

    The legacy signature ``Params(beta0, B, theta, a, L, s=None, alpha=None,
    log_sigma=None, log_rho=None)`` is accepted: given ``log_rho`` (random row effects
    with an LV-only L), L becomes the joint factor with zero covariance between the
    latent variables and the row effect.
    """

    # optional parts read as None when a model has none (class attributes: no lookup cost)
    s = None
    alpha = None
    log_sigma = None

    def __init__(self, beta0=None, B=None, theta=None, a=None, L=None, s=None, alpha=None,
                 log_sigma=None, log_rho=None, **more):
        given = dict(beta0=beta0, B=B, theta=theta, a=a, L=L, s=s, alpha=alpha,
                     log_sigma=log_sigma, **more)
        for k, v in given.items():
            if v is not None or k in _OPTIONAL:
                self.__dict__[k] = v
        if log_rho is not None:
            L = np.asarray(self.__dict__["L"], dtype=float)
            n, d = L.shape[0], L.shape[1]
            J = np.zeros((n, d + 1, d + 1))
            J[:, :d, :d] = L
            J[:, d, d] = np.exp(np.asarray(log_rho, dtype=float))
            self.__dict__["L"] = J

    @classmethod
    def from_fields(cls, fields):
        """A Params holding ``fields`` (dict name -> array) as they are (no legacy handling)."""
        obj = cls.__new__(cls)
        obj.__dict__.update(fields)
        return obj

    def __getattr__(self, name):
        raise AttributeError(f"{type(self).__name__!r} has no parameter {name!r}")

    def copy(self):
        return Params.from_fields({k: (None if v is None else np.array(v, dtype=float))
                                   for k, v in self.__dict__.items()})

    def fields(self):
        """dict of the parameter arrays (not copied)."""
        return dict(self.__dict__)

    def __repr__(self):
        parts = [f"{k}={np.shape(v)}" if v is not None else f"{k}=None"
                 for k, v in self.__dict__.items()]
        return f"Params({', '.join(parts)})"

    @property
    def _d(self):
        a = self.__dict__.get("a")
        return 0 if a is None else np.shape(a)[1]

    @property
    def A(self):
        """Variational covariances of the latent variables (n, d, d): the leading block of L L'."""
        d, L = self._d, self.__dict__["L"]
        Ld = L[:, :d, :]
        return Ld @ np.swapaxes(Ld, 1, 2)

    @property
    def log_rho(self):
        """log sd of each site's random row effect under q (n,), or None."""
        if self.log_sigma is None or self.alpha is None:
            return None
        L, d = self.__dict__["L"], self._d
        if L.shape[1] <= d:
            return None
        return 0.5 * np.log((L[:, d, :] ** 2).sum(1))


class Layout:
    """Maps between :class:`Params` and a flat vector for one problem's terms.

    ``Layout(predictor)``; the legacy form ``Layout(n, m, p, d, has_disp,
    row_effect, n_disp=None, s_free=None, shared=False)`` builds the classic terms for
    those sizes.

    Attributes
    ----------
    slots : list of Slot, in packed order
    slices : dict slot name -> slice of the packed vector
    size, n_model : total entries and model entries (the model ones come first)
    """

    def __init__(self, predictor, m=None, p=None, d=None, has_disp=None, row_effect=None,
                 n_disp=None, s_free=None, shared=False):
        if not hasattr(predictor, "slots"):
            predictor = _legacy_predictor(int(predictor), m, p, d, has_disp, row_effect, n_disp,
                                          s_free, shared)
        self.predictor = predictor
        pred = predictor
        self.n, self.m, self.p, self.d = pred.n, pred.m, pred.p, pred.d
        self.has_disp = pred.dispersion is not None
        self.n_disp = pred.dispersion.n_disp if self.has_disp else None
        self.disp_width = pred.dispersion.width if self.has_disp else 0
        # a vector dispersion (rows, q): rows = m, or 1 when shared by all species; only the
        # entries in s_free are packed (ordinal: cut points of unused categories are held)
        self.s_free = pred.dispersion.free_mask(pred) if self.has_disp else None
        row = pred.term("row_fixed") or pred.term("row_random")
        self.row_effect = None if row is None else ("fixed" if row.kind == "row_fixed" else "random")
        self.tri_m = np.tril(np.ones((self.m, self.d), dtype=bool))
        self.tri_d = np.tril_indices(self.d)
        self.slots = pred.slots()
        self.slices, start = {}, 0
        for s in self.slots:
            self.slices[s.name] = slice(start, start + s.size)
            start += s.size
        self.size = start
        self.n_model = sum(s.size for s in self.slots if s.model)
        self.model_slots = [s for s in self.slots if s.model]
        self._plan = [(s, s.field, self.slices[s.name]) for s in self.slots]
        self._nonempty = [(s, f, sl) for s, f, sl in self._plan if s.size]

    def pack(self, P):
        x = np.empty(self.size)
        fields = P.__dict__
        for s, f, sl in self._nonempty:
            x[sl] = s.pack(fields[f])
        return x

    def unpack(self, x):
        return Params.from_fields({f: s.unpack(x[sl]) for s, f, sl in self._plan})

    def pack_grad(self, G, P):
        """Pack a gradient given in natural coordinates (chain rule of each slot)."""
        g = np.empty(self.size)
        gf, pf = G.__dict__, P.__dict__
        for s, f, sl in self._nonempty:
            g[sl] = s.pack_grad(gf[f], pf[f])
        return g

    def s_positions(self):
        """Packed position of each species' dispersion entries, (m, width); -1 where held.

        A dispersion shared by all species has the same positions in every row.
        """
        start = self.slices["s"].start
        if self.s_free is None:
            w = self.disp_width
            return start + np.arange(self.m)[:, None] * w + np.arange(w)[None, :]
        pos = np.full(self.s_free.shape, -1, dtype=int)
        pos[self.s_free] = start + np.arange(int(self.s_free.sum()))
        return np.broadcast_to(pos, (self.m, pos.shape[1])).copy()

    def bounds(self):
        """(lower, upper) arrays for the packed vector (inf where unbounded)."""
        lo, hi = np.full(self.size, -np.inf), np.full(self.size, np.inf)
        for s in self.slots:
            if s.bounds is not None:
                lo[self.slices[s.name]], hi[self.slices[s.name]] = s.bounds
        return lo, hi

    def projected(self, x, g):
        """Gradient of the ELBO with components pushing out of the bounds zeroed."""
        lo, hi = self.bounds()
        g = g.copy()
        g[(x <= lo) & (g < 0)] = 0.0
        g[(x >= hi) & (g > 0)] = 0.0
        return g

    def model_mask(self):
        """Boolean mask of the packed vector: True for model (not variational) entries."""
        mask = np.zeros(self.size, dtype=bool)
        for s in self.slots:
            if s.model:
                mask[self.slices[s.name]] = True
        return mask


class _DispersionShape:
    """Stands in for a family when a legacy Layout only needs the dispersion's shape."""

    has_dispersion = True
    dispersion_name = None

    def __init__(self, shared=False):
        self.shared_dispersion = bool(shared)


def _legacy_predictor(n, m, p, d, has_disp, row_effect, n_disp, s_free=None, shared=False):
    from .terms import LinearPredictor, default_terms

    covs = tuple(f"x{k + 1}" for k in range(int(p)))
    return LinearPredictor(default_terms(covs, int(d), row_effect), n=n, m=int(m),
                           X=np.zeros((n, int(p))),
                           family=_DispersionShape(shared) if has_disp else None,
                           n_disp=n_disp if has_disp else None,
                           s_free=s_free if has_disp else None)
