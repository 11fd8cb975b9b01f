"""The in-memory engine's joint Newton iteration (``newton.newton_ascent``) mapped over the
chunks of sites of a cluster fit.

One iteration is the in-memory one, stage by stage, with every sum over sites reduced over
the chunks and every per-site update done where the sites live:

1. **means**: each chunk forms its part of the species system of the joint Newton step
   (``newton._species_blocks``, ``newton._site_blocks``, the operator ``newton._Schur``):
   the right-hand side g_b - C D^-1 g_u and the species-diagonal blocks of the Schur
   complement -(H_bb - C D^-1 C') (the preconditioner), O(m k^2) numbers. The driver solves
   -S db = rhs by preconditioned CG (one round trip per product S v, matrix products only,
   as ``newton_means`` does in memory); each chunk then takes its sites' step
   du_i = -D_i^-1 (g_u,i + C_i' db); the step is halved until the ELBO does not fall;
2. **covariances**: ``newton.covariance_step`` on each chunk (per site, local);
3. **gauge**: the latent variables' closed-form gauge step from the moments summed over
   the chunks (``latent.gauge_moment``, ``gauge_transform``), applied on the driver to the
   loadings and on the chunks to the sites; kept when the KL summed over chunks falls;
4. **dispersions**: the Newton step from the derivatives summed over the chunks
   (``blocks.dispersion_step``), halved per species until each species' ELBO does not fall
   (as ``blocks._accept_species``);
5. the scaled gradient (the engine's rule) from the gradient and curvature diagonal summed
   over the chunks, and each chunk's largest site value.

Each stage is a round trip whose messages are O(m (p + d)^2) numbers, independent of the
number of sites. The chunk's state between stages (its cell derivatives, the Schur
operator, a pending trial point) lives in the worker process; a chunk re-created after a
worker was lost has none, and its task raises :class:`JointStale`: the driver then leaves
this phase and the profiled driver (``distributed.fit_cluster``) goes on from the last
committed species parameters.
"""
import time

import numpy as np

from .. import _numerics
from .blocks import _NHALF, curvature_diagonal, dispersion_step, hold_fixed
from .newton import (_EXACT_FROM, _Schur, _apply, _coupling, _cross, _site_blocks,
                     _species_blocks, covariance_step, mv_curvature)
from .objective import cell_eval, gradient_from
from .params import S_BOUNDS

SWEEPS = 3              # block sweeps first (the in-memory engine starts with SQUAREM sweeps)
CHECK_GAIN = 1e-7       # the convergence check runs once an iteration gains at most this
#                         (relative, + 1) of the ELBO: near gtol the gain is ~ P gtol^2 / 2
JOINT_STEPS = 40        # joint iterations at most before the profiled driver takes over
CG_RTOL, CG_MAXITER = 1e-4, 200     # as ``newton._Schur.solve_cg`` in memory
_ROWS = 500             # sites per block when the preconditioner's blocks are summed


class JointStale(Exception):
    """A chunk lacks the joint phase's state (re-created after a worker was lost)."""


# (fit token, chunk index) -> {"P": Params the state belongs to, "ce": cell derivatives at P,
#  "op": Schur operator, "gu": site gradient, "pending": (Params, ce) of a trial point}
_STATE = {}


def _order(P):
    return 2 if P.s is not None else 1


def _state(key, P):
    st = _STATE.get(key)
    if st is None or st["P"] is not P:
        raise JointStale(f"chunk {key[1]} has no joint-phase state")
    return st


def supported(cluster):
    """Whether the joint phase applies: the driver's vector holds only species coefficients
    and per-species dispersions (no random row-effect sd, no shared dispersion)."""
    from .distributed import global_slots, template_layout

    spec = cluster.specs[0]
    _, prob = template_layout(spec.model, len(spec.model["terms"]))
    pred = prob.predictor
    if pred.hyper_terms or pred.global_terms or pred.group_terms or pred.ksr or not pred.ks:
        return False
    if prob.family.shared_dispersion if hasattr(prob.family, "shared_dispersion") else False:
        return False
    fields = {s.field for s in global_slots(cluster.layout)}
    coef = {"beta0", "B", "theta"}
    return fields <= coef | {"s"}


# --- worker tasks (wrapped by distributed.on_sites: ``fn(chunk, P, *args)``) -----------------
def joint_init(chunk, P, key, x):
    """The chunk's cells at its sites and the driver's x; returns the ELBO, sum tr(A), n."""
    from .distributed import Updated, put_global

    Q = put_global(chunk.layout, P, x)
    ce = cell_eval(chunk.prob, Q, _order(Q))
    _STATE[key] = {"P": Q, "ce": ce}
    return Updated(Q, _summary(Q, ce))


def _summary(P, ce):
    A = P.A
    return {"value": float(ce["site"].sum()), "n": P.a.shape[0],
            "trA": float(np.trace(A, axis1=1, axis2=2).sum()) if A.size else 0.0}


def joint_prepare(chunk, P, key, exact):
    """The chunk's part of the joint Newton step's species system: the right-hand side
    g_b - C D^-1 g_u and the species-diagonal blocks of -(H_bb - C D^-1 C'), (m, ks[, ks])."""
    st = _state(key, P)
    prob = chunk.prob
    pred = prob.predictor
    ce = st["ce"]
    Xt, U = pred.species_design(P), pred.site_design(P)
    free = pred.free.astype(float)
    cpl = _coupling(prob, P)
    if cpl is not None and exact:
        Emv, Evv = mv_curvature(prob, P, ce)
        ce = {**ce, "Emv": Emv, "Evv": Evv}
    Hbb, gb = _species_blocks(prob, P, ce, Xt, cpl)
    D, gu = _site_blocks(prob, P, ce, U)
    Dinv = np.linalg.inv(D)
    op = _Schur(prob, ce, Xt, U, free, Hbb, Dinv, cpl)
    rhs = gb * free - op.c(op.dinv(gu))
    B = -Hbb
    for start in range(0, pred.n, _ROWS):
        rows = slice(start, min(pred.n, start + _ROWS))
        C = _cross(prob, ce, Xt, U, rows, free, cpl)
        B += np.einsum("jkil,ilq,jriq->jkr", C, Dinv[rows], C, optimize=True)
    st["op"], st["gu"] = op, gu
    st.pop("du", None)
    return {"rhs": rhs, "B": B}


def joint_product(chunk, P, key, v):
    """The chunk's part of -(H_bb - C D^-1 C') v (as ``newton._Schur.neg_schur`` on free entries)."""
    op = _state(key, P).get("op")
    if op is None:
        raise JointStale(f"chunk {key[1]} has no Schur operator")
    hx = np.einsum("jkl,jl->jk", op.Hbb, v * op.free)
    return (op.c(op.dinv(op.ct(v))) - hx) * op.free


def joint_trial(chunk, P, key, db, t):
    """The joint step (species db, the chunk's sites du = -D^-1 (g_u + C' db)) at length t:
    the trial point's cells are kept pending; returns its ELBO part."""
    st = _state(key, P)
    if "du" not in st:
        op = st.get("op")
        if op is None:
            raise JointStale(f"chunk {key[1]} has no Schur operator")
        st["du"] = -op.dinv(st["gu"] + op.ct(db))
        st["op"] = None         # the CG is done: its arrays (E_mv, E_vv, D^-1) go
        del op
    T = _apply(chunk.prob, P, db, st["du"], t)
    st["pending"] = None            # (the last trial's arrays go before the next are made)
    ct = cell_eval(chunk.prob, T, _order(T))
    st["pending"] = (T, ct)
    return float(ct["site"].sum())


def _settle(key, P, accept):
    """Take the chunk's pending trial point (``accept``) or stay at its last one: (P, ce),
    with the chunk's state reset to them (the operator and the trial's arrays go)."""
    st = _state(key, P)
    if accept:
        if st.get("pending") is None:
            raise JointStale(f"chunk {key[1]} has no pending step")
        P, ce = st["pending"]
    else:
        ce = st["ce"]
    _STATE[key] = {"P": P, "ce": ce}
    return P, ce


def joint_covariance(chunk, P, key, accept):
    """Take the pending means step (``accept``) or stay; then the covariance step
    (``newton.covariance_step``, per site). Returns the sums the gauge and dispersion steps
    need: n, sum a_i, the per-species ELBO and dispersion derivatives."""
    from .distributed import Updated

    P, ce = _settle(key, P, accept)
    st = _STATE[key]
    new, ct = covariance_step(chunk.prob, P, ce)
    st["P"], st["ce"] = new, ct
    out = {"value": float(ct["site"].sum()), "n": new.a.shape[0], "sa": new.a.sum(0),
           "species": ct["species"], "gs": ct["gs"], "gss": ct["gss"]}
    return Updated(new, out)


def joint_sweep_sites(chunk, P, key):
    """The sweep's site step (``blocks.site_step``, per site) and the chunk's part of the species
    step's system (``blocks.species_system``) at the new sites."""
    from .blocks import site_step, species_system
    from .distributed import Updated

    st = _state(key, P)
    new, ct = site_step(chunk.prob, P, st["ce"])
    _STATE[key] = {"P": new, "ce": ct}
    g, H = species_system(chunk.prob, new, ct)
    return Updated(new, {"g": g, "H": H, "species": ct["species"], "gs": ct["gs"],
                         "gss": ct["gss"], "value": float(ct["site"].sum())})


def joint_moment(chunk, P, key, abar):
    """The chunk's part of the gauge step's second moment (``latent.gauge_moment``)."""
    from .terms.latent import gauge_moment

    _state(key, P)
    return gauge_moment(P, abar)


def joint_gauge_dispersion(chunk, P, key, x, abar, tr):
    """The trial point of the gauge and dispersion stages: the driver's species vector x (the
    gauge-transformed loadings and intercepts, the trial dispersions), the gauge map on the
    chunk's sites (``tr`` None: no gauge step). Its cells are kept pending; returns the
    change of the KL terms and the per-species ELBO."""
    from .distributed import put_global
    from .terms.latent import gauge_sites

    st = _state(key, P)
    T = put_global(chunk.layout, P, x)
    dkl = 0.0
    if tr is not None:
        gauge_sites(P, T, abar, tr)
        pred = chunk.prob.predictor
        dkl = float(pred.kl(P).sum() - pred.kl(T).sum())
    st["pending"] = None
    ct = cell_eval(chunk.prob, T, _order(T))
    st["pending"] = (T, ct)
    return {"dkl": dkl, "species": ct["species"], "value": float(ct["site"].sum()),
            "gs": ct["gs"], "gss": ct["gss"]}


def _polish_moments(chunk, st, P, cols):
    """Means and variances of the chunk's cells in the species ``cols`` (kept while they are
    the ones polished)."""
    from .objective import moments

    got = st.get("polish")
    if got is not None and np.array_equal(got[0], cols):
        return got[1], got[2]
    pred = chunk.prob.predictor
    M, V = moments(chunk.prob, P, cols=cols, S2=pred.site_cov2(P) if pred.kr else None)
    st["polish"] = (np.array(cols), M, V)
    return M, V


def _columns_ell(chunk, M, V, cols, idx, s):
    prob = chunk.prob
    tr = None if prob.trials is None else prob.trials[:, cols[idx]]
    with np.errstate(over="ignore", invalid="ignore"):
        e = prob.family.ell(prob.Y[:, cols[idx]], M[:, idx], V[:, idx], s, tr, order=2)
    return e, prob.W[:, cols[idx]]


def joint_polish_eval(chunk, P, key, cols, live, s):
    """The chunk's sums over sites of the ELBO and its first two dispersion derivatives for
    the species ``cols[live]`` at dispersions ``s`` (``blocks.polish_dispersion``'s trial)."""
    st = _state(key, P)
    M, V = _polish_moments(chunk, st, P, cols)
    e, W = _columns_ell(chunk, M, V, cols, live, s)
    return {"value": (W * e.value).sum(0), "gs": (W * e.d_s).sum(0), "gss": (W * e.d_ss).sum(0)}


def joint_polish_apply(chunk, P, key, cols, moved, x):
    """The polished dispersions (the driver's x) of the species ``cols[moved]``: the chunk's
    cells in those columns re-evaluated and its cell derivatives and sums patched (as
    ``blocks._polish_columns`` does in memory)."""
    from .distributed import Updated, put_global

    st = _state(key, P)
    M, V = _polish_moments(chunk, st, P, cols)
    ce = st["ce"]
    new = put_global(chunk.layout, P, x)
    c = cols[moved]
    e_old, W = _columns_ell(chunk, M, V, cols, moved, P.s[c])
    e, _ = _columns_ell(chunk, M, V, cols, moved, new.s[c])
    val, old = W * e.value, W * e_old.value
    ce["site"] += (val - old).sum(1)
    ce["species"][c] = val.sum(0)
    ce["gs"][c], ce["gss"][c] = (W * e.d_s).sum(0), (W * e.d_ss).sum(0)
    ce["Gm"][:, c] = W * e.d_m
    gv = W * e.d_v
    if ce["clip"]:
        if (gv > 0.0).any():
            ce["clipped"] = True
        gv = np.minimum(gv, 0.0)
    ce["Gv"][:, c] = gv
    _STATE[key] = {"P": new, "ce": ce}
    return Updated(new, True)


def joint_commit(chunk, P, key, accept, check=True):
    """Take the pending point (``accept``) or stay, and return the sums of the engine's
    convergence rule: the gradient and curvature diagonal in the driver's entries, the
    largest scaled gradient of the chunk's site entries, and sum tr(A)."""
    from .distributed import Updated

    P, ce = _settle(key, P, accept)
    if not check:
        return Updated(P, _summary(P, ce))
    prob, layout = chunk.prob, chunk.layout
    cg = ce if not ce["clipped"] else cell_eval(prob, P, _order(P), clip=False)
    full = layout.pack_grad(gradient_from(prob, P, cg), P)
    h = curvature_diagonal(prob, layout, P, cg)
    del cg
    site = np.ones(layout.size, dtype=bool)
    site[chunk.gidx] = False
    gs = layout.projected(layout.pack(P), full)[site]
    out = _summary(P, ce)
    out.update({"g": full[chunk.gidx], "h": h[chunk.gidx],
                "site_scaled": float((np.abs(gs) / np.sqrt(np.maximum(h[site], 1.0))).max())
                if gs.size else 0.0})
    return Updated(P, out)


def joint_drop(chunk, P, key):
    """Forget the chunk's joint-phase state (the profiled driver takes over)."""
    _STATE.pop(key, None)
    return True


# --- the driver --------------------------------------------------------------------------------
def _call(cluster, fn, *args, per_chunk=None):
    """``fn(chunk, P, key, *args)`` on every chunk (its state key passed along)."""
    keys = [(cluster.token, k) for k in range(len(cluster.chunks))]
    if per_chunk is None:
        per_chunk = [(key,) + args for key in keys]
    else:
        per_chunk = [(key,) + tuple(a) for key, a in zip(keys, per_chunk)]
    before = cluster.recoveries
    out = cluster.call(fn, per_chunk=per_chunk)
    if cluster.recoveries != before:        # a chunk was re-created: its state is gone
        raise JointStale("a chunk was re-created")
    stats = getattr(cluster, "joint", None)
    if stats is not None:           # the numbers that travel (x, the sums), for the record
        stats["bytes_to"] = stats.get("bytes_to", 0) + sum(_nbytes(a[1:]) for a in per_chunk)
        stats["bytes_back"] = stats.get("bytes_back", 0) + _nbytes(out)
    return out


def _nbytes(obj):
    """Bytes of the numbers in a (nested) message: arrays, floats, ints; 8 per scalar."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 8 if isinstance(obj, (int, float, np.number, bool)) else 0


def _third_order(theta, mean_trace):
    """``newton._third_order_matters`` from the sites' mean tr(A) summed over the chunks."""
    return 2.0 * mean_trace * np.sqrt((theta ** 2).sum(1).mean()) > _EXACT_FROM


def joint_phase(cluster, x, gtol, lo, hi, cb, max_steps=JOINT_STEPS):
    """Joint Newton iterations (module docstring) from x until the scaled gradient is at most
    ``gtol`` / 2 (the in-memory Newton phase's target), the ELBO stops rising, or
    ``max_steps``. Returns (x, iterations, converged); the chunks' site parameters are those
    of the returned x. A lost chunk ends the phase at the last committed x."""
    from .distributed import _scaled, put_global

    layout = cluster.layout
    pos = cluster.coef_positions()
    live = pos >= 0
    free = live.astype(float)
    Pd0 = cluster.template_params()
    stats = cluster.joint = {"iterations": 0, "products": 0, "rounds": 0, "seconds": [],
                             "line_search": 0, "converged": False}
    t_start = time.perf_counter()
    x = np.asarray(x, dtype=float).copy()
    cluster.x = x

    def call(fn, *args, per_chunk=None):
        stats["rounds"] += 1
        return _call(cluster, fn, *args, per_chunk=per_chunk)
    call.cluster = cluster

    try:
        outs = call(joint_init, x)
        val = sum(o["value"] for o in outs)
        if not np.isfinite(val):
            return x, 0, False
        n = sum(o["n"] for o in outs)
        trA = sum(o["trA"] for o in outs)
        stats["value"] = val
        for sw in range(SWEEPS):       # block sweeps: cheap progress from the start
            val = _sweep(cluster, call, layout, Pd0, x, val)
            x = cluster.x
            stats["sweeps"] = sw + 1
            stats["value"] = val
            cb(sw + 1, -val, np.nan)
        for it in range(max_steps):
            t0 = time.perf_counter()
            val_start = val
            Pd = put_global(layout, Pd0, x)
            # 1. means: the species system summed over chunks, CG on the driver
            exact = Pd.theta.size > 0 and _third_order(Pd.theta, trA / max(n, 1))
            parts = call(joint_prepare, exact)
            rhs = np.sum([p["rhs"] for p in parts], axis=0)
            B = np.sum([p["B"] for p in parts], axis=0)
            del parts
            db = _solve(cluster, rhs, B, live, free, stats)
            dx = np.zeros_like(x)
            dx[pos[live]] = db[live]
            floor = val - 1e-12 * abs(val)
            t, accept = 1.0, False
            for _ in range(12):
                v = sum(call(joint_trial, db, t))
                stats["line_search"] += 1
                if np.isfinite(v) and v >= floor:
                    accept = True
                    break
                t *= 0.5
            if accept:
                x = x + t * dx
            # 2. covariances (per site)
            outs = call(joint_covariance, accept)
            cluster.x = x
            val = sum(o["value"] for o in outs)
            n = sum(o["n"] for o in outs)
            abar = np.sum([o["sa"] for o in outs], axis=0) / n
            sp_old = np.sum([o["species"] for o in outs], axis=0)
            Pd = put_global(layout, Pd0, x)
            ds = None
            if Pd.s is not None:
                gs = np.sum([o["gs"] for o in outs], axis=0)
                gss = np.sum([o["gss"] for o in outs], axis=0)
                ds = dispersion_step(*hold_fixed(gs, gss, _s_free(cluster)), 1.0)
                ds = np.clip(ds, -2.0, 2.0)
            del outs
            # 3. gauge: moments summed over chunks, the transform on the driver
            tr, G = None, Pd
            if Pd.theta.size and n:
                from .terms.latent import gauge_species, gauge_transform

                M = np.sum(call(joint_moment, abar), axis=0)
                tr = gauge_transform(Pd, M / n)
                if tr is not None:
                    G = Pd.copy()
                    gauge_species(Pd, G, abar, tr)
            # 4. dispersions, halved per species (with the gauge map; without it if the KL rose)
            x_new, new_val, moved, last = _species_trials(call, layout, Pd, G, None, ds, sp_old,
                                                          val, x, abar, tr)
            if moved and ds is not None and last is not None:   # rare species' dispersions
                call(joint_commit, True, False)
                x_new, new_val = _polish(call, layout, Pd0, x_new, new_val, last, 0.5 * gtol)
                moved = False
            # 5. commit and the engine's convergence rule
            # (an iteration that gained much is far from the optimum: the check, a gradient
            # pass and often a re-evaluation without clipping, waits for a small gain)
            check = new_val - val_start <= CHECK_GAIN * abs(new_val) + 1.0
            outs = call(joint_commit, moved, check)
            cluster.x = x = x_new
            trA = sum(o["trA"] for o in outs)
            smax = np.inf
            if check:
                g = np.sum([o["g"] for o in outs], axis=0)
                h = np.sum([o["h"] for o in outs], axis=0)
                site_s = max(o["site_scaled"] for o in outs)
                smax = max(_scaled(x, g, h, lo, hi), site_s)
            old, val = val_start, new_val
            stats["value"] = val
            stats["iterations"] = it + 1
            stats["seconds"].append(time.perf_counter() - t0)
            stats["scaled"] = smax
            cb(it + 1, -val, smax if check else np.nan)
            if smax <= 0.5 * gtol:
                stats["converged"] = True
                return x, it + 1, True
            if abs(val - old) <= 1e-12 * (1.0 + abs(val)):     # (as ``blocks.ascend``)
                break
        return x, stats["iterations"], False
    except JointStale:
        return cluster.x, stats["iterations"], False
    finally:
        stats["elapsed"] = time.perf_counter() - t_start
        try:
            _call(cluster, joint_drop)
        except Exception:       # pragma: no cover - the chunks' states go with their workers
            pass


def _sweep(cluster, call, layout, Pd0, x, val):
    """One block sweep (``blocks._sweep``): the sites' Newton step on every chunk, then the
    species' Newton step from the sums over the chunks (``blocks.species_system``), halved per
    species. Returns the ELBO; ``cluster.x`` the new species parameters."""
    from .._numerics import safe_solve
    from .blocks import species_regularise
    from .distributed import put_global

    outs = call(joint_sweep_sites)
    g = np.sum([o["g"] for o in outs], axis=0)
    H = np.sum([o["H"] for o in outs], axis=0)
    sp_old = np.sum([o["species"] for o in outs], axis=0)
    val = sum(o["value"] for o in outs)
    Pd = put_global(layout, Pd0, x)
    g, H, _ = species_regularise(_template(cluster), Pd, g, H)
    step = safe_solve(H, g)
    ds = None
    if Pd.s is not None:
        gs = np.sum([o["gs"] for o in outs], axis=0)
        gss = np.sum([o["gss"] for o in outs], axis=0)
        ds = np.clip(dispersion_step(*hold_fixed(gs, gss, _s_free(cluster)), 1.0), -2.0, 2.0)
    del outs
    x_new, new_val, moved, _ = _species_trials(call, layout, Pd, Pd, step, ds, sp_old, val, x)
    call(joint_commit, moved, False)
    cluster.x = x_new
    return new_val


def _species_trials(call, layout, Pd, G, step, ds, sp_old, val, x, abar=None, tr=None):
    """The species stage's trial points on the chunks, each species' step halved until its
    ELBO does not fall (as ``blocks._accept_species``): coefficients ``step`` (m, ks) or None,
    dispersions ``ds`` or None, from the driver's Params ``Pd`` (G: with the gauge map ``tr``
    applied, dropped if the KL would rise). The last trial stays pending on the chunks.
    Returns (x, ELBO, whether a trial is pending, the last trial's per-species sums)."""
    from .distributed import pack_global

    pred = _template(call.cluster).predictor
    frac, k, moved = np.ones(len(sp_old)), 0, ds is not None or tr is not None or step is not None
    new_val, x_new, last = val, x, None
    phi = pred.species_coef(G) if step is not None else None
    while moved and k <= _NHALF:
        T = G.copy()
        if step is not None:
            pred.set_species_coef(T, phi + frac[:, None] * step)
        if ds is not None:
            T.s = np.clip(Pd.s + (frac if ds.ndim == 1 else frac[:, None]) * ds, *S_BOUNDS)
        x_new = pack_global(layout, T)
        res = call(joint_gauge_dispersion, x_new, abar, tr)
        new_val = sum(r["value"] for r in res)
        if tr is not None and not sum(r["dkl"] for r in res) >= 0.0:
            tr, G = None, Pd        # the gauge step would lower the ELBO: without it
            moved = ds is not None or step is not None
            new_val, x_new = val, x
            continue
        sp_new = np.sum([r["species"] for r in res], axis=0)
        last = {"species": sp_new}
        if ds is not None:
            last["gs"] = np.sum([r["gs"] for r in res], axis=0)
            last["gss"] = np.sum([r["gss"] for r in res], axis=0)
        bad = ~(sp_new >= sp_old - 1e-10 * np.abs(sp_old))
        if (ds is None and step is None) or not bad.any():
            break
        frac = np.where(bad, frac * 0.5 if k < _NHALF - 1 else 0.0, frac)
        k += 1
    return x_new, new_val, moved, last


POLISH_ITER = 30


def _polish(call, layout, Pd0, x, val, last, tol, max_iter=POLISH_ITER):
    """``blocks.polish_dispersion`` over the chunks: Newton iterations on the dispersions of
    the species whose scaled gradient exceeds ``tol`` (sums over the chunks of the columns'
    ELBO and derivatives, one round trip each), each halved until its ELBO does not fall.
    Scalar dispersions only. Returns (x, ELBO)."""
    from .distributed import pack_global, put_global

    Pd = put_global(layout, Pd0, x)
    if Pd.s is None or np.ndim(Pd.s) != 1:
        return x, val
    lo, hi = S_BOUNDS

    def scaled(s, gs, gss):
        pushing = ((s <= lo) & (gs < 0)) | ((s >= hi) & (gs > 0))
        return np.where(pushing, 0.0, np.abs(gs)) / np.sqrt(np.maximum(-gss, 1.0))

    gs, gss = last["gs"], last["gss"]
    J = np.nonzero(scaled(Pd.s, gs, gss) > tol)[0]
    if not J.size:
        return x, val
    s, v = Pd.s[J].copy(), last["species"][J].copy()
    g, h = gs[J].copy(), gss[J].copy()
    mult = np.ones(J.size)
    for _ in range(max_iter):
        live = np.nonzero((scaled(s, g, h) > tol / 10.0) & (mult > 1e-3))[0]
        if not live.size:
            break
        step = np.clip(dispersion_step(g[live], h[live], 1.0), -2.0, 2.0) * mult[live]
        trial = np.clip(s[live] + step, lo, hi)
        res = call(joint_polish_eval, J, live, trial)
        tsum = np.sum([r["value"] for r in res], axis=0)
        ok = np.isfinite(tsum) & (tsum >= v[live] - 1e-12 * np.abs(v[live]))
        acc, rej = live[ok], live[~ok]
        mult[rej] *= 0.5
        mult[acc] = 1.0
        if acc.size:
            s[acc], v[acc] = trial[ok], tsum[ok]
            g[acc] = np.sum([r["gs"] for r in res], axis=0)[ok]
            h[acc] = np.sum([r["gss"] for r in res], axis=0)[ok]
    moved = np.nonzero(s != Pd.s[J])[0]
    if not moved.size:
        return x, val
    gain = float(v[moved].sum() - last["species"][J[moved]].sum())
    Pd.s = Pd.s.copy()
    Pd.s[J[moved]] = s[moved]
    x_new = pack_global(layout, Pd)
    call(joint_polish_apply, J, moved, x_new)
    call.cluster.x = x_new
    return x_new, val + gain


def _template(cluster):
    from .distributed import template_layout

    spec = cluster.specs[0]
    return template_layout(spec.model, len(spec.model["terms"]))[1]


def _s_free(cluster):
    from .distributed import template_layout

    spec = cluster.specs[0]
    _, prob = template_layout(spec.model, len(spec.model["terms"]))
    return prob.s_free


def _solve(cluster, rhs, B, live, free, stats):
    """-S db = rhs by preconditioned CG with the species blocks B (summed over chunks)."""
    m, ks = rhs.shape
    Bm = np.array(B, dtype=float)
    jj, kk = np.nonzero(~live)
    Bm[jj, kk, :] = 0.0
    Bm[jj, :, kk] = 0.0
    Bm[jj, kk, kk] = 1.0
    ridge = 1e-10 * np.abs(np.diagonal(Bm, axis1=1, axis2=2)).max(axis=1) + 1e-12
    Minv = np.linalg.inv(Bm + ridge[:, None, None] * np.eye(ks))

    def prec(r):
        return np.einsum("jkl,jl->jk", Minv, r) * free

    def apply(v):
        stats["products"] += 1
        stats["rounds"] += 1
        t0 = time.perf_counter()
        out = np.sum(_call(cluster, joint_product, v * free), axis=0) * free
        cluster.products.append((time.perf_counter() - t0, len(cluster.chunks) * 2 * v.nbytes))
        return out

    return _numerics.truncated_cg(apply, prec, rhs * free, CG_RTOL, CG_MAXITER)
