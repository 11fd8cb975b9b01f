"""Unimodal (quadratic) species responses to the latent variables (gllvm's ``quadratic``).

    eta_ij = ... + z_i' theta_j - sum_k D_jk z_ik^2,   D_jk >= 0

(``quadratic=True``: D_jk per species; ``quadratic="lv"``: D_k shared by all species.)
Species j's response along latent variable k peaks at its *optimum*
u_jk = theta_jk / (2 D_jk) with *tolerance* t_jk = 1 / sqrt(2 D_jk) (the sd of the
Gaussian-shaped response curve).

Under q the site's random coordinates are u_i ~ N(mu_i, Sigma_i) (the joint site q:
latent variables, then e.g. a random row effect), and eta_ij = c_ij + b_j' u_i - u_i' D_j u_i
with b_j the random columns of the site design (theta_j, 1) and D_j = diag(D_jk) padded
with zeros. eta is no longer normal, but its moments are closed forms:

    E[eta]        = c + b'mu - mu'D mu - tr(D Sigma)
    Var[eta]      = g' Sigma g + 2 tr(D Sigma D Sigma),              g = b - 2 D mu
    log E[e^eta]  = c + b'mu - mu'D mu + g' M g / 2 - log det(K) / 2,
                    K = I + 2 Sigma D,  M = K^-1 Sigma = (Sigma^-1 + 2 D)^-1.

The families see ell(y, m, v) = E[log f(y | eta)] for eta ~ N(m, v). This term passes
m = E[eta] and

- for log links, v = 2 (log E[e^eta] - E[eta]): then E[eta] and E[e^eta] are exact, so
  the Poisson ELBO (which needs only those two) is **exact**; for the negative
  binomial and other log-link families it is an approximation (eta replaced by a
  normal with the same mean and the same E[e^eta]), checked against an
  importance-sampling estimate of the marginal likelihood in the tests;
- for other links, v = Var[eta]: exact for the Gaussian family (identity link),
  an approximation (moment matching) otherwise.

The term is *nonlinear*: it adds to the moments and to the gradient through its own
chain rule (``moments_extra``, ``gradient_extra``), to the covariance fixed point
(``sigma_gradient``), and gives the exact per-cell first and second derivatives of
(m, v) in (theta_j, D, mu_i) from which ``jsdm.model.newton_nonlinear`` assembles the
joint Newton step (``newton_cells``); its Hessian for standard errors is built by
central differences of the analytic gradient.
"""
import numpy as np

from .base import Reported, Term
from .slots import Slot

D_START = 0.05


def _inv_logdet_t(A):
    """Inverse and log-determinant of a batch of small matrices held with their axes first,
    A (k, k, ...); explicit formulas for k <= 2 (batched LAPACK calls on 2 x 2 matrices cost
    far more than the arithmetic)."""
    k = A.shape[0]
    if k == 1:
        return 1.0 / A, np.log(A[0, 0])
    if k == 2:
        a, b, c, d = A[0, 0], A[0, 1], A[1, 0], A[1, 1]
        det = a * d - b * c
        inv = np.empty_like(A)
        inv[0, 0], inv[0, 1], inv[1, 0], inv[1, 1] = d / det, -b / det, -c / det, a / det
        return inv, np.log(det)
    Am = np.moveaxis(A, (0, 1), (-2, -1))
    return np.moveaxis(np.linalg.inv(Am), (-2, -1), (0, 1)), np.linalg.slogdet(Am)[1]


def _mm_t(A, B):
    """Product of matrices held with their axes first: A (k, l, ...) @ B (l, m, ...)."""
    out = A[:, 0, None] * B[0][None]
    for j in range(1, A.shape[1]):
        out = out + A[:, j, None] * B[j][None]
    return out


def _resolvent(ST, DT):
    """K^-1, log det K and M = K^-1 Sigma = (Sigma^-1 + 2 D)^-1 (symmetric) for K = I + 2 Sigma D,
    per site and species column: ST (kr, kr, r) the sites' Sigma, DT (kr, c) the columns' D
    (c = 1 where D is shared by all species, ``quadratic="lv"``: the result then broadcasts
    over the species). Returns arrays with the axes first: (kr, kr, r, c), (r, c), (kr, kr, r, c).

    For kr <= 2 by explicit formulas: with D diagonal, det K = (1 + 2 s00 D0)(1 + 2 s11 D1)
    - 4 s01^2 D0 D1 and M = (Sigma + 2 det(Sigma) adj(D)) / det K entrywise, adj(D) =
    diag(D1, D0) (a few elementwise operations on (r, c) arrays instead of forming K, its
    inverse and the product)."""
    kr = ST.shape[0]
    s = ST[..., None]                                                       # (kr, kr, r, 1)
    D = DT[:, None, :]                                                      # (kr, 1, c)
    if kr == 1:
        k = 1.0 + 2.0 * s[0, 0] * D[0]
        Ki = (1.0 / k)[None, None]
        return Ki, np.log(k), (s[0, 0] / k)[None, None]
    if kr == 2:
        s00, s01, s11 = s[0, 0], s[0, 1], s[1, 1]
        a0, a1 = 2.0 * D[0], 2.0 * D[1]
        k00, k11 = 1.0 + s00 * a0, 1.0 + s11 * a1
        det = k00 * k11 - (s01 * s01) * (a0 * a1)
        inv = 1.0 / det
        detS = s00 * s11 - s01 * s01
        Ki = np.empty((2, 2) + det.shape)
        Ki[0, 0], Ki[1, 1] = k11 * inv, k00 * inv
        Ki[0, 1], Ki[1, 0] = -(s01 * a1) * inv, -(s01 * a0) * inv
        M = np.empty_like(Ki)
        M[0, 0] = (s00 + detS * a1) * inv
        M[1, 1] = (s11 + detS * a0) * inv
        M[0, 1] = M[1, 0] = s01 * inv
        return Ki, np.log(det), M
    K = 2.0 * s * DT[None, :, None, :]                                      # I + 2 S D
    idx = np.arange(kr)
    K[idx, idx] += 1.0
    Ki, logdet = _inv_logdet_t(K)
    M = _mm_t(Ki, s)                                                        # K^-1 S
    return Ki, logdet, 0.5 * (M + M.transpose(1, 0, 2, 3))


def quadratic_term(pred):
    """The model's quadratic-response term, or None (``pred``: a problem's predictor)."""
    return next((t for t in getattr(pred, "nonlinear_terms", ()) if t.kind == "quadratic"), None)


def sigma_pairs(kr):
    """The free entries (k, l), k <= l, of a kr x kr symmetric matrix, in the order of the
    joint Newton step's Sigma coordinates."""
    return [(k, l) for k in range(kr) for l in range(k, kr)]


class QuadraticResponse(Term):
    """Quadratic responses to the latent variables of the model's latent-variable term.

    Parameters
    ----------
    mode : {"species", "lv"}
        "species" (gllvm ``quadratic = TRUE``): D_jk per species and LV; "lv"
        (gllvm ``quadratic = "LV"``): one D_k per LV shared by all species.
    """

    kind = "quadratic"
    table = "quadratic"
    nonlinear = True

    def __init__(self, mode="species"):
        if mode not in ("species", "lv"):
            raise ValueError(f"mode must be 'species' or 'lv', got {mode!r}")
        self.mode = mode

    def spec(self):
        return {"kind": self.kind, "mode": self.mode}

    def lme4(self, site="site", species="species"):
        return ("rr(..., quadratic = TRUE)" if self.mode == "species"
                else 'rr(..., quadratic = "lv")')

    def describe(self):
        return ("unimodal responses: - sum_k D_jk z_ik^2 per species (optima, tolerances)"
                if self.mode == "species" else
                "unimodal responses: - sum_k D_k z_ik^2, one D_k per latent variable")

    def _d(self, ctx):
        lv = next((t for t in ctx.terms if t.bilinear), None)     # the latent variables
        return lv.site_width(ctx) if lv is not None else 0

    def active(self, ctx):
        return self._d(ctx) > 0

    def fields(self, ctx):
        d = self._d(ctx)
        return {"D_q": (ctx.m, d) if self.mode == "species" else (d,)}

    def slots(self, ctx):
        d = self._d(ctx)
        if self.mode == "species":
            return [Slot("D_q", "D_q", (ctx.m, d), model=True, scope="species",
                         bounds=(0.0, np.inf))]
        return [Slot("D_q", "D_q", (d,), model=True, scope="global", bounds=(0.0, np.inf))]

    def start(self, ctx, P, init):
        d = self._d(ctx)
        P.D_q = np.full((ctx.m, d) if self.mode == "species" else (d,), D_START)

    def vanishes(self, P):
        """Whether the term is zero at P (every D at its bound 0): the model is then the
        linear one, and the latent variables' gauge is free again (``newton.gauge_step``)."""
        return not np.any(np.asarray(P.D_q))

    def D(self, ctx, P, cols=slice(None)):
        """(c, d) quadratic coefficients of the species ``cols``."""
        Dq = np.asarray(P.D_q, dtype=float)
        if self.mode == "lv":
            return np.broadcast_to(Dq, (ctx.count_cols(cols), len(Dq)))
        return Dq[cols]

    # --- moments and their derivatives --------------------------------------------------------
    def _parts(self, ctx, P, rows, cols):
        """Per-cell pieces: mu (r, kr), Sigma (r, kr, kr), b (c, kr), D (c, kr) padded."""
        kr, d = ctx.kr, ctx.d
        mu = np.array(ctx.site_means(P)[rows][:, :kr], dtype=float)
        lv = ctx.lv
        if hasattr(lv, "fixed_scores"):              # concurrent: E[z] = C' x + a
            mu[:, :d] += lv.fixed_scores(ctx, P, rows)
        L = P.L[rows]
        S = L @ np.swapaxes(L, 1, 2)
        b = ctx.site_design(P, cols, random_only=True)
        Dp = np.zeros((b.shape[0], kr))
        Dp[:, :d] = self.D(ctx, P, cols)
        return mu, S, b, Dp

    def _cells(self, ctx, P, rows, cols, derivs):
        """(m_q, v_q) (r, c) and, with ``derivs``, their derivatives. The per-cell arrays
        are held with the coordinate axes first, (kr, [kr,] r, c): elementwise products
        then run over long contiguous rows (with the small axes last they cost 10-30 x more)."""
        mu, S, b, Dp = self._parts(ctx, P, rows, cols)
        kr = S.shape[1]
        log_link = ctx.family is not None and ctx.family.link == "log"
        muT, ST, bT, DT = mu.T, S.transpose(1, 2, 0), b.T, Dp.T                 # (kr, ...)
        dS = np.diagonal(S, axis1=1, axis2=2)                                    # (r, kr)
        mq = -((mu ** 2 + dS) @ Dp.T)                                            # (r, c)
        g = bT[:, None, :] - 2.0 * DT[:, None, :] * muT[:, :, None]             # (kr, r, c)
        Sb = (S @ bT).transpose(1, 0, 2)                                         # Sigma b
        bSb = (Sb * bT[:, None, :]).sum(0)
        S2D = None
        if log_link:    # K = I + 2 S D, M = K^-1 S (per site only where D is shared)
            Ki, logdet, M = _resolvent(ST, DT[:, :1] if self.mode == "lv" else DT)
            Mg = (M * g[None]).sum(1)
            vq = (g * Mg).sum(0) - logdet + 2.0 * (dS @ Dp.T) - bSb
        else:
            Sg = (ST[:, :, :, None] * g[None]).sum(1)
            S2D = Dp @ np.swapaxes(S * S, 1, 2)                                  # (r, c, kr)
            vq = (g * Sg).sum(0) + 2.0 * (S2D * Dp[None]).sum(2) - bSb           # + 2 tr(DSDS)
        if not derivs:
            return mq, vq
        out = {}
        idx = np.arange(kr)
        out["m_mu"] = -2.0 * DT[:, None, :] * muT[:, :, None]                   # (kr, r, c)
        out["m_D"] = -(muT ** 2 + dS.T)[:, :, None]                             # (kr, r, 1)
        bb = bT[:, None, None, :] * bT[None, :, None, :]                         # (kr, kr, 1, c)
        if log_link:
            h = (Ki * g[:, None]).sum(0)                                         # K^-T g
            out["v_b"] = 2.0 * Mg - 2.0 * Sb
            out["v_mu"] = -4.0 * DT[:, None, :] * Mg
            vS = h[:, None] * h[None] - 2.0 * DT[:, None, None, :] * Ki
            vS = 0.5 * (vS + vS.transpose(1, 0, 2, 3))
            vS[idx, idx] += 2.0 * DT[:, None, :]
            vS -= bb
            out["v_S"] = vS
            out["v_D"] = (-4.0 * muT[:, :, None] * Mg - 2.0 * Mg ** 2
                          - 2.0 * M[idx, idx] + 2.0 * dS.T[:, :, None])
        else:
            out["v_b"] = 2.0 * Sg - 2.0 * Sb
            out["v_mu"] = -4.0 * DT[:, None, :] * Sg
            DSD = DT[:, None, None, :] * ST[:, :, :, None] * DT[None, :, None, :]
            vS = g[:, None] * g[None] + 4.0 * DSD - bb
            out["v_S"] = 0.5 * (vS + vS.transpose(1, 0, 2, 3))
            # diag(S D S)_k = sum_l S_kl^2 D_l
            out["v_D"] = -4.0 * muT[:, :, None] * Sg + 4.0 * S2D.transpose(2, 0, 1)
        out["Dp"] = Dp
        return mq, vq, out

    def moments_extra(self, ctx, P, rows, cols):
        """(m_q, v_q) (r, c): what the quadratic part adds to the cells' mean and variance."""
        return self._cells(ctx, P, rows, cols, False)

    def _chain(self, ctx, P, Gm, Gv):
        """The quadratic part's chain rule from Gm, Gv (n, m): its gradient in the site means
        (n, kr), the site covariances (n, kr, kr; symmetric), the random site design b
        (m, kr) and the padded D (m, kr)."""
        n, kr = ctx.n, ctx.kr
        step = max(1, 200_000 // max(ctx.m * kr * kr, 1))
        g_mu = np.zeros((n, kr))
        g_S = np.zeros((n, kr, kr))
        g_b = np.zeros((ctx.m, kr))
        g_D = np.zeros((ctx.m, kr))
        idx = np.arange(kr)
        for s0 in range(0, n, step):
            rows = slice(s0, min(n, s0 + step))
            _, _, o = self._cells(ctx, P, rows, slice(None), True)
            gm, gv = Gm[rows], Gv[rows]
            g_mu[rows] = (gm[None] * o["m_mu"] + gv[None] * o["v_mu"]).sum(2).T
            gS = (gv[None, None] * o["v_S"]).sum(3).transpose(2, 0, 1)
            gS[:, idx, idx] -= gm @ o["Dp"]
            g_S[rows] = gS
            g_b += (gv[None] * o["v_b"]).sum(1).T
            g_D += (gm[None] * o["m_D"] + gv[None] * o["v_D"]).sum(1).T
        return g_mu, g_S, g_b, g_D

    def sigma_gradient(self, ctx, P, Gm, Gv):
        """What the quadratic part adds to d ELL / d Sigma_i, (n, kr, kr) symmetric (the
        covariance fixed point of the Newton phase)."""
        return self._chain(ctx, P, Gm, Gv)[1]

    def gradient_extra(self, ctx, P, Gm, Gv, g):
        """Add the quadratic part's chain rule to the natural gradient ``g`` (in place)."""
        d = ctx.d
        g_mu, g_S, g_b, g_D = self._chain(ctx, P, Gm, Gv)
        # scatter: LV means a (and C for concurrent), L, theta, D
        lv = ctx.lv
        g.a = g.a + g_mu[:, :d]
        if hasattr(lv, "fixed_scores") and getattr(g, "C_lv", None) is not None:
            from .ordination import lv_design
            g.C_lv = g.C_lv + lv_design(ctx).T @ g_mu[:, :lv.d_c]
        extra_L = np.tril(2.0 * g_S @ P.L)
        g.L = g.L + extra_L
        free = lv.free_mask(ctx.m) if hasattr(lv, "free_mask") else np.ones((ctx.m, d), bool)
        g.theta = g.theta + g_b[:, :d] * free
        gD = g_D[:, :d]
        g.D_q = gD if self.mode == "species" else gD.sum(0)
        return g

    def newton_cells(self, ctx, P, rows, sigma=False):
        """Per-cell derivatives of the *total* moments (m, v) of the cells ``rows`` x all
        species in x = (theta_j (d), D_j (d), mu_i (kr)), with Sigma_i held fixed; the
        joint Newton step of ``jsdm.model.newton_nonlinear`` assembles its blocks from them.

        With g = b - 2 D mu, N = M = (Sigma^-1 + 2 D)^-1, h = M g, t = mu + h (log link:
        v = g'Mg - log det(I + 2 Sigma D) + 2 tr(D Sigma)) or N = Sigma, h = Sigma g, t = mu
        (other links: v = g' Sigma g + 2 tr(D Sigma D Sigma)):

            m_theta = mu,  m_D = -(mu^2 + Sigma_kk),  m_mu = g
            v_theta = 2 h, v_D = (see ``_cells``),     v_mu = -4 D h
            m_theta,mu = I,  m_D,mu = -2 diag(mu),  m_mu,mu = -2 D
            v_theta,theta = 2 N,            v_theta_k,D_l = -4 N_kl t_l,
            v_theta_k,mu_l = -4 N_kl D_l,   v_D_k,D_l = 8 t_k N_kl t_l + 4 N_kl^2,
            v_D_k,mu_l = 8 t_k N_kl D_l - 4 h_k [k = l],  v_mu_k,mu_l = 8 D_k N_kl D_l

        (with g = b - 2 D mu, v depends on (b, D, mu) through g and, for D, directly:
        these are the chain rule's two parts). Returns a dict of arrays with the coordinate
        axes first and the cells last, (..., r, m) (as in ``_cells``): "g" (kr), "m_D" (d;
        (d, r, 1)), "v_th" (d), "v_D" (d), "v_mu" (kr), "v_thth", "v_thD", "v_DD" (d, d),
        "v_thmu", "v_Dmu" (d, kr), "v_mumu" (kr, kr); and "mu" (r, kr), "Dp" (m, kr).
        """
        mu, S, b, Dp = self._parts(ctx, P, rows, slice(None))
        d, kr = ctx.d, S.shape[1]
        log_link = ctx.family is not None and ctx.family.link == "log"
        muT, ST, bT, DT = mu.T, S.transpose(1, 2, 0), b.T, Dp.T                 # (kr, ...)
        g = bT[:, None, :] - 2.0 * DT[:, None, :] * muT[:, :, None]             # (kr, r, m)
        Ki = None
        idx = np.arange(kr)
        if log_link:    # N = K^-1 S, K = I + 2 S D (per site only where D is shared)
            Ki, _, N = _resolvent(ST, DT[:, :1] if self.mode == "lv" else DT)
            h = (N * g[None]).sum(1)
            t = muT[:, :, None] + h
            v_D = (-4.0 * muT[:, :, None] * h - 2.0 * h ** 2 - 2.0 * N[idx, idx]
                   + 2.0 * np.diagonal(S, axis1=1, axis2=2).T[:, :, None])
        else:
            N = ST[:, :, :, None]                                                # (kr, kr, r, 1)
            h = (N * g[None]).sum(1)
            t = muT[:, :, None]
            SDS = Dp @ np.swapaxes(S * S, 1, 2)                                  # (r, m, kr)
            v_D = -4.0 * t * h + 4.0 * SDS.transpose(2, 0, 1)
        NDp = N * DT[None, :, None, :]                                          # N_kl D_l
        tN = t[:, None] * N                                                     # t_k N_kl
        v_Dmu = 8.0 * tN * DT[None, :, None, :]
        v_Dmu = v_Dmu + np.zeros_like(h)[None]
        idx = np.arange(kr)
        v_Dmu[idx, idx] -= 4.0 * h
        dS = np.diagonal(S, axis1=1, axis2=2)
        out = {} if not sigma else self._sigma_cells(S, ST, DT, g, Ki, d)
        return {
            **out,
            "g": g, "m_D": -(mu ** 2 + dS).T[:d, :, None], "v_th": 2.0 * h[:d],
            "v_D": v_D[:d], "v_mu": -4.0 * DT[:, None, :] * h,
            "v_thth": 2.0 * N[:d, :d],
            "v_thD": -4.0 * (N * t[None])[:d, :d],
            "v_DD": (8.0 * tN * t[None] + 4.0 * N ** 2)[:d, :d],
            "v_thmu": -4.0 * NDp[:d],
            "v_Dmu": v_Dmu[:d],
            "v_mumu": 8.0 * DT[:, None, None, :] * NDp,
            "mu": mu, "Dp": Dp,
        }

    @staticmethod
    def _sigma_cells(S, ST, DT, g, Ki, d):
        """The derivatives of m and v in the entries of Sigma_i (``newton_cells(sigma=True)``).

        Sigma's free entries are taken in the order of ``sigma_pairs(kr)``: E = e_k e_k' for a
        diagonal entry, e_k e_l' + e_l e_k' for an off-diagonal one (a symmetric step
        Sigma + sum_E ds_E E). With f = K^-T g, Pm = D K^-1 (symmetric), Q = Pm Sigma
        (log link; other links: K = I, f = g, v = g'Sigma g + 2 tr(D Sigma D Sigma)):

            m_E = -tr(D E),   v_E = f'E f - 2 tr(Pm E) + 2 tr(D E)
            d v_E / d g_a = 2 (K^-1 E f)_a             (theta, mu, D through g = b - 2 D mu)
            d v_E / d D_l (g fixed) = -4 (Sigma f)_l (K^-1 E f)_l - 2 (K^-1 E)_ll
                                      + 4 (K^-1 E Q)_ll + 2 E_ll
            d2 v / dE1 dE2 = -4 f'E1 Pm E2 f + 4 tr(Pm E2 Pm E1),   d m_E / d D_l = -E_ll

        (other links: d v_E / d g = 2 E g, d v_E / d D_l = 8 (Sigma D E)_ll,
        d2 v / dE1 dE2 = 4 tr(D E1 D E2)). Arrays with the coordinates first, cells last.
        """
        kr = ST.shape[0]
        pairs = sigma_pairs(kr)
        ns = len(pairs)
        shape = g.shape[1:]
        zero = np.zeros(shape)
        D = DT[:, None, :]                                                  # (kr, 1, m)
        if Ki is not None:
            f = (Ki * g[:, None]).sum(0)                                    # K^-T g
            Pm = D[:, None] * Ki                                            # D_a Ki[a, b]
            Pm = 0.5 * (Pm + Pm.transpose(1, 0, 2, 3))
            Q = _mm_t(Pm, ST[:, :, :, None])                                # Pm Sigma
            Sf = (ST[:, :, :, None] * f[None]).sum(1)                       # (kr, r, m)
        else:
            f = g
            SD = ST[:, :, :, None] * D[None]                                # S[a, b] D_b
        m_S = np.zeros((ns,) + shape)
        v_S = np.zeros((ns,) + shape)
        v_Sg = np.zeros((ns, kr) + shape)
        v_SD = np.zeros((ns, kr) + shape)
        m_SD = np.zeros((ns, kr) + shape)
        v_SS = np.zeros((ns, ns) + shape)
        for e, (k, l) in enumerate(pairs):
            sym = [(k, l)] if k == l else [(k, l), (l, k)]
            for b, c in sym:
                if b == c:
                    m_S[e] -= D[b] + zero
                    m_SD[e, b] -= 1.0
                if Ki is not None:
                    v_S[e] += f[b] * f[c] - 2.0 * Pm[c, b] + (2.0 * D[b] if b == c else 0.0)
                    v_Sg[e] += 2.0 * Ki[:, b] * f[c][None]
                    v_SD[e] += -4.0 * Sf * Ki[:, b] * f[c][None] + 4.0 * Ki[:, b] * Q[c]
                    v_SD[e, c] -= 2.0 * Ki[c, b]
                    if b == c:
                        v_SD[e, b] += 2.0
                else:
                    v_S[e] += g[b] * g[c] + 4.0 * D[c] * ST[c, b][:, None] * D[b]
                    v_Sg[e, b] += 2.0 * g[c]
                    v_SD[e, c] += 8.0 * SD[c, b]
            for e2, (k2, l2) in enumerate(pairs):
                sym2 = [(k2, l2)] if k2 == l2 else [(k2, l2), (l2, k2)]
                acc = zero.copy()
                for b, c in sym:
                    for dd, ee in sym2:
                        if Ki is not None:
                            acc = acc - 4.0 * f[b] * Pm[c, dd] * f[ee] + 4.0 * Pm[c, dd] * Pm[ee, b]
                        elif c == dd and ee == b:
                            acc = acc + 4.0 * D[b] * D[c]
                v_SS[e, e2] = acc
        return {"m_S": m_S, "v_S": v_S, "v_Sg": v_Sg, "v_SD": v_SD[:, :d], "m_SD": m_SD[:, :d],
                "v_SS": v_SS}

    def curvature_extra(self, ctx, P, C):
        """{"D_q": approximate curvature of the ELBO along each D} from C = -2 Gv (n, m): the
        mean part only, sum_i C_ij (mu_ik^2 + Sigma_ikk)^2 (scaling of the optimiser)."""
        mu, S, _, _ = self._parts(ctx, P, slice(None), slice(0, 1))
        w = (mu ** 2 + np.einsum("ikk->ik", S))[:, :ctx.d] ** 2                   # (n, d)
        h = C.T @ w
        return {"D_q": h if self.mode == "species" else h.sum(0)}

    # --- outputs ---------------------------------------------------------------------------------
    def reported(self, ctx, P, layout):
        d = self._d(ctx)
        names = list(ctx.lv.coord_names(ctx))[:d]
        start = layout.slices["D_q"].start
        if self.mode == "species":
            jj, kk = np.divmod(np.arange(ctx.m * d), d)
            return [Reported("quadratic", jj, [(ctx.species[j], names[k]) for j, k in zip(jj, kk)],
                             np.asarray(P.D_q).ravel(), start + np.arange(ctx.m * d))]
        return [Reported("quadratic", np.zeros(d, int), [("all species", names[k]) for k in range(d)],
                         np.asarray(P.D_q), start + np.arange(d))]
