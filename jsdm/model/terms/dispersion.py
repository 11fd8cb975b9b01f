"""The family's nuisance parameters s (dispersion, cut points): species-local, not part of eta.

``s`` is (m,) or, for families with a vector of parameters per species (ordinal cut
points), (m, q). The species step updates it by its own Newton step from the
summed derivatives that ``cell_eval`` returns ("gs", "gss"). A family whose
nuisance parameter is shared by all species (common cut points, one Tweedie
power) would declare scope "global" here and be updated from the sums over
species instead; no such family exists yet.
"""
import numpy as np

from .base import Reported
from .slots import Slot

# Box for the unconstrained dispersion parameter s: wide enough for any real data
# (NB: phi from 2e-9, practically Poisson, to 3e6), and it keeps the optimiser
# away from the boundary phi -> 0 where s drifts to -infinity.
S_BOUNDS = (-20.0, 15.0)


class Dispersion:
    """The family's parameters of one model: ``s`` of shape (m,) or (m, q)."""

    kind = "dispersion"
    scope = "species"

    def __init__(self, family, n_disp=None):
        self.family = family
        self.n_disp = None if n_disp is None else int(n_disp)

    def shape(self, ctx):
        return (ctx.m,) if self.n_disp is None else (ctx.m, self.n_disp)

    @property
    def width(self):
        """Entries of s per species."""
        return self.n_disp or 1

    def fields(self, ctx):
        return {"s": self.shape(ctx)}

    def slots(self, ctx):
        return [Slot("s", "s", self.shape(ctx), model=True, scope="species", bounds=S_BOUNDS)]

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
        m, q = P.s.shape
        val = fam.dispersion(P.s)
        names = self.labels(val.shape[1])[-q:]
        D = vector_dispersion_jacobian(fam, P.s)
        labels = [(sp, names[k]) for sp in ctx.species for k in range(q)]
        jac = np.array([D[j, k, k] for j in range(m) for k in range(q)])
        return [Reported("dispersion", np.repeat(np.arange(m), q), labels, val[:, -q:].ravel(),
                         start + np.arange(m * q), jac)]


def _dispersion_jacobian(family, s, h=1e-6):
    """d dispersion(s) / ds by central differences (any family's mapping)."""
    step = h * (1.0 + np.abs(s))
    return (family.dispersion(s + step) - family.dispersion(s - step)) / (2.0 * step)


def vector_dispersion_jacobian(family, s, h=1e-6):
    """d (free reported dispersions) / d s per species, (m, q, q), by central differences.

    The reported entries are the last q columns of ``family.dispersion(s)``.
    """
    m, q = s.shape
    D = np.empty((m, q, q))
    for i in range(q):
        step = np.zeros_like(s)
        step[:, i] = h * (1.0 + np.abs(s[:, i]))
        diff = family.dispersion(s + step)[:, -q:] - family.dispersion(s - step)[:, -q:]
        D[:, :, i] = diff / (2.0 * step[:, i:i + 1])
    return D
