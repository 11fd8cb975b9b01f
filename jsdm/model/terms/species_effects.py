"""Fixed species-specific effects: intercepts beta0_j and slopes B_j on site covariates.

    m_ij += beta0_j + x_i' B_j,   v_ij += 0

Both are species-local: their coordinates are the species block's, with the site
design 1 and x_i.
"""
import numpy as np

from .base import Reported, Term
from .slots import Slot


class SpeciesIntercepts(Term):
    """One intercept per species (``species`` or ``0 + species`` on long data)."""

    kind = "intercepts"
    table = "coef"
    in_glm_start = True

    def lme4(self, site="site", species="species"):
        return species

    def describe(self):
        return "species-specific intercepts beta0_j (fixed)"

    def fields(self, ctx):
        return {"beta0": (ctx.m,)}

    def slots(self, ctx):
        return [Slot("beta0", "beta0", (ctx.m,), model=True, scope="species")]

    def mean(self, ctx, P, rows, cols):
        return P.beta0[cols]

    def species_width(self, ctx):
        return 1

    def species_design(self, ctx, P, rows=slice(None)):
        return np.ones((ctx.count_rows(rows), 1))

    def get_species(self, P):
        return P.beta0[:, None]

    def set_species(self, P, values):
        P.beta0 = np.array(values[:, 0], dtype=float)

    def start(self, ctx, P, init):
        P.beta0 = init["glm"][self][:, 0].copy()

    def reported(self, ctx, P, layout):
        pos = layout.slices["beta0"].start + np.arange(ctx.m)
        return [Reported("coef", np.arange(ctx.m), [(sp, "Intercept") for sp in ctx.species],
                         P.beta0, pos)]


class SpeciesSlopes(Term):
    """Species-specific slopes on the site covariates (``species:x`` on long data).

    Parameters
    ----------
    columns : tuple of str
        Names of the design columns (``Problem.terms``), in order.
    """

    kind = "slopes"
    table = "coef"
    in_glm_start = True

    def __init__(self, columns=()):
        self.columns = tuple(str(c) for c in columns)

    def spec(self):
        return {"kind": self.kind, "columns": list(self.columns)}

    def lme4(self, site="site", species="species"):
        return " + ".join(f"{species}:{c}" for c in self.columns)

    def describe(self):
        return f"species-specific slopes B_j on {', '.join(self.columns)} (fixed)"

    def active(self, ctx):
        return ctx.p > 0

    def fields(self, ctx):
        return {"B": (ctx.m, ctx.p)}

    def slots(self, ctx):
        return [Slot("B", "B", (ctx.m, ctx.p), model=True, scope="species")]

    def mean(self, ctx, P, rows, cols):
        return ctx.X[rows] @ P.B[cols].T if ctx.p else None

    def species_width(self, ctx):
        return ctx.p

    def species_design(self, ctx, P, rows=slice(None)):
        return ctx.X[rows]

    def penalty_weights(self, ctx, tau):
        """Per-sd slopes: (B_jk sd_k)^2 / (2 tau^2), sd_k the column's sd (divisor n)."""
        return ctx.X.var(axis=0) / tau ** 2 if ctx.p else np.zeros(0)

    def get_species(self, P):
        return P.B

    def set_species(self, P, values):
        P.B = np.array(values, dtype=float)

    def start(self, ctx, P, init):
        P.B = init["glm"][self].copy()

    def reported(self, ctx, P, layout):
        if not ctx.p:
            return []
        start, p = layout.slices["B"].start, ctx.p
        major = np.repeat(np.arange(ctx.m), p)
        labels = [(sp, c) for sp in ctx.species for c in ctx.covariates]
        pos = start + np.arange(ctx.m * p)
        return [Reported("coef", major, labels, P.B.ravel(), pos)]
