"""Species random effects: ``(1 | species)``, ``(0 + x | species)``, ``(1 + x | species)``, ``(x || species)``.

    m_ij += z_i' mu_j,   v_ij += z_i' S_j z_i,   z_i = (1, x_i1, ...) the term's site design
    b_j ~ N(M_j gamma, Sigma),   q(b_j) = N(mu_j, S_j)

Each species has kb random coefficients b_j (an intercept and / or slopes on site
covariates). Their prior mean is a linear function of global coefficients gamma:
the community-level fixed effect of each coordinate (``x`` next to ``(0 + x |
species)``, the intercept next to ``(1 | species)``) and, with species traits,
trait interactions (``x:trait``: the fourth corner, M_j holding t_j). A coordinate
without a fixed effect has prior mean 0 (lme4's meaning of ``(0 + x | species)``
without ``x``). Sigma is block diagonal: one unstructured block per bar term
(``(1 + x | species)``), diagonal for ``||`` or independent sums of bars.

Scopes. The variational means mu_j are species-block coordinates (site design
z_i, like fixed species slopes), so every species Newton step moves them; their
prior adds -Sigma^-1 (mu_j - M_j gamma) to the gradient and Sigma^-1 to the
curvature. All species-local random coordinates of a species share one joint
Gaussian q: the predictor owns its Cholesky factor ``Lsp`` (m, kb, kb) and the
species KL,

    KL_j = 0.5 [log det Sigma + tr(Sigma^-1 (S_j + r_j r_j')) - kb] - log det Lsp_j,
    r_j = mu_j - M_j gamma.

Sigma and gamma are global; both have closed-form maximisers given the q's
(``hyper_update``). Sigma is packed as log sds and, per correlated block, the
strictly lower entries c of a unit lower-triangular C with correlation matrix
R = W^-1/2 C C' W^-1/2, W = diag(C C') (always positive definite; glmmTMB's
parametrisation of an unstructured covariance).
"""
import numpy as np

from .base import Reported, Term
from .slots import MaskedSlot, Slot

INTERCEPT = "1"


def _name(col):
    return "(Intercept)" if col == INTERCEPT else col


class SpeciesRandom(Term):
    """Random species coefficients on the intercept and / or site covariates.

    Parameters
    ----------
    columns : tuple of str
        The random coordinates: ``"1"`` (intercept) or names of design columns
        (``Problem.terms``).
    blocks : tuple of tuple of int, optional
        Coordinates (indices into ``columns``) whose effects are correlated; one
        block per bar term. Default: one block with every coordinate.
    mean : tuple of bool, optional
        Whether each coordinate's prior mean has a fixed effect (default: all).
    traits : tuple of (str, tuple of str), optional
        (column, trait names): trait interactions in that coordinate's prior mean.
    group : str
        Name of the grouping (the species column's name) in outputs.
    """

    kind = "species_random"
    table = "ranef"
    in_glm_start = True
    species_random = True

    def __init__(self, columns=(INTERCEPT,), blocks=None, mean=None, traits=(), group="species"):
        self.columns = tuple(str(c) for c in columns)
        k = len(self.columns)
        if not k:
            raise ValueError("a species random-effect term needs at least one coordinate")
        self.blocks = (tuple(tuple(sorted(int(i) for i in b)) for b in blocks)
                       if blocks is not None else (tuple(range(k)),))
        flat = sorted(i for b in self.blocks for i in b)
        if flat != list(range(k)):
            raise ValueError(f"blocks {self.blocks} must partition the coordinates 0..{k - 1}")
        self.mean_on = tuple(bool(x) for x in mean) if mean is not None else (True,) * k
        self.traits = tuple((str(c), tuple(str(t) for t in ts)) for c, ts in traits)
        self.group = str(group)

    # --- specification -------------------------------------------------------------------
    def spec(self):
        return {"kind": self.kind, "columns": list(self.columns),
                "blocks": [list(b) for b in self.blocks], "mean": list(self.mean_on),
                "traits": [[c, list(ts)] for c, ts in self.traits], "group": self.group}

    def bars(self, species="species"):
        """lme4 bar terms, one per block."""
        out = []
        for b in self.blocks:
            cols = [self.columns[i] for i in b]
            left = " + ".join(cols) if INTERCEPT in cols else "0 + " + " + ".join(cols)
            out.append(f"({left} | {species})")
        return out

    def lme4(self, site="site", species="species"):
        fixed = [_name(c) if c != INTERCEPT else "1" for c, on in zip(self.columns, self.mean_on) if on]
        fixed += [f"{c}:{t}" for c, ts in self.traits for t in ts]
        return " + ".join(fixed + self.bars(species))

    def describe(self):
        names = ", ".join(_name(c) for c in self.columns)
        cor = ("correlated" if any(len(b) > 1 for b in self.blocks) else "independent") \
            if len(self.columns) > 1 else ""
        tr = f"; prior means with traits {sorted({t for _, ts in self.traits for t in ts})}" \
            if self.traits else ""
        return f"random species effects on {names} {cor} b_j ~ N(mean, Sigma){tr}".replace("  ", " ")

    # --- structure -------------------------------------------------------------------------
    @property
    def kb(self):
        return len(self.columns)

    def col_index(self, ctx):
        """Index of each coordinate in ctx.X (-1: the intercept)."""
        cov = list(ctx.covariates)
        out = []
        for c in self.columns:
            if c == INTERCEPT:
                out.append(-1)
                continue
            if c not in cov:
                from ...exceptions import JSDMError
                raise JSDMError(f"random species slope on {c!r}: no such covariate column; the "
                                f"design has {cov}. Add {c!r} to the site covariates.")
            out.append(cov.index(c))
        return np.array(out, dtype=int)

    def mean_terms(self, ctx):
        """[(coordinate k, trait name or None)] of the prior mean's coefficients gamma."""
        out = [(k, None) for k in range(self.kb) if self.mean_on[k]]
        tr = dict(self.traits)
        for k, c in enumerate(self.columns):
            out += [(k, t) for t in tr.get(c, ())]
        return out

    def gamma_names(self, ctx):
        names = []
        for k, t in self.mean_terms(ctx):
            c = self.columns[k]
            if t is None:
                names.append(_name(c))
            else:
                names.append(t if c == INTERCEPT else f"{c}:{t}")
        return names

    def mean_design(self, ctx):
        """M (m, kb, g): d prior mean_j / d gamma."""
        terms = self.mean_terms(ctx)
        M = np.zeros((ctx.m, self.kb, len(terms)))
        for g, (k, t) in enumerate(terms):
            if t is None:
                M[:, k, g] = 1.0
            else:
                M[:, k, g] = _trait_column(ctx, t)
        return M

    def corr_mask(self):
        """(kb, kb) bool: the packed correlation entries (strictly lower, within blocks)."""
        mask = np.zeros((self.kb, self.kb), dtype=bool)
        for b in self.blocks:
            for a, i in enumerate(b):
                for j in b[:a]:
                    mask[max(i, j), min(i, j)] = True
        return mask

    # --- parameters ----------------------------------------------------------------------------
    hyper_fields = ("sp_logsd", "sp_corr", "sp_gamma")

    def fields(self, ctx):
        return {"b_mu": (ctx.m, self.kb), "sp_logsd": (self.kb,), "sp_corr": (self.kb, self.kb),
                "sp_gamma": (len(self.mean_terms(ctx)),)}

    def slots(self, ctx):
        g = len(self.mean_terms(ctx))
        out = [Slot("sp_gamma", "sp_gamma", (g,), model=True, scope="global"),
               Slot("sp_logsd", "sp_logsd", (self.kb,), model=True, scope="global",
                    bounds=(-20.0, 20.0))]
        out.append(MaskedSlot("sp_corr", "sp_corr", self.corr_mask(), model=True, scope="global"))
        out.append(Slot("b_mu", "b_mu", (ctx.m, self.kb), model=False, scope="species",
                        label=("ranef_mean", [_name(c) for c in self.columns])))
        return out

    def mean(self, ctx, P, rows, cols):
        return self.species_design(ctx, P, rows) @ P.b_mu[cols].T

    def species_width(self, ctx):
        return self.kb

    def species_design(self, ctx, P, rows=slice(None)):
        idx = self.col_index(ctx)
        r = ctx.count_rows(rows)
        Z = np.empty((r, self.kb))
        for k, c in enumerate(idx):
            Z[:, k] = 1.0 if c < 0 else ctx.X[rows, c]
        return Z

    def get_species(self, P):
        return P.b_mu

    def set_species(self, P, values):
        P.b_mu = np.array(values, dtype=float)

    # --- the prior N(M_j gamma, Sigma) ----------------------------------------------------------------
    def correlation(self, P):
        """(R (kb, kb), C, W): correlation matrix from the packed entries."""
        C = np.tril(np.where(self.corr_mask(), P.sp_corr, 0.0), -1) + np.eye(self.kb)
        A = C @ C.T
        W = np.diag(A).copy()
        R = A / np.sqrt(np.outer(W, W))
        return R, C, W

    def covariance(self, P):
        R, _, _ = self.correlation(P)
        sd = np.exp(P.sp_logsd)
        return R * np.outer(sd, sd)

    def prior(self, ctx, P):
        """(precision (kb, kb), log det Sigma, prior means (m, kb))."""
        R, C, W = self.correlation(P)
        Ci = np.linalg.inv(C)
        Rinv = np.sqrt(W)[:, None] * (Ci.T @ Ci) * np.sqrt(W)[None, :]
        isd = np.exp(-P.sp_logsd)
        prec = Rinv * np.outer(isd, isd)
        logdet = 2.0 * P.sp_logsd.sum() - np.log(W).sum()
        means = self.mean_design(ctx) @ P.sp_gamma
        return prec, float(logdet), means

    def hyper_gradient(self, ctx, P, mu, S):
        """d(-sum_j KL_j)/d(sp_logsd, sp_corr, sp_gamma) given q's means mu (m, kb) and
        covariances S (m, kb, kb)."""
        prec, _, means = self.prior(ctx, P)
        r = mu - means
        Mom = S.sum(0) + r.T @ r
        m = ctx.m
        G = -0.5 * (m * prec - prec @ Mom @ prec)          # d/dSigma (symmetric)
        Sig = self.covariance(P)
        g_logsd = 2.0 * np.diag(G @ Sig)
        R, C, W = self.correlation(P)
        sd = np.exp(P.sp_logsd)
        GR = G * np.outer(sd, sd)
        B = GR / np.sqrt(np.outer(W, W))
        RG = R @ GR
        gC = 2.0 * B @ C - 2.0 * (np.diag(RG) / W)[:, None] * C
        g_corr = np.where(self.corr_mask(), gC, 0.0)
        M = self.mean_design(ctx)
        g_gamma = np.einsum("jkg,kl,jl->g", M, prec, r)
        return {"sp_logsd": g_logsd, "sp_corr": g_corr, "sp_gamma": g_gamma}

    def hyper_update(self, ctx, P, mu, S, sweeps=3):
        """Closed-form maximisers: gamma by generalised least squares given Sigma, Sigma the
        mean second moment of b_j - M_j gamma under q (per block), alternated."""
        M = self.mean_design(ctx)
        Sbar = S.mean(0)
        for _ in range(sweeps if M.shape[2] else 1):
            if M.shape[2]:
                prec, _, _ = self.prior(ctx, P)
                A = np.einsum("jkg,kl,jlh->gh", M, prec, M)
                b = np.einsum("jkg,kl,jl->g", M, prec, mu)
                P.sp_gamma = np.linalg.solve(A + 1e-12 * np.eye(len(A)), b)
            r = mu - M @ P.sp_gamma
            Sig = Sbar + r.T @ r / ctx.m
            self.set_covariance(P, Sig)

    def set_covariance(self, P, Sig):
        """Write a covariance (its blocks) into sp_logsd, sp_corr."""
        sd = np.sqrt(np.maximum(np.diag(Sig), 1e-300))
        P.sp_logsd = np.clip(np.log(sd), -20.0, 20.0)
        corr = np.zeros((self.kb, self.kb))
        for b in self.blocks:
            if len(b) < 2:
                continue
            ix = np.array(b)
            R = Sig[np.ix_(ix, ix)] / np.outer(sd[ix], sd[ix])
            w, V = np.linalg.eigh(0.5 * (R + R.T))
            R = (V * np.maximum(w, 1e-10)) @ V.T
            R /= np.sqrt(np.outer(np.diag(R), np.diag(R)))
            Lc = np.linalg.cholesky(R)
            Cb = Lc / np.diag(Lc)[:, None]
            for a in range(len(ix)):            # (block indices are sorted)
                for c in range(a):
                    corr[ix[a], ix[c]] = Cb[a, c]
        P.sp_corr = corr

    def curvature_hyper(self, ctx, P):
        g = len(self.mean_terms(ctx))
        prec, _, _ = self.prior(ctx, P)
        M = self.mean_design(ctx)
        hg = np.einsum("jkg,kl,jlg->g", M, prec, M) if g else np.zeros(0)
        return {"sp_logsd": np.full(self.kb, 2.0 * ctx.m),
                "sp_corr": np.full((self.kb, self.kb), float(ctx.m)), "sp_gamma": hg}

    # --- starting values ------------------------------------------------------------------------------
    def start(self, ctx, P, init):
        b = np.array(init["glm"][self], dtype=float)
        P.b_mu = b
        P.sp_gamma = np.zeros(len(self.mean_terms(ctx)))
        P.sp_logsd = np.zeros(self.kb)
        P.sp_corr = np.zeros((self.kb, self.kb))
        S = np.broadcast_to(np.diag(np.full(self.kb, 0.01)), (ctx.m, self.kb, self.kb))
        # prior from the GLM coefficients, with shrinkage of wild (separated) ones
        self.hyper_update(ctx, P, np.clip(b, -10, 10), S)
        sd = np.exp(P.sp_logsd)
        P.sp_logsd = np.log(np.clip(sd, 0.05, 5.0))

    def start_sd(self, ctx):
        return np.full(self.kb, 0.1)

    # --- outputs ---------------------------------------------------------------------------------------
    def reported(self, ctx, P, layout):
        out = []
        g = len(self.mean_terms(ctx))
        if g:
            pos = layout.slices["sp_gamma"].start + np.arange(g)
            out.append(Reported("fixef", np.zeros(g, dtype=int),
                                [("", nm) for nm in self.gamma_names(ctx)], P.sp_gamma, pos))
        sd = np.exp(P.sp_logsd)
        pos = layout.slices["sp_logsd"].start + np.arange(self.kb)
        out.append(Reported("ranef_sd", np.zeros(self.kb, dtype=int),
                            [(self.group, _name(c)) for c in self.columns], sd, pos, sd,
                            transform=np.exp))
        return out


    # --- random-effect tables (jsdm.results.ranef) -----------------------------------------
    def ranef_table(self, ctx, P):
        """{group: species x coefficients}: mu_j - M_j gamma, the shrunken deviations from the
        community (and trait) mean, as lme4's ranef."""
        import pandas as pd
        dev = P.b_mu - self.mean_design(ctx) @ P.sp_gamma
        return {self.group: pd.DataFrame(dev, index=pd.Index(ctx.species, name=self.group),
                                         columns=[_name(c) for c in self.columns])}

    def ranef_sd_table(self, ctx, P):
        """{group: species x coefficients}: the variational sds sqrt(diag S_j)."""
        import pandas as pd
        rs = next(rs for t, _, rs in ctx.species_random_terms if t is self)
        L = P.Lsp[:, rs, :]
        sd = np.sqrt((L ** 2).sum(2))
        return {self.group: pd.DataFrame(sd, index=pd.Index(ctx.species, name=self.group),
                                         columns=[_name(c) for c in self.columns])}

    def varcorr_rows(self, ctx, P):
        """(group, var1, var2, vcov, sdcor): variances, then covariances within blocks."""
        return [(self.group, a, b, v, s) for (v, s), (a, b) in zip(*self.sdcor(P))]

    def sdcor(self, P):
        """(values [(vcov, sdcor)], labels [(var1, var2 or None)])."""
        cov = self.covariance(P)
        sd = np.sqrt(np.diag(cov))
        names = [_name(c) for c in self.columns]
        vals = [(cov[k, k], sd[k]) for k in range(self.kb)]
        labs = [(names[k], None) for k in range(self.kb)]
        for b in self.blocks:
            for a, i in enumerate(b):
                for j in b[:a]:
                    vals.append((cov[i, j], cov[i, j] / (sd[i] * sd[j])))
                    labs.append((names[j], names[i]))
        return vals, labs


def _trait_column(ctx, name):
    traits = getattr(ctx, "traits", None)
    names = list(getattr(ctx, "trait_names", ()))
    if traits is None or name not in names:
        from ...exceptions import JSDMError
        raise JSDMError(f"species trait {name!r} is not available; the community's traits are "
                        f"{names}. Give traits in the Community (Community(Y, X, traits=...)).")
    return np.asarray(traits[:, names.index(name)], dtype=float)
