"""Grouped site effects ``(1 | plot)``: one random effect per level of a site-level grouping.

    m_ij += u_g(i),   u_g ~ N(0, sigma^2) independently over the G levels of the grouping

``g(i)`` is the level of site i (a plot, a year, an observer; ``a:b`` for the
combinations of two groupings, as ``(1 | a/b) = (1 | a) + (1 | a:b)`` in lme4).
The term has **group scope**: its random coordinates are one per level, shared by
all the sites of that level and all species.

Variational distribution and the bound it gives
-----------------------------------------------
q(u_g) = N(mu_g, s_g^2), independent over levels, over grouping terms and of the
sites' joint q (latent variables and ``(1 | site)``). Under q,

    m_ij += mu_g(i),   v_ij += s_g(i)^2,
    KL_g = log(sigma / s_g) + (mu_g^2 + s_g^2) / (2 sigma^2) - 1/2.

Whether a level's q should be joint with anything: the exact posterior of u_g
couples it (a) with the other levels only through the fixed effects, which are
model parameters here, so *not* within one grouping; (b) with the levels of
another grouping that shares sites with it (crossed year x observer, and a plot
with its subplots), and (c) with the site-local coordinates (``(1 | site)``,
latent variables) of its sites. Making q joint over (b) and (c) would tie a level
to every site it contains (a block of size 1 + n_g (d + 1)) and break the
per-site blocks the optimiser and the Hessian rely on. So q factorises by level:

- with **one grouping factor and nothing else random** (Gaussian family, identity
  link) the posterior of u given the model parameters factorises over levels
  exactly, q is that posterior, and the ELBO equals the marginal log-likelihood
  (tested against statsmodels ``MixedLM``, reml=False);
- with nested or crossed groupings, or a grouping next to ``(1 | site)`` or latent
  variables, the ELBO is below the log-likelihood by the KL from the factorised q
  to the joint posterior: the mutual information between the blocks, small when
  each level holds many observations (tested and reported against MixedLM and
  glmmTMB in tests/test_group_effects.py).

The sd sigma is a global parameter with the closed-form maximiser
sigma^2 = mean_g E_q[u_g^2]. The group Newton step (``blocks.group_step``) is
exact in mu_g (d2 ell / dm2 = 2 d ell / dv) and puts s_g^2 at its fixed point
1 / (1 / sigma^2 - 2 sum_{i in g, j} G_v,ij).
"""
import re

import numpy as np

from .base import Reported, Term
from .slots import Slot


def field_key(group):
    """A Params-field-safe key for a grouping name ("plot:site" -> "plot_site")."""
    return re.sub(r"\W", "_", str(group))


class GroupEffects(Term):
    """Random intercepts by the levels of a site-level grouping (``(1 | group)``).

    Parameters
    ----------
    group : str
        Name of the grouping (a column of the site table; ``"a:b"`` for the
        combinations of a and b). Its codes come from the problem
        (``ctx.groups[group]``: (codes (n,), level labels)).
    """

    kind = "group"
    table = "group_sd"
    site_random = False
    #: the predictor's group block: this term's coordinates are one per level
    group_random = True

    def __init__(self, group):
        self.group = str(group)
        key = field_key(self.group)
        self.f_mu, self.f_ls, self.f_lsd = f"gmu_{key}", f"gls_{key}", f"glsd_{key}"
        self.hyper_fields = (self.f_lsd,)

    def spec(self):
        return {"kind": self.kind, "group": self.group}

    def lme4(self, site="site", species="species"):
        return f"(1 | {self.group})"

    def describe(self):
        return f"random effects by {self.group} u_g ~ N(0, sigma_{self.group}^2) (group scope)"

    # --- data ------------------------------------------------------------------------
    def codes(self, ctx):
        """(n,) int: the level of each site."""
        return ctx.groups[self.group][0]

    def levels(self, ctx):
        return ctx.groups[self.group][1]

    def n_levels(self, ctx):
        return len(self.levels(ctx))

    # --- parameters --------------------------------------------------------------------
    def fields(self, ctx):
        G = self.n_levels(ctx)
        return {self.f_mu: (G,), self.f_ls: (G,), self.f_lsd: ()}

    def slots(self, ctx):
        G = self.n_levels(ctx)
        return [Slot(self.f_lsd, self.f_lsd, (), model=True, scope="global"),
                Slot(self.f_mu, self.f_mu, (G,), model=False, scope="group",
                     label=(f"group_mean:{self.group}", None)),
                Slot(self.f_ls, self.f_ls, (G,), model=False, scope="group",
                     label=(f"group_logsd:{self.group}", None))]

    def sigma(self, P):
        return float(np.exp(getattr(P, self.f_lsd)))

    # --- moments --------------------------------------------------------------------------
    def mean(self, ctx, P, rows, cols):
        return getattr(P, self.f_mu)[self.codes(ctx)[rows], None]

    def variance(self, ctx, P, rows=slice(None)):
        """Its part of v_ij: (r, 1)."""
        return np.exp(2.0 * getattr(P, self.f_ls))[self.codes(ctx)[rows], None]

    def kl(self, ctx, P):
        """KL of q from the prior per level, (G,)."""
        lsd, ls, mu = getattr(P, self.f_lsd), getattr(P, self.f_ls), getattr(P, self.f_mu)
        s2 = np.exp(-2.0 * lsd)
        return lsd - ls + 0.5 * (mu ** 2 + np.exp(2.0 * ls)) * s2 - 0.5

    def kl_by_site(self, ctx, P):
        """The levels' KL spread evenly over their sites, (n,) (sums to the total)."""
        codes = self.codes(ctx)
        count = np.bincount(codes, minlength=self.n_levels(ctx))
        return (self.kl(ctx, P) / np.maximum(count, 1))[codes]

    # --- gradient and curvature -------------------------------------------------------------
    def sums(self, ctx, Gm, Gv):
        """(sum over the level's cells of Gm, of Gv): (G,) each."""
        codes, G = self.codes(ctx), self.n_levels(ctx)
        return (np.bincount(codes, Gm.sum(1), minlength=G),
                np.bincount(codes, Gv.sum(1), minlength=G))

    def gradient(self, ctx, P, Gm, Gv):
        """{field: d ELBO / d field} (natural = packed coordinates)."""
        gm, gv = self.sums(ctx, Gm, Gv)
        lsd, ls, mu = getattr(P, self.f_lsd), getattr(P, self.f_ls), getattr(P, self.f_mu)
        pr = np.exp(-2.0 * lsd)
        s2 = np.exp(2.0 * ls)
        return {self.f_mu: gm - pr * mu,
                self.f_ls: 2.0 * s2 * gv - s2 * pr + 1.0,
                self.f_lsd: float(((mu ** 2 + s2) * pr - 1.0).sum())}

    def curvature(self, ctx, P, C):
        """Approximate curvature along each field for scaling; C = -2 Gv (n, m) >= 0."""
        codes, G = self.codes(ctx), self.n_levels(ctx)
        pr = np.exp(-2.0 * getattr(P, self.f_lsd))
        prec = np.bincount(codes, C.sum(1), minlength=G) + pr
        return {self.f_mu: prec, self.f_ls: 1.0 + prec * np.exp(2.0 * getattr(P, self.f_ls)),
                self.f_lsd: 2.0 * G}

    def newton(self, ctx, P, Gm, Gv):
        """(mu step, new log s) of the group Newton step (see the module docstring)."""
        gm, gv = self.sums(ctx, Gm, Gv)
        pr = np.exp(-2.0 * getattr(P, self.f_lsd))
        lam = pr - 2.0 * np.minimum(gv, 0.0)
        step = (gm - pr * getattr(P, self.f_mu)) / lam
        return step, -0.5 * np.log(lam)

    def hyper_update(self, ctx, P, mu=None, sq=None):
        """Closed-form sigma^2 = mean over levels of E_q[u_g^2] (floored at 1e-300)."""
        mu, ls = getattr(P, self.f_mu), getattr(P, self.f_ls)
        setattr(P, self.f_lsd, 0.5 * np.log(max(np.mean(mu ** 2 + np.exp(2.0 * ls)), 1e-300)))

    # --- starts and outputs -----------------------------------------------------------------
    def start(self, ctx, P, init):
        G = self.n_levels(ctx)
        setattr(P, self.f_mu, np.zeros(G))
        setattr(P, self.f_ls, np.full(G, np.log(0.3)))
        setattr(P, self.f_lsd, float(np.log(0.5)))

    def reported(self, ctx, P, layout):
        sigma = self.sigma(P)
        return [Reported("group_sd", [0], [(self.group, "sd")], [sigma],
                         [layout.slices[self.f_lsd].start], [sigma], transform=np.exp)]

    def predictions(self, ctx, P):
        """(mean, sd) of q per level, indexed by the level labels."""
        return getattr(P, self.f_mu), np.exp(getattr(P, self.f_ls))

    def ranef_table(self, ctx, P):
        """{grouping: DataFrame (levels x "(Intercept)")} of the variational means."""
        import pandas as pd
        return {self.group: pd.DataFrame({"(Intercept)": getattr(P, self.f_mu)},
                                         index=self.levels(ctx))}

    def ranef_sd_table(self, ctx, P):
        import pandas as pd
        return {self.group: pd.DataFrame({"(Intercept)": np.exp(getattr(P, self.f_ls))},
                                         index=self.levels(ctx))}

    def varcorr_rows(self, ctx, P):
        s = self.sigma(P)
        return [(self.group, "(Intercept)", None, s * s, s)]


def group_codes(values, name):
    """(codes (n,), levels) of one grouping from its per-site values (any hashable labels)."""
    import pandas as pd

    cat = pd.Categorical(values)
    if (cat.codes < 0).any():
        from ...exceptions import JSDMError
        raise JSDMError(f"the grouping {name!r} is missing at some sites; every site needs a level "
                        "(fill the missing values, e.g. with a level 'unknown', or drop those sites).")
    return cat.codes.astype(np.intp), pd.Index(cat.categories, name=name)


def expand_site_effects(site_effects):
    """Grouping names from ``site_effects``: str or list; ``"a/b"`` -> ["a", "a:b"] (nested)."""
    from ...exceptions import JSDMError

    if site_effects is None:
        return []
    items = [site_effects] if isinstance(site_effects, str) else list(site_effects)
    out = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise JSDMError(f"site_effects takes grouping column names (str), e.g. 'plot', "
                            f"['year', 'observer'] or 'plot/transect'; got {item!r}.")
        parts = [p.strip() for p in item.split("/")]
        if any(not p for p in parts):
            raise JSDMError(f"site_effects entry {item!r}: empty grouping name around '/'.")
        for k in range(len(parts)):          # a/b/c = a + a:b + a:b:c
            name = ":".join(parts[:k + 1])
            if name not in out:
                out.append(name)
    return out


def site_groupings(com, site_effects, row_effect=None):
    """Codes of the groupings named by ``site_effects`` on the Community's site table.

    Returns
    -------
    (groups, terms, columns): {name: (codes, levels)}, the GroupEffects terms, and the
    site-table columns they use (left out of the covariates when no formula is given).

    Warns (DataWarning) about levels holding one site (their effect is confounded with
    that site's own effect: with ``(1 | site)`` or latent variables they are only
    told apart by the prior) and refuses a grouping whose every level is one site
    (that is ``(1 | site)``, ``row_effect="random"``).
    """
    import warnings

    import pandas as pd

    from ...data.validation import show
    from ...exceptions import DataWarning, JSDMError

    names = expand_site_effects(site_effects)
    if not names:
        return {}, [], []
    X = com.X
    cols_all = [] if X is None else [str(c) for c in X.columns]
    groups, terms, used = {}, [], []
    for name in names:
        cols = name.split(":")
        miss = [c for c in cols if c not in cols_all]
        if miss:
            raise JSDMError(f"the grouping {name!r} needs site column(s) {show(miss)}, which the "
                            f"site table does not have (its columns: {show(cols_all, 20)}). Add the "
                            "grouping as a column of X (one value per site).")
        Xs = X.set_axis(cols_all, axis=1)
        vals = Xs[cols[0]].astype(str) if len(cols) > 1 else Xs[cols[0]]
        if Xs[cols].isna().to_numpy().any():
            raise JSDMError(f"the grouping {name!r} is missing at sites "
                            f"{show(Xs.index[Xs[cols].isna().any(axis=1).to_numpy()])}; every "
                            "site needs a level.")
        for c in cols[1:]:
            vals = vals + ":" + Xs[c].astype(str)
        codes, levels = group_codes(pd.Series(vals).to_numpy(), name)
        counts = np.bincount(codes, minlength=len(levels))
        if len(levels) == len(codes):
            raise JSDMError(f"every level of the grouping {name!r} holds one site: that is the "
                            f"site effect itself; write (1 | site) (row_effect='random') instead.")
        if len(levels) < 2:
            raise JSDMError(f"the grouping {name!r} has one level; a random effect needs several "
                            "(its variance is not identified); leave it out.")
        single = levels[counts == 1]
        if len(single):
            warnings.warn(
                f"{len(single)} of the {len(levels)} levels of {name!r} hold a single site "
                f"({show(list(single))}); each such effect is told apart from that site's own "
                "effects (row effect, latent variables, residual) only through the prior. Kept "
                "in the model; merge rare levels or drop the grouping if that is not intended.",
                DataWarning, stacklevel=5)
        groups[name] = (codes, levels)
        terms.append(GroupEffects(name))
        used += [c for c in cols if c not in used]
    return groups, terms, used
