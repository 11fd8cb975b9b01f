"""Latent variables (the reduced-rank term ``rr(0 + species | site, d)``).

    m_ij += a_i' theta_j,   v_ij += the LV part of the site block's variance

z_i ~ N(0, I_d) a priori; its variational mean a_i is a site-block coordinate
(random, design theta_j) and the loadings theta_j a species-block coordinate
(design a_i): the term is *bilinear*. Identifiability: theta_jk = 0 for k > j and
theta_kk > 0. Besides the term itself this module holds the symmetries the
optimiser exploits: rotations, sign flips, the closed-form gauge step and the
anchor-species order.
"""
import numpy as np

from .base import Reported, Term
from .slots import MaskedSlot, Slot


class LatentVariables(Term):
    """d latent variables with species loadings (d may be 0: no contribution).

    The latent variables are the first d coordinates of the site block (so the
    joint Cholesky factor's leading d x d block is that of their covariance).
    """

    kind = "lv"
    table = "loading"
    bilinear = True
    site_random = True
    unit_prior = True

    def __init__(self, d=2):
        self.d = int(d)

    def spec(self):
        return {"kind": self.kind, "d": self.d}

    def lme4(self, site="site", species="species"):
        return f"rr(0 + {species} | {site}, d = {self.d})"

    def describe(self):
        return (f"{self.d} latent variable{'s' if self.d != 1 else ''} z_i ~ N(0, I), species "
                "loadings theta_j")

    def active(self, ctx):
        return self.d > 0

    def fields(self, ctx):
        return {"theta": (ctx.m, self.d), "a": (ctx.n, self.d)}

    def slots(self, ctx):
        return [MaskedSlot("theta", "theta", self.free_mask(ctx.m), model=True, scope="species"),
                Slot("a", "a", (ctx.n, self.d), model=False, scope="site",
                     label=("lv_mean", [f"LV{k + 1}" for k in range(self.d)]))]

    def free_mask(self, m):
        return np.tril(np.ones((m, self.d), dtype=bool))

    def mean(self, ctx, P, rows, cols):
        return P.a[rows] @ P.theta[cols].T if self.d else None

    # species block: loadings, design a_i
    def species_width(self, ctx):
        return self.d

    def species_design(self, ctx, P, rows=slice(None)):
        return P.a[rows]

    def species_free(self, ctx):
        return self.free_mask(ctx.m)

    def penalty_weights(self, ctx, tau):
        return np.full(self.d, 1.0 / tau ** 2)

    def get_species(self, P):
        return P.theta

    def set_species(self, P, values):
        P.theta = np.tril(values)

    # site block: scores, design theta_j
    def site_width(self, ctx):
        return self.d

    def site_design(self, ctx, P, cols=slice(None)):
        return P.theta[cols]

    def get_site(self, P):
        return P.a

    def set_site(self, P, values):
        P.a = np.array(values, dtype=float)

    def start(self, ctx, P, init):
        if not self.d:
            return
        from ..start import lv_start      # the factor analysis of GLM residuals
        P.a, P.theta = lv_start(init["prob"], init["eta0"], init["s"], self.d, init["rng"],
                                init["jitter"])

    def start_sd(self, ctx):
        return np.full(self.d, 0.5)

    def coord_names(self, ctx):
        return [f"LV{k + 1}" for k in range(self.d)]

    def reported(self, ctx, P, layout):
        if not self.d:
            return []
        mask = self.free_mask(ctx.m)
        jj, kk = np.nonzero(mask)
        pos = layout.slices["theta"].start + np.arange(len(jj))
        labels = [(ctx.species[j], f"LV{k + 1}") for j, k in zip(jj, kk)]
        return [Reported("loading", jj, labels, P.theta[jj, kk], pos)]


# --- symmetries ------------------------------------------------------------------------
def triangular_rotation(theta):
    """Orthogonal Q (d, d) such that theta @ Q is lower triangular in its first d rows with a
    non-negative diagonal (QR factorisation of the top block's transpose, signs fixed)."""
    d = theta.shape[1]
    Q, R = np.linalg.qr(theta[:d].T)      # theta_top' = Q R  ->  theta_top Q = R'
    sign = np.sign(np.diag(R))
    sign[sign == 0] = 1.0
    return Q * sign


def lower_triangularise(a, theta):
    """Rotate (a, theta) so theta is lower triangular with positive diagonal; a theta' unchanged."""
    if theta.shape[1] == 0:
        return a, theta
    Q = triangular_rotation(theta)
    return a @ Q, np.tril(theta @ Q)


def transform_site_cov(L, T, idx=None):
    """Cholesky factor of R S R' for S = L L' (n, k, k) and R = T on the coordinates ``idx``
    (default: the first T.shape[0]) and the identity elsewhere. Raises LinAlgError."""
    k, t = L.shape[1], T.shape[0]
    idx = np.arange(t) if idx is None else np.asarray(idx)
    if k == t:
        R = T
    else:
        R = np.eye(k)
        R[np.ix_(idx, idx)] = T
    S = R @ (L @ np.swapaxes(L, 1, 2)) @ R.T
    return np.linalg.cholesky(0.5 * (S + np.swapaxes(S, 1, 2)))


def lv_blocks(P):
    """Column ranges of the latent variables that rotate separately: [(0, d)], or, with
    concurrent ordination followed by unconstrained latent variables (``P.C_lv`` with
    d_c < d columns), [(0, d_c), (d_c, d)]."""
    d = P.theta.shape[1]
    C = getattr(P, "C_lv", None)
    if C is None or np.ndim(C) != 2 or C.shape[1] in (0, d):
        return [(0, d)]
    return [(0, C.shape[1]), (C.shape[1], d)]


def _block_tril(theta, blocks):
    out = np.zeros_like(theta)
    for s, e in blocks:
        out[:, s:e] = np.tril(theta[:, s:e])
    return out


def _block_rotation(theta, blocks):
    Q = np.zeros((theta.shape[1],) * 2)
    for s, e in blocks:
        Q[s:e, s:e] = triangular_rotation(theta[:, s:e])
    return Q


def _rotate_canonical(P, new, R):
    """Concurrent ordination: C_lv -> C_lv R (R: the new scores are R' z on its columns)."""
    C = getattr(P, "C_lv", None)
    if C is not None and np.ndim(C) == 2 and C.shape[1]:
        k = C.shape[1]
        new.C_lv = C @ R[:k, :k]


def to_triangular(P):
    """Rotate the latent variables so that theta's first d rows are lower triangular.

    a_i -> Q' a_i, A_i -> Q' A_i Q, theta_j -> Q' theta_j with Q orthogonal from a QR
    factorisation of theta_top': every m_ij, v_ij and KL term is unchanged. With
    concurrent ordination the rotation is block diagonal (concurrent, unconstrained)
    and the canonical coefficients rotate along.
    """
    if P.theta.shape[1] == 0:
        return P
    blocks = lv_blocks(P)
    Qm = _block_rotation(P.theta, blocks)
    new = P.copy()
    new.theta = _block_tril(P.theta @ Qm, blocks)
    new.a = P.a @ Qm
    new.L = transform_site_cov(P.L, Qm.T)
    _rotate_canonical(P, new, Qm)
    return new


def normalise(P):
    """Flip LV signs so the loadings' diagonal is positive (an exact symmetry)."""
    d = P.theta.shape[1]
    if d == 0:
        return P
    diag = np.zeros(d)
    for s, e in lv_blocks(P):
        diag[s:e] = np.diag(P.theta[:e - s, s:e])
    sign = np.sign(diag)
    sign[sign == 0] = 1.0
    P = P.copy()
    P.theta = P.theta * sign
    P.a = P.a * sign
    full = np.ones(P.L.shape[1])
    full[:d] = sign
    # L -> D L D keeps L lower triangular with a positive diagonal and A -> D A D
    P.L = P.L * full[None, :, None] * full[None, None, :]
    _rotate_canonical(P, P, np.diag(sign))
    return P


def gauge_step(ctx, P, kl_terms, ce=None):
    """Exact ELBO maximisation over the latent variables' affine reparametrisations.

    For any shift c and invertible T, a_i -> T (a_i + c), A_i -> T A_i T',
    theta_j -> T^-T theta_j, beta0_j -> beta0_j - theta_j' c leave every m_ij and
    v_ij, hence the likelihood part, unchanged; only the KL terms move (the other
    site coordinates, e.g. a random row effect, keep their means and their
    covariances with the rotated latent variables rotate along). They are least at
    c = -mean_i(a_i) and T M T' = n I, M = sum_i (a_i + c)(a_i + c)' + A_i; among
    those T, the one keeping theta lower triangular with a positive diagonal is
    T = R S^-1/2 (S = M / n, R from a QR factorisation of (theta_top S^1/2)').
    No cell is evaluated; ``ce["site"]`` (when given) is updated for the new KL
    terms (``kl_terms(P)`` -> (n,)).

    The pieces (:func:`gauge_moment`, :func:`gauge_transform`, :func:`gauge_species`,
    :func:`gauge_sites`) are sums over sites and per-site maps, so that a cluster fit
    reduces the moments over its chunks and applies the same transform.
    """
    n, d = ctx.n, ctx.d
    if d == 0 or n == 0:
        return P, ce
    abar = P.a.mean(0)
    tr = gauge_transform(P, gauge_moment(P, abar) / n)
    if tr is None:
        return P, ce
    new = P.copy()
    gauge_species(P, new, abar, tr)
    try:
        gauge_sites(P, new, abar, tr)
    except np.linalg.LinAlgError:
        return P, ce
    if ce is None:
        return new, ce
    site = ce["site"] + kl_terms(P) - kl_terms(new)
    if not float(site.sum()) >= float(ce["site"].sum()):
        return P, ce
    return new, {**ce, "site": site}


def gauge_moment(P, abar):
    """sum_i (a_i - abar)(a_i - abar)' + A_i over the sites of P, (d, d)."""
    ac = P.a - abar
    return ac.T @ ac + P.A.sum(0)


def gauge_transform(P, S):
    """The gauge step's (T, S^1/2, Q) for the second moment S (d, d) of the latent
    variables (``gauge_moment / n``), or None where S is not positive definite."""
    d = P.theta.shape[1]
    blocks = lv_blocks(P)
    T, S_half, Q = np.zeros((d, d)), np.zeros((d, d)), np.zeros((d, d))
    for s, e in blocks:          # block diagonal T (concurrent and unconstrained apart)
        Sb = S[s:e, s:e]
        w, V = np.linalg.eigh(0.5 * (Sb + Sb.T))
        if not (np.all(np.isfinite(w)) and w.min() > 1e-12 * max(w.max(), 1e-300)):
            return None
        S_half[s:e, s:e] = (V * np.sqrt(w)) @ V.T
        Qb = triangular_rotation(P.theta[:, s:e] @ S_half[s:e, s:e])
        Q[s:e, s:e] = Qb
        T[s:e, s:e] = Qb.T @ ((V / np.sqrt(w)) @ V.T)
    return T, S_half, Q


def gauge_species(P, new, abar, tr):
    """The gauge step on the species fields (intercepts, loadings), written into ``new``."""
    _, S_half, Q = tr
    new.beta0 = P.beta0 + P.theta @ abar
    new.theta = _block_tril(P.theta @ S_half @ Q, lv_blocks(P))


def gauge_sites(P, new, abar, tr):
    """The gauge step on the site fields (means, covariance factors; concurrent ordination's
    coefficients), written into ``new``. Raises LinAlgError (a covariance not definite)."""
    T = tr[0]
    new.a = (P.a - abar) @ T.T
    _rotate_canonical(P, new, T.T)
    new.L = transform_site_cov(P.L, T)


ANCHOR_GAIN = 2.0


def anchor_order(theta):
    """A species order whose first d species pin the latent variables' rotation well, or None.

    theta_jk = 0 for k > j fixes the rotation through the first d species only;
    when their loadings are small (a rare species first, say) the rotation is
    barely determined and the Newton steps crawl along it (measured: a simulated
    1000 x 200 community with many rare species took 68 iterations with the data's
    order and 12 with strong species first, to the same ELBO). The fit then runs
    with the d species chosen by a pivoted Gram-Schmidt on the start loadings
    (largest loading first, then the largest part orthogonal to those chosen)
    moved to the front, and the result is rotated back to the data's order and
    convention (an exact symmetry). None when d < 2 or when the pivoted anchors
    are not at least ``ANCHOR_GAIN`` times better than the data's first species
    (by the smallest diagonal entry of the triangular loadings).
    """
    m, d = theta.shape
    if d < 2 or m <= d or not np.all(np.isfinite(theta)):
        return None
    R, chosen = theta.copy(), []
    for _ in range(d):
        norms = (R * R).sum(1)
        norms[chosen] = -1.0
        j = int(np.argmax(norms))
        if norms[j] <= 0:
            return None
        chosen.append(j)
        u = R[j] / np.sqrt(norms[j])
        R -= np.outer(R @ u, u)
    if chosen == list(range(d)):
        return None

    def weakest(rows):
        return np.abs(np.diag(np.linalg.qr(theta[rows].T)[1])).min()

    if weakest(chosen) < ANCHOR_GAIN * weakest(list(range(d))):
        return None
    rest = np.setdiff1d(np.arange(m), chosen)
    return np.concatenate([np.array(chosen), rest])
