"""Community-level (fixed) slopes and their trait interactions: the fourth corner.

    m_ij += sum_k x_ik (gamma_k + sum_l Gamma_kl t_jl),   v_ij += 0

``x`` (one slope shared by all species) and ``x:trait`` on long data, gllvm's fourth-corner
model with TR (``formula = ~ x + x:trait``). The coefficients are global: they enter every
cell, with design z_ij = x_ik (1 or t_jl). Their gradient is sum_ij Gm_ij z_ij and their
curvature -2 sum_ij Gv_ij z_ij z_ij' (a small dense Newton system, ``global_newton``), both
from (n, m) products: no cell loop. The optimiser takes one Newton step in them per sweep
(``blocks.global_step``); the Hessian for standard errors comes from differences of the
gradient (``model.hessian_fd``).
"""
import numpy as np

from .base import Reported, Term
from .slots import Slot
from .species_random import _trait_column


class CommunitySlopes(Term):
    """Shared slopes on site covariates with species-trait interactions.

    Parameters
    ----------
    columns : tuple of str
        Site covariates (design columns) with a community slope.
    traits : tuple of (str, tuple of str)
        (covariate, trait names) of the interactions x:trait.
    main : tuple of bool, optional
        Whether each covariate has its main effect (default all).
    """

    kind = "community_slopes"
    table = "fixef"
    global_cell = True

    def __init__(self, columns=(), traits=(), main=None):
        self.columns = tuple(str(c) for c in columns)
        self.traits = tuple((str(c), tuple(str(t) for t in ts)) for c, ts in traits)
        self.main = tuple(bool(x) for x in main) if main is not None else (True,) * len(self.columns)

    def spec(self):
        return {"kind": self.kind, "columns": list(self.columns),
                "traits": [[c, list(ts)] for c, ts in self.traits], "main": list(self.main)}

    def coef_terms(self):
        """[(column index, trait or None)] in packed order."""
        out = [(k, None) for k in range(len(self.columns)) if self.main[k]]
        tr = dict(self.traits)
        for k, c in enumerate(self.columns):
            out += [(k, t) for t in tr.get(c, ())]
        return out

    def names(self):
        return [self.columns[k] if t is None else f"{self.columns[k]}:{t}"
                for k, t in self.coef_terms()]

    def lme4(self, site="site", species="species"):
        return " + ".join(self.names())

    def describe(self):
        tr = sorted({t for _, ts in self.traits for t in ts})
        extra = f" with trait interactions ({', '.join(tr)}: the fourth corner)" if tr else ""
        return f"community slopes on {', '.join(self.columns)}{extra} (fixed, shared by all species)"

    def active(self, ctx):
        return bool(self.coef_terms())

    def fields(self, ctx):
        return {"tc_gamma": (len(self.coef_terms()),)}

    def slots(self, ctx):
        return [Slot("tc_gamma", "tc_gamma", (len(self.coef_terms()),), model=True,
                     scope="global")]

    # --- designs --------------------------------------------------------------------------------
    def site_columns(self, ctx, rows=slice(None)):
        cov = list(ctx.covariates)
        missing = [c for c in self.columns if c not in cov]
        if missing:
            from ...exceptions import JSDMError
            raise JSDMError(f"community slope on {missing[0]!r}: no such covariate column; the "
                            f"design has {cov}.")
        return ctx.X[rows][:, [cov.index(c) for c in self.columns]]

    def species_map(self, ctx, cols=slice(None)):
        """M (c, k, g): d (species j's slope on column k) / d coefficient g."""
        terms = self.coef_terms()
        m = ctx.count_cols(cols)
        M = np.zeros((m, len(self.columns), len(terms)))
        for g, (k, t) in enumerate(terms):
            M[:, k, g] = 1.0 if t is None else _trait_column(ctx, t)[cols]
        return M

    def slopes(self, ctx, P, cols=slice(None)):
        """Each species' slopes (c, k) on the term's columns."""
        return self.species_map(ctx, cols) @ P.tc_gamma

    def mean(self, ctx, P, rows, cols):
        return self.site_columns(ctx, rows) @ self.slopes(ctx, P, cols).T

    # --- gradient and Newton step (global) -----------------------------------------------------
    def global_gradient(self, ctx, P, Gm, Gv):
        Z = self.site_columns(ctx)
        A = Z.T @ Gm                                    # (k, m)
        return {"tc_gamma": np.einsum("kj,jkg->g", A, self.species_map(ctx))}

    def global_newton(self, ctx, P, Gm, Gv):
        """(gradient (g,), minus the Hessian (g, g)) of the ELBO in the coefficients."""
        Z = self.site_columns(ctx)
        M = self.species_map(ctx)
        k = Z.shape[1]
        ZZ = (Z[:, :, None] * Z[:, None, :]).reshape(len(Z), k * k)
        B = (ZZ.T @ Gv).reshape(k, k, ctx.m)
        H = -2.0 * np.einsum("klj,jkg,jlh->gh", B, M, M)
        g = np.einsum("kj,jkg->g", Z.T @ Gm, M)
        return g, H

    def curvature_global(self, ctx, P, C):
        """Approximate curvature along each coefficient (scaling), from C = -2 Gv >= 0."""
        Z = self.site_columns(ctx)
        M = self.species_map(ctx)
        B = (Z ** 2).T @ C                                # (k, m)
        return {"tc_gamma": np.einsum("kj,jkg->g", B, M ** 2)}

    # --- start and outputs ------------------------------------------------------------------------
    def start(self, ctx, P, init):
        P.tc_gamma = np.zeros(len(self.coef_terms()))

    def reported(self, ctx, P, layout):
        g = len(self.coef_terms())
        pos = layout.slices["tc_gamma"].start + np.arange(g)
        return [Reported("fixef", np.zeros(g, dtype=int), [("", nm) for nm in self.names()],
                         P.tc_gamma, pos)]

    def fourth_corner_rows(self, ctx):
        """[(covariate, trait, params label)] of the trait interactions."""
        return [(self.columns[k], t, ("fixef", "", nm))
                for (k, t), nm in zip(self.coef_terms(), self.names()) if t is not None]
