"""Analytic Hessian of the ELBO in the packed parameters, assembled by blocks.

Every cell (i, j) enters the ELBO through ell(y_ij, m_ij, v_ij, s_j), where m_ij is
linear in the species-block coordinates phi_j (site design Xt_i) and in the site
means u_i (species design U_j), bilinear in (a_i, theta_j) for the latent variables,
and v_ij = U^R_j' L_i L_i' U^R_j is quadratic in the loadings and in L_i (the joint
Cholesky factor of the site's random coordinates). The chain rule gives, per cell,

    H = J' E J + ell_m * d2m + ell_v * d2v

with J the Jacobian of (m, v, s) in the cell's parameters and E the matrix of
second derivatives of ell in (m, v, s). ``E_mm = 2 ell_v`` exactly; ``E_mv``,
``E_vv``, ``E_ms``, ``E_vs`` come from central differences of the family's
analytic first derivatives (four extra ``ell`` calls on the whole (n, m) array),
``E_ss`` from the family (``order=2``).

A vector dispersion s_j = (s_j1, ..., s_jq) (ordinal cut points) enters as q
channels "s0", ..., "s(q-1)" in place of "s", with E the (2 + q) x (2 + q)
matrix of second derivatives in (m, v, s_j1, ..., s_jq).

The parameters split as the terms' scopes say (``prob.predictor``):
species-local blocks phi_j = (species coordinates, s_j), site-local variational
blocks psi_i = (random site means mu_i, L_i raw lower triangle), site-local model
coordinates (fixed row effects alpha_i) and global ones (the terms'
hyperparameters, e.g. log sigma). The result is returned in three dense pieces:
the model block ``Hpp``, the model x variational block ``Hpv`` (P, n, q) and the
site-diagonal variational block ``Hvv`` (n, q, q), which is all the Schur
complement needs.
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
    #: group-scope variational parameters appended after the model ones in Hpp / Hpv
    #: (``(1 | plot)``: the levels' means and log sds); eliminate them after the sites
    n_extra: int = 0

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


# --- positions ---------------------------------------------------------------------------
def positions(layout):
    """A Params whose arrays hold each entry's packed position (-1: fixed, not packed).

    Computed once per layout (the positions never change) and kept on it.
    """
    from .params import Params

    cached = getattr(layout, "_positions", None)
    if cached is not None:
        return cached
    out = {}
    for slot in layout.slots:
        pos = -np.ones(slot.shape) if slot.shape else np.array(-1.0)
        start = layout.slices[slot.name].start
        ix = slot.entries()
        if not slot.shape:
            pos[()] = start
        elif ix:
            pos[tuple(np.array(ix).T)] = start + np.arange(len(ix))
        pos.setflags(write=False)
        out[slot.field] = pos
    layout._positions = Params.from_fields(out)
    return layout._positions


def species_positions(layout):
    """Packed positions (m, k_phi) of phi_j = (species-block coordinates, s_j); -1 where fixed.

    With the classic terms phi_j = (beta0_j, B_j, theta_j, s_j); a dispersion shared by all
    species has the same positions in every row.
    """
    pred, pos = layout.predictor, positions(layout)
    cols = [pred.species_coef(pos)]
    if pred.dispersion is not None:
        s = np.asarray(pos.s)
        s = s[:, None] if s.ndim == 1 else np.broadcast_to(s, (pred.m, s.shape[1]))
        cols.append(s)
    return np.hstack(cols).astype(int)


def site_positions(layout):
    """Packed positions (n, q) of psi_i = (random site means, L_i lower triangle)."""
    pred, pos = layout.predictor, positions(layout)
    kr = pred.kr
    tri = np.tril_indices(kr)
    mu = pred.site_means(pos)[:, :kr]
    return np.hstack([mu, pos.L[:, tri[0], tri[1]]]).astype(int)


def _fixed_site_positions(layout):
    """Packed positions (n, kf) of the site-local model coordinates (-1: pinned)."""
    pred = layout.predictor
    return pred.site_means(positions(layout))[:, pred.kr:].astype(int)


# --- Jacobians ---------------------------------------------------------------------------
def _coupling(pred, P):
    """(species slice, site slice, UR (m, kr), S (n, kr, kr)) of the bilinear term, or None."""
    from ..model.blocks import bilinear_pair

    pair = bilinear_pair(pred)
    if pair is None:
        return None
    L = P.L
    return pair[0], pair[1], pred.site_design(P, random_only=True), L @ np.swapaxes(L, 1, 2)


def _species_jacobian(pred, P, cpl):
    """Jacobians of (m, v, s...) in phi_j, each (n, m, k_phi); one channel per entry of s_j."""
    n, m, ks = pred.n, pred.m, pred.ks
    chans = s_channels(P.s)
    k = ks + len(chans)
    Jm = np.zeros((n, m, k))
    Jm[:, :, :ks] = pred.species_design(P)[:, None, :]
    Jv = np.zeros((n, m, k))
    if cpl is not None:
        sp, si, UR, S = cpl
        Jv[:, :, sp] = 2.0 * np.einsum("ikr,jr->ijk", S[:, si, :], UR)     # 2 (S_i U_j)_LV
    J = {"m": Jm, "v": Jv}
    for c, name in enumerate(chans):
        J[name] = np.zeros((n, m, k))
        J[name][:, :, ks + c] = 1.0
    return J


def _site_jacobian(pred, P):
    """Jacobians of (m, v) in psi_i = (random means, L_i raw tril), each (n, m, q)."""
    n, m, kr = pred.n, pred.m, pred.kr
    tri = np.tril_indices(kr)
    q = kr + len(tri[0])
    Jm, Jv = np.zeros((n, m, q)), np.zeros((n, m, q))
    if kr:
        UR = pred.site_design(P, random_only=True)
        Jm[:, :, :kr] = UR[None, :, :]
        w = np.einsum("ikl,jk->ijl", P.L, UR)                    # w_ij = L_i' U_j
        Jv[:, :, kr:] = 2.0 * UR[None, :, tri[0]] * w[:, :, tri[1]]
    return {"m": Jm, "v": Jv}, tri


def _dS(pred, P, ev):
    """sum_j Gv_ij U^R_j U^R_j' (n, kr, kr)."""
    kr = pred.kr
    UR = pred.site_design(P, random_only=True)
    UU = (UR[:, :, None] * UR[:, None, :]).reshape(pred.m, kr * kr)
    return (ev.Gv @ UU).reshape(pred.n, kr, kr)


def _second_order_site(pred, P, ev, tri):
    """Site block: ell_v * d2v (L-L) minus the KL Hessian, raw L coordinates."""
    n, kr = pred.n, pred.kr
    nl = len(tri[0])
    H = np.zeros((n, kr + nl, kr + nl))
    if not kr:
        return H
    pr = pred.prior_precision(P)
    dS = _dS(pred, P, ev)
    same_col = (tri[1][:, None] == tri[1][None, :]).astype(float)
    LL = 2.0 * dS[:, tri[0][:, None], tri[0][None, :]] * same_col
    LL -= np.diag(pr[tri[0]])
    diag = tri[0] == tri[1]
    Ld = P.L[:, tri[0][diag], tri[1][diag]]
    idx = kr + np.flatnonzero(diag)
    H[:, kr:, kr:] = LL
    H[:, idx, idx] -= 1.0 / Ld ** 2
    H[:, np.arange(kr), np.arange(kr)] -= pr
    return H


def _second_order_cross(pred, P, ev, tri, cpl, k_phi):
    """Species x site block from ell_m * d2m and ell_v * d2v, shape (n, m, k_phi, q)."""
    n, m, kr = pred.n, pred.m, pred.kr
    q = kr + len(tri[0])
    C = np.zeros((n, m, k_phi, q))
    if cpl is None:
        return C
    sp, si, UR, _ = cpl
    d = sp.stop - sp.start
    r_idx = np.arange(d)
    C[:, :, sp.start + r_idx, si.start + r_idx] = ev.Gm[:, :, None]
    w = np.einsum("ikl,jk->ijl", P.L, UR)                        # (n, m, kr)
    # d2v / dtheta_r dL_kl = 2 delta_(k, c_r) w_l + 2 U_k L_(c_r) l, for (k, l) in tril
    kk, ll = tri
    rows = si.start + r_idx
    first = 2.0 * (rows[:, None] == kk[None, :])[None, None] * w[:, :, None, ll]
    second = 2.0 * UR[None, :, None, kk] * P.L[:, None, rows][:, :, :, ll]
    C[:, :, sp, kr:] = ev.Gv[:, :, None, None] * (first + second)
    return C


def _log_diag_chain(pred, P, ev, tri, Hvv, Hcross_list):
    """Move L's diagonal to the log scale: scale rows/cols by L_kk, add L_kk * gradient."""
    kr = pred.kr
    if not kr:
        return
    diag = np.flatnonzero(tri[0] == tri[1])
    idx = kr + diag
    Ld = P.L[:, tri[0][diag], tri[1][diag]]                     # (n, kr)
    pr = pred.prior_precision(P)
    g_raw = np.diagonal(2.0 * _dS(pred, P, ev) @ P.L, axis1=1, axis2=2) - pr * Ld + 1.0 / Ld
    D = np.ones(Hvv.shape[:2])
    D[:, idx] = Ld
    Hvv *= D[:, :, None] * D[:, None, :]
    Hvv[:, idx, idx] += Ld * g_raw
    for Hc in Hcross_list:                                       # arrays with last axis q, first n
        Hc *= D.reshape(D.shape[0], *([1] * (Hc.ndim - 2)), D.shape[1])


def hessian_blocks(prob, P, layout, h=_STEP, forward=False):
    """Analytic Hessian of the ELBO at P in packed coordinates, as :class:`HessianBlocks`.

    ``forward``: the third-order terms of ell by forward differences (three
    passes of the family over the cells instead of six; see :func:`cell_curvature`),
    as the fit's full Newton steps use it; standard errors use central ones.
    """
    pred = prob.predictor
    if pred.ksr or pred.nonlinear_terms or any(not t.global_fields(pred) for t in pred.global_terms):
        # species random effects, the fourth corner, quadratic responses: by differences of
        # the gradient (model.hessian_fd); canonical coefficients: analytic + their columns
        from .hessian_fd import fd_blocks
        out = fd_blocks(prob, P, layout)
        return _with_group_block(prob, P, layout, out) if pred.group_terms else out
    if forward:
        M, V = moments(prob, P)
        e0 = prob.family.ell(prob.Y, M, V, P.s, prob.trials, order=2)
        ev = Evaluation(np.nan, None, M, V, prob.W * e0.d_m, prob.W * e0.d_v, None)
        E = cell_curvature(prob, P, M, V, h, e0=e0)
    else:
        ev = evaluate(prob, P, grad=False)
        E = cell_curvature(prob, P, ev.M, ev.V, h)
    cpl = _coupling(pred, P)
    Jphi = _species_jacobian(pred, P, cpl)
    Jpsi, tri = _site_jacobian(pred, P)
    Kphi = _contract(E, Jphi)
    Hphiphi = _pair(Kphi, Jphi, "ijk,ijl->jkl")
    if cpl is not None:
        sp, si, _, S = cpl
        Hphiphi[:, sp, sp] += 2.0 * np.einsum("ij,ikl->jkl", ev.Gv, S[:, si, si])
    pen = penalty.species_curvature(prob)                   # penalty (prior_sd)
    if pen is not None:
        k0 = len(pen)
        Hphiphi[:, np.arange(k0), np.arange(k0)] -= pen
    Kpsi = _contract(E, Jpsi)
    Hvv = _pair(Kpsi, Jpsi, "ijk,ijl->ikl") + _second_order_site(pred, P, ev, tri)
    k_phi = Jphi["m"].shape[2]
    Hcross = _pair(Kphi, Jpsi, "ijk,ijl->ijkl") + _second_order_cross(pred, P, ev, tri, cpl, k_phi)
    fixed = _fixed_site_parts(pred, P, E, Jphi, Jpsi) if pred.kv > pred.kr else None
    hyper = _hyper_parts(pred, P, tri)
    _log_diag_chain(pred, P, ev, tri, Hvv, [Hcross] + ([fixed[2]] if fixed is not None else [])
                    + [hv for _, _, hv in hyper])
    out = _assemble(pred, layout, Hphiphi, Hcross, Hvv, fixed, hyper)
    if pred.global_terms:        # canonical coefficients (the others went to fd_blocks above)
        _global_columns(prob, P, layout, out)
    if pred.group_terms:
        out = _with_group_block(prob, P, layout, out)
    return out


#: most group-scope parameters whose Hessian columns are formed by differences
MAX_GROUP_COLUMNS = 20000


def _group_positions(layout):
    """Packed positions of the group-scope terms: (model ones (their sds), variational ones)."""
    pred = layout.predictor
    model, var = [], []
    for t in pred.group_terms:
        for slot in t.slots(pred):
            sl = layout.slices[slot.name]
            (model if slot.model else var).extend(range(sl.start, sl.stop))
    return np.array(model, dtype=int), np.array(var, dtype=int)


def _with_group_block(prob, P, layout, hb, rel_step=1e-5):
    """Add the group-scope terms' rows and columns to the Hessian blocks.

    Their columns are forward differences of the analytic packed gradient (one gradient
    evaluation per group parameter: 2 G + 1 for G levels with q by level, more for the
    joint q's Cholesky factors), symmetrised. The levels' means and log sds are appended to the
    model block as ``n_extra`` rows, eliminated after the sites by the caller
    (``jsdm.results.inference``).
    """
    from .objective import evaluate

    gm, gv = _group_positions(layout)
    cols = np.concatenate([gm, gv])
    if len(cols) > MAX_GROUP_COLUMNS:
        from ..exceptions import JSDMError
        raise JSDMError(
            f"standard errors with grouped site effects need {len(cols)} Hessian columns for "
            f"the groupings' {len(cols)} parameters (two gradient evaluations each), more than "
            f"jsdm.model.hessian.MAX_GROUP_COLUMNS = {MAX_GROUP_COLUMNS}; raise it if the time "
            "is acceptable.")
    x0 = layout.pack(P)
    g0 = layout.pack_grad(evaluate(prob, P).grad, P)
    Hc = np.empty((layout.size, len(cols)))
    for k, c in enumerate(cols):       # forward differences: one gradient per column (the
        h = rel_step * max(1.0, abs(x0[c]))     # O(h) = 1e-5 relative error is far below
        x = x0.copy()                           # what standard errors need)
        x[c] += h
        Q = layout.unpack(x)
        Hc[:, k] = (layout.pack_grad(evaluate(prob, Q).grad, Q) - g0) / h
    Pn, E = hb.Hpp.shape[0], len(gv)     # the (extended) model block, then the group's
    n, q = hb.Hvv.shape[0], hb.Hvv.shape[1]
    Hpp = np.zeros((Pn + E, Pn + E))
    Hpp[:Pn, :Pn] = hb.Hpp
    new = np.concatenate([gm, Pn + np.arange(E)])          # rows/cols of the group parameters
    model_rows = np.arange(Pn)
    Hpp[np.ix_(model_rows, new)] = Hc[:Pn, :]
    Hpp[np.ix_(new, model_rows)] = Hc[:Pn, :].T
    block = Hc[cols, :]
    Hpp[np.ix_(new, new)] = 0.5 * (block + block.T)
    Hpv = np.zeros((Pn + E, n, q))
    Hpv[:Pn] = hb.Hpv
    if q:
        site = Hc[hb.site_pos.reshape(-1), :].reshape(n, q, len(cols))     # (n, q, k)
        Hpv[new] = np.transpose(site, (2, 0, 1))
    return HessianBlocks(Hpp, Hpv, hb.Hvv, hb.site_pos, n_extra=E)
def global_positions(layout):
    """Packed positions of the terms' global model coordinates (canonical coefficients)."""
    pred, pos = layout.predictor, positions(layout)
    out = [np.asarray(getattr(pos, f)).ravel() for t in pred.global_terms
           for f in t.global_fields(pred)]
    return np.concatenate(out).astype(int) if out else np.zeros(0, dtype=int)


def _global_columns(prob, P, layout, blocks, h=1e-5):
    """Rows and columns of the global model coordinates by central differences of the
    analytic packed gradient (two gradient evaluations per coordinate; there are few:
    p_lv x d canonical coefficients). Everything else stays analytic."""
    gpos = global_positions(layout)
    x0 = layout.pack(P)
    Pn = layout.n_model
    cols = np.empty((len(gpos), layout.size))
    for r, k in enumerate(gpos):
        step = h * max(1.0, abs(x0[k]))
        g = []
        for sgn in (1.0, -1.0):
            x = x0.copy()
            x[k] += sgn * step
            Q = layout.unpack(x)
            g.append(layout.pack_grad(evaluate(prob, Q).grad, Q))
        cols[r] = (g[0] - g[1]) / (2.0 * step)
    cols[:, gpos] = 0.5 * (cols[:, gpos] + cols[:, gpos].T)
    blocks.Hpp[gpos, :] = cols[:, :Pn]
    blocks.Hpp[:, gpos] = cols[:, :Pn].T
    sp = blocks.site_pos
    for r, k in enumerate(gpos):
        blocks.Hpv[k] = cols[r][sp]




def _fixed_site_parts(pred, P, E, Jphi, Jpsi):
    """Site-local model coordinates (fixed row effects): m linear in them, no second-order terms.

    Returns (Haa (n, kf, kf), Hap (n, m, kf, k_phi), Hav (n, kf, q)).
    """
    UF = pred.site_design(P)[:, pred.kr:]                         # (m, kf)
    Ka = {"m": E["mm"], "v": E["mv"], "s": E.get("ms")}
    Ka.update({c: E["m" + c] for c in s_channels(P.s) if c != "s"})
    Haa = np.einsum("ij,jk,jl->ikl", Ka["m"], UF, UF)
    Hap = sum(Ka[b][:, :, None, None] * UF[None, :, :, None] * Jphi[b][:, :, None, :]
              for b in Jphi if Jphi.get(b) is not None)
    Hav = sum(np.einsum("ij,jk,ijq->ikq", Ka[b], UF, Jpsi[b]) for b in ("m", "v"))
    return Haa, Hap, np.asarray(Hav, dtype=float)


def _hyper_parts(pred, P, tri):
    """[(fields, H_hh (h, h), H_hv (n, h, q))] of the terms' hyperparameters (raw L scale)."""
    out = []
    if not pred.hyper_terms:
        return out
    kr = pred.kr
    mu = pred.site_means(P)
    tpos = {(r, c): kr + k for k, (r, c) in enumerate(zip(*tri))}
    for t, sl in pred.hyper_terms:
        cur = t.hyper_curvature(pred, P, mu[:, sl], P.L[:, sl, :])
        h = len(t.hyper_fields)
        Hv = np.zeros((pred.n, h, kr + len(tri[0])))
        Hv[:, :, sl] = cur["hmu"]
        for a, r in enumerate(range(sl.start, sl.stop)):
            for c in range(r + 1):
                Hv[:, :, tpos[(r, c)]] = cur["hL"][:, :, a, c]
        out.append((t.hyper_fields, cur["hh"], Hv))
    return out


def _assemble(pred, layout, Hphiphi, Hcross, Hvv, fixed, hyper):
    """Scatter the local blocks into (Hpp, Hpv, Hvv) in packed order."""
    n, Pn = pred.n, layout.n_model
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
    if fixed is not None:
        Haa, Hap, Hav = fixed
        fpos = _fixed_site_positions(layout)                      # (n, kf)
        for a in range(fpos.shape[1]):
            live = np.flatnonzero(fpos[:, a] >= 0)
            ap = fpos[live, a]
            for b in range(fpos.shape[1]):
                bl = fpos[live, b]
                okb = bl >= 0
                Hpp[ap[okb], bl[okb]] = Haa[live[okb], a, b]
            blk = np.zeros((len(live), Pn))
            np.add.at(blk, (slice(None), pos[ok]), Hap[live][:, :, a, :][:, ok])
            Hpp[ap, :] += blk
            Hpp[:, ap] += blk.T
            for b in range(fpos.shape[1]):       # the site's own block (set, not added twice)
                bl = fpos[live, b]
                okb = bl >= 0
                Hpp[ap[okb], bl[okb]] = Haa[live[okb], a, b]
            Hpv[ap, live, :] = Hav[live, a, :]
    P = positions(layout)
    for fields, hh, hv in hyper:
        hp = np.array([int(getattr(P, f)) for f in fields])
        Hpp[np.ix_(hp, hp)] = hh
        Hpv[hp] = np.transpose(hv, (1, 0, 2))
    return HessianBlocks(Hpp, Hpv, Hvv, site_positions(layout))
