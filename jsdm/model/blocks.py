"""Block Newton updates that exploit the model's structure.

Given the species parameters, the ELBO separates over sites; given the site
(variational) parameters, it separates over species. Each block update below
is a batch of small Newton steps, one per site or per species, computed with
matrix products and accepted per site/species only where the ELBO increases.
The blocks are assembled from the terms by ``prob.predictor`` (see
``jsdm.model.terms.predictor``): site coordinates u_i with species design U (m, kv)
(kr random ones first, with prior precision Pr), species coordinates phi_j with
site design Xt (n, ks).

Site step (exact Hessian in the means, since d2 ell/dm2 = 2 d ell/dv):
    u_i <- u_i + Lambda_i^-1 (sum_j Gm_ij U_j - Pr u_i),  Sigma_i <- (Lambda_i^RR)^-1,
    Lambda_i = Pr - 2 sum_j Gv_ij U_j U_j'
(the second is the fixed point of dELBO/dSigma_i = 0, jointly over all the site's
random coordinates: latent variables and random row effects share one q). Species
step: a Newton step in phi_j with the Gauss-Newton-type Hessian
    sum_i 2 Gv_ij x_i x_i' + (loadings block) 2 sum_i Gv_ij Sigma_i^(LV),  x_i = Xt_i,
and a Newton step for the dispersion (one-dimensional, or a q x q solve per
species for a vector dispersion such as ordinal cut points).
"""
import numpy as np

from .._numerics import safe_solve

from . import penalty
from .objective import cell_eval, gradient_from, moments
from .params import S_BOUNDS

_NHALF = 6


def _chol_inv(S):
    """Cholesky factor of S^-1 for a batch of SPD matrices S (k, d, d)."""
    Sinv = np.linalg.inv(S)
    Sinv = 0.5 * (Sinv + np.swapaxes(Sinv, 1, 2))
    return np.linalg.cholesky(Sinv), Sinv


def site_step(prob, P, ce):
    """One batched Newton step over sites; returns (P_new, cell_eval at P_new)."""
    pred = prob.predictor
    n, m, kv, kr = pred.n, pred.m, pred.kv, pred.kr
    if kv == 0:
        return P, ce
    Gm, Gv = ce["Gm"], ce["Gv"]
    U = pred.site_design(P)
    U2 = (U[:, :, None] * U[:, None, :]).reshape(m, kv * kv)
    H = -(2.0 * Gv @ U2).reshape(n, kv, kv)          # minus Hessian of the ell part
    g = Gm @ U
    mu = pred.site_means(P)
    if kr:
        pr = pred.prior_precision(P)
        idx = np.arange(kr)
        H[:, idx, idx] += pr
        g[:, :kr] -= pr * mu[:, :kr]
    for i, k in pred.pinned:
        g[i, k] = 0.0
        H[i, k, :] = H[i, :, k] = 0.0
        H[i, k, k] = 1.0
    step = safe_solve(H, g)
    new = P.copy()
    if kr:
        new.L, _ = _chol_inv(H[:, :kr, :kr])
    return _accept_sites(prob, P, new, step, mu, ce)


def _accept_sites(prob, P, new, step, mu, ce):
    pred = prob.predictor
    frac = np.ones(prob.n)
    for it in range(_NHALF + 1):
        T = new.copy()
        pred.set_site_means(T, mu + frac[:, None] * step)
        if it > 0:  # after a failed full step, keep the old covariances where it failed
            keep = frac < 1.0
            T.L[keep] = P.L[keep]
        ct = cell_eval(prob, T, 2 if P.s is not None else 1)   # order 2: the species step's
        bad = ~(ct["site"] >= ce["site"] - 1e-10 * np.abs(ce["site"]))   # dispersion step
        if not bad.any():
            return T, ct
        frac = np.where(bad, frac * 0.5 if it < _NHALF - 1 else 0.0, frac)
    return T, ct


def bilinear_pair(pred):
    """(species slice, site slice) of the bilinear term (latent variables), or None."""
    if not pred.bilinear:
        return None
    if len(pred.bilinear) > 1:
        raise NotImplementedError("the Newton steps handle one bilinear term (latent variables)")
    return pred.bilinear[0]


def species_system(prob, P, ce):
    """The species step's gradient g (m, k) and minus Hessian H (m, k, k): sums over sites
    (a cluster fit adds them over its chunks)."""
    pred = prob.predictor
    n, m = pred.n, pred.m
    Gm, Gv = ce["Gm"], ce["Gv"]
    Xt = pred.species_design(P)
    k = Xt.shape[1]
    g = Gm.T @ Xt
    X2 = (Xt[:, :, None] * Xt[:, None, :]).reshape(n, k * k)
    H = -(2.0 * Gv.T @ X2).reshape(m, k, k)
    pair = bilinear_pair(pred)
    if pair is not None:
        sp, si = pair
        kr = pred.kr
        S2 = pred.site_cov2(P)
        UR = pred.site_design(P, random_only=True)
        Q = (Gv.T @ S2).reshape(m, kr, kr)                 # sum_i Gv Sigma_i
        g[:, sp] += 2.0 * np.einsum("jkl,jl->jk", Q[:, si, :], UR)
        H[:, sp, sp] -= 2.0 * Q[:, si, si]
    return g, H


def species_regularise(prob, P, g, H):
    """The species system (``species_system``, summed over sites) completed with what is not
    a sum over sites: the penalty, the species random effects' prior, held entries, a ridge.
    Returns (g, H, the species random effects' new covariance factors or None)."""
    pred = prob.predictor
    k = H.shape[-1]
    pen = penalty.species_curvature(prob)                   # penalty (prior_sd)
    if pen is not None:
        H += np.diag(pen)
        g += penalty.species_gradient(prob, P)
    Lsp = species_random_prior(pred, P, g, H, sign=1.0)     # species random effects
    fixed = ~pred.free
    if fixed.any():
        jj, kk = np.nonzero(fixed)
        g[jj, kk] = 0.0
        H[jj, kk, :] = 0.0
        H[jj, :, kk] = 0.0
        H[jj, kk, kk] = 1.0
    H += 1e-10 * np.eye(k)
    return g, H, Lsp


def species_step(prob, P, ce, only_dispersion=False, order=1):
    """One batched Newton step over species; returns (P_new, cell_eval at P_new)."""
    pred = prob.predictor
    g, H = species_system(prob, P, ce)
    g, H, Lsp = species_regularise(prob, P, g, H)
    shared = P.s is not None and prob.family.shared_dispersion
    if shared and only_dispersion:
        return shared_dispersion_step(prob, P, ce, order)
    step = np.zeros_like(g) if only_dispersion else safe_solve(H, g)
    ds = None
    if P.s is not None and not shared:
        if ce["gss"] is None:
            ce = cell_eval(prob, P, order=2)
        ds = dispersion_step(*hold_fixed(ce["gs"], ce["gss"], prob.s_free), 1.0)
        ds = np.clip(ds, -2.0, 2.0)
    P, ce = _accept_species(prob, P, step, ds, ce, order, Lsp)
    if pred.ksr:                    # closed-form prior (Sigma, gamma) of the species random effects
        P = P.copy()
        pred.species_hyper_update(P)
        ce = cell_eval(prob, P, order)
    if shared:
        P, ce = shared_dispersion_step(prob, P, ce, order)
    return P, ce


def species_random_prior(pred, P, g, H, sign=1.0):
    """Add the species random effects' prior to a species-block gradient g (m, ks) and
    curvature H (m, ks, ks) in place (``sign`` 1: H is minus the Hessian; -1: the Hessian);
    returns the Cholesky factors of the species q's fixed point (Lambda_j^-1) or None."""
    if not pred.ksr:
        return None
    r, prec, _ = pred.species_random_residual(P)
    c = pred.sr_cols
    g[:, c] -= r @ prec
    H[np.ix_(np.arange(pred.m), c, c)] += sign * prec
    if sign < 0:
        return None
    # the random block of H is now Lambda_j = Sigma^-1 - 2 sum_i Gv_ij z_i z_i': S_j = Lambda_j^-1
    Lam = H[np.ix_(np.arange(pred.m), c, c)]
    return _chol_inv(Lam)[0]


def hold_fixed(gs, gss, free):
    """(gs, gss) with the held entries of a vector dispersion (``free`` False) given zero
    gradient and unit curvature, so that Newton steps leave them and solve for the others."""
    if free is None or gss is None or gs.ndim != 2:
        return gs, gss
    gs = np.where(free, gs, 0.0)
    both = free[:, :, None] & free[:, None, :]
    gss = np.where(both, gss, 0.0) - np.where(~free, 1.0, 0.0)[:, :, None] * np.eye(free.shape[1])
    return gs, gss


def shared_dispersion_step(prob, P, ce, order=1):
    """Newton step in a dispersion shared by all species (s of shape (1, q), a global
    parameter), halved until the ELBO of all cells together does not fall.

    Returns (P, cell_eval at P).
    """
    if ce["gss"] is None:
        ce = cell_eval(prob, P, order=2)
    ds = np.clip(dispersion_step(ce["gs"], ce["gss"], 1.0), -2.0, 2.0)
    old = float(ce["site"].sum())
    t = 1.0
    for _ in range(_NHALF + 1):
        T = P.copy()
        T.s = np.clip(P.s + t * ds, *S_BOUNDS)
        ct = cell_eval(prob, T, order)
        if float(ct["site"].sum()) >= old - 1e-12 * abs(old):
            return T, ct
        t *= 0.5
    return P, ce


def dispersion_step(gs, gss, fallback):
    """Newton step in each species' dispersion, -gss^-1 gs, from summed derivatives.

    Parameters
    ----------
    gs : ndarray (m,) or (m, q)
        d ELBO / ds per species.
    gss : ndarray (m,) or (m, q, q)
        d2 ELBO / ds2 per species.
    fallback : float
        Size of the step along sign(gs) where the curvature is not negative.

    Returns
    -------
    ndarray, the shape of ``gs``. For a vector dispersion the q x q system is
    solved where -gss is positive definite; other species take the scalar rule
    coordinate by coordinate (Newton on the diagonal where it is negative,
    else ``fallback`` along the sign of the gradient).
    """
    if gs.ndim == 1:
        return np.where(gss < 0, -gs / np.minimum(gss, -1e-12), np.sign(gs) * fallback)
    dg = np.diagonal(gss, axis1=-2, axis2=-1)
    ds = np.where(dg < 0, -gs / np.minimum(dg, -1e-12), np.sign(gs) * fallback)
    neg = -0.5 * (gss + np.swapaxes(gss, -1, -2))
    ok = np.isfinite(neg).all(axis=(-2, -1)) & np.isfinite(gs).all(axis=-1)
    if ok.any():
        w = np.linalg.eigvalsh(neg[ok])
        spd = np.zeros_like(ok)
        spd[ok] = w[:, 0] > 1e-10 * np.maximum(w[:, -1], 1e-300)
        if spd.any():
            ds[spd] = np.linalg.solve(neg[spd], gs[spd][..., None])[..., 0]
    return np.where(np.isfinite(ds), ds, 0.0)


_POLISH_CELLS = 2_000_000     # cells per batch of species in ``polish_dispersion``


def polish_dispersion(prob, P, ce, tol, max_iter=30):
    """Newton iterations on the dispersions of the species whose scaled gradient exceeds ``tol``.

    A rare species' dispersion can sit where its ELBO is not concave in s (phi
    far too small or large for its few non-zero counts); one joint step per
    outer iteration then crawls there. Here only those species' columns are
    evaluated (the means and variances do not depend on s), each iterating with
    its own step halving until its scaled gradient |g| / sqrt(max(-h, 1)) is
    below ``tol / 10``. Scalar dispersions only (vector ones are returned as they
    are). ``ce`` (a ``cell_eval`` result at P with "gss") is updated in place for
    the species changed; returns (P, ce).
    """
    if P.s is None or np.ndim(P.s) != 1 or ce.get("gss") is None:
        return P, ce
    lo, hi = S_BOUNDS
    gs_all = ce["gs"]

    def scaled(s, gs, gss):
        pushing = ((s <= lo) & (gs < 0)) | ((s >= hi) & (gs > 0))
        return np.where(pushing, 0.0, np.abs(gs)) / np.sqrt(np.maximum(-gss, 1.0))

    J = np.nonzero(scaled(P.s, gs_all, ce["gss"]) > tol)[0]
    if not J.size:
        return P, ce
    S2 = prob.predictor.site_cov2(P) if prob.predictor.kr else None
    s_new = P.s.copy()
    batch = max(1, _POLISH_CELLS // max(prob.n, 1))
    for b in range(0, J.size, batch):
        cols = J[b:b + batch]
        _polish_columns(prob, P, ce, cols, S2, s_new, scaled, tol / 10.0, max_iter)
    P = P.copy()
    P.s = s_new
    return P, ce


def _polish_columns(prob, P, ce, cols, S2, s_new, scaled, tol, max_iter):
    """``polish_dispersion`` for one batch of species; writes s_new[cols] and ce's columns."""
    M, V = moments(prob, P, cols=cols, S2=S2)
    Y, W = prob.Y[:, cols], prob.W[:, cols]
    tr = None if prob.trials is None else prob.trials[:, cols]

    def ev(idx, s):
        with np.errstate(over="ignore", invalid="ignore"):
            return prob.family.ell(Y[:, idx], M[:, idx], V[:, idx], s,
                                   None if tr is None else tr[:, idx], order=2)

    allc = np.arange(cols.size)
    e = ev(allc, P.s[cols])
    old_val = W * e.value
    cur = {"val": old_val.copy(), "dm": np.asarray(e.d_m) * W, "dv": np.asarray(e.d_v) * W}
    s = P.s[cols].copy()
    val = old_val.sum(0)
    gs, gss = (W * e.d_s).sum(0), (W * e.d_ss).sum(0)
    mult = np.ones(cols.size)
    for _ in range(max_iter):
        live = np.nonzero((scaled(s, gs, gss) > tol) & (mult > 1e-3))[0]
        if not live.size:
            break
        step = np.clip(dispersion_step(gs[live], gss[live], 1.0), -2.0, 2.0) * mult[live]
        trial = np.clip(s[live] + step, *S_BOUNDS)
        e = ev(live, trial)
        tv = W[:, live] * e.value
        tsum = tv.sum(0)
        ok = np.isfinite(tsum) & (tsum >= val[live] - 1e-12 * np.abs(val[live]))
        acc, rej = live[ok], live[~ok]
        mult[rej] *= 0.5
        mult[acc] = 1.0
        if acc.size:
            s[acc], val[acc] = trial[ok], tsum[ok]
            Wa = W[:, acc]
            gs[acc] = (Wa * e.d_s[:, ok]).sum(0)
            gss[acc] = (Wa * e.d_ss[:, ok]).sum(0)
            cur["val"][:, acc] = tv[:, ok]
            cur["dm"][:, acc] = Wa * e.d_m[:, ok]
            cur["dv"][:, acc] = Wa * e.d_v[:, ok]
    moved = s != P.s[cols]
    if not moved.any():
        return
    c, k = cols[moved], np.nonzero(moved)[0]
    s_new[c] = s[k]
    ce["site"] += (cur["val"][:, k] - old_val[:, k]).sum(1)
    ce["species"][c] = val[k]
    ce["gs"][c], ce["gss"][c] = gs[k], gss[k]
    ce["Gm"][:, c] = cur["dm"][:, k]
    gv = cur["dv"][:, k]
    if ce["clip"]:
        if (gv > 0.0).any():
            ce["clipped"] = True
        gv = np.minimum(gv, 0.0)
    ce["Gv"][:, c] = gv


def _accept_species(prob, P, step, ds, ce, order=1, Lsp=None):
    pred = prob.predictor
    phi = pred.species_coef(P)
    frac = np.ones(prob.m)
    for it in range(_NHALF + 1):
        T = P.copy()
        pred.set_species_coef(T, phi + frac[:, None] * step)
        if Lsp is not None:         # the species q's covariance: new where the full step holds
            T.Lsp = np.where((frac < 1.0)[:, None, None], P.Lsp, Lsp)
        if ds is not None:
            T.s = np.clip(P.s + (frac if ds.ndim == 1 else frac[:, None]) * ds, *S_BOUNDS)
        ct = cell_eval(prob, T, order)
        bad = ~(ct["species"] >= ce["species"] - 1e-10 * np.abs(ce["species"]))
        if not bad.any():
            return T, ct
        frac = np.where(bad, frac * 0.5 if it < _NHALF - 1 else 0.0, frac)
    return T, ct


def ascend(step, prob, P, max_iter, rtol, callback=None, done=None):
    """Repeat ``step(P, ce) -> (P, ce)`` until the ELBO changes by at most rtol (relative).

    ``done(P, ce) -> bool``, when given, is asked after every step and ends the
    loop when true. Returns (P, history) with history a list of (iteration, ELBO).
    """
    ce = cell_eval(prob, P)
    hist, prev = [], float(ce["site"].sum())
    for it in range(max_iter):
        P, ce = step(P, ce)
        val = float(ce["site"].sum())
        hist.append((it + 1, val))
        if callback is not None:
            callback(it + 1, val)
        if abs(val - prev) <= rtol * (1.0 + abs(val)) or (done is not None and done(P, ce)):
            break
        prev = val
    return P, hist


def group_step(prob, P, ce):
    """Newton steps on the group-scope terms' levels (``(1 | plot)``), one term at a time.

    Per block (a level; for nested groupings a top level with everything nested in it)
    the term gives a Newton step in the means (exact: d2 ell / dm2 = 2 d ell / dv) and
    the fixed point of its covariance, Lambda^-1 with Lambda = prior precision
    - 2 sum_{i in block, j} G_v,ij z_i z_i'; accepted per block where the ELBO of the
    block's sites does not fall (the mean step halved otherwise, the covariance kept);
    then the sds in closed form. Returns (P, cell_eval).
    """
    pred = prob.predictor
    order = 2 if P.s is not None else 1
    for t in pred.group_terms:
        codes, G = t.codes(pred), t.n_levels(pred)
        step, new_cov = t.newton(pred, P, ce["Gm"], ce["Gv"])
        old = np.bincount(codes, ce["site"], minlength=G)
        frac = np.ones(G)
        for it in range(_NHALF + 1):
            T = P.copy()
            t.apply_step(P, T, frac, step, new_cov)
            ct = cell_eval(prob, T, order)
            new = np.bincount(codes, ct["site"], minlength=G)
            bad = ~(new >= old - 1e-10 * np.abs(old))
            if not bad.any():
                break
            frac = np.where(bad, frac * 0.5 if it < _NHALF - 1 else 0.0, frac)
        P, ce = T, ct
        T = P.copy()
        t.hyper_update(pred, T)
        ct = cell_eval(prob, T, order)
        if ct["site"].sum() >= ce["site"].sum():
            P, ce = T, ct
    return P, ce


def global_step(prob, P, ce):
    """A Newton step in the global coefficients that enter the cells (community slopes, the
    fourth corner, canonical coefficients of constrained / concurrent ordination), one term
    at a time, halved until the ELBO does not fall. ``Term.global_newton`` gives the
    gradient and the Hessian in the term's global fields (``global_fields``; default: all
    its fields), flattened in that order."""
    pred = prob.predictor
    order = 2 if P.s is not None else 1
    for t in pred.global_terms:
        g, H = t.global_newton(pred, P, ce["Gm"], ce["Gv"])
        g = np.ravel(g)
        scale = 1.0 + np.abs(np.diag(H)).max() if len(g) else 1.0
        step = safe_solve(-H + 1e-10 * scale * np.eye(len(g)), g)
        old = float(ce["site"].sum())
        fields = t.global_fields(pred) or tuple(t.fields(pred))
        frac = 1.0
        for _ in range(_NHALF + 1):
            T = P.copy()
            at = 0
            for f in fields:
                cur = np.asarray(getattr(P, f), dtype=float)
                setattr(T, f, cur + frac * step[at:at + cur.size].reshape(cur.shape))
                at += cur.size
            with np.errstate(over="ignore", invalid="ignore"):
                ct = cell_eval(prob, T, order)
            val = float(ct["site"].sum())
            if np.isfinite(val) and val >= old - 1e-12 * abs(old):
                P, ce = T, ct
                break
            frac *= 0.5
    return P, ce


def _sweep(prob, P, ce):
    P, ce = site_step(prob, P, ce)
    if prob.predictor.group_terms:
        P, ce = group_step(prob, P, ce)
    if prob.predictor.global_terms:
        P, ce = global_step(prob, P, ce)
    return species_step(prob, P, ce)


def squarem_ascent(prob, layout, P, max_iter=500, rtol=1e-10, callback=None):
    """Block sweeps accelerated by SQUAREM extrapolation (Varadhan & Roland 2008).

    Each iteration takes two sweeps x1 = F(x0), x2 = F(x1), extrapolates
    x' = x0 - 2 a r + a^2 v (r = x1 - x0, v = x2 - 2 x1 + x0, a = -|r|/|v|),
    then one sweep from x'; the result is kept only if its ELBO beats x2's.
    """
    def step(P, ce):
        P1, c1 = _sweep(prob, P, ce)
        P2, c2 = _sweep(prob, P1, c1)
        del c1                            # (n, m) arrays: keep at most three sets alive
        x0, x1, x2 = layout.pack(P), layout.pack(P1), layout.pack(P2)
        r, v = x1 - x0, x2 - 2 * x1 + x0
        nv = np.linalg.norm(v)
        if nv == 0:
            return P2, c2
        alpha = min(-np.linalg.norm(r) / nv, -1.0)
        for _ in range(4):
            xs = np.clip(x0 - 2 * alpha * r + alpha ** 2 * v, *layout.bounds())
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                Ps = layout.unpack(xs)    # an extrapolated point may be wild: judged below
                cs = cell_eval(prob, Ps)
            if np.all(np.isfinite(cs["site"])):
                Ps, cs = _sweep(prob, Ps, cs)
                if cs["site"].sum() > c2["site"].sum():
                    return Ps, cs
            del cs
            alpha = (alpha - 1.0) / 2.0
        return P2, c2

    return ascend(step, prob, P, max_iter, rtol, callback)


def scaled_gradient(prob, layout, P, ce=None):
    """max_k |g_k| / sqrt(max(h_k, 1)) with h the curvature diagonal; bound-pushing parts left out.

    ``ce``: a ``cell_eval`` result at P to reuse (its Gm, Gv and, with a
    dispersion, "gss"); otherwise the cells are evaluated here.
    """
    if layout.size == 0:
        return 0.0
    if ce is None or ce["clipped"] or (P.s is not None and ce["gss"] is None):
        ce = cell_eval(prob, P, order=2 if P.s is not None else 1, clip=False)
    g = layout.pack_grad(gradient_from(prob, P, ce), P)
    return scaled_max(layout, P, g, curvature_diagonal(prob, layout, P, ce))


def scaled_max(layout, P, g, h):
    """max_k |g_k| / sqrt(max(h_k, 1)) for a packed gradient g and curvature diagonal h."""
    if not g.size:
        return 0.0
    return float((np.abs(layout.projected(layout.pack(P), g)) / np.sqrt(np.maximum(h, 1.0))).max())


def curvature_diagonal(prob, layout, P, ce=None):
    """Approximate diagonal of the negative Hessian in packed coordinates (for scaling).

    Per cell the curvature in m is C = -2 Gv >= 0; a coordinate with design x gets
    sum C x^2 (+ its prior precision), a loading also the variance part, an entry of L
    its row's precision (times L_kk^2 + 1 on the log-diagonal), a dispersion -d2/ds2,
    a hyperparameter what its term says. ``ce``: a ``cell_eval`` result at P to reuse
    (with "gss" when P has a dispersion).
    """
    from .params import Params

    if ce is None or (P.s is not None and ce["gss"] is None):
        ce = cell_eval(prob, P, order=2 if P.s is not None else 1)
    pred = prob.predictor
    C = -2.0 * ce["Gv"]                         # -d2 ell/dm2 per cell, >= 0
    G = pred.zeros()
    kr, kv = pred.kr, pred.kv
    if pred.ks:
        Xt = pred.species_design(P)
        hb = C.T @ Xt ** 2
        pair = bilinear_pair(pred)
        if pair is not None:
            S = P.L @ np.swapaxes(P.L, 1, 2)
            hb[:, pair[0]] += C.T @ np.diagonal(S, axis1=1, axis2=2)[:, pair[1]]
        pen = penalty.species_curvature(prob)               # penalty (prior_sd)
        if pen is not None:
            hb += pen
        if pred.ksr:                                        # species random effects
            prec, _, _ = pred.species_prior(P)
            hb[:, pred.sr_cols] += np.diag(prec)
            lam = C.T @ pred.species_random_design(P) ** 2 + np.diag(prec)     # (m, ksr)
            Lsq = P.Lsp ** 2
            G.Lsp = np.broadcast_to(lam[:, :, None], Lsq.shape).copy()
            idx = np.arange(pred.ksr)
            G.Lsp[:, idx, idx] = 1.0 + lam * Lsq[:, idx, idx]
            for t, _, _ in pred.species_random_terms:
                for k, v in t.curvature_hyper(pred, P).items():
                    setattr(G, k, v)
        pred.set_species_coef(G, hb)
    if kv:
        prec = C @ pred.site_design(P) ** 2     # precision diagonal of each site coordinate
        prec[:, :kr] += pred.prior_precision(P)
        pred.set_site_means(G, prec)
        if kr:
            n = pred.n
            Lsq = P.L ** 2
            G.L = np.broadcast_to(prec[:, :kr, None], (n, kr, kr)).copy()
            idx = np.arange(kr)
            G.L[:, idx, idx] = 1.0 + prec[:, :kr] * Lsq[:, idx, idx]   # log-diagonal scale
    for t, _ in pred.hyper_terms:
        for k, v in t.curvature_hyper(pred, P).items():
            setattr(G, k, v)
    for t in pred.group_terms:
        for k, v in t.curvature(pred, P, C).items():
            setattr(G, k, v)
    for t in pred.global_terms:
        for k, v in t.curvature_global(pred, P, C).items():
            setattr(G, k, v)
    for t in pred.nonlinear_terms:
        for k, v in t.curvature_extra(pred, P, C).items():
            setattr(G, k, v)
    if P.s is not None:
        gss = ce["gss"]
        G.s = np.maximum(-(gss if gss.ndim == 1 else np.diagonal(gss, axis1=1, axis2=2)), 1e-8)
    ones = {"L": np.ones_like(P.L)}
    if pred.ksr:
        ones["Lsp"] = np.ones_like(P.Lsp)
    h = layout.pack_grad(G, Params.from_fields({**P.fields(), **ones}))
    return np.maximum(h, 1e-8)
