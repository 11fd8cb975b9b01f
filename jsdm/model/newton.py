"""Joint Newton steps on all means, with the site blocks eliminated (Schur complement).

Species blocks phi_j (design Xt, n x ks: 1, x_i, a_i) and site blocks u_i (design U,
m x kv: theta_j, 1) are coupled through every cell (``prob.predictor`` assembles
both from the terms). With the variational covariances Sigma_i held fixed, the
Hessian of the ELBO in the means is, per cell, with m_ij = ... + Xt_i' phi_j,
v_ij = U^R_j' Sigma_i U^R_j, w_ij = dv_ij / dphi_j (nonzero in the loadings:
2 (Sigma_i U^R_j)_LV) and E_mm = 2 Gv, E_mv, E_vv the second derivatives of ell in
(m, v):

    H_bb[j]   = sum_i E_mm x_i x_i' + E_mv (x_i w_ij' + w_ij x_i') + E_vv w_ij w_ij'
                + (loadings block) 2 sum_i Gv_ij Sigma_i^(LV,LV),             x_i = Xt_i
    H_uu[i]   = sum_j E_mm U_j U_j' - prior precision
    H_bu[j,i] = E_mm x_i U_j' + E_mv w_ij U_j' + Gm_ij E   (E: identity in the theta-a block)

E_mm = 2 Gv is exact (d2/dm2 = 2 d/dv under a normal); E_mv and E_vv come from
one extra evaluation of the family at v + h (1 + v) (a forward difference of
Gm and Gv). Without them (the Gauss-Newton-type curvature) the step converges
only linearly once the Sigma_i are not small.

the species step solves S db = -(g_b - C D^-1 g_u), S = H_bb - C D^-1 C', and the
site step follows as du_i = -D_i^-1 (g_u,i + C_i' db). The variational covariances
and dispersions are then updated by their own (site- and species-separable)
steps. Every stage is accepted only if the ELBO increases.
"""
import numpy as np

from .._numerics import truncated_cg
from . import penalty
from .blocks import (_chol_inv, ascend, bilinear_pair, group_step, polish_dispersion,
                     scaled_gradient, global_step, species_random_prior, species_step)
from .objective import _CHUNK_CELLS, _cache, cell_eval, moments
from .terms import latent

_SITE_CHUNK = 500


def _site_design(prob, P):
    return prob.predictor.site_design(P)


def _site_blocks(prob, P, ce, U):
    """Curvature D (n, kv, kv) and gradient g (n, kv) of the site means."""
    pred = prob.predictor
    n, kv, kr = pred.n, U.shape[1], pred.kr
    U2 = (U[:, :, None] * U[:, None, :]).reshape(prob.m, kv * kv)
    D = (2.0 * ce["Gv"] @ U2).reshape(n, kv, kv)
    g = ce["Gm"] @ U
    if kr:
        pr = pred.prior_precision(P)
        idx = np.arange(kr)
        D[:, idx, idx] -= pr
        g[:, :kr] -= pr * pred.site_means(P)[:, :kr]
    for i, k in pred.pinned:
        D[i, k, :] = D[i, :, k] = 0.0
        D[i, k, k] = -1.0
        g[i, k] = 0.0
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


def _coupling(prob, P):
    """What the bilinear term (latent variables) couples: (species slice, site slice,
    UR (m, kr): the random site design, SL (n, d, kr): the latent variables' rows of
    Sigma_i), or None without latent variables."""
    pred = prob.predictor
    pair = bilinear_pair(pred)
    if pair is None:
        return None
    L = P.L
    S = L @ np.swapaxes(L, 1, 2)
    return pair[0], pair[1], pred.site_design(P, random_only=True), S[:, pair[1], :]


def _species_blocks(prob, P, ce, Xt, cpl=None):
    n, m = prob.n, prob.m
    ks = Xt.shape[1]
    X2 = (Xt[:, :, None] * Xt[:, None, :]).reshape(n, ks * ks)
    H = (2.0 * ce["Gv"].T @ X2).reshape(m, ks, ks)
    g = ce["Gm"].T @ Xt
    pen = penalty.species_curvature(prob)                   # penalty (prior_sd)
    if pen is not None:
        H -= np.diag(pen)
        g += penalty.species_gradient(prob, P)
    species_random_prior(prob.predictor, P, g, H, sign=-1.0)    # species random effects
    if cpl is None:
        return H, g
    sp, si, UR, SL = cpl
    d, kr = SL.shape[1], SL.shape[2]
    Q = (ce["Gv"].T @ SL.reshape(n, d * kr)).reshape(m, d, kr)       # sum_i Gv Sigma_i[LV, :]
    g[:, sp] += 2.0 * np.einsum("jkl,jl->jk", Q, UR)
    H[:, sp, sp] += 2.0 * Q[:, :, si]
    if "Emv" in ce:
        XA = (Xt[:, :, None, None] * SL[:, None, :, :]).reshape(n, ks * d * kr)
        T1 = (ce["Emv"].T @ XA).reshape(m, ks, d, kr)
        G = 2.0 * np.einsum("jklr,jr->jkl", T1, UR)          # sum_i E_mv x_i (Sigma_i U_j)_LV'
        H[:, :, sp] += G
        H[:, sp, :] += np.swapaxes(G, 1, 2)
        AA = (SL[:, :, :, None, None] * SL[:, None, None, :, :]).reshape(n, (d * kr) ** 2)
        T2 = (ce["Evv"].T @ AA).reshape(m, d, kr, d, kr)
        H[:, sp, sp] += 4.0 * np.einsum("jlrst,jr,jt->jls", T2, UR, UR)
    return H, g


def _cross(prob, ce, Xt, U, rows, free, cpl=None):
    """C[j, :, i, :] = 2 Gv_ij x_i U_j' + E_mv w_ij U_j' + Gm_ij E for sites in ``rows``; (m, ks, r, kv)."""
    Gv, Gm = ce["Gv"][rows], ce["Gm"][rows]
    C = 2.0 * np.einsum("ij,ik,jl->jkil", Gv, Xt[rows], U)
    if cpl is not None:
        sp, si, UR, SL = cpl
        for k in range(sp.stop - sp.start):
            C[:, sp.start + k, :, si.start + k] += Gm.T
        if "Emv" in ce:
            At = np.einsum("ilr,jr->jli", SL[rows], UR)             # (m, d, r): (Sigma_i U_j)_LV
            C[:, sp, :, :] += 2.0 * (ce["Emv"][rows].T[:, None, :] * At)[..., None] * U[:, None, None, :]
    C *= free[:, :, None, None]
    start = rows.start or 0
    for i, k in prob.predictor.pinned:
        if start <= i < rows.stop:
            C[:, :, i - start, k] = 0.0
    return C


_DIRECT_MAX = 200       # species-block unknowns up to which the Schur system is built densely


def newton_means(prob, P, ce, hold_nonlinear=False, joint_sigma=False):
    """One joint Newton step on species coefficients/loadings and site means.

    The Schur complement is formed and factorised when it has at most
    ``_DIRECT_MAX`` unknowns; beyond that it is solved by preconditioned
    conjugate gradients with matrix-free products (cost O(n m) per product).
    """
    pred = prob.predictor
    if pred.nonlinear_terms:        # quadratic responses: blocks assembled cell by cell
        from .newton_nonlinear import newton_means as nonlinear_means
        return nonlinear_means(prob, P, ce, hold_nonlinear, joint_sigma)
    m = pred.m
    Xt = pred.species_design(P)
    U = pred.site_design(P)
    ks = Xt.shape[1]
    free = pred.free.astype(float)
    cpl, ce0 = _coupling(prob, P), ce
    if cpl is not None and _third_order_matters(P, P.A):
        Emv, Evv = mv_curvature(prob, P, ce)
        ce = {**ce, "Emv": Emv, "Evv": Evv}
    Hbb, gb = _species_blocks(prob, P, ce, Xt, cpl)
    D, gu = _site_blocks(prob, P, ce, U)
    op = _Schur(prob, ce, Xt, U, free, Hbb, np.linalg.inv(D), cpl)
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

    C[j, :, i, :] = 2 Gv_ij x_i U_j' + Gm_ij E (+ the E_mv part), never formed:
    C' x and C y are computed with (n, m) matrix products.
    """

    def __init__(self, prob, ce, Xt, U, free, Hbb, Dinv, cpl=None):
        self.prob, self.ce, self.Xt, self.U, self.free = prob, ce, Xt, U, free
        self.Hbb, self.Dinv = Hbb, Dinv
        self.cpl = cpl
        self.pinned = prob.predictor.pinned
        self.exact = cpl is not None and "Emv" in ce
        if cpl is not None:
            self.sp, self.si, self.UR, SL = cpl
            self.SL2 = SL.reshape(SL.shape[0], -1)                  # (n, d * kr)

    def dinv(self, y):
        return np.einsum("ilq,iq->il", self.Dinv, y)

    def ct(self, x):
        """C' x for x (m, ks): (n, kv)."""
        x = x * self.free
        Gv, Gm = self.ce["Gv"], self.ce["Gm"]
        R = 2.0 * Gv * (self.Xt @ x.T)
        if self.exact:      # + E_mv (w_ij' x_j): w_ij' x_j = 2 (Sigma_i U_j)_LV' x_theta_j
            xt = x[:, self.sp]
            sym = (xt[:, :, None] * self.UR[:, None, :]).reshape(len(xt), -1)
            R += 2.0 * self.ce["Emv"] * (self.SL2 @ sym.T)
        y = R @ self.U
        if self.cpl is not None:
            y[:, self.si] += Gm @ x[:, self.sp]
        for i, k in self.pinned:
            y[i, k] = 0.0
        return y

    def c(self, y):
        """C y for y (n, kv): (m, ks)."""
        if self.pinned:
            y = y.copy()
            for i, k in self.pinned:
                y[i, k] = 0.0
        Gv, Gm = self.ce["Gv"], self.ce["Gm"]
        r = y @ self.U.T
        z = (2.0 * Gv * r).T @ self.Xt
        if self.cpl is not None:
            z[:, self.sp] += Gm.T @ y[:, self.si]
        if self.exact:      # + sum_i E_mv (U_j' y_i) 2 (Sigma_i U_j)_LV
            d = self.si.stop - self.si.start
            Q = ((self.ce["Emv"] * r).T @ self.SL2).reshape(-1, d, self.UR.shape[1])
            z[:, self.sp] += 2.0 * np.einsum("jlr,jr->jl", Q, self.UR)
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
            C = _cross(prob, self.ce, self.Xt, self.U, rows, self.free, self.cpl)
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
        return truncated_cg(self.neg_schur, prec, rhs, rtol, maxiter)


def _dense_schur(prob, ce, op):
    """The Schur complement S = H_bb - C D^-1 C' as a dense matrix (fixed entries -1 on the diagonal)."""
    m, ks = op.free.shape
    n, kv = prob.n, op.U.shape[1]
    S = np.zeros((m * ks, m * ks))
    idx = np.arange(m)
    S.reshape(m, ks, m, ks)[idx, :, idx, :] = op.Hbb
    with _all_threads((m * ks) ** 2 * n * kv):
        _accumulate(prob, op.ce, op.Xt, op.U, op.free, op.Dinv, S, op.cpl)
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


def _accumulate(prob, ce, Xt, U, free, Dinv, S, cpl=None):
    """S -= C D^-1 C' over chunks of sites (in place)."""
    n, m, ks, kv = prob.n, prob.m, Xt.shape[1], U.shape[1]
    for start in range(0, n, _SITE_CHUNK):
        rows = slice(start, min(n, start + _SITE_CHUNK))
        C = _cross(prob, ce, Xt, U, rows, free, cpl)
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
    pred = prob.predictor
    T = P.copy()
    pred.set_species_coef(T, pred.species_coef(P) + t * db)
    if du.shape[1]:
        pred.set_site_means(T, pred.site_means(P) + t * du)
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
    """Fixed-point update of each site's joint variational covariance, accepted per site,
    then the closed-form update of the terms' hyperparameters (random row-effect sd)."""
    pred = prob.predictor
    n, kr = pred.n, pred.kr
    new = P.copy()
    if kr:
        UR = pred.site_design(P, random_only=True)
        UU = (UR[:, :, None] * UR[:, None, :]).reshape(prob.m, kr * kr)
        Lam = -(2.0 * ce["Gv"] @ UU).reshape(n, kr, kr)
        for t in pred.nonlinear_terms:   # their part of d ELL / d Sigma_i (quadratic responses)
            Lam -= 2.0 * t.sigma_gradient(pred, P, ce["Gm"], ce["Gv"])
        idx = np.arange(kr)
        Lam[:, idx, idx] += pred.prior_precision(P)
        new.L = _chol_inv_where_pd(Lam, P.L)
    order = 2 if P.s is not None else 1    # the dispersion step that follows needs order 2
    ct = cell_eval(prob, new, order)
    keep = ~(ct["site"] >= ce["site"])
    if keep.any():
        new.L[keep] = P.L[keep]
        ct = cell_eval(prob, new, order)
    if pred.ksr:           # species random effects: their q's fixed point, then their prior
        new, ct = _species_cov_step(prob, P, new, ct, order)
    if pred.hyper_terms:   # exact maximiser of the ELBO in the hyperparameters
        mu = pred.site_means(new)
        sq = mu[:, :kr] ** 2 + (new.L ** 2).sum(2)
        for t, sl in pred.hyper_terms:
            t.hyper_update(pred, new, mu[:, sl], sq[:, sl])
        ct = cell_eval(prob, new, order)
    return new, ct


def _chol_inv_where_pd(Lam, L_old):
    """Cholesky factors of Lam_i^-1 where Lam_i is positive definite; ``L_old`` elsewhere
    (with a nonlinear term the fixed point's Lam_i need not be)."""
    Lam = 0.5 * (Lam + np.swapaxes(Lam, 1, 2))
    ok = np.all(np.linalg.eigvalsh(Lam) > 0, axis=1) if len(Lam) else np.zeros(0, bool)
    if ok.all():
        return _chol_inv(Lam)[0]
    out = L_old.copy()
    if ok.any():
        out[ok] = _chol_inv(Lam[ok])[0]
    return out


def _species_cov_step(prob, P, new, ct, order):
    """Fixed point S_j = (Sigma^-1 - 2 sum_i Gv_ij z_i z_i')^-1 of each species' random-effects
    q, accepted per species, then the closed-form update of their prior."""
    pred = prob.predictor
    k = pred.ksr
    prec, _, _ = pred.species_prior(new)
    ZZ = pred.species_random_design2(new)
    Lam = prec - (2.0 * ct["Gv"].T @ ZZ).reshape(pred.m, k, k)
    T = new.copy()
    T.Lsp, _ = _chol_inv(Lam)
    cs = cell_eval(prob, T, order)
    keep = ~(cs["species"] >= ct["species"])
    if keep.any():
        T.Lsp[keep] = new.Lsp[keep]
    pred.species_hyper_update(T)
    return T, cell_eval(prob, T, order)


def newton_ascent(prob, P, max_iter=100, rtol=1e-12, callback=None, layout=None, gtol=None,
                  stop=None, hold_nonlinear=False, accelerate=False, joint_sigma=False):
    """Alternate joint mean Newton steps, covariance, gauge and dispersion updates.

    Each iteration: ``newton_means``; ``covariance_step``; ``gauge_step`` (the
    latent variables' scale and shear, closed form); with a dispersion, one
    joint dispersion step and ``polish_dispersion`` for the species it left
    behind.

    Stops after ``max_iter`` steps, when the ELBO changes by at most ``rtol``
    (relative), or, given ``layout`` and ``gtol``, once the scaled gradient
    (:func:`blocks.scaled_gradient`) is at most ``gtol``, or when ``stop(P, ELBO)``
    (optional) is true.

    ``accelerate`` (with ``layout``): each iteration is two of these steps extrapolated by
    SQUAREM (as ``blocks.squarem_ascent`` does for the block sweeps) and one step from the
    extrapolated point, kept when its ELBO beats the second step's. For quadratic responses,
    where the alternation of the mean step and the covariance fixed point converges
    linearly (the gradient halving per step near the optimum). ``joint_sigma``: the
    entries of the site covariances in the joint step too (nonlinear terms; see
    ``newton_nonlinear.JOINT_SIGMA``).
    """
    polish_tol = 1e-4 if gtol is None else gtol

    def step(P, ce):
        P, ce, _ = newton_means(prob, P, ce, hold_nonlinear, joint_sigma)
        if prob.predictor.global_terms:
            P, ce = global_step(prob, P, ce)
        P, ce = covariance_step(prob, P, ce)
        if prob.predictor.group_terms:
            P, ce = group_step(prob, P, ce)
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
    if stop is not None:
        check = done

        def done(P, ce):
            return bool(stop(P, float(ce["site"].sum()))) or (check is not None and check(P, ce))
    if accelerate and layout is not None:
        step = _squarem(prob, layout, step, done)
    P, hist = ascend(step, prob, P, max_iter, rtol, callback, done)
    return P, hist, last.get("converged", False)


def _squarem(prob, layout, step, done=None):
    """``step`` accelerated by one SQUAREM extrapolation per two steps (see ``newton_ascent``);
    ``done(P, ce)`` (optional) is asked after the first of them, which is returned when it
    says so (the rest of the iteration, two or three steps, would only go past the end)."""
    def sq(P, ce):
        P1, c1 = step(P, ce)
        if done is not None and done(P1, c1):
            return P1, c1
        P2, c2 = step(P1, c1)
        x0, x1, x2 = layout.pack(P), layout.pack(P1), layout.pack(P2)
        r, v = x1 - x0, x2 - 2 * x1 + x0
        nv = np.linalg.norm(v)
        if nv == 0:
            return P2, c2
        alpha = min(-np.linalg.norm(r) / nv, -1.0)
        if alpha == -1.0:
            return P2, c2
        xs = np.clip(x0 - 2 * alpha * r + alpha ** 2 * v, *layout.bounds())
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            Ps = layout.unpack(xs)
            cs = cell_eval(prob, Ps)
        if np.all(np.isfinite(cs["site"])) and cs["site"].sum() > c2["site"].sum():
            Ps, cs = step(Ps, cs)
            if cs["site"].sum() > c2["site"].sum():
                return Ps, cs
        return P2, c2
    return sq


def gauge_step(prob, P, ce=None):
    """The latent variables' closed-form gauge step (:func:`jsdm.model.terms.latent.gauge_step`)."""
    pred = prob.predictor
    if pred.lv is None or not all(t.vanishes(P) for t in pred.nonlinear_terms):
        return P, ce        # (quadratic responses: shifts and rescalings of z are no symmetry,
                            # unless every D is at its bound 0, where the model is the linear one)
    objective = (lambda Q: pred.kl(Q) - penalty.value(prob, Q) / max(prob.n, 1)) \
        if penalty.prior_sd(prob) is not None else pred.kl       # penalty (prior_sd)
    return latent.gauge_step(pred, P, objective, ce)
