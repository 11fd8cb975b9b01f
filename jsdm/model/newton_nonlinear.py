"""Joint Newton steps on the means for models with a nonlinear term (quadratic responses).

The linear engine's joint step (``newton.py``) builds its blocks from the designs of
m_ij = Xt_i' phi_j + U_j' u_i and v_ij = U^R_j' Sigma_i U^R_j. With quadratic responses
(``terms/quadratic.py``) m and v are nonlinear in theta_j, D and mu_i (m_mu = theta - 2 D mu,
v through M = (Sigma^-1 + 2 D)^-1), so here the blocks are assembled cell by cell from the
term's exact first and second derivatives of (m, v) (``QuadraticResponse.newton_cells``).
Per cell, with x the cell's coordinates (its species' phi_j and D_j, or the global D, and
its site's u_i) and E_mm = 2 Gv, E_mv, E_vv the second derivatives of ell in (m, v):

    d2 ell / dx dx' = E_mm m_x m_x' + E_mv (m_x v_x' + v_x m_x') + E_vv v_x v_x'
                      + Gm m_xx + Gv v_xx

(E_mv, E_vv from one extra evaluation of the family, ``newton.mv_curvature``). Summed
over sites they give the species blocks (and, for ``quadratic="lv"``, the block of the
global D_k), over species the site blocks; the cross blocks (species x site) are the
cells' own. The site blocks are eliminated (Schur complement) as in ``newton.py``; a site
block that is not negative definite (where Gm m_xx outweighs the rest) has its positive
eigenvalues mirrored, so the step stays an ascent direction. Sigma_i is held fixed here
and updated by ``newton.covariance_step`` (its fixed point with the quadratic part's
d ELL / d Sigma). Every step is accepted only if the ELBO does not fall (halving).
"""
import numpy as np

from . import penalty
from .blocks import bilinear_pair
from .objective import cell_eval

#: where the predictor keeps the dense solve's last damping (``_solve_pd``'s memo)
DAMPING_MEMO = "_newton_damping"
#: cells per chunk of the per-cell arrays (nz^2 of them per cell: kept within the caches)
_BLOCK_CELLS = 8192
#: Schur systems up to this many flops ((unknowns)^2 x site coordinates) are built densely
#: (a symmetric rank-k update and a Cholesky factor: 1000 x 300 with quadratic=True, 1500
#: unknowns, about 0.5 s); beyond, damped CG (``_Blocks.solve_cg``)
_DENSE_FLOPS = 1e10


def supported(prob):
    """Whether this joint step covers the model: one nonlinear term with ``newton_cells``,
    plain latent variables (not concurrent), no global, group or species-random terms."""
    pred = prob.predictor
    nl = pred.nonlinear_terms
    return (len(nl) == 1 and hasattr(nl[0], "newton_cells") and pred.lv is not None
            and not hasattr(pred.lv, "fixed_scores") and not pred.global_terms
            and not pred.group_terms and not pred.ksr and len(pred.bilinear) == 1)


class _Blocks:
    """Gradient and curvature of the ELBO in (species block, global D, site block): the site
    block is the site means and, with ``sigma``, the free entries of Sigma_i (``sigma_pairs``)."""

    def __init__(self, prob, P, ce, hold=False, sigma=True):
        from .newton import mv_curvature
        from .terms.quadratic import sigma_pairs

        pred = prob.predictor
        term = pred.nonlinear_terms[0]
        self.memo = pred.__dict__.setdefault(DAMPING_MEMO, {})   # (reset per start: fit.py)
        self.species_mode = term.mode == "species"
        n, m, d, kr, kv0, ks = pred.n, pred.m, pred.d, pred.kr, pred.kv, pred.ks
        sp, _ = bilinear_pair(pred)
        # the site block: the means (kv0) and, with ``sigma``, the free entries of Sigma_i
        pairs = sigma_pairs(kr) if sigma else []
        ns = len(pairs)
        kv = kv0 + ns
        self.ks, self.kv, self.kv0, self.d, self.pairs = ks, kv, kv0, d, pairs
        self.kp = ks + (d if self.species_mode else 0)
        self.ng = 0 if self.species_mode else d
        kp, ng = self.kp, self.ng
        nz = kp + ng + kv
        th = np.arange(sp.start, sp.stop)
        Dz = ks + np.arange(d) if self.species_mode else kp + np.arange(d)
        mz_ = kp + ng + np.arange(kr)
        u0 = kp + ng
        us = u0 + kv0 + np.arange(ns)
        Emv, Evv = mv_curvature(prob, P, ce)
        Gm_all, Gv_all = ce["Gm"], ce["Gv"]
        U = pred.site_design(P)                                   # (m, kv)
        self.Hgg = np.zeros((ng, ng))
        self.gg = np.zeros(ng)
        self.Hpp = np.zeros((kp, kp, m))
        self.Hpg = np.zeros((kp, ng, m))
        self.Huu = np.zeros((kv, kv, n))
        self.C = np.zeros((kp, kv, n, m))
        self.Cg = np.zeros((ng, kv, n))
        self.gp = np.zeros((kp, m))
        self.gu = np.zeros((kv, n))
        step = max(1, _BLOCK_CELLS // max(m, 1))
        # per-cell arrays with the coordinate axes first, (nz, [nz,] r, m): elementwise
        # products then run over long contiguous rows
        for s0 in range(0, n, step):
            rows = slice(s0, min(n, s0 + step))
            q = term.newton_cells(pred, P, rows, sigma=bool(ns))
            Gm, Gv = Gm_all[rows], Gv_all[rows]
            r = Gm.shape[0]
            mz = np.zeros((nz, r, m))
            vz = np.zeros((nz, r, m))
            mz[:ks] = pred.species_design(P, rows).T[:, :, None]
            mz[Dz] = q["m_D"]
            mz[u0:u0 + kv0] = U.T[:, None, :]
            mz[mz_] = q["g"]
            vz[th] = q["v_th"]
            vz[Dz] = q["v_D"]
            vz[mz_] = q["v_mu"]
            if ns:
                mz[us] = q["m_S"]
                vz[us] = q["v_S"]
            a = 2.0 * Gv * mz + Emv[rows] * vz                 # E_mm m + E_mv v
            b = Emv[rows] * mz + Evv[rows] * vz                # E_mv m + E_vv v
            H = a[:, None] * mz[None] + b[:, None] * vz[None]
            # Gm m_xx + Gv v_xx (the term's second derivatives)
            H[np.ix_(th, th)] += Gv * q["v_thth"]
            blk = Gv * q["v_thD"]
            H[np.ix_(th, Dz)] += blk
            H[np.ix_(Dz, th)] += blk.transpose(1, 0, 2, 3)
            H[np.ix_(Dz, Dz)] += Gv * q["v_DD"]
            blk = Gv * q["v_thmu"]
            blk[np.arange(d), np.arange(d)] += Gm                           # m_theta,mu = I
            H[np.ix_(th, mz_)] += blk
            H[np.ix_(mz_, th)] += blk.transpose(1, 0, 2, 3)
            blk = Gv * q["v_Dmu"]
            blk[np.arange(d), np.arange(d)] -= 2.0 * Gm * q["mu"].T[:d, :, None]
            H[np.ix_(Dz, mz_)] += blk
            H[np.ix_(mz_, Dz)] += blk.transpose(1, 0, 2, 3)
            blk = Gv * q["v_mumu"]
            blk[np.arange(kr), np.arange(kr)] -= 2.0 * Gm * q["Dp"].T[:, None, :]
            H[np.ix_(mz_, mz_)] += blk
            if ns:          # Sigma's entries: with each other, theta, mu (through g) and D
                H[np.ix_(us, us)] += Gv * q["v_SS"]
                vg = q["v_Sg"]
                blk = Gv * vg[:, :d]
                H[np.ix_(us, th)] += blk
                H[np.ix_(th, us)] += blk.transpose(1, 0, 2, 3)
                blk = Gv * vg * (-2.0 * q["Dp"].T[None, :, None, :])
                H[np.ix_(us, mz_)] += blk
                H[np.ix_(mz_, us)] += blk.transpose(1, 0, 2, 3)
                blk = (Gv * (q["v_SD"] - 2.0 * vg[:, :d] * q["mu"].T[None, :d, :, None])
                       + Gm * q["m_SD"])
                H[np.ix_(us, Dz)] += blk
                H[np.ix_(Dz, us)] += blk.transpose(1, 0, 2, 3)
            gz = Gm * mz + Gv * vz
            self.Hpp += H[:kp, :kp].sum(2)
            self.Hpg += H[:kp, kp:u0].sum(2)
            self.Hgg += H[kp:u0, kp:u0].sum((2, 3))
            self.Huu[:, :, rows] = H[u0:, u0:].sum(3)
            self.C[:, :, rows] = H[:kp, u0:]
            self.Cg[:, :, rows] = H[kp:u0, u0:].sum(3)
            self.gp += gz[:kp].sum(1)
            self.gg += gz[kp:u0].sum((1, 2))
            self.gu[:, rows] = gz[u0:].sum(2)
        # back to the cells-first layout of the solve (C stays coordinates first)
        self.Hpp = self.Hpp.transpose(2, 0, 1).copy()
        self.Hpg = self.Hpg.transpose(2, 0, 1).copy()
        self.Huu = self.Huu.transpose(2, 0, 1).copy()
        self.Cg = self.Cg.transpose(2, 0, 1).copy()
        self.gp = self.gp.T.copy()
        self.gu = self.gu.T.copy()
        # the KL (prior of the random site coordinates) and the penalty
        if kr:
            pr = pred.prior_precision(P)
            idx = np.arange(kr)
            self.Huu[:, idx, idx] -= pr
            self.gu[:, :kr] -= pr * pred.site_means(P)[:, :kr]
        if ns:      # -KL in Sigma: (log det Sigma - tr(Pr Sigma)) / 2
            S = P.L @ np.swapaxes(P.L, 1, 2)
            Si = np.linalg.inv(S)
            X = 0.5 * (Si - np.diag(pr)[None])
            for e, (k, l) in enumerate(pairs):
                self.gu[:, kv0 + e] += X[:, k, l] if k == l else X[:, k, l] + X[:, l, k]
                sym = [(k, l)] if k == l else [(k, l), (l, k)]
                for e2, (k2, l2) in enumerate(pairs):
                    sym2 = [(k2, l2)] if k2 == l2 else [(k2, l2), (l2, k2)]
                    for b, c in sym:
                        for dd, ee in sym2:
                            self.Huu[:, kv0 + e, kv0 + e2] -= 0.5 * Si[:, c, dd] * Si[:, ee, b]
            self.S = S
        pen = penalty.species_curvature(prob)
        if pen is not None:
            self.Hpp[:, np.arange(ks), np.arange(ks)] -= pen
            self.gp[:, :ks] += penalty.species_gradient(prob, P)
        # held coordinates: the loadings' fixed zeros; D at its bound 0 pushed below it
        free = np.ones((m, kp))
        free[:, :ks] = pred.free
        Dq = np.asarray(P.D_q, dtype=float)
        if self.species_mode:
            free[:, ks:] = ~((Dq <= 0.0) & (self.gp[:, ks:] < 0.0)) & (not hold)
            self.free_g = np.ones(0)
        else:
            self.free_g = (~((Dq <= 0.0) & (self.gg < 0.0)) & (not hold)).astype(float)
        self.free = free
        for i, k in pred.pinned:
            self.gu[i, k] = 0.0
            self.Huu[i, k, :] = self.Huu[i, :, k] = 0.0
            self.Huu[i, k, k] = -1.0
            self.C[:, k, i, :] = 0.0
            self.Cg[i, :, k] = 0.0
        self.C *= free.T[:, None, None, :]
        self.Cg *= self.free_g[None, :, None]
        self.Dinv = np.linalg.inv(_negative_definite(self.Huu))

    # --- the Schur complement over (species block, global D) -----------------------------
    def _split(self, z):
        m, kp = self.free.shape
        return z[:m * kp].reshape(m, kp), z[m * kp:]

    def ct(self, z):
        """C' z: (n, kv)."""
        x, y = self._split(z)
        return np.einsum("puij,jp->iu", self.C, x) + np.einsum("igu,g->iu", self.Cg, y)

    def c(self, w):
        """C w for w (n, kv): flat (m kp + ng)."""
        x = np.einsum("puij,iu->jp", self.C, w)
        y = np.einsum("igu,iu->g", self.Cg, w)
        return np.concatenate([x.ravel(), y])

    def dinv(self, w):
        return np.einsum("iuv,iv->iu", self.Dinv, w)

    def hzz(self, z):
        x, y = self._split(z)
        hx = np.einsum("jpq,jq->jp", self.Hpp, x) + self.Hpg @ y
        hy = np.einsum("jpg,jp->g", self.Hpg, x) + self.Hgg @ y
        return np.concatenate([hx.ravel(), hy])

    @property
    def freez(self):
        return np.concatenate([self.free.ravel(), self.free_g])

    def neg_schur(self, z):
        f = self.freez
        out = (self.c(self.dinv(self.ct(z * f))) - self.hzz(z * f)) * f
        return out + z * (1.0 - f)

    def dense(self, lower=False):
        """-S as a dense matrix (identity on held entries); with ``lower``, only its lower
        triangle is meant (the upper one is left partly filled: what a lower Cholesky factor
        reads, without the passes that make the matrix symmetric)."""
        from scipy.linalg.blas import dsyrk

        m, kp = self.free.shape
        mk, ng = m * kp, self.ng
        N = mk + ng
        n, kv = self.Huu.shape[0], self.kv
        # -S = -H_zz + C D^-1 C' = -H_zz - G G', G = C chol(-D^-1) (a symmetric rank-k update)
        Lc = np.linalg.cholesky(-self.Dinv)                                 # (n, kv, kv)
        Cf = np.concatenate([self.C.transpose(3, 0, 2, 1).reshape(mk, n, kv),
                             self.Cg.transpose(1, 0, 2)], axis=0)          # (N, n, kv)
        G = np.zeros((N, n, kv))
        for u in range(kv):             # G = Cf Lc per site (kv is small: a few products)
            G += Cf[:, :, u, None] * Lc[None, :, u, :]
        G = G.reshape(N, n * kv)
        A = dsyrk(-1.0, G, lower=1)
        if not lower:
            A = np.tril(A) + np.tril(A, -1).T
        jj = np.repeat(np.arange(m), kp) * kp
        rows = np.arange(mk)
        for q in range(kp):        # the species blocks, -H_pp (block diagonal)
            A[rows, jj + q] -= self.Hpp[:, :, q].reshape(mk)
        if ng:
            if not lower:
                A[:mk, mk:] -= self.Hpg.reshape(mk, ng)
            A[mk:, :mk] -= self.Hpg.reshape(mk, ng).T
            A[mk:, mk:] -= self.Hgg
        held = np.nonzero(self.freez == 0)[0]
        A[held, :] = 0.0
        A[:, held] = 0.0
        A[held, held] = 1.0
        return A if lower else 0.5 * (A + A.T)

    def preconditioner_blocks(self):
        """The species-diagonal blocks of -S (m, kp, kp) and its global block (ng, ng), made
        positive definite (their non-positive eigenvalues mirrored)."""
        m, kp = self.free.shape
        B = -self.Hpp + np.einsum("puij,iuv,qvij->jpq", self.C, self.Dinv, self.C, optimize=True)
        B = np.where(self.free[:, :, None] * self.free[:, None, :] > 0, B, 0.0)
        jj, kk = np.nonzero(self.free == 0)
        B[jj, kk, kk] = 1.0
        ridge = 1e-10 * np.abs(np.diagonal(B, axis1=1, axis2=2)).max(axis=1) + 1e-12
        B = _positive_definite(B + ridge[:, None, None] * np.eye(kp))
        if self.ng:
            G = -self.Hgg + np.einsum("igu,iuv,ihv->gh", self.Cg, self.Dinv, self.Cg)
            G = np.where(np.outer(self.free_g, self.free_g) > 0, G, 0.0)
            G[np.diag_indices(self.ng)] = np.where(self.free_g > 0, np.diag(G), 1.0)
            G = _positive_definite(G[None] + 1e-12 * np.eye(self.ng))[0]
        else:
            G = np.zeros((0, 0))
        return B, G

    def solve_cg(self, rhs, rtol=1e-4, maxiter=200):
        """-S x = rhs by preconditioned CG, Levenberg-damped where -S is not positive definite.

        From the quadratic starts -S is often indefinite; CG truncated at the first
        direction of negative curvature then gave poor steps (1000 x 300, quadratic="lv":
        after 2 products, a step 6e6 times the damped direct solution). Here, when CG meets
        negative curvature, lam times the diagonal of the block preconditioner is added to
        -S (lam = 1e-3, then x10) and CG starts again.
        """
        B, G = self.preconditioner_blocks()
        dB = np.diagonal(B, axis1=1, axis2=2).ravel()
        dg = np.diag(G) if self.ng else np.zeros(0)
        diag = np.concatenate([dB, dg])
        lam = 0.0
        kp = B.shape[1]
        for _ in range(12):
            Bi = np.linalg.inv(B + lam * dB.reshape(-1, kp)[:, :, None] * np.eye(kp))
            Gi = np.linalg.inv(G + lam * np.diag(dg)) if self.ng else G

            def prec(r, Bi=Bi, Gi=Gi):
                x, y = self._split(r)
                return np.concatenate([np.einsum("jpq,jq->jp", Bi, x).ravel(), Gi @ y])

            def apply(z, lam=lam):
                return self.neg_schur(z) + lam * diag * z

            x, ok = _pcg(apply, prec, rhs, rtol, maxiter)
            if ok:
                return x
            lam = 1e-3 if lam == 0.0 else 10.0 * lam
        return x

    def _D_index(self):
        """Positions of the D coordinates in the flattened (species block, global) vector."""
        m, kp = self.free.shape
        if self.species_mode:
            return (np.arange(m)[:, None] * kp + self.ks + np.arange(self.d)[None, :]).ravel()
        return m * kp + np.arange(self.ng)

    def step(self, D=None):
        """(d phi (m, ks), d D (shape of D_q), d u (n, kv)): the Newton step.

        ``D`` (the current D_q; dense systems): D is bounded below by 0, and a step that
        takes free D entries below 0 is not the Newton step of what a line search then
        evaluates (D clipped at 0, the other coordinates moved as if it were not). Such
        entries are set to reach 0 exactly, and the step is solved again for the rest given
        them (the Newton step on that face of the bound; projected Newton), up to
        ``_FACE_ROUNDS`` times as new entries cross. 1000 x 300 NB, quadratic=True: full
        steps with up to 460 of 600 D entries crossing lowered the ELBO by 1e3-2e7 nats."""
        m, kp = self.free.shape
        N = m * kp + self.ng
        f = self.freez
        rhs = (np.concatenate([self.gp.ravel(), self.gg]) - self.c(self.dinv(self.gu))) * f
        if float(N) ** 2 * self.Huu.shape[0] * self.kv <= _DENSE_FLOPS:
            A = self.dense(lower=True)
            dz = _solve_pd(A, rhs, self.memo)
            if D is not None:
                dz = self._on_face(A, rhs, dz, np.ravel(np.asarray(D, dtype=float)))
        else:
            dz = self.solve_cg(rhs)
        dz = dz * f
        du = -self.dinv(self.gu + self.ct(dz))
        x, y = self._split(dz)
        dD = x[:, self.ks:] if self.species_mode else y
        if not self.pairs:
            return x[:, :self.ks], dD, du, None
        dS = np.zeros_like(self.S)
        for e, (k, l) in enumerate(self.pairs):
            dS[:, k, l] = du[:, self.kv0 + e]
            dS[:, l, k] = du[:, self.kv0 + e]
        return x[:, :self.ks], dD, du[:, :self.kv0], _damped(self.S, dS)


    def _on_face(self, A, rhs, dz, D):
        """The step with the D entries it takes below 0 set to reach 0 exactly and the rest
        solved given them (``step``). A: the lower triangle of -S (kept as it was)."""
        idx = self._D_index()
        fixed = np.zeros(len(rhs), bool)
        for _ in range(_FACE_ROUNDS):
            cross = (D + dz[idx] < 0.0) & (D <= _FACE_NEAR) & (self.freez[idx] > 0) & ~fixed[idx]
            if not cross.any():
                break
            fixed[idx[cross]] = True
            c = np.nonzero(fixed)[0]
            vc = np.zeros(len(rhs))
            vc[idx] = -D
            vc = vc[c]
            # columns c of the symmetric matrix from its lower triangle
            cols = np.empty((len(rhs), len(c)))
            for i, k in enumerate(c):
                cols[:k, i] = A[k, :k]
                cols[k:, i] = A[k:, k]
            free = np.nonzero(~fixed)[0]
            dz = np.empty(len(rhs))
            dz[c] = vc
            # the rest: the same system on the free coordinates (its lower triangle is the
            # lower triangle of A's free rows and columns, the indices being sorted)
            dz[free] = _solve_pd(A[np.ix_(free, free)], (rhs - cols @ vc)[free], self.memo)
        return dz


#: D entries within this of the bound 0 are put on it when the step crosses it (farther ones
#: are clipped by the line search, which shortens the step)
_FACE_NEAR = 0.01
#: rounds of ``_Blocks._on_face`` (each fixes the D entries the last solve took below 0)
_FACE_ROUNDS = 4


def _pcg(apply, prec, rhs, rtol, maxiter):
    """Preconditioned CG on A x = rhs: (x, True), or (x so far, False) at a direction of
    non-positive curvature."""
    x = np.zeros_like(rhs)
    r = rhs.copy()
    z = prec(r)
    q, rz = z.copy(), float(r @ z)
    stop = rtol * np.sqrt(float(rhs @ rhs))
    for _ in range(maxiter):
        Aq = apply(q)
        curv = float(q @ Aq)
        if curv <= 0:
            return x, False
        step = rz / curv
        x += step * q
        r -= step * Aq
        if np.sqrt(float(r @ r)) <= stop:
            break
        z = prec(r)
        rz_new = float(r @ z)
        q = z + (rz_new / rz) * q
        rz = rz_new
    return x, True


def _damped(S, dS):
    """dS scaled per site so that S + t dS stays positive definite for t in [0, 1]: where
    the step would take an eigenvalue of S^-1/2 dS S^-1/2 below -1/2, it is shortened to
    make that eigenvalue -1/2 (S + dS >= S / 2 along it)."""
    C = np.linalg.cholesky(S)
    Ci = np.linalg.inv(C)
    lam = np.linalg.eigvalsh(Ci @ dS @ np.swapaxes(Ci, 1, 2))[:, 0]
    tau = np.where(lam < -0.5, 0.5 / np.maximum(-lam, 1e-300), 1.0)
    return dS * tau[:, None, None]


def _negative_definite(H):
    """H (k, q, q) symmetric with its non-negative eigenvalues mirrored below zero (and
    kept away from zero), so that it is negative definite."""
    w, V = np.linalg.eigh(0.5 * (H + np.swapaxes(H, 1, 2)))
    scale = np.maximum(np.abs(w).max(axis=1, keepdims=True), 1e-12)
    w = -np.maximum(np.abs(w), 1e-8 * scale)
    return np.einsum("kab,kb,kcb->kac", V, w, V)


def _positive_definite(B):
    return -_negative_definite(-B)


def _solve_pd(A, rhs, memo=None):
    """Solve A x = rhs for symmetric A (its lower triangle is read), damping until A is
    positive definite: A + lam I with lam = 0, then 1e-6, 1e-5, ... times the largest
    diagonal entry. A's diagonal is restored on return (``_Blocks._on_face`` solves again
    from the same matrix).

    ``memo`` (a dict, optional) carries the damping between the steps of one fit: the next
    solve tries lam / 10 of the last one first (lam = 0 once that was 0). From the quadratic
    starts -S is indefinite for several steps, and each failed factorisation of the 1500 x
    1500 system at 1000 x 300 cost 24 ms (73 factorisations for 18 steps)."""
    from scipy.linalg import cho_factor, cho_solve

    diag = np.diag(A).copy()
    scale = max(np.abs(diag).max(), 1.0)
    rel = 0.0 if memo is None else memo.get("lam", 0.0) / 10.0
    lam = 0.0 if rel < 1e-6 else rel * scale
    idx = np.arange(len(A))
    try:
        for _ in range(40):
            A[idx, idx] = diag + lam
            try:
                x = cho_solve(cho_factor(A, lower=True, check_finite=False), rhs,
                              check_finite=False)
                if memo is not None:
                    memo["lam"] = lam / scale
                return x
            except np.linalg.LinAlgError:
                lam = max(10.0 * lam, 1e-6 * scale)
    finally:
        A[idx, idx] = diag
    raise np.linalg.LinAlgError("could not make the Newton system positive definite")


def newton_means(prob, P, ce, hold=False, joint_sigma=False):
    """One joint Newton step on species coefficients, loadings, D and site means (Sigma_i
    fixed), halved until the ELBO does not fall. Returns (P, cell_eval, accepted).
    ``hold``: D held where it is (the quadratic starts' first steps, see ``fit``)."""
    pred = prob.predictor
    blocks = _Blocks(prob, P, ce, hold, sigma=JOINT_SIGMA or joint_sigma)
    dphi, dD, du, dS = blocks.step(P.D_q)
    S = blocks.S if dS is not None else None
    del blocks
    phi, u = pred.species_coef(P), pred.site_means(P)
    Dq = np.asarray(P.D_q, dtype=float)
    old = float(ce["site"].sum())
    floor = old - 1e-12 * abs(old)
    t = 1.0
    for _ in range(12):
        T = P.copy()
        pred.set_species_coef(T, phi + t * dphi)
        T.D_q = np.maximum(Dq + t * dD, 0.0)
        pred.set_site_means(T, u + t * du)
        if dS is not None:
            T.L = np.linalg.cholesky(S + t * dS)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            ct = cell_eval(prob, T)
        val = float(ct["site"].sum())
        if np.isfinite(val) and val >= floor:
            if _TRACE:
                print(f"  step t={t:g} gain={val - old:.4g} D at 0: {int((T.D_q == 0).sum())}")
            return T, ct, True
        t *= 0.5
    return P, ce, False


_TRACE = False
#: the entries of Sigma_i in the joint step's site blocks (else held there, and set by the
#: covariance fixed point that follows). Off: from the quadratic starts the Newton step in
#: Sigma's entries was poor (step lengths down to 1e-3; 500 x 100 NB: 216 steps and no
#: start converged, against 76 steps with the fixed point). Near an optimum the step with
#: them converges quadratically on its own (200 x 40 NB: scaled gradient 1e-4, 1e-7,
#: 1e-13), but in the fit the tail stayed linear (gradient halving per iteration) with and
#: without them: the dispersion's own step alternates with this one. A start whose Newton
#: phase ends unconverged gets a phase with them (``fit._run_start``): where the fixed
#: point cannot move a site's Sigma (its matrix not positive definite, or the ELBO would
#: fall) the gradient stays there (mite presence/absence, quadratic=True, random row
#: effects: scaled gradient 0.11 in L after 57 iterations; 3 joint steps reach 2e-5).
JOINT_SIGMA = False
