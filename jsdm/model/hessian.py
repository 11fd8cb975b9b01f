"""Analytic Hessian of the ELBO in the packed parameters, assembled by blocks.

Every cell (i, j) enters the ELBO through ell(y_ij, m_ij, v_ij, s_j), where
m_ij is linear in (beta0_j, B_j, alpha_i, a_i) and bilinear in (a_i, theta_j),
and v_ij = theta_j' L_i L_i' theta_j (+ rho_i^2) is quadratic. The chain rule
gives, per cell,

    H = J' E J + ell_m * d2m + ell_v * d2v

with J the Jacobian of (m, v, s) in the cell's parameters and E the 3 x 3
matrix of second derivatives of ell in (m, v, s). ``E_mm = 2 ell_v`` exactly;
``E_mv``, ``E_vv``, ``E_ms``, ``E_vs`` come from central differences of the
family's analytic first derivatives (four extra ``ell`` calls on the whole
(n, m) array), ``E_ss`` from the family (``order=2``).

A vector dispersion s_j = (s_j1, ..., s_jq) (ordinal cut points) enters as q
channels "s0", ..., "s(q-1)" in place of "s", with E the (2 + q) x (2 + q)
matrix of second derivatives in (m, v, s_j1, ..., s_jq).

The parameters split into species-local blocks phi_j = (beta0_j, B_j, theta_j,
s_j), site-local variational blocks psi_i = (alpha_i, log rho_i [random row
effects], a_i, L_i) and a few others (fixed row effects alpha_i, log sigma).
The result is returned in three dense pieces: the model block ``Hpp``, the
model x variational block ``Hpv`` (P, n, q) and the site-diagonal variational
block ``Hvv`` (n, q, q), which is all the Schur complement needs.
"""
from dataclasses import dataclass

import numpy as np

from . import penalty
from .objective import Evaluation, evaluate, moments

_STEP = 1e-4


@dataclass
class HessianBlocks:
    """Hessian of the ELBO (packed coordinates) in the pieces the Schur complement needs.

    Attributes
    ----------
    Hpp : ndarray (P, P)      model x model (P = layout.n_model; packed order)
    Hpv : ndarray (P, n, q)   model x site-variational
    Hvv : ndarray (n, q, q)   site-variational blocks (zero between sites)
    site_pos : ndarray (n, q) packed positions of each site's variational parameters
    """

    Hpp: np.ndarray
    Hpv: np.ndarray
    Hvv: np.ndarray
    site_pos: np.ndarray

    def dense(self, size):
        """The full (size x size) Hessian (small problems and tests only)."""
        P = self.Hpp.shape[0]
        H = np.zeros((size, size))
        H[:P, :P] = self.Hpp
        for i, pos in enumerate(self.site_pos):
            H[:P, pos] = self.Hpv[:, i, :]
            H[pos, :P] = self.Hpv[:, i, :].T
            H[np.ix_(pos, pos)] = self.Hvv[i]
        return H


def cell_curvature(prob, P, M, V, h=_STEP, e0=None):
    """Weighted second derivatives of ell per cell: dict of (n, m) arrays.

    Keys ``mm, mv, vv`` and, with a dispersion, ``ms, vs, ss`` (scalar s) or
    ``ms0, vs0, s0s0, s0s1, ...`` (vector s, channels of :func:`s_channels`).
    Central differences of the family's first derivatives (four passes over the
    cells besides ``e0``), or, given ``e0`` (the family's ``ell`` at (M, V) with
    ``order=2``), forward differences from it (two passes; error O(h) = 1e-4
    relative, enough for Newton steps).
    """
    fam, Y, W, s, tr = prob.family, prob.Y, prob.W, P.s, prob.trials
    hv = h * (1.0 + V)
    if e0 is None:
        e0 = fam.ell(Y, M, V, s, tr, order=2)
        ep, em = fam.ell(Y, M + h, V, s, tr), fam.ell(Y, M - h, V, s, tr)
        vlo = np.maximum(V - hv, 0.0)
        vp, vm = fam.ell(Y, M, V + hv, s, tr), fam.ell(Y, M, vlo, s, tr)
        dm, dv = 2.0 * h, (V + hv) - vlo
    else:
        ep, em = fam.ell(Y, M + h, V, s, tr), e0
        vp, vm = fam.ell(Y, M, V + hv, s, tr), e0
        dm, dv = h, hv
    E = {"mm": 2.0 * e0.d_v, "mv": (ep.d_v - em.d_v) / dm, "vv": (vp.d_v - vm.d_v) / dv}
    if fam.has_dispersion and np.ndim(s) == 2:
        ms, vs = (ep.d_s - em.d_s) / dm, (vp.d_s - vm.d_s) / dv[..., None]
        for k, a in enumerate(s_channels(s)):
            E["m" + a], E["v" + a] = ms[..., k], vs[..., k]
            for l, b in enumerate(s_channels(s)[k:], start=k):
                E[a + b] = e0.d_ss[..., k, l]
    elif fam.has_dispersion:
        E["ms"] = (ep.d_s - em.d_s) / dm
        E["vs"] = (vp.d_s - vm.d_s) / dv
        E["ss"] = e0.d_ss
    return {k: W * np.asarray(v, dtype=float) for k, v in E.items()}


def s_channels(s):
    """Names of the dispersion channels: [] without, ["s"] for a scalar, ["s0", ...] for a vector."""
    if s is None:
        return []
    return ["s"] if np.ndim(s) == 1 else [f"s{k}" for k in range(np.shape(s)[1])]


def _contract(E, J):
    """K_b = sum_a E_ab J_a for the channels b of J (m, v, s...); J: dict of (n, m, k) arrays or None."""
    def e(a, b):
        return E.get(a + b, E.get(b + a))

    out = {}
    for b in J:
        acc = None
        for a in J:
            if J.get(a) is None or e(a, b) is None:
                continue
            term = e(a, b)[:, :, None] * J[a]
            acc = term if acc is None else acc + term
        out[b] = acc
    return out


def _pair(K, J, spec):
    """sum_b einsum(spec, K_b, J_b) over the channels both sides have."""
    acc = 0.0
    for b in K:
        if K.get(b) is not None and J.get(b) is not None:
            acc = acc + np.einsum(spec, K[b], J[b], optimize=True)
    return acc


def _species_jacobian(prob, P):
    """Jacobians of (m, v, s...) in phi_j = (beta0_j, B_j, theta_j, s_j), each (n, m, k_phi).

    One dispersion channel per entry of s_j (none without a dispersion).
    """
    n, m, p, d = prob.n, prob.m, prob.p, prob.d
    chans = s_channels(P.s)
    k = 1 + p + d + len(chans)
    Jm, Jv = _mean_var_jacobian(prob, P, k)
    J = {"m": Jm, "v": Jv}
    for c, name in enumerate(chans):
        J[name] = np.zeros((n, m, k))
        J[name][:, :, 1 + p + d + c] = 1.0
    return J


def _mean_var_jacobian(prob, P, k):
    """Jacobians (n, m, k) of m and v in (beta0_j, B_j, theta_j, ...) (zero beyond theta)."""
    n, m, p, d = prob.n, prob.m, prob.p, prob.d
    Jm = np.zeros((n, m, k))
    Jm[:, :, 0] = 1.0
    Jm[:, :, 1:1 + p] = prob.X[:, None, :]
    Jm[:, :, 1 + p:1 + p + d] = P.a[:, None, :]
    Jv = np.zeros((n, m, k))
    if d:
        Jv[:, :, 1 + p:1 + p + d] = 2.0 * np.einsum("ikl,jl->ijk", P.A, P.theta)
    return Jm, Jv


def _site_jacobian(prob, P):
    """Jacobians of (m, v) in psi_i = (alpha_i, log rho_i, a_i, L_i raw tril), each (n, m, q)."""
    n, m, d = prob.n, prob.m, prob.d
    r = 2 if prob.row_effect == "random" else 0
    tri = np.tril_indices(d)
    q = r + d + len(tri[0])
    Jm = np.zeros((n, m, q))
    Jv = np.zeros((n, m, q))
    if r:
        Jm[:, :, 0] = 1.0
        Jv[:, :, 1] = 2.0 * np.exp(2.0 * P.log_rho)[:, None]
    if d:
        Jm[:, :, r:r + d] = P.theta[None, :, :]
        u = np.einsum("ikl,jk->ijl", P.L, P.theta)              # u_ij = L_i' theta_j
        Jv[:, :, r + d:] = 2.0 * P.theta[None, :, tri[0]] * u[:, :, tri[1]]
    return {"m": Jm, "v": Jv}, r, tri


def _second_order_site(prob, P, ev, r, tri):
    """Site block: ell_v * d2v (L-L, log rho) minus the KL Hessian, raw L coordinates."""
    n, d = prob.n, prob.d
    nl = len(tri[0])
    q = r + d + nl
    H = np.zeros((n, q, q))
    if d:
        th2 = (P.theta[:, :, None] * P.theta[:, None, :]).reshape(prob.m, d * d)
        dA = (ev.Gv @ th2).reshape(n, d, d)
        same_col = (tri[1][:, None] == tri[1][None, :]).astype(float)
        LL = 2.0 * dA[:, tri[0][:, None], tri[0][None, :]] * same_col
        LL -= np.eye(nl)
        diag = tri[0] == tri[1]
        Ld = P.L[:, tri[0][diag], tri[1][diag]]
        idx = r + d + np.flatnonzero(diag)
        H[:, r + d:, r + d:] = LL
        H[:, idx, idx] -= 1.0 / Ld ** 2
        H[:, r:r + d, r:r + d] -= np.eye(d)
    if r:
        s2, rho2 = np.exp(2.0 * P.log_sigma), np.exp(2.0 * P.log_rho)
        H[:, 0, 0] -= 1.0 / s2
        H[:, 1, 1] += 4.0 * rho2 * ev.Gv.sum(1) - 2.0 * rho2 / s2
    return H


def _second_order_cross(prob, P, ev, r, tri):
    """Species x site block from ell_m * d2m and ell_v * d2v, shape (n, m, k_phi, q)."""
    n, m, p, d = prob.n, prob.m, prob.p, prob.d
    hs = len(s_channels(P.s))
    q = r + d + len(tri[0])
    C = np.zeros((n, m, 1 + p + d + hs, q))
    if not d:
        return C
    t0 = 1 + p
    k_idx = np.arange(d)
    C[:, :, t0 + k_idx, r + k_idx] = ev.Gm[:, :, None]
    u = np.einsum("ikl,jk->ijl", P.L, P.theta)                  # (n, m, d)
    # d2v / dtheta_r dL_kl = 2 delta_kr u_l + 2 theta_k L_rl, for (k, l) in tril
    kk, ll = tri
    first = 2.0 * (k_idx[:, None] == kk[None, :])[None, None] * u[:, :, None, ll]
    second = 2.0 * P.theta[None, :, None, kk] * P.L[:, None, :, ll]
    term = first + second                                          # (n, m, d, nl)
    C[:, :, t0:t0 + d, r + d:] = ev.Gv[:, :, None, None] * term
    return C


def _log_diag_chain(prob, P, ev, r, tri, Hvv, Hcross_list):
    """Move L's diagonal to the log scale: scale rows/cols by L_kk, add L_kk * gradient."""
    d = prob.d
    if not d:
        return
    diag = np.flatnonzero(tri[0] == tri[1])
    idx = r + d + diag
    Ld = P.L[:, tri[0][diag], tri[1][diag]]                     # (n, d)
    th2 = (P.theta[:, :, None] * P.theta[:, None, :]).reshape(prob.m, d * d)
    dA = (ev.Gv @ th2).reshape(prob.n, d, d)
    g_raw = np.diagonal(2.0 * dA @ P.L, axis1=1, axis2=2) - Ld + 1.0 / Ld
    D = np.ones(Hvv.shape[:2])
    D[:, idx] = Ld
    Hvv *= D[:, :, None] * D[:, None, :]
    Hvv[:, idx, idx] += Ld * g_raw
    for Hc in Hcross_list:                                       # arrays with last axis q, first n
        Hc *= D.reshape(D.shape[0], *([1] * (Hc.ndim - 2)), D.shape[1])


def species_positions(layout):
    """Packed positions (m, k_phi) of phi_j = (beta0_j, B_j, theta_j, s_j); -1 where fixed at 0."""
    m, p, d, sl = layout.m, layout.p, layout.d, layout.slices
    cols = [sl["beta0"].start + np.arange(m)[:, None]]
    cols.append(sl["B"].start + np.arange(m)[:, None] * p + np.arange(p)[None, :])
    th = -np.ones((m, d), dtype=int)
    th[layout.tri_m] = sl["theta"].start + np.arange(int(layout.tri_m.sum()))
    cols.append(th)
    if layout.has_disp:
        cols.append(layout.s_positions())       # shared by all species: the same in every row
    return np.hstack(cols).astype(int)


def site_positions(layout):
    """Packed positions (n, q) of psi_i = (alpha_i, log rho_i, a_i, L_i tril)."""
    n, d, sl = layout.n, layout.d, layout.slices
    nl = d * (d + 1) // 2
    cols = []
    if layout.row_effect == "random":
        cols += [sl["alpha_random"].start + np.arange(n)[:, None], sl["log_rho"].start + np.arange(n)[:, None]]
    cols.append(sl["a"].start + np.arange(n)[:, None] * d + np.arange(d)[None, :])
    cols.append(sl["L"].start + np.arange(n)[:, None] * nl + np.arange(nl)[None, :])
    return np.hstack(cols).astype(int)


def hessian_blocks(prob, P, layout, h=_STEP, forward=False):
    """Analytic Hessian of the ELBO at P in packed coordinates, as :class:`HessianBlocks`.

    ``forward``: the third-order terms of ell by forward differences (three
    passes of the family over the cells instead of six; see :func:`cell_curvature`),
    as the fit's full Newton steps use it; standard errors use central ones.
    """
    if forward:
        M, V = moments(prob, P)
        e0 = prob.family.ell(prob.Y, M, V, P.s, prob.trials, order=2)
        ev = Evaluation(np.nan, None, M, V, prob.W * e0.d_m, prob.W * e0.d_v, None)
        E = cell_curvature(prob, P, M, V, h, e0=e0)
    else:
        ev = evaluate(prob, P, grad=False)
        E = cell_curvature(prob, P, ev.M, ev.V, h)
    Jphi = _species_jacobian(prob, P)
    Jpsi, r, tri = _site_jacobian(prob, P)
    Kphi = _contract(E, Jphi)
    Hphiphi = _pair(Kphi, Jphi, "ijk,ijl->jkl")
    if prob.d:
        t = slice(1 + prob.p, 1 + prob.p + prob.d)
        Hphiphi[:, t, t] += 2.0 * np.einsum("ij,ikl->jkl", ev.Gv, P.A)
    pen = penalty.species_curvature(prob)                   # penalty (prior_sd)
    if pen is not None:
        k0 = len(pen)
        Hphiphi[:, np.arange(k0), np.arange(k0)] -= pen
    Kpsi = _contract(E, Jpsi)
    Hvv = _pair(Kpsi, Jpsi, "ijk,ijl->ikl") + _second_order_site(prob, P, ev, r, tri)
    Hcross = _pair(Kphi, Jpsi, "ijk,ijl->ijkl") + _second_order_cross(prob, P, ev, r, tri)
    alpha = _fixed_alpha_parts(prob, E, Jphi, Jpsi, P) if prob.row_effect == "fixed" else None
    _log_diag_chain(prob, P, ev, r, tri, Hvv,
                    [Hcross] + ([alpha[2]] if alpha is not None else []))
    return _assemble(prob, P, layout, Hphiphi, Hcross, Hvv, alpha)


def _fixed_alpha_parts(prob, E, Jphi, Jpsi, P):
    """Fixed row effects (m_ij linear in alpha_i, no second-order terms)."""
    Ka = {"m": E["mm"], "v": E["mv"], "s": E.get("ms")}
    Ka.update({c: E["m" + c] for c in s_channels(P.s) if c != "s"})
    Haa = Ka["m"].sum(1)                                        # (n,)
    Hap = sum(Ka[b][:, :, None] * Jphi[b] for b in Jphi if Jphi.get(b) is not None)
    Hav = sum((Ka[b][:, :, None] * Jpsi[b]).sum(1) for b in ("m", "v"))
    return Haa, Hap, np.asarray(Hav, dtype=float).reshape(prob.n, -1)


def _assemble(prob, P, layout, Hphiphi, Hcross, Hvv, alpha):
    """Scatter the local blocks into (Hpp, Hpv, Hvv) in packed order."""
    n, Pn, sl = prob.n, layout.n_model, layout.slices
    pos = species_positions(layout)
    ok = pos >= 0
    q = Hvv.shape[1]
    Hpp = np.zeros((Pn, Pn))
    both = ok[:, :, None] & ok[:, None, :]
    rows = np.broadcast_to(pos[:, :, None], both.shape)[both]
    cols = np.broadcast_to(pos[:, None, :], both.shape)[both]
    # accumulated, not assigned: a dispersion shared by all species has one position for all
    np.add.at(Hpp, (rows, cols), Hphiphi[both])
    Hpv = np.zeros((Pn, n, q))
    np.add.at(Hpv, pos[ok], np.transpose(Hcross, (1, 2, 0, 3))[ok])
    if alpha is not None:
        Haa, Hap, Hav = alpha
        apos = sl["alpha_fixed"].start + np.arange(n - 1)
        Hpp[apos, apos] = Haa[1:]
        blk = np.zeros((n - 1, Pn))
        cols_ok = np.broadcast_to(pos, Hap.shape[1:])[ok]
        np.add.at(blk, (slice(None), cols_ok), Hap[1:][:, ok])
        Hpp[apos, :] += blk
        Hpp[:, apos] += blk.T
        Hpp[apos, apos] = Haa[1:]
        Hpv[apos, np.arange(1, n), :] = Hav[1:]
    if prob.row_effect == "random":
        s2, rho2 = np.exp(2.0 * P.log_sigma), np.exp(2.0 * P.log_rho)
        ls = sl["log_sigma"].start
        Hpp[ls, ls] = -2.0 * ((rho2 + P.alpha ** 2) / s2).sum()
        Hpv[ls, :, 0] = 2.0 * P.alpha / s2
        Hpv[ls, :, 1] = 2.0 * rho2 / s2
    return HessianBlocks(Hpp, Hpv, Hvv, site_positions(layout))
