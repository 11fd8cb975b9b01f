"""The family's nuisance parameters s (dispersion, cut points): not part of eta.

``s`` is (m,), (m, q) for families with a vector of parameters per species (ordinal
cut points), or (1, q) when one vector is shared by all species
(``family.shared_dispersion``: ordinal common cut points). Per species it is
species-local and the species step updates it by its own Newton step from the
summed derivatives that ``cell_eval`` returns ("gs", "gss"); shared, it is a
global parameter (scope "global") stepped from the sums over all cells. Entries
the family holds fixed (``family.free_dispersion()`` False: cut points of
categories a species never uses) are not packed.
"""
import numpy as np

from .base import Reported
from .slots import MaskedSlot, Slot

# Box for the unconstrained dispersion parameter s: wide enough for any real data
# (NB: phi from 2e-9, practically Poisson, to 3e6), and it keeps the optimiser
# away from the boundary phi -> 0 where s drifts to -infinity.
S_BOUNDS = (-20.0, 15.0)

#: species label of a dispersion shared by all species in ``fit.params``
COMMON = "(common)"


class Dispersion:
    """The family's parameters of one model: ``s`` of shape (m,), (m, q) or (1, q)."""

    kind = "dispersion"

    def __init__(self, family, n_disp=None, free=None):
        self.family = family
        self.n_disp = None if n_disp is None else int(n_disp)
        self.shared = self.n_disp is not None and bool(getattr(family, "shared_dispersion", False))
        self.free = None if free is None else np.asarray(free, dtype=bool)

    @property
    def scope(self):
        return "global" if self.shared else "species"

    def shape(self, ctx):
        if self.n_disp is None:
            return (ctx.m,)
        return (1, self.n_disp) if self.shared else (ctx.m, self.n_disp)

    def free_mask(self, ctx):
        """(rows, q) bool of the packed entries of a vector dispersion (None for a scalar one)."""
        if self.n_disp is None:
            return None
        if self.free is None:
            return np.ones(self.shape(ctx), dtype=bool)
        return self.free.reshape(self.shape(ctx))

    @property
    def width(self):
        """Entries of s per species."""
        return self.n_disp or 1

    def fields(self, ctx):
        return {"s": self.shape(ctx)}

    def slots(self, ctx):
        mask = self.free_mask(ctx)
        if mask is None or mask.all():
            return [Slot("s", "s", self.shape(ctx), model=True, scope=self.scope,
                         bounds=S_BOUNDS)]
        return [MaskedSlot("s", "s", mask, model=True, scope=self.scope, bounds=S_BOUNDS)]

    def name(self):
        return self.family.dispersion_name or "dispersion"

    def labels(self, k):
        """Column labels of a vector dispersion with k reported entries."""
        labels = getattr(self.family, "dispersion_labels", None)
        return list(labels(k)) if labels is not None else [f"cut{i + 1}" for i in range(k)]

    def reported(self, ctx, P, layout):
        start, fam = layout.slices["s"].start, self.family
        if self.n_disp is None:
            jac = _dispersion_jacobian(fam, P.s)
            return [Reported("dispersion", np.arange(ctx.m), [(sp, self.name()) for sp in ctx.species],
                             fam.dispersion(P.s), start + np.arange(ctx.m), jac,
                             transform=fam.dispersion)]
        # the estimated (free) entries, in packed order: per species, or the common set
        s = np.asarray(P.s)
        free = self.free_mask(ctx)
        vals = np.asarray(fam.reported_dispersion(s), dtype=float)
        names = fam.reported_dispersion_labels(s.shape[0], s.shape[1])
        rows = [COMMON] if self.shared and ctx.m > 1 else list(ctx.species)
        D = vector_dispersion_jacobian(fam, s)
        jj, kk = np.nonzero(free)
        labels = [(rows[j], names[j, k]) for j, k in zip(jj, kk)]
        return [Reported("dispersion", jj, labels, vals[jj, kk],
                         start + np.arange(len(jj)), D[jj, kk, kk])]


def _dispersion_jacobian(family, s, h=1e-6):
    """d dispersion(s) / ds by central differences (any family's mapping)."""
    step = h * (1.0 + np.abs(s))
    return (family.dispersion(s + step) - family.dispersion(s - step)) / (2.0 * step)


def vector_dispersion_jacobian(family, s):
    """d (reported entries) / d s per row of a vector s, (rows, q, q): the family's
    ``dispersion_jacobian`` (exact for ordinal cut points, central differences by default)."""
    return family.dispersion_jacobian(np.asarray(s, dtype=float))
