"""Model and variational parameters, and their packing into one vector.

Natural form (a :class:`Params`):

- ``beta0`` (m,), ``B`` (m, p): species intercepts and slopes
- ``theta`` (m, d): loadings, zero above the diagonal
- ``s`` (m,), (m, q), (1, q) or None: unconstrained dispersion parameters, one per
  species, a vector of q per species (ordinal cut points, q = K - 2) or one vector
  shared by all species (ordinal common cut points; a global parameter)
- ``alpha`` (n,) or None: fixed row effects (alpha[0] == 0) or, for random row
  effects, the variational means of the site effects
- ``log_sigma`` float or None: log sd of random row effects
- ``log_rho`` (n,) or None: log variational sd of random row effects
- ``a`` (n, d), ``L`` (n, d, d): variational means and Cholesky factors
  (lower triangular, positive diagonal) of the latent-variable covariances

The packed vector stores free entries only: theta's lower triangle, L's lower
triangle with its diagonal on the log scale, alpha without its first entry
when fixed; a vector dispersion (m, q) is stored species by species (s.ravel()), only its
entries in ``s_free``; one shared by all species is (1, q).
"""
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

# Box for the unconstrained dispersion parameter s: wide enough for any real data
# (NB: phi from 2e-9, practically Poisson, to 3e6), and it keeps the optimiser
# away from the boundary phi -> 0 where s drifts to -infinity.
S_BOUNDS = (-20.0, 15.0)


@dataclass
class Params:
    beta0: np.ndarray
    B: np.ndarray
    theta: np.ndarray
    a: np.ndarray
    L: np.ndarray
    s: Optional[np.ndarray] = None
    alpha: Optional[np.ndarray] = None
    log_sigma: Optional[float] = None
    log_rho: Optional[np.ndarray] = None

    def copy(self):
        return replace(self, **{k: (None if v is None else np.array(v, dtype=float))
                                for k, v in self.__dict__.items()})

    @property
    def A(self):
        """Variational covariances L L' (n, d, d)."""
        return self.L @ np.swapaxes(self.L, 1, 2)


class Layout:
    """Maps between :class:`Params` and a flat vector for one problem shape."""

    MODEL_BLOCKS = ("beta0", "B", "theta", "s", "alpha_fixed", "log_sigma")

    def __init__(self, n, m, p, d, has_disp, row_effect, n_disp=None, s_free=None, shared=False):
        self.n, self.m, self.p, self.d = n, m, p, d
        self.has_disp, self.row_effect = has_disp, row_effect
        self.n_disp = None if (n_disp is None or not has_disp) else int(n_disp)
        self.disp_width = (self.n_disp or 1) if has_disp else 0     # entries of s per species
        # a vector dispersion is (rows, q): rows = m, or 1 when shared by all species; only the
        # entries in s_free are packed (the others are held at 0: e.g. ordinal cut points of
        # categories a species does not use)
        self.s_free = None
        if self.n_disp is not None:
            shape = (1 if shared else m, self.n_disp)
            self.s_free = (np.ones(shape, dtype=bool) if s_free is None
                           else np.asarray(s_free, dtype=bool).reshape(shape))
        self.tri_m = np.tril(np.ones((m, d), dtype=bool))
        self.tri_d = np.tril_indices(d)
        self.diag_pos = np.array([k for k, (r, c) in enumerate(zip(*self.tri_d)) if r == c], dtype=int)
        nl = d * (d + 1) // 2
        sizes = [("beta0", m), ("B", m * p), ("theta", int(self.tri_m.sum())),
                 ("s", int(self.s_free.sum()) if self.s_free is not None else m * self.disp_width),
                 ("alpha_fixed", n - 1 if row_effect == "fixed" else 0),
                 ("log_sigma", 1 if row_effect == "random" else 0),
                 ("alpha_random", n if row_effect == "random" else 0),
                 ("log_rho", n if row_effect == "random" else 0),
                 ("a", n * d), ("L", n * nl)]
        self.slices, start = {}, 0
        for name, size in sizes:
            self.slices[name] = slice(start, start + size)
            start += size
        self.size = start
        self.n_model = sum(self.slices[b].stop - self.slices[b].start for b in self.MODEL_BLOCKS)

    def pack(self, P):
        x = np.empty(self.size)
        sl = self.slices
        x[sl["beta0"]] = P.beta0
        x[sl["B"]] = P.B.ravel()
        x[sl["theta"]] = P.theta[self.tri_m]
        if self.has_disp:
            x[sl["s"]] = np.ravel(P.s) if self.s_free is None else np.asarray(P.s)[self.s_free]
        if self.row_effect == "fixed":
            x[sl["alpha_fixed"]] = P.alpha[1:]
        elif self.row_effect == "random":
            x[sl["log_sigma"]] = P.log_sigma
            x[sl["alpha_random"]] = P.alpha
            x[sl["log_rho"]] = P.log_rho
        x[sl["a"]] = P.a.ravel()
        Lt = P.L[:, self.tri_d[0], self.tri_d[1]].copy()
        Lt[:, self.diag_pos] = np.log(Lt[:, self.diag_pos])
        x[sl["L"]] = Lt.ravel()
        return x

    def unpack(self, x):
        n, m, p, d, sl = self.n, self.m, self.p, self.d, self.slices
        theta = np.zeros((m, d))
        theta[self.tri_m] = x[sl["theta"]]
        Lt = x[sl["L"]].reshape(n, -1).copy()
        Lt[:, self.diag_pos] = np.exp(Lt[:, self.diag_pos])
        L = np.zeros((n, d, d))
        L[:, self.tri_d[0], self.tri_d[1]] = Lt
        P = Params(beta0=x[sl["beta0"]].copy(), B=x[sl["B"]].reshape(m, p).copy(), theta=theta,
                   a=x[sl["a"]].reshape(n, d).copy(), L=L)
        if self.has_disp:
            if self.s_free is None:
                P.s = x[sl["s"]].copy()
            else:
                P.s = np.zeros(self.s_free.shape)
                P.s[self.s_free] = x[sl["s"]]
        if self.row_effect == "fixed":
            P.alpha = np.concatenate([[0.0], x[sl["alpha_fixed"]]])
        elif self.row_effect == "random":
            P.log_sigma = float(x[sl["log_sigma"]][0])
            P.alpha = x[sl["alpha_random"]].copy()
            P.log_rho = x[sl["log_rho"]].copy()
        return P

    def pack_grad(self, G, P):
        """Pack a gradient given in natural coordinates (chain rule for log-diagonals)."""
        sl = self.slices
        g = np.empty(self.size)
        g[sl["beta0"]] = G.beta0
        g[sl["B"]] = G.B.ravel()
        g[sl["theta"]] = G.theta[self.tri_m]
        if self.has_disp:
            g[sl["s"]] = np.ravel(G.s) if self.s_free is None else np.asarray(G.s)[self.s_free]
        if self.row_effect == "fixed":
            g[sl["alpha_fixed"]] = G.alpha[1:]
        elif self.row_effect == "random":
            g[sl["log_sigma"]] = G.log_sigma
            g[sl["alpha_random"]] = G.alpha
            g[sl["log_rho"]] = G.log_rho
        g[sl["a"]] = G.a.ravel()
        gL = G.L[:, self.tri_d[0], self.tri_d[1]].copy()
        gL[:, self.diag_pos] *= P.L[:, self.tri_d[0], self.tri_d[1]][:, self.diag_pos]
        g[sl["L"]] = gL.ravel()
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
        lo[self.slices["s"]], hi[self.slices["s"]] = S_BOUNDS
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
        for b in self.MODEL_BLOCKS:
            mask[self.slices[b]] = True
        return mask
