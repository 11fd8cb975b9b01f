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

    def apply_step(self, P, T, frac, step, new_ls):
        """Write mu + frac step into T, and the new log sds where the full step is taken."""
        setattr(T, self.f_mu, getattr(P, self.f_mu) + frac * step)
        setattr(T, self.f_ls, np.where(frac == 1.0, np.clip(new_ls, -25.0, 10.0),
                                       getattr(P, self.f_ls)))

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

    def predict_parts(self, ctx, P, labels=None):
        """(mean (k,), variance (k,)) of the term for sites: the fitted ones (``labels`` None) or
        new ones given their level labels (k,). A seen level contributes its q, N(mu_g, s_g^2)
        (conditional on the level); an unseen one N(0, sigma^2) (marginal over levels)."""
        mu, ls = getattr(P, self.f_mu), getattr(P, self.f_ls)
        codes = self.codes(ctx) if labels is None else self.levels(ctx).get_indexer(labels)
        seen = codes >= 0
        c = np.where(seen, codes, 0)
        mean = np.where(seen, mu[c], 0.0)
        var = np.where(seen, np.exp(2.0 * ls[c]), self.sigma(P) ** 2)
        return mean, var

    def draw(self, ctx, P, rng):
        """Fresh effects for the fitted sites: one N(0, sigma^2) per level, (n,)."""
        return rng.normal(0.0, self.sigma(P), self.n_levels(ctx))[self.codes(ctx)]

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
    site_key = str(com.Y.index.name or "site")
    if X is None:
        X = pd.DataFrame(index=com.Y.index)
    cols_all = [str(c) for c in X.columns]
    groups, used = {}, []
    for name in names:
        cols = name.split(":")
        if cols[-1] == site_key and site_key not in cols_all:
            _nested_site_level(com, name, cols, names, groups, row_effect, site_key)
            continue
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
        used += [c for c in cols if c not in used]
    return groups, _group_terms(names, groups), used


def _nested_site_level(com, name, cols, names, groups, row_effect, site_key):
    """The innermost level ``plot:site`` of a nested chain: one level per site (its codes)."""
    import pandas as pd

    from ...exceptions import JSDMError

    parent = ":".join(cols[:-1])
    if not parent or parent not in names:
        raise JSDMError(f"(1 | {site_key}) is the site effect itself: use row_effect='random'; "
                        f"{name!r} is allowed only nested in a grouping, e.g. 'plot/{site_key}'.")
    if row_effect is not None:
        raise JSDMError(f"{name!r} puts a random effect on each {site_key}, and row_effect="
                        f"{row_effect!r} adds another: keep one.")
    codes, _ = group_codes(np.arange(com.Y.shape[0]), name)
    labels = pd.Series(com.X[cols[0]].astype(str).to_numpy() if len(cols) > 1 else "")
    for c in cols[1:-1]:
        labels = labels + ":" + com.X[c].astype(str).to_numpy()
    labels = labels + ":" + pd.Series(com.Y.index.astype(str))
    groups[name] = (codes, pd.Index(labels.to_numpy(), name=name))


#: largest block (a top level and everything nested in it) given one joint q; larger chains
#: fall back to q by level (with a warning)
NESTED_BLOCK_MAX = 80
#: several groupings with at most this many levels together share one joint q
JOINT_MAX = 80


def _block_size(chain, groups):
    """Largest number of coordinates of one top level of a nested chain (itself + nested levels)."""
    top = groups[chain[0]][0]
    size = np.ones(int(top.max()) + 1)
    for g in chain[1:]:
        codes = groups[g][0]
        first = np.zeros(int(codes.max()) + 1, dtype=int)
        first[codes] = top
        size += np.bincount(first, minlength=len(size))
    return int(size.max())


def _group_terms(names, groups=None):
    """Terms of the groupings: a grouping ``a:b`` listed with ``a`` is nested in it, and the
    chain a, a:b (, a:b:c ...) becomes one :class:`NestedGroupEffects` (one joint q per level of
    a) unless a block would exceed ``NESTED_BLOCK_MAX`` coordinates. Groupings that are not
    one chain (crossed) get one :class:`JointGroupEffects` (one joint q over all levels) when
    they have at most ``JOINT_MAX`` levels together; otherwise chains as above and the others
    :class:`GroupEffects` (q by level)."""
    import warnings

    from ...exceptions import DataWarning
    parent = {n: ":".join(n.split(":")[:-1]) for n in names}
    children = {n: [c for c in names if parent[c] == n] for n in names}
    one_chain = sum(parent[n] not in names for n in names) == 1 and all(
        len(children[n]) <= 1 for n in names)
    if groups is not None and len(names) > 1 and not one_chain:
        total = sum(len(groups[n][1]) for n in names)
        if total <= JOINT_MAX:           # crossed (and nested) groupings with few levels
            return [JointGroupEffects(tuple(names))]
    terms, done = [], set()
    for n in names:
        if n in done or parent[n] in names:
            continue
        chain, cur = [n], n
        while len(children[cur]) == 1:
            cur = children[cur][0]
            chain.append(cur)
        big = (len(chain) > 1 and groups is not None
               and _block_size(chain, groups) > NESTED_BLOCK_MAX)
        if big:
            warnings.warn(
                f"the nested groupings {' / '.join(chain)} have up to "
                f"{_block_size(chain, groups)} effects in one {chain[0]} (more than "
                f"{NESTED_BLOCK_MAX}); they get independent q's by level instead of one joint q "
                f"per {chain[0]}: a lower bound, below the exact likelihood by the posterior "
                f"correlation between a {chain[0]} and what is nested in it.",
                DataWarning, stacklevel=6)
        if len(chain) > 1 and not children[cur] and not big:
            terms.append(NestedGroupEffects(tuple(chain)))
            done.update(chain)
        else:
            terms.append(GroupEffects(n))
            done.add(n)
    for n in names:                  # nested under a grouping that is not a simple chain
        if n not in done:
            terms.append(GroupEffects(n))
    return terms


class NestedGroupEffects(Term):
    """Nested random intercepts ``(1 | a/b)`` = ``(1 | a) + (1 | a:b)`` (deeper chains alike),
    with one joint Gaussian q per level of the top grouping ``a``.

    The levels of ``a:b`` lie inside one level of ``a``, so the coordinates of a top
    level and of everything nested in it, (u_a, u_a:b1, ..., u_a:bK), form a block that
    no other block shares data with (given the model parameters). q is a full Gaussian
    on each block, N(mu_a, L_a L_a'): in a Gaussian identity model with only these
    effects it is the exact posterior, so the ELBO is the marginal log-likelihood. Blocks
    are padded to the largest block size with coordinates held at their N(0, 1) prior
    (mean 0, unit Cholesky row: KL 0, not packed).

    Parameters
    ----------
    chain : tuple of str
        The grouping names from the top down, e.g. ("plot", "plot:sub").
    """

    kind = "nested_group"
    table = "group_sd"
    site_random = False
    group_random = True

    def __init__(self, chain):
        self.chain = tuple(str(c) for c in chain)
        key = field_key(self.chain[0])
        self.f_mu, self.f_L, self.f_lsd = f"nmu_{key}", f"nL_{key}", f"nlsd_{key}"
        self.hyper_fields = (self.f_lsd,)
        self._cache = {}

    def spec(self):
        return {"kind": self.kind, "chain": list(self.chain)}

    def __eq__(self, other):
        return type(self) is type(other) and self.spec() == other.spec()

    def __hash__(self):
        return hash(repr(self))

    @property
    def group(self):
        return self.chain[0]

    def lme4(self, site="site", species="species"):
        return f"(1 | {'/'.join(c.split(':')[-1] for c in self.chain)})"

    def describe(self):
        return (f"nested random effects {' > '.join(self.chain)}, one joint q per "
                f"{self.chain[0]} (group scope)")

    # --- structure (per problem, cached on the predictor's identity) --------------------
    def structure(self, ctx):
        """dict: A (top levels), kmax, pos (n, D) block position of each site's levels, top (n,),
        depth (A, kmax) depth of each coordinate (-1: padding), level_of (A, kmax) index of the
        level within its grouping (-1: padding)."""
        codes = [ctx.groups[g][0] for g in self.chain]
        hit = self._cache.get("codes")
        if hit is not None and len(hit) == len(codes) and all(a is b for a, b in zip(hit, codes)):
            return self._cache["out"]
        top = codes[0]
        A = len(ctx.groups[self.chain[0]][1])
        D = len(self.chain)
        # levels of each depth by top level, in order
        slots_by_top = [[(0, a)] for a in range(A)]
        for d in range(1, D):
            G = len(ctx.groups[self.chain[d]][1])
            parent = np.full(G, -1)
            parent[codes[d]] = top
            for g in range(G):
                slots_by_top[parent[g]].append((d, g))
        kmax = max(len(s) for s in slots_by_top)
        depth = np.full((A, kmax), -1)
        level_of = np.full((A, kmax), -1)
        where = [dict() for _ in range(D)]
        for a, s in enumerate(slots_by_top):
            for k, (d, g) in enumerate(s):
                depth[a, k], level_of[a, k] = d, g
                where[d][g] = k
        pos = np.column_stack([np.array([where[d][g] for g in codes[d]]) for d in range(D)])
        out = {"A": A, "kmax": kmax, "pos": pos, "top": top, "depth": depth,
               "level_of": level_of, "real": depth >= 0, "D": D}
        self._cache = {"codes": codes, "out": out}
        return out

    def n_levels(self, ctx):
        return self.structure(ctx)["A"]

    def codes(self, ctx):
        return self.structure(ctx)["top"]

    # --- parameters ------------------------------------------------------------------------
    def fields(self, ctx):
        st = self.structure(ctx)
        return {self.f_mu: (st["A"], st["kmax"]), self.f_L: (st["A"], st["kmax"], st["kmax"]),
                self.f_lsd: (st["D"],)}

    def slots(self, ctx):
        from .slots import MaskedSlot

        st = self.structure(ctx)
        real = st["real"]
        return [Slot(self.f_lsd, self.f_lsd, (st["D"],), model=True, scope="global"),
                MaskedSlot(self.f_mu, self.f_mu, real, model=False, scope="group",
                           label=(f"group_mean:{self.group}", None)),
                MaskedCholeskySlot(self.f_L, self.f_L, real, model=False, scope="group",
                                   label=(f"group_chol:{self.group}", None))]

    def _prior(self, ctx, P):
        """(precision (A, kmax), log det per block (A,)): padding N(0, 1)."""
        st = self.structure(ctx)
        lsd = np.asarray(getattr(P, self.f_lsd), dtype=float)
        d = st["depth"]
        pr = np.where(d >= 0, np.exp(-2.0 * lsd[np.maximum(d, 0)]), 1.0)
        logdet = np.where(d >= 0, 2.0 * lsd[np.maximum(d, 0)], 0.0).sum(1)
        return pr, logdet

    def _L(self, ctx, P):
        st = self.structure(ctx)
        L = getattr(P, self.f_L)
        pad = ~st["real"]
        if pad.any():        # padding rows: the unit row (q = prior), whatever is stored
            L = L.copy()
            a, k = np.nonzero(pad)
            L[a, k, :] = 0.0
            L[a, :, k] = 0.0
            L[a, k, k] = 1.0
        return L

    # --- moments -----------------------------------------------------------------------------
    def mean(self, ctx, P, rows, cols):
        st = self.structure(ctx)
        mu = getattr(P, self.f_mu)
        top, pos = st["top"][rows], st["pos"][rows]
        return mu[top[:, None], pos].sum(1)[:, None]

    def variance(self, ctx, P, rows=slice(None)):
        st = self.structure(ctx)
        L = self._L(ctx, P)
        top, pos = st["top"][rows], st["pos"][rows]
        w = L[top[:, None], pos, :].sum(1)                  # z_i' L_a  (r, kmax)
        return (w ** 2).sum(1)[:, None]

    def kl_blocks(self, ctx, P):
        st = self.structure(ctx)
        mu, L = getattr(P, self.f_mu), self._L(ctx, P)
        pr, logdet = self._prior(ctx, P)
        sq = mu ** 2 + (L ** 2).sum(2)
        diag = np.diagonal(L, axis1=1, axis2=2)
        return 0.5 * ((pr * sq).sum(1) - st["kmax"] + logdet) - np.log(diag).sum(1)

    def kl_by_site(self, ctx, P):
        top = self.codes(ctx)
        count = np.bincount(top, minlength=self.n_levels(ctx))
        return (self.kl_blocks(ctx, P) / np.maximum(count, 1))[top]

    # --- gradient and steps ----------------------------------------------------------------------
    def _data_sums(self, ctx, Gm, Gv):
        """(sum_i gm_i z_i (A, kmax), sum_i gv_i z_i z_i' (A, kmax, kmax))."""
        st = self.structure(ctx)
        A, k = st["A"], st["kmax"]
        gm, gv = Gm.sum(1), Gv.sum(1)
        top, pos = st["top"], st["pos"]
        D = pos.shape[1]
        g = np.zeros((A, k))
        H = np.zeros((A, k, k))
        for r in range(D):
            np.add.at(g, (top, pos[:, r]), gm)
            for c in range(D):
                np.add.at(H, (top, pos[:, r], pos[:, c]), gv)
        return g, H

    def gradient(self, ctx, P, Gm, Gv):
        st = self.structure(ctx)
        real = st["real"]
        mu, L = getattr(P, self.f_mu), self._L(ctx, P)
        pr, _ = self._prior(ctx, P)
        g, H = self._data_sums(ctx, Gm, Gv)
        gmu = (g - pr * mu) * real
        gL = 2.0 * H @ L - pr[:, :, None] * L
        idx = np.arange(st["kmax"])
        gL[:, idx, idx] += 1.0 / L[:, idx, idx]
        gL = np.tril(gL) * (real[:, :, None] & real[:, None, :])
        sq = mu ** 2 + (L ** 2).sum(2)
        glsd = np.array([float(((sq * pr - 1.0) * (st["depth"] == d)).sum())
                         for d in range(st["D"])])
        return {self.f_mu: gmu, self.f_L: gL, self.f_lsd: glsd}

    def curvature(self, ctx, P, C):
        st = self.structure(ctx)
        pr, _ = self._prior(ctx, P)
        _, H = self._data_sums(ctx, np.zeros_like(C), C)          # sum_i C_i z_i z_i'
        prec = np.diagonal(H, axis1=1, axis2=2) + pr
        L = self._L(ctx, P)
        k = st["kmax"]
        GL = np.broadcast_to(prec[:, :, None], (st["A"], k, k)).copy()
        idx = np.arange(k)
        GL[:, idx, idx] = 1.0 + prec * L[:, idx, idx] ** 2
        counts = np.array([max(int((st["depth"] == d).sum()), 1) for d in range(st["D"])])
        return {self.f_mu: prec, self.f_L: GL, self.f_lsd: 2.0 * counts.astype(float)}

    def newton(self, ctx, P, Gm, Gv):
        """(mean step (A, kmax), new L (A, kmax, kmax)): Newton in the means, the fixed point
        L L' = Lambda^-1, Lambda = diag(prior precision) - 2 sum_i gv_i z_i z_i'."""
        st = self.structure(ctx)
        real = st["real"]
        mu = getattr(P, self.f_mu)
        pr, _ = self._prior(ctx, P)
        g, H = self._data_sums(ctx, Gm, np.minimum(Gv, 0.0))
        k = st["kmax"]
        lam = -2.0 * H
        idx = np.arange(k)
        lam[:, idx, idx] += pr
        both = real[:, :, None] & real[:, None, :]
        lam = np.where(both, lam, 0.0)
        lam[:, idx, idx] = np.where(real, lam[:, idx, idx], 1.0)
        step = np.linalg.solve(lam, ((g - pr * mu) * real)[..., None])[..., 0]
        inv = np.linalg.inv(lam)
        Lnew = np.linalg.cholesky(0.5 * (inv + np.swapaxes(inv, 1, 2)))
        return step * real, Lnew

    def apply_step(self, P, T, frac, step, new_L):
        setattr(T, self.f_mu, getattr(P, self.f_mu) + frac[:, None] * step)
        setattr(T, self.f_L, np.where((frac == 1.0)[:, None, None], new_L, getattr(P, self.f_L)))

    def hyper_update(self, ctx, P, mu=None, sq=None):
        st = self.structure(ctx)
        mu, L = getattr(P, self.f_mu), self._L(ctx, P)
        sq = mu ** 2 + (L ** 2).sum(2)
        lsd = np.array([0.5 * np.log(max(float(sq[st["depth"] == d].mean()), 1e-300))
                        for d in range(st["D"])])
        setattr(P, self.f_lsd, lsd)

    # --- starts and outputs -------------------------------------------------------------------------
    def start(self, ctx, P, init):
        st = self.structure(ctx)
        A, k = st["A"], st["kmax"]
        setattr(P, self.f_mu, np.zeros((A, k)))
        L = np.zeros((A, k, k))
        idx = np.arange(k)
        L[:, idx, idx] = np.where(st["real"], 0.3, 1.0)
        setattr(P, self.f_L, L)
        setattr(P, self.f_lsd, np.full(st["D"], np.log(0.5)))

    def reported(self, ctx, P, layout):
        sd = np.exp(np.asarray(getattr(P, self.f_lsd), dtype=float))
        start = layout.slices[self.f_lsd].start
        return [Reported("group_sd", np.zeros(len(sd)), [(g, "sd") for g in self.chain], sd,
                         start + np.arange(len(sd)), sd, transform=np.exp)]

    def _level_tables(self, ctx, P):
        import pandas as pd

        st = self.structure(ctx)
        mu, L = getattr(P, self.f_mu), self._L(ctx, P)
        var = (L ** 2).sum(2)
        means, sds = {}, {}
        for d, g in enumerate(self.chain):
            levels = ctx.groups[g][1]
            a, k = np.nonzero(st["depth"] == d)
            order = st["level_of"][a, k]
            m = np.empty(len(levels))
            s = np.empty(len(levels))
            m[order], s[order] = mu[a, k], np.sqrt(var[a, k])
            means[g] = pd.DataFrame({"(Intercept)": m}, index=levels)
            sds[g] = pd.DataFrame({"(Intercept)": s}, index=levels)
        return means, sds

    def predict_parts(self, ctx, P, labels=None):
        """(mean (k,), variance (k,)) for the fitted sites (``labels`` None) or new ones
        (``labels``: {grouping: level labels (k,)}): the joint q of the seen levels (their
        means, and z' S z over them), N(0, sigma_d^2) for each unseen level."""
        st = self.structure(ctx)
        mu, L = getattr(P, self.f_mu), self._L(ctx, P)
        S = L @ np.swapaxes(L, 1, 2)
        sd = np.exp(np.asarray(getattr(P, self.f_lsd), dtype=float))
        if labels is None:
            top, pos = st["top"], st["pos"]
            w = L[top[:, None], pos, :].sum(1)
            return mu[top[:, None], pos].sum(1), (w ** 2).sum(1)
        k = len(labels[self.chain[0]])
        where = {}
        for a in range(st["A"]):
            for kk in range(st["kmax"]):
                d = st["depth"][a, kk]
                if d >= 0:
                    where[(d, st["level_of"][a, kk])] = (a, kk)
        mean, var = np.zeros(k), np.zeros(k)
        for i in range(k):
            seen = []
            for d, g in enumerate(self.chain):
                code = ctx.groups[g][1].get_indexer([labels[g][i]])[0]
                if code >= 0:
                    seen.append(where[(d, code)])
                else:
                    var[i] += sd[d] ** 2
            if seen:
                a = seen[0][0]
                ks = [kk for _, kk in seen]
                mean[i] += mu[a, ks].sum()
                var[i] += S[a][np.ix_(ks, ks)].sum()
        return mean, var

    def draw(self, ctx, P, rng):
        """Fresh effects for the fitted sites: one draw per level of every grouping, (n,)."""
        sd = np.exp(np.asarray(getattr(P, self.f_lsd), dtype=float))
        out = np.zeros(ctx.n)
        for d, g in enumerate(self.chain):
            codes, levels = ctx.groups[g]
            out += rng.normal(0.0, sd[d], len(levels))[codes]
        return out

    def ranef_table(self, ctx, P):
        return self._level_tables(ctx, P)[0]

    def ranef_sd_table(self, ctx, P):
        return self._level_tables(ctx, P)[1]

    def varcorr_rows(self, ctx, P):
        sd = np.exp(np.asarray(getattr(P, self.f_lsd), dtype=float))
        return [(g, "(Intercept)", None, float(s * s), float(s)) for g, s in zip(self.chain, sd)]


class MaskedCholeskySlot(Slot):
    """Batch of lower-triangular factors (A, k, k) with a positive diagonal, of which only the
    rows and columns where ``mask`` (A, k) is True are packed (lower triangle row by row, the
    diagonal on the log scale); the rest is the unit row."""

    def __init__(self, name, field, mask, **kw):
        A, k = mask.shape
        super().__init__(name, field, (A, k, k), **kw)
        self.mask = np.asarray(mask, dtype=bool)
        r, c = np.tril_indices(k)
        keep = self.mask[:, r] & self.mask[:, c]
        self.ix = np.nonzero(keep)                      # (block, entry)
        self.a, self.r, self.c = self.ix[0], r[self.ix[1]], c[self.ix[1]]
        self.diag = self.r == self.c

    @property
    def size(self):
        return len(self.a)

    def pack(self, value):
        v = value[self.a, self.r, self.c].copy()
        v[self.diag] = np.log(v[self.diag])
        return v

    def unpack(self, vec):
        A, k, _ = self.shape
        L = np.zeros(self.shape)
        idx = np.arange(k)
        L[:, idx, idx] = 1.0
        v = np.array(vec, dtype=float)
        v[self.diag] = np.exp(v[self.diag])
        L[self.a, self.r, self.c] = v
        return L

    def pack_grad(self, grad, value):
        g = grad[self.a, self.r, self.c].copy()
        g[self.diag] *= value[self.a, self.r, self.c][self.diag]
        return g

    def entries(self):
        return list(zip(self.a.tolist(), self.r.tolist(), self.c.tolist()))


class JointGroupEffects(NestedGroupEffects):
    """Several groupings (crossed, nested or both) with ONE joint Gaussian q over all their
    levels: ``(1 | year) + (1 | observer)`` when the levels are few.

    Crossed groupings share sites, so their levels are correlated a posteriori and no
    factorisation by level or by grouping is exact; one joint q is (Gaussian family: the
    ELBO is then the log-likelihood). Used when the groupings have at most
    ``JOINT_MAX`` levels together (``site_groupings``); the block is the whole set of
    levels (one block, of that size).

    Parameters
    ----------
    groupings : tuple of str
        The grouping names (each its own sd).
    """

    kind = "joint_group"

    def __init__(self, groupings):
        super().__init__(groupings)
        key = "_".join(field_key(g) for g in self.chain)
        self.f_mu, self.f_L, self.f_lsd = f"jmu_{key}", f"jL_{key}", f"jlsd_{key}"
        self.hyper_fields = (self.f_lsd,)

    def spec(self):
        return {"kind": self.kind, "groupings": list(self.chain)}

    def lme4(self, site="site", species="species"):
        return " + ".join(f"(1 | {g})" for g in self.chain)

    def describe(self):
        return (f"random effects by {', '.join(self.chain)}, one joint q over all their levels "
                "(group scope)")

    def structure(self, ctx):
        codes = [ctx.groups[g][0] for g in self.chain]
        hit = self._cache.get("codes")
        if hit is not None and len(hit) == len(codes) and all(a is b for a, b in zip(hit, codes)):
            return self._cache["out"]
        sizes = [len(ctx.groups[g][1]) for g in self.chain]
        off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
        k = int(sum(sizes))
        depth = np.concatenate([np.full(s, d) for d, s in enumerate(sizes)])[None, :]
        level_of = np.concatenate([np.arange(s) for s in sizes])[None, :]
        pos = np.column_stack([off[d] + codes[d] for d in range(len(codes))])
        out = {"A": 1, "kmax": k, "pos": pos, "top": np.zeros(len(codes[0]), dtype=np.intp),
               "depth": depth, "level_of": level_of, "real": depth >= 0, "D": len(codes)}
        self._cache = {"codes": codes, "out": out}
        return out
