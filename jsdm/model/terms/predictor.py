"""The linear predictor of one problem: its terms bound to the data, assembled into blocks.

    eta_ij = offset_ij + sum_t eta^t_ij,   under q:  eta_ij ~ N(m_ij, v_ij)

The optimiser never loops over terms inside a pass over the cells. It works on
three blocks, which the predictor assembles from the terms once per evaluation
(a handful of column stacks):

- the **species block** phi_j (ks coordinates per species): the concatenation of
  the terms' species coordinates, with site design Xt (n, ks) = d m_ij / d phi_j
  (columns 1, x_i, a_i for intercepts, slopes and loadings) and a mask of free
  entries (the loadings' zeros);
- the **site block** u_i (kv coordinates per site): the terms' site coordinates,
  random ones first (kr of them; latent variables first), then fixed ones (fixed
  row effects), with species design U (m, kv) = d m_ij / d u_i (columns theta_j,
  1). The random coordinates share one joint Gaussian q per site,
  N(mu_i, Sigma_i = L_i L_i') (``Params.L``, (n, kr, kr)); their prior is
  N(0, diag(C_t)) by term. Then
      v_ij = U^R_j' Sigma_i U^R_j,   U^R = the random columns of U,
      KL_i = sum_t 0.5 [log det C_t + tr(C_t^-1 E_q[u_t u_t'])] - kr / 2 - log det L_i;
- **global** parameters (hyperparameters of the terms' priors, e.g. log sigma).

Bilinear terms (latent variables) put the same product into both blocks; the
predictor lists them as (species slice, site slice) pairs so that the Newton steps
add the couplings (v depends on theta_j through U^R; d2 m / d theta d a = I).
"""
import numpy as np

from .base import Term
from .dispersion import Dispersion

OFFSET = "offset"
_ALL = slice(None)


class LinearPredictor:
    """Terms bound to one problem's data (n sites, m species, site design X).

    Parameters
    ----------
    terms : sequence of Term
    n, m : int
    X : ndarray (n, p)
        Site covariates of species-specific slopes.
    offset : ndarray (n, m) or None
    family : Family
    n_disp : int or None
        Length of each species' dispersion vector (None: a scalar per species).
    s_free : bool array (shape of s) or None
        Dispersion entries the fit estimates (None: all).
    sites, species, covariates : labels for outputs.
    """

    def __init__(self, terms, *, n, m, X, offset=None, family=None, n_disp=None, s_free=None,
                 sites=None, species=None, covariates=(), traits=None, trait_names=(),
                 groups=None, designs=None):
        self.terms = tuple(terms)
        self.traits = None if traits is None else np.asarray(traits, dtype=float)
        self.trait_names = tuple(trait_names)
        #: {grouping name: (codes (n,), level labels)} of the group-scope terms
        self.groups = dict(groups or {})
        self.n, self.m, self.X = int(n), int(m), X
        self.p = X.shape[1]
        self.offset, self.family = offset, family
        self.sites = sites if sites is not None else list(range(self.n))
        self.species = species if species is not None else list(range(self.m))
        self.covariates = tuple(covariates)
        self.designs = dict(designs or {})      # further site designs by name ("lv": X_lv)
        self.dispersion = (Dispersion(family, n_disp, free=s_free)
                           if family is not None and family.has_dispersion else None)
        self._index()

    # --- structure (computed once) ------------------------------------------------------
    def _index(self):
        for t in self.terms:
            if not isinstance(t, Term):
                raise TypeError(f"not a Term: {t!r}")
            if hasattr(t, "bind"):          # terms that need the design's column names
                t.bind(self)
        fields = [f for t in self.terms for f in t.fields(self)]
        if len(set(fields)) != len(fields):
            from ...exceptions import JSDMError
            raise JSDMError(f"two terms own the same parameter: {fields}; a model takes each "
                            "kind of term once (e.g. one set of species intercepts)")
        # the latent variables: the bilinear term (their gauge step and anchor order)
        self.lv = next((t for t in self.terms if t.bilinear), None)
        self.d = self.lv.site_width(self) if self.lv is not None else 0
        self.species_terms, ks = [], 0
        for t in self.terms:
            w = t.species_width(self)
            if w:
                self.species_terms.append((t, slice(ks, ks + w)))
                ks += w
        self.ks = ks
        self._index_species_random()
        rand = [t for t in self.terms if t.site_width(self) and t.site_random]
        rand = [t for t in rand if t.bilinear] + [t for t in rand if not t.bilinear]
        fixed = [t for t in self.terms if t.site_width(self) and not t.site_random]
        self.site_terms, kv = [], 0
        for t in rand + fixed:
            w = t.site_width(self)
            self.site_terms.append((t, slice(kv, kv + w)))
            kv += w
        self.kv = kv
        self.kr = sum(t.site_width(self) for t in rand)
        self.random_site_terms = self.site_terms[:len(rand)]
        self.bilinear = [(dict(self.species_terms)[t], dict(self.site_terms)[t])
                         for t in self.terms if t.bilinear and t.site_width(self)]
        self.hyper_terms = [(t, sl) for t, sl in self.random_site_terms if t.hyper_fields]
        # terms whose moments are not of the linear / bilinear form (quadratic responses):
        # they add to (m, v) and to the gradient through their own chain rule
        self.nonlinear_terms = [t for t in self.terms
                                if getattr(t, "nonlinear", False) and t.active(self)]
        self._unit_prior = all(t.unit_prior for t, _ in self.random_site_terms)
        self._ones_kr = np.ones(self.kr)
        self._ones_kr.flags.writeable = False
        self.free = np.ones((self.m, self.ks), dtype=bool)
        for t, sl in self.species_terms:
            f = t.species_free(self)
            if f is not None:
                self.free[:, sl] = f
        self.pinned = [(i, sl.start + k) for t, sl in self.site_terms for i, k in t.site_pinned(self)]
        lin = [t for t in self.terms if not t.bilinear]
        last_glm = max([k for k, t in enumerate(lin) if t.in_glm_start], default=-1)
        plan = lin[:last_glm + 1] + [OFFSET] + lin[last_glm + 1:]
        plan += [t for t in self.terms if t.bilinear]
        self._mean_plan = [t for t in plan if t is OFFSET or t.active(self)]
        self.glm_terms = [t for t in self.terms if t.in_glm_start]
        # group scope: one random coordinate per level of a site grouping, q by level
        self.group_terms = [t for t in self.terms if getattr(t, "group_random", False)]
        for t in self.group_terms:
            if t.group not in self.groups:
                from ...exceptions import JSDMError
                raise JSDMError(f"the term {t.lme4()} needs the grouping {t.group!r}, which the "
                                f"problem does not have (known: {sorted(self.groups)}).")
        self._shapes = self.field_shapes()
        # fields every gradient writes (the rest start at zero): the blocks' coordinates
        filled = {"L"} if self.kr else set()
        filled |= {"Lsp"} if self.ksr else set()
        filled |= {f for t in self.global_terms for f in t.fields(self)}
        filled |= {"s"} if self.dispersion is not None else set()
        filled |= {f for t in self.group_terms for f in t.fields(self)}
        probe = self._probe_fields()
        self._filled = filled | probe

    def _index_species_random(self):
        """The species-local random coordinates (species random effects): their columns in the
        species block and in the joint species q (``Lsp``, (m, ksr, ksr))."""
        self.species_random_terms, cols, k = [], [], 0
        blocks = dict(self.species_terms)
        for t in self.terms:
            if getattr(t, "species_random", False) and t in blocks:
                sl = blocks[t]
                self.species_random_terms.append((t, sl, slice(k, k + sl.stop - sl.start)))
                cols += list(range(sl.start, sl.stop))
                k += sl.stop - sl.start
        self.ksr = k
        self.sr_cols = np.array(cols, dtype=int)
        # global coordinates entering the cells (community slopes, the fourth corner)
        self.global_terms = [t for t in self.terms if getattr(t, "global_cell", False)
                             and t.active(self)]

    def _probe_fields(self):
        """Fields written by ``set_species_coef`` / ``set_site_means`` (found by trying)."""
        from ..params import Params

        P = Params.from_fields({})
        if self.ks:
            self.set_species_coef(P, np.zeros((self.m, self.ks)))
        if self.kv:
            self.set_site_means(P, np.zeros((self.n, self.kv)))
        return set(P.__dict__)

    def term(self, kind):
        """The first term of a kind ("intercepts", "slopes", "lv", ...), or None."""
        return next((t for t in self.terms if t.kind == kind), None)

    def count_rows(self, rows):
        if rows.__class__ is slice:
            return self.n if rows == _ALL else len(range(self.n)[rows])
        return len(rows)

    def count_cols(self, cols):
        if cols.__class__ is slice:
            return self.m if cols == _ALL else len(range(self.m)[cols])
        return len(cols)

    # --- parameters -----------------------------------------------------------------------
    def field_shapes(self):
        """{Params field: shape} of every parameter array (terms, the site block's L, s)."""
        out = {}
        for t in self.terms:
            out.update(t.fields(self))
        if self.dispersion is not None:
            out.update(self.dispersion.fields(self))
        out["L"] = (self.n, self.kr, self.kr)
        if self.ksr:
            out["Lsp"] = (self.m, self.ksr, self.ksr)
        return out

    def zeros(self, skip=()):
        """Params with every array at zero (scalars 0.0); fields in ``skip`` are left out."""
        from ..params import Params
        return Params.from_fields({k: (0.0 if v == () else np.zeros(v))
                                   for k, v in self._shapes.items() if k not in skip})

    def slots(self):
        """All packed blocks in packed order: model parameters by scope (species, site,
        global; dispersion last among the species ones), then variational ones, then L."""
        from .slots import CholeskySlot

        rank = {"species": 0, "site": 1, "group": 2, "global": 3}
        slots = [s for t in self.terms for s in t.slots(self)]
        model = [s for s in slots if s.model]
        species = [s for s in model if s.scope == "species"]
        disp = self.dispersion.slots(self) if self.dispersion is not None else []
        other = sorted((s for s in model if s.scope != "species"), key=lambda s: rank[s.scope])
        var = [s for s in slots if not s.model]
        # species-local variational blocks (species random effects) right after the model
        # parameters: the Hessian's extended model block (see model.hessian_fd)
        var_sp = [s for s in var if s.scope == "species"]
        if self.ksr:
            var_sp.append(CholeskySlot("Lsp", "Lsp", self.m, self.ksr, model=False,
                                       scope="species"))
        var = var_sp + [s for s in var if s.scope != "species"]
        return species + disp + other + var + [
            CholeskySlot("L", "L", self.n, self.kr, model=False, scope="site")]

    # --- moments ------------------------------------------------------------------------------
    def mean(self, P, rows=slice(None), cols=slice(None)):
        """m_ij for sites ``rows`` x species ``cols`` (a new array)."""
        F = None
        for t in self._mean_plan:
            if t is OFFSET:
                if self.offset is None:
                    continue
                val = self.offset[rows][:, cols]
            else:
                val = t.mean(self, P, rows, cols)
                if val is None:
                    continue
            if F is None:
                F = np.broadcast_to(val, (self.count_rows(rows), self.count_cols(cols))).copy()
            else:
                F += val
        if F is None:
            F = np.zeros((self.count_rows(rows), self.count_cols(cols)))
        return F

    def fixed_part(self, P, rows=slice(None), cols=slice(None)):
        """The mean of every term but the bilinear ones (latent variables), offset included."""
        saved = self._mean_plan
        self._mean_plan = [t for t in saved if t is OFFSET or not t.bilinear]
        try:
            return self.mean(P, rows, cols)
        finally:
            self._mean_plan = saved

    def site_cov2(self, P, rows=slice(None)):
        """Sigma_i = L_i L_i' of the sites ``rows``, reshaped (r, kr * kr)."""
        L = P.L[rows]
        return (L @ np.swapaxes(L, 1, 2)).reshape(-1, self.kr * self.kr)

    def moments(self, P, rows=slice(None), cols=slice(None), S2=None):
        """(M, V): means and variances of eta under q for sites ``rows`` x species ``cols``.

        ``S2``: all sites' joint covariances reshaped (n, kr * kr), when at hand.
        """
        M = self.mean(P, rows, cols)
        kr = self.kr
        if not kr and not self.ksr and not self.group_terms:
            return M, np.zeros_like(M)
        if kr:
            UR = self.site_design(P, cols, random_only=True)
            UU = (UR[:, :, None] * UR[:, None, :]).reshape(UR.shape[0], kr * kr)
            S2 = self.site_cov2(P, rows) if S2 is None else S2[rows]
            V = S2 @ UU.T
        else:
            V = np.zeros_like(M)
        if self.ksr:                       # + z_i' S_j z_i (species random effects)
            ZZ = self.species_random_design2(P, rows)
            Ls = P.Lsp[cols]
            V += ZZ @ (Ls @ np.swapaxes(Ls, 1, 2)).reshape(len(Ls), -1).T
        for t in self.nonlinear_terms:     # quadratic responses: their own (m, v) parts
            dm, dv = t.moments_extra(self, P, rows, cols)
            M += dm
            V += dv
        np.maximum(V, 0.0, out=V)
        for t in self.group_terms:         # group scope: (r, 1) each
            V += t.variance(self, P, rows)
        return M, V

    # --- block designs -------------------------------------------------------------------------
    def species_design(self, P, rows=slice(None)):
        """Xt (r, ks) = d m_ij / d phi_j for the sites ``rows``."""
        parts = [t.species_design(self, P, rows) for t, _ in self.species_terms]
        return parts[0] if len(parts) == 1 else np.column_stack(parts)

    def species_coef(self, P):
        """phi (m, ks): every species' block coordinates."""
        parts = [t.get_species(P) for t, _ in self.species_terms]
        return np.column_stack(parts) if parts else np.zeros((self.m, 0))

    def set_species_coef(self, P, phi):
        """Write phi (m, ks) into P (fixed entries are set to 0 by the terms)."""
        for t, sl in self.species_terms:
            t.set_species(P, phi[:, sl])

    def site_design(self, P, cols=slice(None), random_only=False):
        """U (c, kv) = d m_ij / d u_i for the species ``cols`` (random columns only: (c, kr))."""
        terms = self.random_site_terms if random_only else self.site_terms
        if len(terms) == 1:
            return terms[0][0].site_design(self, P, cols)
        if not terms:
            return np.zeros((self.count_cols(cols), 0))
        return np.column_stack([t.site_design(self, P, cols) for t, _ in terms])

    def site_means(self, P):
        """u (n, kv): every site's block coordinates (variational means, fixed effects)."""
        terms = self.site_terms
        if len(terms) == 1:
            return terms[0][0].get_site(P)
        if not terms:
            return np.zeros((self.n, 0))
        return np.column_stack([t.get_site(P) for t, _ in terms])

    def set_site_means(self, P, u):
        for t, sl in self.site_terms:
            t.set_site(P, u[:, sl])

    def prior_precision(self, P):
        """Diagonal prior precision (kr,) of the random site coordinates."""
        if self._unit_prior:
            return self._ones_kr
        parts = [t.prior_precision(self, P) for t, _ in self.random_site_terms]
        return np.concatenate(parts) if parts else np.zeros(0)

    def prior_logdet(self, P):
        return sum(t.prior_logdet(self, P) for t, _ in self.random_site_terms)

    # --- KL and gradient -----------------------------------------------------------------------
    def kl(self, P):
        """Per-site KL of the joint site q from the prior, (n,); the species q's KL (species
        random effects) is spread evenly over the sites (it does not depend on them)."""
        if self.ksr:
            return self._kl_sites(P) + self.species_kl(P).sum() / max(self.n, 1)
        return self._kl_sites(P)

    def _kl_sites(self, P):
        kr = self.kr
        extra = 0.0
        for t in self.group_terms:          # group scope: each level's KL spread over its sites
            extra = extra + t.kl_by_site(self, P)
        if not kr:
            return np.zeros(self.n) + extra
        L = P.L
        mu = self.site_means(P)[:, :kr]
        if self._unit_prior:        # N(0, I): 0.5 (tr Sigma + |mu|^2 - kr) - log det L
            out = 0.5 * ((L ** 2).sum(axis=(1, 2)) + (mu ** 2).sum(1) - kr)
        else:
            sq = (L ** 2).sum(2) + mu ** 2
            out = 0.5 * (sq @ self.prior_precision(P) - kr + self.prior_logdet(P))
        return out - np.log(np.diagonal(L, axis1=1, axis2=2)).sum(1) + extra

    # --- species random effects: the joint species q -------------------------------------------
    def species_random_design(self, P, rows=slice(None)):
        """Z (r, ksr): the site design of the random species coordinates."""
        parts = [t.species_design(self, P, rows) for t, _, _ in self.species_random_terms]
        return parts[0] if len(parts) == 1 else np.column_stack(parts)

    def species_random_design2(self, P, rows=slice(None)):
        Z = self.species_random_design(P, rows)
        return (Z[:, :, None] * Z[:, None, :]).reshape(Z.shape[0], -1)

    def species_prior(self, P):
        """(precision (ksr, ksr), log det of the prior covariance, prior means (m, ksr))."""
        k = self.ksr
        prec, logdet, means = np.zeros((k, k)), 0.0, np.zeros((self.m, k))
        for t, _, rs in self.species_random_terms:
            p_, l_, m_ = t.prior(self, P)
            prec[rs, rs], means[:, rs] = p_, m_
            logdet += l_
        return prec, logdet, means

    def species_random_residual(self, P, prior=None):
        """(r (m, ksr) = mu_j - prior mean, precision, log det)."""
        prec, logdet, means = self.species_prior(P) if prior is None else prior
        return self.species_coef(P)[:, self.sr_cols] - means, prec, logdet

    def species_kl(self, P):
        """KL of each species' joint q of its random coordinates from their prior, (m,)."""
        if not self.ksr:
            return np.zeros(self.m)
        r, prec, logdet = self.species_random_residual(P)
        Ls = P.Lsp
        tr = np.einsum("kl,jkc,jlc->j", prec, Ls, Ls)
        quad = np.einsum("jk,kl,jl->j", r, prec, r)
        logdetL = np.log(np.diagonal(Ls, axis1=1, axis2=2)).sum(1)
        return 0.5 * (logdet + tr + quad - self.ksr) - logdetL

    def species_hyper_update(self, P):
        """Closed-form update of the species random effects' prior (Sigma, gamma), in place."""
        mu = self.species_coef(P)[:, self.sr_cols]
        S = P.Lsp @ np.swapaxes(P.Lsp, 1, 2)
        for t, _, rs in self.species_random_terms:
            t.hyper_update(self, P, mu[:, rs], S[:, rs, rs])

    def _species_random_gradient(self, P, Gv, gb, g):
        """Add the species q's part of the gradient: prior on the means, Lsp, hyperparameters."""
        r, prec, _ = self.species_random_residual(P)
        gb[:, self.sr_cols] -= r @ prec
        ZZ = self.species_random_design2(P)
        k = self.ksr
        dS = (Gv.T @ ZZ).reshape(self.m, k, k)
        Ls = P.Lsp
        gL = 2.0 * dS @ Ls - prec @ Ls
        idx = np.arange(k)
        gL[:, idx, idx] += 1.0 / Ls[:, idx, idx]
        g.Lsp = np.tril(gL)
        mu = self.species_coef(P)[:, self.sr_cols]
        S = Ls @ np.swapaxes(Ls, 1, 2)
        for t, _, rs in self.species_random_terms:
            for f, v in t.hyper_gradient(self, P, mu[:, rs], S[:, rs, rs]).items():
                setattr(g, f, v)

    def species_random_start(self):
        sd = np.concatenate([np.broadcast_to(t.start_sd(self), (rs.stop - rs.start,))
                             for t, _, rs in self.species_random_terms])
        return np.broadcast_to(np.diag(sd), (self.m, self.ksr, self.ksr)).copy()

    def gradient(self, P, Gm, Gv, gs=None):
        """Analytic gradient of the ELBO in natural coordinates, from Gm, Gv (n, m)."""
        g = self.zeros(skip=self._filled)
        if self.ks:
            gb = Gm.T @ self.species_design(P)
        kr, kv = self.kr, self.kv
        if kv:
            U = self.site_design(P)
            gu = Gm @ U
        if kr:
            UR = U[:, :kr] if kv > kr else U
            L = P.L
            pr = self.prior_precision(P)
            mu = self.site_means(P)
            gu[:, :kr] -= pr * mu[:, :kr]
            UU = (UR[:, :, None] * UR[:, None, :]).reshape(self.m, kr * kr)
            dS = (Gv @ UU).reshape(self.n, kr, kr)             # sum_j Gv U U'
            gL = 2.0 * dS @ L - (L if self._unit_prior else pr[None, :, None] * L)
            idx = np.arange(kr)
            gL[:, idx, idx] += 1.0 / L[:, idx, idx]
            g.L = np.tril(gL)
            if self.bilinear:
                S = L @ np.swapaxes(L, 1, 2)
                Q = (Gv.T @ S.reshape(self.n, kr * kr)).reshape(self.m, kr, kr)   # sum_i Gv S_i
                for sps, sis in self.bilinear:
                    gb[:, sps] += 2.0 * np.einsum("jkl,jl->jk", Q[:, sis, :], UR)
            if self.hyper_terms:
                sq = mu[:, :kr] ** 2 + (L ** 2).sum(2)
                for t, sl in self.hyper_terms:
                    for k, v in t.hyper_gradient(self, P, mu[:, sl], sq[:, sl]).items():
                        setattr(g, k, v)
        if self.ksr:
            self._species_random_gradient(P, Gv, gb, g)
        for t in self.global_terms:
            for f, v in t.global_gradient(self, P, Gm, Gv).items():
                setattr(g, f, v)
        if self.ks:
            self.set_species_coef(g, gb * self.free)
        if kv:
            self.set_site_means(g, gu)
        for t in self.nonlinear_terms:
            t.gradient_extra(self, P, Gm, Gv, g)
        if gs is not None:
            g.s = gs
        for t in self.group_terms:
            for k, v in t.gradient(self, P, Gm, Gv).items():
                setattr(g, k, v)
        return g

    # --- starting values --------------------------------------------------------------------------
    def start_cov(self):
        """Starting Cholesky factors (n, kr, kr): diagonal, each term's start sd."""
        sd = [np.broadcast_to(t.start_sd(self), (t.site_width(self),)) for t, _ in self.random_site_terms]
        sd = np.concatenate(sd) if sd else np.zeros(0)
        return np.broadcast_to(np.diag(sd), (self.n, self.kr, self.kr)).copy()

    # --- outputs -------------------------------------------------------------------------------------
    def reported(self, P, layout):
        """Rows of ``fit.params`` from every term (and the dispersion), in the order shown.

        Returns a dict: "labels" (list of (block, species or site, term)), "values",
        "positions" (packed), "jac" (d reported / d packed) and "transforms" (list of
        (row indices, forward map from the packed scale) for intervals).
        """
        parts = []
        species = [t for t in self.terms if any(s.model and s.scope == "species" for s in t.slots(self))]
        others = [t for t in self.terms if t not in species]
        order = species + ([self.dispersion] if self.dispersion is not None else []) + others
        for rank, t in enumerate(order):
            for r in t.reported(self, P, layout):
                parts.append((rank, r))
        blocks = list(dict.fromkeys(r.block for _, r in parts))
        rows = []
        for b in blocks:
            chunk = []
            for rank, r in parts:
                if r.block != b:
                    continue
                for k in range(len(r.values)):
                    chunk.append(((int(r.major[k]), rank, k), r, k))
            chunk.sort(key=lambda c: c[0])
            rows += chunk
        out = {"labels": [(r.block, *r.labels[k]) for _, r, k in rows],
               "values": np.array([r.values[k] for _, r, k in rows], dtype=float),
               "positions": np.array([r.positions[k] for _, r, k in rows], dtype=int),
               "jac": np.array([r.jac[k] for _, r, k in rows], dtype=float)}
        transforms = {}
        for i, (_, r, _k) in enumerate(rows):
            if r.transform is not None:
                transforms.setdefault(id(r), (r.transform, []))[1].append(i)
        out["transforms"] = [(np.array(ix), fwd) for fwd, ix in transforms.values()]
        return out

    def packed_labels(self, P, layout):
        """(block, site or species, name) of every packed entry, model and variational.

        Model entries carry their ``fit.params`` label; a site's variational means
        ("lv_mean", "row_effect_mean", ...) and the entries of its joint Cholesky factor
        ("lv_chol" between latent variables, "site_chol" otherwise) are labelled here.
        """
        rep = self.reported(P, layout)
        labels = [None] * layout.size
        for lab, pos in zip(rep["labels"], rep["positions"]):
            labels[pos] = lab
        names = self.coord_names()
        lv = set(range(self.d))
        for slot in layout.slots:
            if slot.model:
                continue
            start = layout.slices[slot.name].start
            names_major = self.species if slot.scope == "species" else self.sites
            for k, ix in enumerate(slot.entries()):
                site = names_major[ix[0]]
                if slot.field == "Lsp":
                    labels[start + k] = ("ranef_chol", site, f"L{ix[1] + 1}{ix[2] + 1}")
                elif slot.field == "L":
                    r, c = ix[1], ix[2]
                    labels[start + k] = (("lv_chol", site, f"L{r + 1}{c + 1}") if {r, c} <= lv
                                         else ("site_chol", site, f"L[{names[r]},{names[c]}]"))
                else:
                    block, sub = slot.label or (slot.name, None)
                    name = sub[ix[-1]] if sub is not None and len(ix) > 1 else (
                        sub[0] if sub else slot.field)
                    labels[start + k] = (block, site, name)
        return labels

    # --- labels ------------------------------------------------------------------------------------
    def coord_names(self):
        """Name of each site-block coordinate (LV1.., alpha)."""
        return [name for t, _ in self.site_terms for name in t.coord_names(self)]

    def describe(self):
        """Printable list of the terms (one line each)."""
        lines = [f"  offset: {'given' if self.offset is not None else 'none'}"]
        for t in self.terms:
            if t.active(self):
                lines.append(f"  {t.lme4():<32} {t.describe()}")
        return "\n".join(lines)
