"""Site (row) effects alpha_i: fixed (``site`` on long data) or random (``(1 | site)``).

    m_ij += alpha_i (fixed) or mu_i (random: alpha_i ~ N(0, sigma^2)),  design 1 for every species

Both are site-local. Fixed effects are model coordinates of the site block with
alpha_1 = 0 pinned (the species intercepts carry the level). Random effects are
random coordinates of the site block: they share the site's joint Gaussian q
with the latent variables (and any other site-local random term), so their
posterior covariance with the latent variables is estimated, not set to zero.
The sd sigma is a global parameter with a closed-form update.
"""
import numpy as np

from .base import Reported, Term
from .slots import PinnedFirstSlot, Slot


class _SiteAlpha:
    """One coordinate per site, alpha_i, added to every species of the site (row effects)."""

    def mean(self, ctx, P, rows, cols):
        return P.alpha[rows, None]

    def site_width(self, ctx):
        return 1

    def site_design(self, ctx, P, cols=slice(None)):
        return np.ones((ctx.count_cols(cols), 1))

    def get_site(self, P):
        return P.alpha[:, None]

    def set_site(self, P, values):
        P.alpha = np.array(values[:, 0], dtype=float)

    def coord_names(self, ctx):
        return ["alpha"]


class FixedRowEffects(_SiteAlpha, Term):
    """One fixed effect per site, the first pinned at 0."""

    kind = "row_fixed"
    table = "row_effect"
    site_random = False

    def lme4(self, site="site", species="species"):
        return site

    def describe(self):
        return "fixed site effects alpha_i (alpha_1 = 0)"

    def fields(self, ctx):
        return {"alpha": (ctx.n,)}

    def slots(self, ctx):
        return [PinnedFirstSlot("alpha_fixed", "alpha", (ctx.n,), model=True, scope="site")]


    def site_pinned(self, ctx):
        return [(0, 0)]


    def start(self, ctx, P, init):
        P.alpha = np.zeros(ctx.n)

    def reported(self, ctx, P, layout):
        n = ctx.n
        pos = layout.slices["alpha_fixed"].start + np.arange(n - 1)
        return [Reported("row_effect", np.arange(1, n), [(s, "alpha") for s in ctx.sites[1:]],
                         P.alpha[1:], pos)]


class RandomRowEffects(_SiteAlpha, Term):
    """alpha_i ~ N(0, sigma^2) with variational mean ``alpha`` and log sd ``log_sigma``."""

    kind = "row_random"
    table = "row_sigma"
    site_random = True
    hyper_fields = ("log_sigma",)
    #: L-BFGS works in alpha = sigma u (see ``jsdm.model.fit.NonCentred``)
    noncentred = ("log_sigma", "alpha_random")

    def lme4(self, site="site", species="species"):
        return f"(1 | {site})"

    def describe(self):
        return "random site effects alpha_i ~ N(0, sigma^2)"

    def fields(self, ctx):
        return {"alpha": (ctx.n,), "log_sigma": ()}

    def slots(self, ctx):
        return [Slot("log_sigma", "log_sigma", (), model=True, scope="global"),
                Slot("alpha_random", "alpha", (ctx.n,), model=False, scope="site",
                     label=("row_effect_mean", ["alpha"]))]



    def prior_precision(self, ctx, P):
        return np.array([np.exp(-2.0 * P.log_sigma)])

    def prior_logdet(self, ctx, P):
        return 2.0 * float(P.log_sigma)

    def hyper_gradient(self, ctx, P, mu, sq):
        # -KL part: -0.5 sum_i [2 log sigma + E(alpha_i^2) / sigma^2]
        return {"log_sigma": float((sq[:, 0] * np.exp(-2.0 * P.log_sigma) - 1.0).sum())}

    def hyper_update(self, ctx, P, mu, sq):
        P.log_sigma = 0.5 * np.log(np.mean(sq[:, 0]))

    def hyper_curvature(self, ctx, P, mu, L_rows):
        s2 = np.exp(2.0 * P.log_sigma)
        sq = mu[:, 0] ** 2 + (L_rows[:, 0, :] ** 2).sum(1)
        return {"hh": np.array([[-2.0 * (sq / s2).sum()]]),
                "hmu": (2.0 * mu / s2)[:, None, :],
                "hL": (2.0 * L_rows / s2)[:, None, :, :]}

    def curvature_hyper(self, ctx, P):
        return {"log_sigma": 2.0 * ctx.n}

    def start(self, ctx, P, init):
        P.alpha = np.zeros(ctx.n)
        P.log_sigma = np.log(0.5)

    def start_sd(self, ctx):
        return np.array([0.3])

    def reported(self, ctx, P, layout):
        sigma = float(np.exp(P.log_sigma))
        return [Reported("row_sigma", [0], [("", "sigma")], [sigma],
                         [layout.slices["log_sigma"].start], [sigma], transform=np.exp)]

    # --- random-effect tables (jsdm.results.ranef) -----------------------------------------
    def ranef_table(self, ctx, P):
        import pandas as pd
        return {"site": pd.DataFrame({"(Intercept)": P.alpha}, index=pd.Index(ctx.sites, name="site"))}

    def ranef_sd_table(self, ctx, P):
        import pandas as pd
        k = next(sl.start for t, sl in ctx.site_terms if t is self)
        sd = np.sqrt((P.L[:, k, :] ** 2).sum(1))
        return {"site": pd.DataFrame({"(Intercept)": sd}, index=pd.Index(ctx.sites, name="site"))}

    def varcorr_rows(self, ctx, P):
        s = float(np.exp(P.log_sigma))
        return [("site", "(Intercept)", None, s * s, s)]

