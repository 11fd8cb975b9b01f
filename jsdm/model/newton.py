"""Joint Newton steps on all means, with the site blocks eliminated (Schur complement).

Species blocks b_j = (beta0_j, B_j, theta_j) and site blocks u_i = (alpha_i, a_i)
are coupled through every cell. With the variational covariances A_i held fixed,
the Hessian of the ELBO in the means is, per cell, with m_ij = ... + x_i' b_j,
v_ij = theta_j' A_i theta_j, w_ij = dv_ij / db_j = (0, 0, 2 A_i theta_j) and
E_mm = 2 Gv, E_mv, E_vv the second derivatives of ell in (m, v):

    H_bb[j]   = sum_i E_mm x_i x_i' + E_mv (x_i w_ij' + w_ij x_i') + E_vv w_ij w_ij'
                + blockdiag(0, 2 sum_i Gv_ij A_i),                      x_i = (1, x_i, a_i)
    H_uu[i]   = sum_j E_mm t_j t_j' - prior precision,                  t_j = (1, theta_j)
    H_bu[j,i] = E_mm x_i t_j' + E_mv w_ij t_j' + Gm_ij E   (E: identity in the theta-a block)

E_mm = 2 Gv is exact (d2/dm2 = 2 d/dv under a normal); E_mv and E_vv come from
one extra evaluation of the family at v + h (1 + v) (a forward difference of
Gm and Gv). Without them (the Gauss-Newton-type curvature) the step converges
only linearly once the A_i are not small.

the species step solves S db = -(g_b - C D^-1 g_u), S = H_bb - C D^-1 C', and the
site step follows as du_i = -D_i^-1 (g_u,i + C_i' db). The variational covariances
and dispersions are then updated by their own (site- and species-separable)
steps. Every stage is accepted only if the ELBO increases.
"""
import numpy as np

from .blocks import _chol_inv, ascend, polish_dispersion, scaled_gradient, species_step
from . import penalty
from .objective import _CHUNK_CELLS, _cache, cell_eval, kl_terms, moments
from .start import triangular_rotation

_SITE_CHUNK = 500


def _site_design(prob, P):
    cols = [np.ones((prob.m, 1))] if prob.row_effect is not None else []
    return np.column_stack(cols + [P.theta])


def _site_blocks(prob, P, ce, U):
    """Curvature D (n, kv, kv) and gradient g (n, kv) of the site means."""
    n, kv, d = prob.n, U.shape[1], prob.d
    U2 = (U[:, :, None] * U[:, None, :]).reshape(prob.m, kv * kv)
    D = (2.0 * ce["Gv"] @ U2).reshape(n, kv, kv)
    g = ce["Gm"] @ U
    idx = np.arange(kv - d, kv)
    D[:, idx, idx] -= 1.0
    g[:, kv - d:] -= P.a
    if prob.row_effect == "random":
        s2 = np.exp(2.0 * P.log_sigma)
        D[:, 0, 0] -= 1.0 / s2
        g[:, 0] -= P.alpha / s2
    if prob.row_effect == "fixed":
        D[0, 0, :] = D[0, :, 0] = 0.0
        D[0, 0, 0] = -1.0
        g[0, 0] = 0.0
    return D, g


_FD_STEP = 1e-4


def mv_curvature(prob, P, ce, h=_FD_STEP):
    """Weighted E_mv and E_vv per cell, (n, m) each, by a forward difference in v.

    One evaluation of the family at (m, v + h (1 + v)), in chunks of sites; cells
    whose Gv was clipped (or is zero) get 0, the Gauss-Newton-type value.
    """
    n, m = prob.n, prob.m
    Emv, Evv = np.empty((n, m)), np.empty((n, m))
    step = max(1, _CHUNK_CELLS // max(m, 1))
    for start in range(0, n, step):
        rows = slice(start, min(n, start + step))
        with np.errstate(over="ignore", invalid="ignore"):
            M, V = moments(prob, P, rows)
            hv = h * (1.0 + V)
            trials = None if prob.trials is None else prob.trials[rows]
            e = prob.family.ell(prob.Y[rows], M, V + hv, P.s, trials, **_cache(prob, rows))
        W, Gv = prob.W[rows], ce["Gv"][rows]
        live = Gv != 0.0
        Emv[rows] = np.where(live, (W * e.d_m - ce["Gm"][rows]) / hv, 0.0)
        Evv[rows] = np.where(live, (W * e.d_v - Gv) / hv, 0.0)
    bad = ~(np.isfinite(Emv) & np.isfinite(Evv))
    if bad.any():
        Emv[bad] = Evv[bad] = 0.0
    return Emv, Evv


_EXACT_FROM = 0.05


def _third_order_matters(P, A):
    """Whether the E_mv, E_vv terms are worth their extra evaluation.

    Their part of the loadings' curvature relative to the E_mm part is of the
    order of |dv/dtheta_j| / |x_i| ~ 2 |A_i theta_j|; below ``_EXACT_FROM`` on
    average the Gauss-Newton-type step is as good (measured: same iterations).
    """
    tr = np.trace(A, axis1=1, axis2=2).mean()
    return 2.0 * tr * np.sqrt((P.theta ** 2).sum(1).mean()) > _EXACT_FROM


def _species_blocks(prob, P, ce, Xt, A=None):
    n, m, p, d = prob.n, prob.m, prob.p, prob.d
    ks = Xt.shape[1]
    A = P.A if A is None else A
    X2 = (Xt[:, :, None] * Xt[:, None, :]).reshape(n, ks * ks)
    H = (2.0 * ce["Gv"].T @ X2).reshape(m, ks, ks)
    g = ce["Gm"].T @ Xt
    Q = (ce["Gv"].T @ A.reshape(n, d * d)).reshape(m, d, d)
    g[:, 1 + p:] += 2.0 * np.einsum("jkl,jl->jk", Q, P.theta)
    H[:, 1 + p:, 1 + p:] += 2.0 * Q
    if d and "Emv" in ce:
        th = P.theta
        XA = (Xt[:, :, None, None] * A[:, None, :, :]).reshape(n, ks * d * d)
        T1 = (ce["Emv"].T @ XA).reshape(m, ks, d, d)
        G = 2.0 * np.einsum("jklr,jr->jkl", T1, th)          # sum_i E_mv x_i (A_i theta_j)'
        H[:, :, 1 + p:] += G
        H[:, 1 + p:, :] += np.swapaxes(G, 1, 2)
        AA = (A[:, :, :, None, None] * A[:, None, None, :, :]).reshape(n, d ** 4)
        T2 = (ce["Evv"].T @ AA).reshape(m, d, d, d, d)
        H[:, 1 + p:, 1 + p:] += 4.0 * np.einsum("jlrst,jr,jt->jls", T2, th, th)
    pen = penalty.species_curvature(prob)                   # penalty (prior_sd)
    if pen is not None:
        H -= np.diag(pen)
        g += penalty.species_gradient(prob, P)
    return H, g


def _cross(prob, ce, Xt, U, rows, free, A=None):
    """C[j, :, i, :] = 2 Gv_ij x_i t_j' + E_mv w_ij t_j' + Gm_ij E for sites in ``rows``; (m, ks, r, kv)."""
    p, d = prob.p, prob.d
    Gv, Gm = ce["Gv"][rows], ce["Gm"][rows]
    C = 2.0 * np.einsum("ij,ik,jl->jkil", Gv, Xt[rows], U)
    kv = U.shape[1]
    for k in range(d):
        C[:, 1 + p + k, :, kv - d + k] += Gm.T
    if d and "Emv" in ce:
        At = np.einsum("ilr,jr->jli", A[rows], ce["theta"])           # (m, d, r): A_i theta_j
        C[:, 1 + p:, :, :] += 2.0 * (ce["Emv"][rows].T[:, None, :] * At)[..., None] * U[:, None, None, :]
    C *= free[:, :, None, None]
    if prob.row_effect == "fixed" and rows.start == 0:
        C[:, :, 0, 0] = 0.0
    return C


_DIRECT_MAX = 200       # species-block unknowns up to which the Schur system is built densely


def newton_means(prob, P, ce):
    """One joint Newton step on species coefficients/loadings and site means.

    The Schur complement is formed and factorised when it has at most
    ``_DIRECT_MAX`` unknowns; beyond that it is solved by preconditioned
    conjugate gradients with matrix-free products (cost O(n m) per product).
    """
    n, m, p, d = prob.n, prob.m, prob.p, prob.d
    Xt = np.column_stack([np.ones(n), prob.X, P.a])
    U = _site_design(prob, P)
    ks = Xt.shape[1]
    free = np.ones((m, ks))
    free[:, 1 + p:] = np.tril(np.ones((m, d)))
    A, ce0 = P.A, ce
    if d and _third_order_matters(P, A):
        Emv, Evv = mv_curvature(prob, P, ce)
        ce = {**ce, "Emv": Emv, "Evv": Evv, "theta": P.theta}
    Hbb, gb = _species_blocks(prob, P, ce, Xt, A)
    D, gu = _site_blocks(prob, P, ce, U)
    op = _Schur(prob, ce, Xt, U, free, Hbb, np.linalg.inv(D), A)
    rhs = gb * free - op.c(op.dinv(gu))
    if m * ks <= _DIRECT_MAX:
        db = _solve_nd(_dense_schur(prob, ce, op), -rhs.reshape(-1)).reshape(m, ks)
    else:
        db = op.solve_cg(rhs)
    du = -op.dinv(gu + op.ct(db))
    del op, ce
    return _line_search(prob, P, ce0, db, du)


class _Schur:
    """Products with the cross-curvature C (species x sites) and the Schur complement.

    C[j, :, i, :] = 2 Gv_ij x_i t_j' + Gm_ij E, never formed: C' x and C y are
    computed with (n, m) matrix products.
    """

    def __init__(self, prob, ce, Xt, U, free, Hbb, Dinv, A=None):
        self.prob, self.ce, self.Xt, self.U, self.free = prob, ce, Xt, U, free
        self.Hbb, self.Dinv = Hbb, Dinv
        self.p, self.d, self.kv = prob.p, prob.d, U.shape[1]
        self.fixed_alpha = prob.row_effect == "fixed"
        self.exact = self.d > 0 and "Emv" in ce
        self.A = A
        self.A2 = None if A is None else A.reshape(prob.n, self.d * self.d)

    def dinv(self, y):
        return np.einsum("ilq,iq->il", self.Dinv, y)

    def ct(self, x):
        """C' x for x (m, ks): (n, kv)."""
        x = x * self.free
        Gv, Gm = self.ce["Gv"], self.ce["Gm"]
        R = 2.0 * Gv * (self.Xt @ x.T)
        if self.exact:      # + E_mv (w_ij' x_j): w_ij' x_j = 2 theta_j' A_i x_theta_j
            th, xt = self.ce["theta"], x[:, 1 + self.p:]
            sym = (th[:, :, None] * xt[:, None, :]).reshape(len(th), -1)
            R += 2.0 * self.ce["Emv"] * (self.A2 @ sym.T)
        y = R @ self.U
        y[:, self.kv - self.d:] += Gm @ x[:, 1 + self.p:]
        if self.fixed_alpha:
            y[0, 0] = 0.0
        return y

    def c(self, y):
        """C y for y (n, kv): (m, ks)."""
        if self.fixed_alpha:
            y = y.copy()
            y[0, 0] = 0.0
        Gv, Gm = self.ce["Gv"], self.ce["Gm"]
        r = y @ self.U.T
        z = (2.0 * Gv * r).T @ self.Xt
        z[:, 1 + self.p:] += Gm.T @ y[:, self.kv - self.d:]
        if self.exact:      # + sum_i E_mv (t_j' y_i) 2 A_i theta_j
            d = self.d
            Q = ((self.ce["Emv"] * r).T @ self.A2).reshape(-1, d, d)
            z[:, 1 + self.p:] += 2.0 * np.einsum("jlr,jr->jl", Q, self.ce["theta"])
        return z * self.free

    def neg_schur(self, x):
        """-(H_bb - C D^-1 C') x, identity on fixed entries (positive definite near an optimum)."""
        hx = np.einsum("jkl,jl->jk", self.Hbb, x * self.free)
        out = (self.c(self.dinv(self.ct(x))) - hx) * self.free
        return out + x * (1.0 - self.free)

    def block_preconditioner(self):
        """Inverses of the species-diagonal blocks of -S, (m, ks, ks)."""
        prob, ks = self.prob, self.free.shape[1]
        B = -self.Hbb.copy()
        for start in range(0, prob.n, _SITE_CHUNK):
            rows = slice(start, min(prob.n, start + _SITE_CHUNK))
            C = _cross(prob, self.ce, self.Xt, self.U, rows, self.free, self.A)
            B += np.einsum("jkil,ilq,jriq->jkr", C, self.Dinv[rows], C, optimize=True)
        fixed = self.free == 0
        jj, kk = np.nonzero(fixed)
        B[jj, kk, :] = 0.0
        B[jj, :, kk] = 0.0
        B[jj, kk, kk] = 1.0
        ridge = 1e-10 * np.abs(np.diagonal(B, axis1=1, axis2=2)).max(axis=1) + 1e-12
        B += ridge[:, None, None] * np.eye(ks)
        return np.linalg.inv(B)

    def solve_cg(self, rhs, rtol=1e-4, maxiter=200):
        """Preconditioned CG on -S x = rhs; stops early at negative curvature (truncated Newton)."""
        Minv = self.block_preconditioner()
        prec = lambda r: np.einsum("jkl,jl->jk", Minv, r)   # noqa: E731
        x = np.zeros_like(rhs)
        r = rhs.copy()
        z = prec(r)
        q, rz = z.copy(), float((r * z).sum())
        stop = rtol * np.sqrt(float((rhs * rhs).sum()))
        for _ in range(maxiter):
            Aq = self.neg_schur(q)
            curv = float((q * Aq).sum())
            if curv <= 0:
                return x if x.any() else z          # no positive curvature: preconditioned gradient
            step = rz / curv
            x += step * q
            r -= step * Aq
            if np.sqrt(float((r * r).sum())) <= stop:
                break
            z = prec(r)
            rz_new = float((r * z).sum())
            q = z + (rz_new / rz) * q
            rz = rz_new
        return x


def _dense_schur(prob, ce, op):
    """The Schur complement S = H_bb - C D^-1 C' as a dense matrix (fixed entries -1 on the diagonal)."""
    m, ks = op.free.shape
    n, kv = prob.n, op.kv
    S = np.zeros((m * ks, m * ks))
    idx = np.arange(m)
    S.reshape(m, ks, m, ks)[idx, :, idx, :] = op.Hbb
    with _all_threads((m * ks) ** 2 * n * kv):
        _accumulate(prob, op.ce, op.Xt, op.U, op.free, op.Dinv, S, op.A)
    fixed = (op.free.reshape(-1) == 0)
    S[fixed, :] = 0.0
    S[:, fixed] = 0.0
    S[fixed, fixed] = -1.0
    return S


def _all_threads(flops):
    """All BLAS threads for a Schur-complement product of at least 1e9 flops, else one."""
    import contextlib

    from threadpoolctl import threadpool_limits

    if flops < 1e9:     # the fit already runs with one BLAS thread; asking costs ~2 ms
        return contextlib.nullcontext()
    return threadpool_limits(limits=None, user_api="blas")


def _accumulate(prob, ce, Xt, U, free, Dinv, S, A=None):
    """S -= C D^-1 C' over chunks of sites (in place)."""
    n, m, ks, kv = prob.n, prob.m, Xt.shape[1], U.shape[1]
    for start in range(0, n, _SITE_CHUNK):
        rows = slice(start, min(n, start + _SITE_CHUNK))
        C = _cross(prob, ce, Xt, U, rows, free, A)
        r = rows.stop - rows.start
        CD = np.einsum("jkil,ilq->jkiq", C, Dinv[rows]).reshape(m * ks, r * kv)
        S -= CD @ C.reshape(m * ks, r * kv).T


def _solve_nd(S, rhs):
    """Solve S x = rhs for negative definite S, damping until -S is positive definite."""
    A = -0.5 * (S + S.T)
    lam = 0.0
    scale = max(np.abs(np.diag(A)).max(), 1.0)
    for _ in range(40):
        try:
            c = np.linalg.cholesky(A + lam * np.eye(len(A)))
            y = np.linalg.solve(c, -rhs)
            return np.linalg.solve(c.T, y)
        except np.linalg.LinAlgError:
            lam = max(10.0 * lam, 1e-6 * scale)
    raise np.linalg.LinAlgError("could not make the Newton system positive definite")


def _apply(prob, P, db, du, t):
    p, kv, d = prob.p, du.shape[1], prob.d
    T = P.copy()
    T.beta0 = P.beta0 + t * db[:, 0]
    T.B = P.B + t * db[:, 1:1 + p]
    T.theta = np.tril(P.theta + t * db[:, 1 + p:])
    T.a = P.a + t * du[:, kv - d:]
    if prob.row_effect is not None:
        T.alpha = P.alpha + t * du[:, 0]
    return T


def _line_search(prob, P, ce, db, du):
    """Halve the step until the ELBO does not fall (by more than its rounding, 1e-12 relative)."""
    old = float(ce["site"].sum())
    floor = old - 1e-12 * abs(old)
    t = 1.0
    for _ in range(12):
        T = _apply(prob, P, db, du, t)
        ct = cell_eval(prob, T)
        val = float(ct["site"].sum())
        if np.isfinite(val) and val >= floor:
            return T, ct, True
        t *= 0.5
    return P, ce, False


def covariance_step(prob, P, ce):
    """Fixed-point update of each site's variational covariance, accepted per site."""
    n, d = prob.n, prob.d
    new = P.copy()
    if d:
        th2 = (P.theta[:, :, None] * P.theta[:, None, :]).reshape(prob.m, d * d)
        Lam = np.eye(d) - (2.0 * ce["Gv"] @ th2).reshape(n, d, d)
        new.L, _ = _chol_inv(Lam)
    if prob.row_effect == "random":
        prec = np.exp(-2.0 * P.log_sigma) - 2.0 * ce["Gv"].sum(1)
        new.log_rho = -0.5 * np.log(prec)
    order = 2 if P.s is not None else 1    # the dispersion step that follows needs order 2
    ct = cell_eval(prob, new, order)
    keep = ~(ct["site"] >= ce["site"])
    if keep.any():
        new.L[keep] = P.L[keep]
        if new.log_rho is not None:
            new.log_rho = np.where(keep, P.log_rho, new.log_rho)
        ct = cell_eval(prob, new, order)
    if prob.row_effect == "random":   # exact maximiser of the ELBO in sigma
        new.log_sigma = 0.5 * np.log(np.mean(new.alpha ** 2 + np.exp(2 * new.log_rho)))
        ct = cell_eval(prob, new, order)
    return new, ct


def newton_ascent(prob, P, max_iter=100, rtol=1e-12, callback=None, layout=None, gtol=None):
    """Alternate joint mean Newton steps, covariance, gauge and dispersion updates.

    Each iteration: ``newton_means``; ``covariance_step``; ``gauge_step`` (the
    latent variables' scale and shear, closed form); with a dispersion, one
    joint dispersion step and ``polish_dispersion`` for the species it left
    behind.

    Stops after ``max_iter`` steps, when the ELBO changes by at most ``rtol``
    (relative), or, given ``layout`` and ``gtol``, once the scaled gradient
    (:func:`blocks.scaled_gradient`) is at most ``gtol``.
    """
    polish_tol = 1e-4 if gtol is None else gtol

    def step(P, ce):
        P, ce, _ = newton_means(prob, P, ce)
        P, ce = covariance_step(prob, P, ce)
        P, ce = gauge_step(prob, P, ce)
        if P.s is not None:     # order 2: the stopping rule's curvature of the dispersion
            P, ce = species_step(prob, P, ce, only_dispersion=True, order=2)
            P, ce = polish_dispersion(prob, P, ce, polish_tol)
        return P, ce

    last = {}

    def converged(P, ce):
        last["converged"] = scaled_gradient(prob, layout, P, ce) <= gtol
        return last["converged"]

    done = converged if gtol is not None and layout is not None else None
    P, hist = ascend(step, prob, P, max_iter, rtol, callback, done)
    return P, hist, last.get("converged", False)


def gauge_step(prob, P, ce=None):
    """Exact ELBO maximisation over the latent variables' affine reparametrisations.

    For any shift c and invertible T, a_i -> T (a_i + c), A_i -> T A_i T',
    theta_j -> T^-T theta_j, beta0_j -> beta0_j - theta_j' c leave every m_ij and
    v_ij, hence the likelihood part, unchanged; only the KL terms move. They are
    least at c = -mean_i(a_i) and T M T' = n I, M = sum_i (a_i + c)(a_i + c)' + A_i;
    among those T, the one keeping theta lower triangular with a positive
    diagonal is T = R S^-1/2 (S = M / n, R from a QR factorisation of
    (theta_top S^1/2)'). These are the slow directions of the alternating
    updates (location, scale and shear of the latent variables against the
    intercepts and loadings, pinned only by the prior), so one closed-form step
    replaces many iterations. No cell is evaluated; ``ce["site"]`` (when given)
    is updated for the new KL terms.
    """
    n, d = prob.n, prob.d
    if d == 0 or n == 0:
        return P, ce
    A = P.A
    abar = P.a.mean(0)
    ac = P.a - abar
    S = (ac.T @ ac + A.sum(0)) / n
    w, V = np.linalg.eigh(0.5 * (S + S.T))
    if not (np.all(np.isfinite(w)) and w.min() > 1e-12 * max(w.max(), 1e-300)):
        return P, ce
    S_half, S_mhalf = (V * np.sqrt(w)) @ V.T, (V / np.sqrt(w)) @ V.T
    Q = triangular_rotation(P.theta @ S_half)
    T = Q.T @ S_mhalf
    new = P.copy()
    new.beta0 = P.beta0 + P.theta @ abar
    new.theta = np.tril(P.theta @ S_half @ Q)
    new.a = ac @ T.T
    At = T @ A @ T.T
    try:
        new.L = np.linalg.cholesky(0.5 * (At + np.swapaxes(At, 1, 2)))
    except np.linalg.LinAlgError:
        return P, ce
    if ce is None:
        return new, ce
    site = ce["site"] + kl_terms(prob, P) - kl_terms(prob, new)
    site += penalty.kl_shift(prob, P, new)                  # penalty (prior_sd)
    if not float(site.sum()) >= float(ce["site"].sum()):
        return P, ce
    return new, {**ce, "site": site}
