"""Model-based ordination with covariates: constrained (reduced-rank) and concurrent terms.

Constrained ordination (R gllvm's ``num.RR`` with ``lv.formula``; reduced-rank
regression, the model-based analogue of RDA/CCA):

    m_ij += z_i' theta_j,   z_i = C' x_i   (no random part: v_ij += 0)

Concurrent ordination (gllvm's ``num.lv.c``): the latent variables are partly
explained by the covariates,

    z_i = C' x_i + e_i,   e_i ~ N(0, I),   m_ij += E_q[z_i]' theta_j

with q(e_i) the latent variables' Gaussian in the site block (their variance enters
v_ij exactly as for unconstrained latent variables). Concurrent columns come first;
unconstrained latent variables (``num_lv``) may follow in the same term.

``x_i`` is a row of the *ordination design* X_lv (``lv_formula``, no intercept),
held by the predictor as ``ctx.designs["lv"]``. The canonical coefficients C
(p_lv x d) are **global** model coordinates: every site and species depends on
them. The engine steps them with the terms' ``global_newton`` (a small dense
Newton system, exact here because m is linear in C and v does not depend on it)
and differentiates them through ``global_gradient``.

Identifiability.

- Constrained: (C, theta) -> (C T', theta T^-1) leaves every m_ij unchanged for any
  invertible T (d^2 directions). The term pins the loadings of the first d species
  (the *anchor species*) at the identity, theta_top = I, which removes all of them:
  C's column k is then the slopes of anchor species k on the covariates. gllvm
  removes the same d^2 directions differently (theta lower triangular with unit
  diagonal, C with orthogonal columns); both have the same number of parameters
  and the same maximum. The results show C in the convention of
  :func:`standardise_constrained` (site scores with unit variance, loadings lower
  triangular), with delta-method standard errors.
- Concurrent: the residual's N(0, I) prior fixes the scale, so only rotations (and
  shifts, absorbed by the intercepts) remain; the loadings are lower triangular
  with a positive diagonal within each block (concurrent, unconstrained), as for
  unconstrained latent variables. gllvm 2.0.5 additionally constrains C's columns
  to be orthogonal (d (d - 1) / 2 constraints), a restriction of this model: its
  maximum is never above this term's (see docs/ordination.md).
"""
import numpy as np

from .base import Reported, Term
from .latent import LatentVariables
from .slots import MaskedSlot, Slot


class PinnedSlot(MaskedSlot):
    """A masked block whose fixed entries hold given values (not 0): ``fill``."""

    def __init__(self, name, field, mask, fill, **kw):
        super().__init__(name, field, mask, **kw)
        self.fill = np.asarray(fill, dtype=float)

    def unpack(self, vec):
        out = self.fill.copy()
        out[self.mask] = vec
        return out


def lv_design(ctx):
    """The ordination design X_lv (n, p_lv) of the problem."""
    designs = getattr(ctx, "designs", None) or {}
    if "lv" not in designs:
        from ...exceptions import JSDMError
        raise JSDMError("constrained or concurrent ordination needs the covariates of the "
                        "ordination: pass lv_formula= (e.g. lv_formula='~ SubsDens + WatrCont')")
    return designs["lv"]


def _c_newton(X, theta, Gm, Gv):
    """Gradient (p d,) and Hessian (p d, p d) in C (C order) of sum ell for m_ij += x_i' C theta_j.

    d m_ij / d C_pk = x_ip theta_jk; v does not depend on C, and d2 ell / dm2 = 2 d ell / dv,
    so the Hessian is exactly 2 sum_ij Gv_ij (x_i x_i') (x) (theta_j theta_j').
    """
    p, d = X.shape[1], theta.shape[1]
    g = X.T @ (Gm @ theta)
    W = (2.0 * Gv) @ (theta[:, :, None] * theta[:, None, :]).reshape(len(theta), d * d)
    H = np.einsum("ip,iq,ikl->pkql", X, X, W.reshape(-1, d, d)).reshape(p * d, p * d)
    return g.ravel(), H


def _c_curvature(X, theta, C):
    """Diagonal (p, d) of minus the Hessian in C from C = -2 Gv >= 0 (scaling)."""
    return (X ** 2).T @ (C @ theta ** 2)


class ReducedRank(Term):
    """Constrained ordination: d composite gradients z_i = C' x_i of the ordination covariates.

    Parameters
    ----------
    d : int
        Number of constrained latent variables (gllvm's ``num.RR``).
    columns : tuple of str
        Names of the ordination design's columns (``lv_formula``'s expansion).
    anchors : tuple of int, optional
        The d anchor species whose loadings are pinned at the identity (default: the
        first d; :func:`choose_anchors` picks species with strong, distinct responses,
        which keeps the parametrisation well conditioned).
    """

    kind = "rr"
    table = "loading"
    global_cell = True          # canonical coefficients C: global, entering every cell

    def __init__(self, d=2, columns=(), anchors=None):
        self.d = int(d)
        self.columns = tuple(str(c) for c in columns)
        self.anchors = tuple(int(a) for a in anchors) if anchors is not None else tuple(range(self.d))
        if len(self.anchors) != self.d or len(set(self.anchors)) != self.d:
            raise ValueError(f"anchors must be {self.d} distinct species indices, got {anchors!r}")

    def spec(self):
        return {"kind": self.kind, "d": self.d, "columns": list(self.columns),
                "anchors": list(self.anchors)}

    def lme4(self, site="site", species="species"):
        return (f"rr(0 + {species} | {site}, d = {self.d}, lv = ~ {' + '.join(self.columns)}, "
                "residual = FALSE)")

    def describe(self):
        return (f"constrained ordination: {self.d} latent variable{'s' if self.d != 1 else ''} "
                f"z_i = C' x_i on {', '.join(self.columns)} (no residual), species loadings")

    def active(self, ctx):
        return self.d > 0

    def names(self):
        return [f"RR{k + 1}" for k in range(self.d)]

    def fields(self, ctx):
        return {"theta_rr": (ctx.m, self.d), "C_rr": (len(self.columns), self.d)}

    def free_mask(self, m):
        free = np.ones((m, self.d), dtype=bool)
        free[list(self.anchors)] = False        # anchor species: their loadings = I
        return free

    def fill(self, m):
        out = np.zeros((m, self.d))
        out[list(self.anchors)] = np.eye(self.d)
        return out

    def slots(self, ctx):
        return [PinnedSlot("theta_rr", "theta_rr", self.free_mask(ctx.m), self.fill(ctx.m),
                           model=True, scope="species"),
                Slot("C_rr", "C_rr", (len(self.columns), self.d), model=True, scope="global")]

    def scores(self, ctx, P, rows=slice(None)):
        return lv_design(ctx)[rows] @ P.C_rr

    def mean(self, ctx, P, rows, cols):
        return self.scores(ctx, P, rows) @ P.theta_rr[cols].T if self.d else None

    # species block: loadings with design z_i = C' x_i
    def species_width(self, ctx):
        return self.d

    def species_design(self, ctx, P, rows=slice(None)):
        return self.scores(ctx, P, rows)

    def species_free(self, ctx):
        return self.free_mask(ctx.m)

    def penalty_weights(self, ctx, tau):
        return np.full(self.d, 1.0 / tau ** 2)

    def get_species(self, P):
        return P.theta_rr

    def set_species(self, P, values):
        out = np.array(values, dtype=float)
        out[list(self.anchors)] = np.eye(self.d)
        P.theta_rr = out

    # global block: the canonical coefficients
    def global_fields(self, ctx):
        return ("C_rr",)

    def global_gradient(self, ctx, P, Gm, Gv):
        return {"C_rr": lv_design(ctx).T @ (Gm @ P.theta_rr)}

    def global_newton(self, ctx, P, Gm, Gv):
        return _c_newton(lv_design(ctx), P.theta_rr, Gm, Gv)

    def curvature_global(self, ctx, P, C):
        return {"C_rr": _c_curvature(lv_design(ctx), P.theta_rr, C)}

    def start(self, ctx, P, init):
        """The best rank-d approximation of each species' least-squares slopes of
        log(1 + y) on the ordination covariates (reduced-rank regression's classic start),
        in the anchor form. (Regressing residual factor scores on the covariates, the
        first version, started a 1000 x 300 fit with C near 0 and did not converge in
        5000 iterations.)"""
        if not self.d:
            return
        prob = init["prob"]
        X = lv_design(ctx)
        B = _log_slopes(prob.Y, prob.W, X)                         # (p, m)
        U, S, Vt = np.linalg.svd(B.T, full_matrices=False)         # B' = U S V'
        d = min(self.d, len(S))
        theta = np.zeros((ctx.m, self.d))
        C = np.zeros((X.shape[1], self.d))
        theta[:, :d] = U[:, :d] * np.sqrt(S[:d])
        C[:, :d] = Vt[:d].T * np.sqrt(S[:d])
        if init.get("jitter"):
            theta = theta + init["jitter"] * 0.1 * init["rng"].standard_normal(theta.shape)
        P.C_rr, P.theta_rr = to_anchor_form(C, theta, self.anchors)

    def reported(self, ctx, P, layout):
        if not self.d:
            return []
        mask = self.free_mask(ctx.m)
        jj, kk = np.nonzero(mask)
        pos = layout.slices["theta_rr"].start + np.arange(len(jj))
        names = self.names()
        out = [Reported("loading", jj, [(ctx.species[j], names[k]) for j, k in zip(jj, kk)],
                        P.theta_rr[jj, kk], pos)]
        p = len(self.columns)
        pc = layout.slices["C_rr"].start + np.arange(p * self.d)
        rows = np.repeat(np.arange(p), self.d)
        out.append(Reported("canonical", rows,
                            [(self.columns[r], names[k]) for r in range(p) for k in range(self.d)],
                            P.C_rr.ravel(), pc))
        return out


def to_anchor_form(C, theta, anchors=None):
    """(C T', theta T^-1) with T = theta[anchors], so that the anchors' rows are the identity."""
    d = theta.shape[1]
    anchors = list(range(d)) if anchors is None else list(anchors)
    T = theta[anchors]
    if np.linalg.cond(T) > 1e8:                  # a degenerate start: jitter the anchors
        T = T + np.eye(d) * (0.1 * np.abs(theta).max() + 1e-3)
    Ti = np.linalg.inv(T)
    th = theta @ Ti
    th[anchors] = np.eye(d)
    return C @ T.T, th


def _log_slopes(Y, W, X):
    """Least-squares slopes (p, m) of log(1 + y) on the centred covariates (observed cells
    only enter through the centring; a missing cell counts as 0)."""
    W = np.broadcast_to(W, np.shape(Y))
    Yl = np.where(W > 0, np.log1p(np.maximum(np.nan_to_num(Y), 0.0)), 0.0)
    Xc = X - X.mean(0)
    return np.linalg.lstsq(Xc, Yl - Yl.mean(0), rcond=None)[0]


def choose_anchors(Y, W, X, d):
    """d anchor species for constrained ordination: strong and distinct responses to X.

    The least-squares slopes of log(1 + y) on X (centred, observed cells), one vector
    per species; a pivoted Gram-Schmidt takes the species with the longest slope vector,
    then the longest part orthogonal to those chosen (as ``latent.anchor_order`` does
    for the latent variables' loadings). Deterministic: a function of the data only.
    """
    R = _log_slopes(Y, W, X).T.copy()
    chosen = []
    for _ in range(d):
        norms = (R * R).sum(1)
        norms[chosen] = -1.0
        j = int(np.argmax(norms))
        chosen.append(j)
        if norms[j] > 0:
            u = R[j] / np.sqrt(norms[j])
            R -= np.outer(R @ u, u)
    return tuple(sorted(chosen))


def standardise_constrained(C, theta, X):
    """Constrained ordination in the reported convention.

    Returns (C_s, theta_s, T) with C_s = C T', theta_s = theta T^-1 (so x' C theta_j is
    unchanged) such that the site scores z = X C_s have identity covariance over the
    sites (after centring) and theta_s is lower triangular in its first d rows with a
    positive diagonal.
    """
    from .latent import triangular_rotation

    d = C.shape[1]
    Z = X @ C
    Z = Z - Z.mean(0)
    S = Z.T @ Z / max(len(Z), 1)
    w, V = np.linalg.eigh(0.5 * (S + S.T))
    w = np.maximum(w, 1e-300)
    S_half, S_mhalf = (V * np.sqrt(w)) @ V.T, (V / np.sqrt(w)) @ V.T
    Q = triangular_rotation(theta @ S_half)
    T = Q.T @ S_mhalf                       # z -> T z
    return C @ T.T, np.tril(theta @ S_half @ Q) if d else theta, T


class ConcurrentLatentVariables(LatentVariables):
    """Concurrent ordination: d_c latent variables z_i = C' x_i + e_i, then d_u unconstrained.

    Parameters
    ----------
    d_c : int
        Number of concurrent latent variables (gllvm's ``num.lv.c``).
    d_u : int
        Number of unconstrained latent variables after them (gllvm's ``num.lv``).
    columns : tuple of str
        Names of the ordination design's columns.

    The site block holds the residuals' variational means a_i (n, d_c + d_u) and the
    loadings theta_j are those of the whole z_i; C (p_lv, d_c) is a global model
    coordinate (field ``C_lv``).
    """

    kind = "lv_c"
    global_cell = True          # canonical coefficients C: global, entering every cell

    def __init__(self, d_c=2, d_u=0, columns=()):
        self.d_c, self.d_u = int(d_c), int(d_u)
        self.d = self.d_c + self.d_u
        self.columns = tuple(str(c) for c in columns)

    def spec(self):
        return {"kind": self.kind, "d_c": self.d_c, "d_u": self.d_u, "columns": list(self.columns)}

    def lme4(self, site="site", species="species"):
        s = f"rr(0 + {species} | {site}, d = {self.d_c}, lv = ~ {' + '.join(self.columns)})"
        if self.d_u:
            s += f" + rr(0 + {species} | {site}, d = {self.d_u})"
        return s

    def describe(self):
        out = (f"concurrent ordination: {self.d_c} latent variable{'s' if self.d_c != 1 else ''} "
               f"z_i = C' x_i + e_i on {', '.join(self.columns)}, e_i ~ N(0, I)")
        if self.d_u:
            out += f"; {self.d_u} unconstrained z_i ~ N(0, I)"
        return out + "; species loadings theta_j"

    def blocks(self):
        """Column ranges with their own rotation (concurrent, unconstrained)."""
        out = [(0, self.d_c)]
        if self.d_u:
            out.append((self.d_c, self.d))
        return out

    def free_mask(self, m):
        mask = np.zeros((m, self.d), dtype=bool)
        for s, e in self.blocks():
            mask[:, s:e] = np.tril(np.ones((m, e - s), dtype=bool))
        return mask

    def fields(self, ctx):
        out = super().fields(ctx)
        out["C_lv"] = (len(self.columns), self.d_c)
        return out

    def slots(self, ctx):
        return super().slots(ctx) + [
            Slot("C_lv", "C_lv", (len(self.columns), self.d_c), model=True, scope="global")]

    def fixed_scores(self, ctx, P, rows=slice(None)):
        """C' x_i for the sites ``rows``, padded with zeros for the unconstrained columns."""
        Z = lv_design(ctx)[rows] @ P.C_lv
        if self.d_u:
            Z = np.column_stack([Z, np.zeros((len(Z), self.d_u))])
        return Z

    def mean(self, ctx, P, rows, cols):
        return (P.a[rows] + self.fixed_scores(ctx, P, rows)) @ P.theta[cols].T

    def species_design(self, ctx, P, rows=slice(None)):
        return P.a[rows] + self.fixed_scores(ctx, P, rows)

    def set_species(self, P, values):
        P.theta = np.where(self.free_mask(len(values)), values, 0.0)

    def coord_names(self, ctx):
        return ([f"CLV{k + 1}" for k in range(self.d_c)]
                + [f"LV{k + 1}" for k in range(self.d_u)])

    def global_fields(self, ctx):
        return ("C_lv",)

    def global_gradient(self, ctx, P, Gm, Gv):
        return {"C_lv": lv_design(ctx).T @ (Gm @ P.theta[:, :self.d_c])}

    def global_newton(self, ctx, P, Gm, Gv):
        return _c_newton(lv_design(ctx), P.theta[:, :self.d_c], Gm, Gv)

    def curvature_global(self, ctx, P, C):
        return {"C_lv": _c_curvature(lv_design(ctx), P.theta[:, :self.d_c], C)}

    def start(self, ctx, P, init):
        from ..start import lv_start
        a, theta = lv_start(init["prob"], init["eta0"], init["s"], self.d, init["rng"],
                            init["jitter"])
        X = lv_design(ctx)
        C = np.linalg.lstsq(X, a[:, :self.d_c], rcond=None)[0]
        fit = X @ C
        a = a.copy()
        a[:, :self.d_c] -= fit
        P.a, P.theta, P.C_lv = a, np.where(self.free_mask(ctx.m), theta, 0.0), C

    def reported(self, ctx, P, layout):
        mask = self.free_mask(ctx.m)
        jj, kk = np.nonzero(mask)
        pos = layout.slices["theta"].start + np.arange(len(jj))
        names = self.coord_names(ctx)
        out = [Reported("loading", jj, [(ctx.species[j], names[k]) for j, k in zip(jj, kk)],
                        P.theta[jj, kk], pos)]
        p = len(self.columns)
        pc = layout.slices["C_lv"].start + np.arange(p * self.d_c)
        rows = np.repeat(np.arange(p), self.d_c)
        out.append(Reported("canonical", rows,
                            [(self.columns[r], names[k]) for r in range(p) for k in range(self.d_c)],
                            P.C_lv.ravel(), pc))
        return out


def ordination_terms(terms, num_lv_c, num_rr, columns, quadratic=False, anchors=None):
    """The classic terms with concurrent (``num_lv_c``) and constrained (``num_rr``) ordination
    and quadratic responses.

    The latent-variable term becomes a :class:`ConcurrentLatentVariables` (its d
    unconstrained latent variables follow the concurrent ones); a
    :class:`~jsdm.model.terms.quadratic.QuadraticResponse` (``quadratic`` True: per
    species, "lv": per latent variable) and a :class:`ReducedRank` term follow it.
    """
    from .quadratic import QuadraticResponse

    out = []
    for t in terms:
        if isinstance(t, LatentVariables) and num_lv_c:
            t = ConcurrentLatentVariables(num_lv_c, t.d, columns)
        out.append(t)
        if isinstance(t, LatentVariables) and quadratic:
            out.append(QuadraticResponse("lv" if quadratic == "lv" else "species"))
        if isinstance(t, LatentVariables) and num_rr:
            out.append(ReducedRank(num_rr, columns, anchors))
    return tuple(out)


def ordination_fixed_mean(pred, P, Xlv=None):
    """The covariate-driven part of the ordination in the linear predictor, (k, m) or 0.0.

    Constrained: x_i' C theta_j; concurrent: x_i' C theta_j^(c) (the residual's part,
    e_i' theta_j, belongs to the latent variables). ``Xlv``: the ordination design of
    new sites (default: the fitted sites').
    """
    X = lv_design(pred) if Xlv is None else Xlv
    out = 0.0
    for t in pred.terms:
        if isinstance(t, ReducedRank) and t.d:
            out = out + X @ P.C_rr @ P.theta_rr.T
        elif isinstance(t, ConcurrentLatentVariables) and t.d_c:
            out = out + X @ P.C_lv @ P.theta[:, :t.d_c].T
    return out


def has_ordination(pred):
    """True when the predictor has constrained or concurrent ordination terms."""
    return any(isinstance(t, (ReducedRank, ConcurrentLatentVariables)) and t.active(pred)
               for t in pred.terms)
