"""Fixed species-specific effects: intercepts beta0_j and slopes B_j on site covariates.

    m_ij += beta0_j + x_i' B_j,   v_ij += 0

Both are species-local: their coordinates are the species block's, with the site
design 1 and x_i.
"""
import numpy as np

from .base import Reported, Term
from .slots import MaskedSlot, Slot


class SpeciesIntercepts(Term):
    """One intercept per species (``species`` or ``0 + species`` on long data)."""

    kind = "intercepts"
    table = "coef"

    def __init__(self, held=False):
        # held: beta0 = 0, not estimated (random species intercepts take their place)
        self.held = bool(held)

    def spec(self):
        return {"kind": self.kind, **({"held": True} if self.held else {})}

    @property
    def in_glm_start(self):
        return not self.held

    def lme4(self, site="site", species="species"):
        return species

    def describe(self):
        return "species-specific intercepts beta0_j (fixed)"

    def active(self, ctx):
        return not self.held

    def fields(self, ctx):
        return {"beta0": (ctx.m,)}

    def slots(self, ctx):
        if self.held:       # held at 0: an empty slot (beta0 still unpacks, as zeros)
            return [MaskedSlot("beta0", "beta0", np.zeros(ctx.m, dtype=bool), model=True,
                               scope="species")]
        return [Slot("beta0", "beta0", (ctx.m,), model=True, scope="species")]

    def mean(self, ctx, P, rows, cols):
        return None if self.held else P.beta0[cols]

    def species_width(self, ctx):
        return 0 if self.held else 1

    def species_design(self, ctx, P, rows=slice(None)):
        return np.ones((ctx.count_rows(rows), 1))

    def get_species(self, P):
        return P.beta0[:, None]

    def set_species(self, P, values):
        P.beta0 = np.array(values[:, 0], dtype=float)

    def start(self, ctx, P, init):
        P.beta0 = np.zeros(ctx.m) if self.held else init["glm"][self][:, 0].copy()

    def reported(self, ctx, P, layout):
        if self.held:
            return []
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

    def __init__(self, columns=(), held=()):
        self.columns = tuple(str(c) for c in columns)
        # held: columns whose species slopes are 0, not estimated (random slopes take their place)
        self.held = tuple(str(c) for c in held)

    def spec(self):
        out = {"kind": self.kind, "columns": list(self.columns)}
        if self.held:
            out["held"] = list(self.held)
        return out

    def free_columns(self, ctx):
        """Indices of the design columns with estimated species slopes."""
        if not self.held:
            return np.arange(ctx.p)
        return np.array([k for k, c in enumerate(ctx.covariates) if c not in self.held], dtype=int)

    def lme4(self, site="site", species="species"):
        return " + ".join(f"{species}:{c}" for c in self.columns if c not in self.held)

    def describe(self):
        cols = [c for c in self.columns if c not in self.held]
        return f"species-specific slopes B_j on {', '.join(cols)} (fixed)"

    def active(self, ctx):
        return ctx.p > 0 and len(self.free_columns(ctx)) > 0

    def fields(self, ctx):
        return {"B": (ctx.m, ctx.p)}

    def slots(self, ctx):
        if self.held:
            mask = np.zeros((ctx.m, ctx.p), dtype=bool)
            mask[:, self.free_columns(ctx)] = True
            return [MaskedSlot("B", "B", mask, model=True, scope="species")]
        return [Slot("B", "B", (ctx.m, ctx.p), model=True, scope="species")]

    def mean(self, ctx, P, rows, cols):
        return ctx.X[rows] @ P.B[cols].T if ctx.p else None

    def species_width(self, ctx):
        return len(self.free_columns(ctx)) if self.held else ctx.p

    def species_design(self, ctx, P, rows=slice(None)):
        return ctx.X[rows][:, self.free_columns(ctx)] if self.held else ctx.X[rows]

    def penalty_weights(self, ctx, tau):
        """Per-sd slopes: (B_jk sd_k)^2 / (2 tau^2), sd_k the column's sd (divisor n)."""
        if not ctx.p:
            return np.zeros(0)
        w = ctx.X.var(axis=0) / tau ** 2
        return w[self.free_columns(ctx)] if self.held else w

    def get_species(self, P):
        return P.B[:, self._free] if self.held else P.B

    def set_species(self, P, values):
        if self.held:
            B = np.zeros((len(values), len(self._held_mask)))
            B[:, self._free] = values
            P.B = B
        else:
            P.B = np.array(values, dtype=float)

    def bind(self, ctx):
        """Remember which design columns are free (held columns need the covariate names)."""
        self._held_mask = np.array([c in self.held for c in ctx.covariates], dtype=bool)
        self._free = np.flatnonzero(~self._held_mask)

    def start(self, ctx, P, init):
        B = np.zeros((ctx.m, ctx.p))
        B[:, self.free_columns(ctx)] = init["glm"][self]
        P.B = B

    def reported(self, ctx, P, layout):
        if not ctx.p:
            return []
        free = self.free_columns(ctx)
        start, p = layout.slices["B"].start, len(free)
        if not p:
            return []
        major = np.repeat(np.arange(ctx.m), p)
        labels = [(sp, ctx.covariates[k]) for sp in ctx.species for k in free]
        pos = start + np.arange(ctx.m * p)
        return [Reported("coef", major, labels, P.B[:, free].ravel(), pos)]
