"""Community-level (shared) slopes: one coefficient per covariate for all species.

    m_ij += x_i' gamma,   v_ij += 0

On long data a bare ``x`` next to ``species`` (lme4: a fixed effect not
interacted with species); ``species:x`` stays species-specific. Both can be in one
model on *different* covariates; the same covariate in both is not identified (the
shared slope is then absorbed by the species-specific ones, as ``species*x`` reads).

Scope: global. gamma has no per-species or per-site block, so the optimiser gives
it its own block step (``blocks.group_step``, one block: all sites), a Newton step
with the exact Hessian -2 sum_ij G_v,ij x_i x_i' (d2 ell / dm2 = 2 d ell / dv). In
the Hessian for standard errors its rows come from differences of the analytic
gradient (``hessian._with_group_block``), like the group terms'.
"""
import numpy as np

from .base import Reported, Term
from .slots import Slot


class SharedSlopes(Term):
    """Slopes shared by all species on site covariates (``x`` on long data).

    Parameters
    ----------
    columns : tuple of str
        Names of its design columns (``ctx.shared[1]``), in order.
    """

    kind = "shared_slopes"
    table = "shared_coef"
    site_random = False
    #: handled by the block step of the group-scope terms (one block of all sites)
    group_random = True

    def __init__(self, columns=()):
        self.columns = tuple(str(c) for c in columns)

    def spec(self):
        return {"kind": self.kind, "columns": list(self.columns)}

    def lme4(self, site="site", species="species"):
        return " + ".join(self.columns)

    def describe(self):
        return f"slopes shared by all species on {', '.join(self.columns)} (fixed)"

    def active(self, ctx):
        return bool(self.columns)

    def design(self, ctx, rows=slice(None)):
        return ctx.shared[0][rows]

    # --- the block interface of the group-scope terms ------------------------------------
    def codes(self, ctx):
        return np.zeros(ctx.n, dtype=np.intp)

    def n_levels(self, ctx):
        return 1

    def fields(self, ctx):
        return {"shared_gamma": (len(self.columns),)}

    def slots(self, ctx):
        return [Slot("shared_gamma", "shared_gamma", (len(self.columns),), model=True, scope="global")]

    def mean(self, ctx, P, rows, cols):
        return (self.design(ctx, rows) @ P.shared_gamma)[:, None]

    def variance(self, ctx, P, rows=slice(None)):
        return 0.0

    def kl_by_site(self, ctx, P):
        return 0.0

    def gradient(self, ctx, P, Gm, Gv):
        return {"shared_gamma": self.design(ctx).T @ Gm.sum(1)}

    def curvature(self, ctx, P, C):
        return {"shared_gamma": (self.design(ctx) ** 2).T @ C.sum(1)}

    def newton(self, ctx, P, Gm, Gv):
        Xs = self.design(ctx)
        H = 2.0 * (Xs * (-np.minimum(Gv, 0.0).sum(1))[:, None]).T @ Xs
        H += 1e-10 * np.eye(len(H))
        g = Xs.T @ Gm.sum(1)
        try:
            step = np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            step = np.zeros_like(g)
        return step[None, :], None

    def apply_step(self, P, T, frac, step, _):
        T.shared_gamma = P.shared_gamma + frac[0] * step[0]

    def hyper_update(self, ctx, P, mu=None, sq=None):
        """No hyperparameters."""

    def start(self, ctx, P, init):
        P.shared_gamma = np.zeros(len(self.columns))

    def reported(self, ctx, P, layout):
        k = len(self.columns)
        start = layout.slices["shared_gamma"].start
        return [Reported("shared_coef", np.zeros(k), [("(all species)", c) for c in self.columns],
                         P.shared_gamma, start + np.arange(k))]
