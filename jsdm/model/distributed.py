"""The fit mapped over chunks of sites on a Dask cluster (DESIGN.md section 8).

Given the species (and global) parameters x, the ELBO separates over sites. Each
chunk of sites lives on a worker as a :class:`~jsdm.model.problem.Problem` of its
rows, with its site parameters (latent-variable means a_i, the joint Cholesky
factors L_i, row effects). One evaluation at x is one round trip: every chunk
maximises its sites' part of the ELBO given x by the engine's own batched site
Newton steps (:func:`jsdm.model.blocks.site_step`, warm-started from its last
sites) and returns three small sums over its sites: the ELBO, the gradient in x and
its curvature diagonal (O(m (p + d)) numbers, independent of the number of sites).
The driver maximises the *profiled* ELBO

    F(x) = max over site parameters of ELBO(x, sites),   dF/dx = dELBO/dx at those sites

(the envelope theorem) by the engine's L-BFGS in curvature-scaled coordinates, and
declares convergence by the engine's rule: the largest curvature-scaled gradient
max_k |g_k| / sqrt(max(h_k, 1)) at most ``gtol`` (the sites being at their optimum,
their gradient is zero up to the site tolerance). The cell kernels are the in-memory
engine's (``cell_eval``, the family's ell, ``site_step``, ``gradient``,
``curvature_diagonal``): one engine, mapped over sites two ways.

Dask is imported only here and only when a client is given.
"""
from dataclasses import dataclass, field, replace
import time
import warnings

import numpy as np

from .._numerics import truncated_cg
from . import distributed_newton
from ..exceptions import ConvergenceWarning, JSDMError
from .blocks import curvature_diagonal, site_step
from .objective import cell_eval, gradient_from
from .params import Layout
from .problem import Problem

SITE_GAIN = 0.01        # sites stop when another Newton step would gain < SITE_GAIN gtol^2
#                         (their scaled gradient is then about 0.14 gtol)
SITE_ITER = 50          # site Newton steps per evaluation at most (warm starts need 1-3)
REDERIVE_ITER = 500     # site Newton steps when a lost chunk's sites are re-derived
LBFGS_RESCALES = 3
LBFGS_MEMORY = 60        # corrections kept (measured on 300 x 60 NB: 162 round trips with 20,
#                          119 with 60; the driver's cost is negligible either way)
PROFILED_BLOCKS = True  # species blocks of the L-BFGS scaling: H_bb alone (True: minus the
#                          sites' Schur part; with fixed row effects that nearly removes the
#                          intercepts' curvature and the steps blow up)


# --- what travels: the chunk's arrays and the model's description -----------------------
@dataclass
class ChunkSpec:
    """Everything a worker needs to rebuild the Problem of one chunk of sites.

    ``arrays`` holds Y (r, m) (NaN where missing), X (r, p), offset and trials (or
    None), or ``loader`` a callable returning that dict (e.g. reading a Parquet file),
    so that a lost chunk can be re-created from its source.
    """

    index: int
    row0: int                       # global index of the chunk's first site
    sites: list
    model: dict                     # family, num_lv, row_effect, species, terms, ...
    arrays: dict = None
    loader: object = None


@dataclass
class Chunk:
    """A chunk resident on a worker: its Problem, the global-slot positions of its layout."""

    index: int
    row0: int
    prob: Problem
    layout: Layout
    gidx: np.ndarray
    spec: ChunkSpec = None

    def __reduce__(self):
        # moved between workers (or re-created): rebuilt from its spec, never pickled with
        # the predictor's internal state
        return build_chunk, (self.spec,)


def build_chunk(spec):
    """Worker task: the chunk's Problem (validated arrays) and layout."""
    arr = spec.arrays if spec.arrays is not None else spec.loader()
    mod = spec.model
    Y = np.asarray(arr["Y"], dtype=float)
    W = np.isfinite(Y).astype(float)
    if W.all():
        W = np.broadcast_to(1.0, Y.shape)
    fam = mod["family"]
    Yf = np.where(W > 0, Y, fam.missing_fill)
    import pandas as pd

    info = {} if mod["n_disp"] is None else {"n_dispersion": mod["n_disp"]}
    prob = Problem(Y=Yf, W=W, X=np.asarray(arr["X"], dtype=float), family=fam,
                   num_lv=mod["num_lv"], row_effect=mod["row_effect"],
                   sites=pd.Index(spec.sites), species=mod.get("data_species", mod["species"]),
                   terms=mod["terms"],
                   offset=arr.get("offset"), trials=arr.get("trials"), formula=mod["formula"],
                   info=info, model_terms=mod["model_terms"])
    if mod.get("order") is not None:        # the fit's species order (anchor species first)
        prob = _species_order(prob, mod["order"])
    if spec.row0 != 0:          # alpha_1 = 0 pins the first site of the data, not of each chunk
        prob.predictor.pinned = []
    layout = Layout(prob.predictor)
    return Chunk(spec.index, spec.row0, prob, layout, global_positions(layout), spec)


def _species_order(prob, order):
    from .fit import _reordered_problem

    return _reordered_problem(prob, np.asarray(order))


def global_slots(layout):
    """The packed blocks the driver owns: model parameters of species or global scope."""
    return [s for s in layout.slots if s.model and s.scope in ("species", "global")]


def global_positions(layout):
    pos = [np.arange(layout.slices[s.name].start, layout.slices[s.name].stop)
           for s in global_slots(layout)]
    return np.concatenate(pos) if pos else np.zeros(0, dtype=int)


def pack_global(layout, P):
    parts = [s.pack(getattr(P, s.field)) for s in global_slots(layout)]
    return np.concatenate(parts) if parts else np.zeros(0)


def put_global(layout, P, x):
    """Write the driver's vector x into P (a copy); held entries keep their values."""
    P = P.copy()
    at = 0
    for s in global_slots(layout):
        k = s.size
        cur = getattr(P, s.field)
        if not s.shape:
            val = float(x[at])
        else:
            val = np.array(cur, dtype=float)
            mask = getattr(s, "mask", None)
            if mask is not None:
                val[mask] = x[at:at + k]
            else:
                val = x[at:at + k].reshape(s.shape).copy()
        setattr(P, s.field, val)
        at += k
    return P


# --- worker tasks --------------------------------------------------------------------
def _order(P):
    return 2 if P.s is not None else 1


def site_gain(prob, P, ce):
    """Per site, the ELBO gain a full Newton step in its means and the fixed point of its
    covariance would bring (quadratic model; no cell evaluation), (n,).

    Means: g' Lambda^-1 g / 2 with Lambda = Pr - 2 sum_j Gv U_j U_j' (the site step's
    Hessian); covariance: (tr M - log det M - kr) / 2 with M = Lambda^RR Sigma_i, the
    gain of Sigma_i -> (Lambda^RR)^-1 under the same model.
    """
    from .._numerics import safe_solve

    pred = prob.predictor
    n, m, kv, kr = pred.n, pred.m, pred.kv, pred.kr
    U = pred.site_design(P)
    U2 = (U[:, :, None] * U[:, None, :]).reshape(m, kv * kv)
    H = -(2.0 * ce["Gv"] @ U2).reshape(n, kv, kv)
    g = ce["Gm"] @ U
    if kr:
        pr = pred.prior_precision(P)
        idx = np.arange(kr)
        H[:, idx, idx] += pr
        g[:, :kr] -= pr * pred.site_means(P)[:, :kr]
    for i, k in pred.pinned:
        g[i, k] = 0.0
        H[i, k, :] = H[i, :, k] = 0.0
        H[i, k, k] = 1.0
    gain = 0.5 * np.einsum("ik,ik->i", g, safe_solve(H, g))
    if kr:
        S = P.L @ np.swapaxes(P.L, 1, 2)
        M = H[:, :kr, :kr] @ S
        sign, logdet = np.linalg.slogdet(M)
        cov = 0.5 * (np.trace(M, axis1=1, axis2=2) - logdet - kr)
        gain = gain + np.where(sign > 0, cov, np.inf)
    return gain


def optimise_sites(chunk, P, max_iter=SITE_ITER, tol=1e-12, ce=None):
    """Site Newton steps (the engine's ``site_step``) until no site can gain more than
    ``tol`` by another step (:func:`site_gain`).

    Returns (P, cell_eval at P, Newton steps taken, largest gain left).
    """
    prob = chunk.prob
    if ce is None:
        ce = cell_eval(prob, P, _order(P))
    if prob.predictor.kv == 0:
        return P, ce, 0, 0.0
    left = np.inf
    for it in range(max_iter + 1):
        with np.errstate(all="ignore"):
            rel = site_gain(prob, P, ce)
        left = float(np.max(rel)) if rel.size else 0.0
        if left <= tol or it == max_iter:
            break
        P, ce = site_step(prob, P, ce)
    return P, ce, it, left


def predict_sites(chunk, P_old, ce_old, P_new):
    """First-order prediction of the sites' optimum at new species parameters:
    du = -D^-1 C' dphi (implicit function theorem; D the site blocks' curvature, C the
    species-site cross curvature at the old point, as the joint Newton step uses them)."""
    from .newton import _Schur, _coupling, _site_blocks

    prob = chunk.prob
    pred = prob.predictor
    if not pred.kv or not pred.ks:
        return P_new
    dphi = pred.species_coef(P_new) - pred.species_coef(P_old)
    if not np.any(dphi):
        return P_new
    Xt, U = pred.species_design(P_old), pred.site_design(P_old)
    D, _ = _site_blocks(prob, P_old, ce_old, U)
    try:
        with np.errstate(all="ignore"):
            op = _Schur(prob, ce_old, Xt, U, pred.free.astype(float), None, np.linalg.inv(D),
                        _coupling(prob, P_old))
            du = -op.dinv(op.ct(dphi))
    except np.linalg.LinAlgError:       # no prediction: the Newton steps start from the old sites
        return P_new
    if not np.all(np.isfinite(du)):
        return P_new
    out = P_new.copy()
    pred.set_site_means(out, pred.site_means(P_new) + du)
    return out


def profile(chunk, P, x, curvature=True, gtol=1e-3, max_iter=SITE_ITER):
    """Worker task: sites optimised given x; returns (P, sums) with sums the chunk's
    ELBO ("value"), gradient in x ("g") and curvature diagonal ("h", when asked)."""
    t0 = time.process_time()
    Q = put_global(chunk.layout, P, x)
    starts = []                                     # where the site Newton steps start
    last = _LAST.get(id(chunk))
    if last is not None and last[0] is P:          # the chunk's last evaluation: predict
        Qp = predict_sites(chunk, P, last[1], Q)
        if Qp is not Q:
            starts.append(Qp)
    starts += [Q, None]                  # then the last sites, then the sites' own start
    tol = SITE_GAIN * gtol ** 2
    for start in starts:
        try:
            with np.errstate(all="ignore"):
                if start is None:
                    start = start_sites(chunk, x)
                ce = cell_eval(chunk.prob, start, _order(start))
                if not np.all(np.isfinite(ce["site"])):
                    continue
                P_new, ce, it, change = optimise_sites(chunk, start, max_iter, tol, ce=ce)
            if np.isfinite(ce["site"]).all():
                break
        except np.linalg.LinAlgError:
            continue
    else:                   # a wild trial point of the line search: reject it
        return {"value": -np.inf, "g": np.zeros(len(chunk.gidx)), "site_iter": 0,
                "site_change": np.inf, "cpu": time.process_time() - t0}
    P = P_new
    if ce["clipped"]:
        ce = cell_eval(chunk.prob, P, _order(P), clip=False)
    G = gradient_from(chunk.prob, P, ce)
    full = chunk.layout.pack_grad(G, P)
    out = {"value": float(ce["site"].sum()), "g": full[chunk.gidx], "site_iter": it,
           "site_change": change, "cpu": 0.0}
    if curvature:
        out["B"] = species_blocks(chunk.prob, P, ce)
        h = curvature_diagonal(chunk.prob, chunk.layout, P, ce)
        out["h"] = h[chunk.gidx]
        site = np.ones(chunk.layout.size, dtype=bool)
        site[chunk.gidx] = False
        gs = chunk.layout.projected(chunk.layout.pack(P), full)[site]
        out["site_scaled"] = float((np.abs(gs) / np.sqrt(np.maximum(h[site], 1.0))).max()) \
            if gs.size else 0.0
    out["cpu"] = time.process_time() - t0
    if not curvature and not change <= SITE_GAIN * gtol ** 2:
        # the sites did not settle (a wild trial point of the line search): report the value
        # (a lower bound of the profiled ELBO there) but keep the chunk's last sites
        return out
    # (per chunk: one more copy of its Gm, Gv arrays)
    _LAST[id(chunk)] = (P, {"Gm": ce["Gm"], "Gv": ce["Gv"]})
    return Updated(P, out)


# The last evaluation's cell derivatives of a chunk (for the next one's prediction).
_LAST = {}


def species_blocks(prob, P, ce, rows=500):
    """Species-diagonal blocks (m, ks, ks) for the profiled driver's scaling and
    preconditioner: -H_bb - sum_i C_i D_i^-1 C_i', a sum over the chunk's sites.

    With the site blocks D_i negative definite, the sites' part is *added* to -H_bb here
    (the blocks are at least -H_bb's), whereas the joint Newton step's preconditioner
    (``newton._Schur.block_preconditioner``) subtracts it (the Schur complement's blocks,
    -H_bb + sum_i C_i D_i^-1 C_i'). This function only scales the profiled driver; which
    of the two serves it better was not measured (see ``PROFILED_BLOCKS``)."""
    from .newton import _coupling, _cross, _site_blocks, _species_blocks

    pred = prob.predictor
    if not pred.ks:
        return np.zeros((pred.m, 0, 0))
    Xt = pred.species_design(P)
    cpl = _coupling(prob, P)
    Hbb, _ = _species_blocks(prob, P, ce, Xt, cpl)
    B = -Hbb
    if pred.kv and PROFILED_BLOCKS:
        U = pred.site_design(P)
        D, _ = _site_blocks(prob, P, ce, U)
        try:
            Dinv = np.linalg.inv(D)
        except np.linalg.LinAlgError:       # (then the blocks of H_bb alone)
            return B
        free = pred.free.astype(float)
        for start in range(0, pred.n, rows):
            r = slice(start, min(pred.n, start + rows))
            C = _cross(prob, ce, Xt, U, r, free, cpl)
            B -= np.einsum("jkil,ilq,jriq->jkr", C, Dinv[r], C, optimize=True)
    return B


_OPS = {}


def _schur_operator(chunk, P):
    """The joint Newton step's Schur-complement operator of the chunk at its last settled
    evaluation (kept per chunk until the sites move)."""
    from .newton import (_Schur, _coupling, _site_blocks, _species_blocks, _third_order_matters,
                         mv_curvature)

    got = _OPS.get(id(chunk))
    if got is not None and got[0] is P:
        return got[1]
    last = _LAST.get(id(chunk))
    if last is None or last[0] is not P:        # (a re-created chunk): evaluate its cells
        ce = cell_eval(chunk.prob, P, _order(P))
        last = _LAST[id(chunk)] = (P, {"Gm": ce["Gm"], "Gv": ce["Gv"]})
    prob, ce = chunk.prob, dict(last[1])
    pred = prob.predictor
    Xt, U = pred.species_design(P), pred.site_design(P)
    cpl = _coupling(prob, P)
    if cpl is not None and _third_order_matters(P, P.A):
        ce["Emv"], ce["Evv"] = mv_curvature(prob, P, ce)
    Hbb, _ = _species_blocks(prob, P, ce, Xt, cpl)
    D, _ = _site_blocks(prob, P, ce, U)
    op = _Schur(prob, ce, Xt, U, pred.free.astype(float), Hbb, np.linalg.inv(D), cpl)
    _OPS.clear()
    _OPS[id(chunk)] = (P, op)
    return op


def schur_product(chunk, P, v):
    """Worker task: the chunk's part of -(H_bb - C D^-1 C') v, v (m, ks) species coefficients."""
    op = _schur_operator(chunk, P)
    hx = np.einsum("jkl,jl->jk", op.Hbb, v * op.free)
    return (op.c(op.dinv(op.ct(v))) - hx) * op.free


def start_sites(chunk, x, a=None):
    """The chunk's starting Params: species and global fields from x (held dispersion entries
    at 0, as the in-memory layout unpacks them), site fields at each term's start, the
    latent-variable means ``a`` (r, d) when given (else 0)."""
    pred = chunk.prob.predictor
    P = pred.zeros()
    for t in pred.terms:
        if t.site_width(pred) and not t.bilinear:          # row effects: their own start
            t.start(pred, P, {"glm": {}, "s": P.s, "rng": None, "jitter": 0.0,
                              "eta0": None, "prob": chunk.prob})
    if a is not None and pred.d:
        P.a = np.array(a, dtype=float)
    P.L = pred.start_cov()
    return put_global(chunk.layout, P, x)


def rederive(chunk, x):
    """A lost chunk's sites from scratch, given the species parameters x (the site blocks
    are conditionally independent given them; each site's ELBO is maximised by Newton)."""
    P = start_sites(chunk, x)
    P, _, _, _ = optimise_sites(chunk, P, REDERIVE_ITER)
    return P


# The site parameters live in the worker process (not as Dask keys, so that no task
# lineage grows over the iterations): (fit token, chunk index) -> Params.
_SITES = {}


class Updated:
    """A worker task's result that replaces the chunk's site parameters."""

    def __init__(self, P, out=None):
        self.P, self.out = P, out


def on_sites(fn, chunk, key, x, *args):
    """Worker task: ``fn(chunk, P, *args)`` with the chunk's site parameters P, re-derived
    from the species parameters x when this worker does not hold them (a re-created chunk)."""
    P = _SITES.get(key)
    fresh = P is None
    if fresh:
        P = _SITES[key] = rederive(chunk, x)
    res = fn(chunk, P, *args)
    if isinstance(res, Updated):
        _SITES[key] = res.P
        res = res.out
    if fresh and isinstance(res, dict):
        res["rederived"] = True
    return res


def set_sites(chunk, key, x, a=None):
    """Worker task: the chunk's starting site parameters."""
    _SITES[key] = start_sites(chunk, x, a)
    return True


def drop_sites(token):
    """Run on every worker: forget a fit's site parameters."""
    for key in [k for k in _SITES if k[0] == token]:
        del _SITES[key]


def residual_gram(chunk, b, s, seed, jitter):
    """Worker task: sums for the latent variables' start (column sums and Gram matrix of the
    chunk's Dunn-Smyth residuals of the starting GLMs)."""
    R = _start_residuals(chunk, b, s, seed, jitter)
    return {"n": R.shape[0], "sum": R.sum(0), "gram": R.T @ R}


def residual_scores(chunk, b, s, seed, jitter, mean, V, sv, n, Q):
    """Worker task: the chunk's starting latent-variable means from the global factors."""
    R = _start_residuals(chunk, b, s, seed, jitter) - mean
    return ((R @ V) / sv * np.sqrt(n)) @ Q


def _start_residuals(chunk, b, s, seed, jitter):
    from .residuals import dunn_smyth
    from .start import glm_design

    prob = chunk.prob
    rng = np.random.default_rng([int(seed), int(chunk.index)])
    eta = glm_design(prob) @ b.T + (0.0 if prob.offset is None else prob.offset)
    y = np.where(prob.W > 0, prob.Y, np.nan)
    R = dunn_smyth(prob.family, y, eta, s, prob.trials, rng)
    R = np.where(np.isnan(R), 0.0, R)
    if jitter:
        R = R + jitter * rng.standard_normal(R.shape)
    return R


def take_rows(chunk, rows):
    """Worker task: the chunk's data at the global site indices ``rows`` (for the GLM start)."""
    prob = chunk.prob
    loc = np.asarray(rows, dtype=int) - chunk.row0
    Y = np.where(prob.W[loc] > 0, prob.Y[loc], np.nan)
    return {"Y": Y, "X": prob.X[loc],
            "offset": None if prob.offset is None else prob.offset[loc],
            "trials": None if prob.trials is None else prob.trials[loc]}


def site_fields(chunk, P, fields):
    """Worker task: the chunk's site arrays (``fields``), e.g. the site scores."""
    return {f: np.asarray(getattr(P, f)) for f in fields if getattr(P, f, None) is not None}


def flip_signs(chunk, P, sign):
    """Worker task: the latent variables' sign flips (an exact symmetry) on the chunk's sites."""
    P = P.copy()
    d = len(sign)
    P.a = P.a * sign
    full = np.ones(P.L.shape[1])
    full[:d] = sign
    P.L = P.L * full[None, :, None] * full[None, None, :]
    return Updated(P, True)


def schur_part(chunk, P):
    """Worker task: the chunk's part of the negative Schur complement of the Hessian
    (model block, site blocks eliminated), and the sites whose block is not definite."""
    from .hessian import hessian_blocks

    b = hessian_blocks(chunk.prob, P, chunk.layout)
    Pn, n, q = b.Hpv.shape
    if q == 0 or n == 0:
        return {"negS": -b.Hpp, "bad": []}
    w = np.linalg.eigvalsh(-b.Hvv)
    bad = np.flatnonzero(~(w[:, 0] > 1e-12 * np.maximum(w[:, -1], 1e-300)))
    try:
        Z = np.linalg.solve(b.Hvv, np.transpose(b.Hpv, (1, 2, 0)))       # (n, q, P)
        S = b.Hpp - b.Hpv.reshape(Pn, n * q) @ Z.reshape(n * q, Pn)
    except np.linalg.LinAlgError:                                      # a singular site block
        S = np.full((Pn, Pn), np.nan)
    return {"negS": -0.5 * (S + S.T), "bad": [chunk.row0 + int(i) for i in bad]}


def sample_data(chunk, P, k, seed):
    """Worker task: k sites of the chunk (data and site parameters), for in-memory views."""
    prob = chunk.prob
    rng = np.random.default_rng([int(seed), int(chunk.index)])
    loc = np.sort(rng.choice(prob.n, size=min(k, prob.n), replace=False))
    out = take_rows(chunk, loc + chunk.row0)
    out["rows"] = loc + chunk.row0
    out["sites"] = [prob.sites[i] for i in loc]
    out["params"] = {f: np.asarray(v)[loc] for f, v in P.fields().items()
                     if v is not None and f in _site_field_names(chunk)}
    return out


def _site_field_names(chunk):
    return {s.field for s in chunk.layout.slots if s.scope == "site"}


# --- the driver ------------------------------------------------------------------------
class LostChunks(Exception):
    """Some chunks were lost with their worker."""

    def __init__(self, chunks, reason):
        super().__init__(reason)
        self.chunks, self.reason = chunks, reason


def _live_workers(dask_scheduler=None):
    return sorted(dask_scheduler.workers)


class ClusterState:
    """The chunks on the cluster: each pinned to one worker, which holds its Problem (a
    Dask key, re-creatable from its spec) and its site parameters (``_SITES``).

    Holds the client, the chunk specs (to re-create lost chunks), the log of round
    trips (time, bytes) and the number of recoveries.
    """

    def __init__(self, client, specs, template_layout):
        import weakref

        self.client = client
        self.specs = specs
        self.layout = template_layout
        self.token = _tok()
        self.where = [None] * len(specs)
        self.chunks = [None] * len(specs)
        live = self.live()
        for k in range(len(specs)):
            self._build(k, live[k % len(live)])
        self.x = None
        self.rounds = []        # (seconds, bytes to workers, bytes back, worker cpu s, site iters)
        self.recoveries = 0
        self.products = []      # (seconds, bytes both ways) of each Schur product (CG iteration)
        self.gtol = 1e-3
        weakref.finalize(self, _forget, client, self.token)

    def live(self):
        return self.client.run_on_scheduler(_live_workers)

    def _build(self, k, addr):
        self.where[k] = addr
        self.chunks[k] = self.client.submit(build_chunk, self.specs[k], pure=False,
                                            key=f"jsdm-chunk-{self.token}-{k}-{_tok()}",
                                            workers=[addr], allow_other_workers=False)

    def _submit(self, k, fn, args, state):
        if state:
            fn, args = on_sites, (fn, self.chunks[k], (self.token, k), self.x) + tuple(args)
        else:
            args = (self.chunks[k],) + tuple(args)
        return self.client.submit(fn, *args, pure=False, workers=[self.where[k]],
                                  allow_other_workers=False)

    def call(self, fn, *args, state=True, per_chunk=None, futures=False):
        """``fn(chunk, P, *args)`` (``fn(chunk, *args)`` without ``state``) on every chunk;
        the list of results. ``per_chunk``: a list of argument tuples, one per chunk.
        A chunk whose worker died is re-created on a live worker (its sites re-derived
        from the species parameters) and the call is repeated."""
        for attempt in range(6):
            futs = [self._submit(k, fn, per_chunk[k] if per_chunk is not None else args, state)
                    for k in range(len(self.chunks))]
            try:
                return self._gather(futs, fetch=not futures)
            except LostChunks as lost:
                if attempt == 5:
                    raise JSDMError(f"the cluster keeps losing workers ({lost.reason}); the fit "
                                    "cannot go on") from None
                self.recover(lost)

    def _gather(self, futs, fetch=True):
        from distributed import wait

        while True:
            try:
                wait(futs, timeout=1.0)
                if not fetch:
                    bad = [f for f in futs if f.status == "error"]
                    if bad:
                        raise bad[0].exception()
                    return futs
                return self.client.gather(futs)
            except KeyboardInterrupt:
                self.client.cancel(futs)
                raise
            except Exception as exc:        # a timeout while waiting, or a failed gather
                live = set(self.live())
                lost = [k for k, w in enumerate(self.where) if w not in live]
                if lost:
                    self.client.cancel([f for f in futs if not f.done()])
                    raise LostChunks(lost, f"worker(s) {sorted(set(self.where) - live)} gone") \
                        from None
                failed = [f for f in futs if f.status == "error"]
                if failed:
                    raise failed[0].exception() from None
                if not isinstance(exc, TimeoutError) and type(exc).__name__ != "TimeoutError":
                    raise

    def recover(self, lost):
        """Re-create lost chunks on live workers; their sites are re-derived from x."""
        self.recoveries += 1
        live = self.live()
        warnings.warn(f"a worker was lost during the fit ({lost.reason}); re-creating "
                      f"{len(lost.chunks)} chunk(s) of sites from their data on the remaining "
                      "workers and re-deriving their site parameters from the current species "
                      "parameters", RuntimeWarning, stacklevel=5)
        for i, k in enumerate(lost.chunks):
            self._build(k, live[i % len(live)])

    def round(self, x, curvature=True):
        """One evaluation of the profiled ELBO at x: sums over chunks."""
        t0 = time.perf_counter()
        x = np.asarray(x, dtype=float)
        if self.x is None:
            self.x = x
        outs = self.call(profile, x, curvature, self.gtol)
        self.x = x
        val = float(sum(o["value"] for o in outs))
        if not np.isfinite(val):
            return val, np.zeros_like(x), None, np.inf
        g = np.sum([o["g"] for o in outs], axis=0)
        h = np.sum([o["h"] for o in outs], axis=0) if curvature else None
        if curvature:
            self.B = np.sum([o["B"] for o in outs], axis=0)
        sent = len(self.chunks) * (2 * x.nbytes + 200)
        back = sum(o["g"].nbytes + (o["h"].nbytes + o["B"].nbytes if curvature else 0) + 200
                   for o in outs)
        self.rounds.append((time.perf_counter() - t0, sent, back,
                            sum(o["cpu"] for o in outs), max(o["site_iter"] for o in outs)))
        site_scaled = max(o.get("site_scaled", 0.0) for o in outs)
        return val, g, h, site_scaled

    def coef_positions(self):
        """(m, ks) packed position in x of each species coefficient (pred.species_coef order),
        -1 for entries held at zero (loadings above the diagonal)."""
        if getattr(self, "_coef_pos", None) is None:
            P = self.template_params()
            pred = template_layout(self.specs[0].model, len(self.specs[0].model["terms"]))[1].predictor
            m, ks = pred.m, pred.ks
            for s in global_slots(self.layout):
                v = getattr(P, s.field)
                setattr(P, s.field, np.zeros_like(v) if np.ndim(v) else 0.0)
            pred.set_species_coef(P, np.arange(1, m * ks + 1, dtype=float).reshape(m, ks))
            x = pack_global(self.layout, P)
            pos = np.full(m * ks, -1)
            hit = np.flatnonzero(x > 0)
            pos[x[hit].astype(int) - 1] = hit
            self._coef_pos = pos.reshape(m, ks)
        return self._coef_pos

    def template_params(self):
        """Params of the driver's fields (species and global) at zero, for ``put_global``."""
        prob = template_layout(self.specs[0].model, len(self.specs[0].model["terms"]))[1]
        return prob.predictor.zeros()

    def release(self):
        """Forget the site parameters on the workers and the chunks' data."""
        _forget(self.client, self.token)
        self.client.cancel([c for c in self.chunks if c is not None])


def _forget(client, token):
    try:
        if client.status == "running":
            client.run(drop_sites, token)
    except Exception:       # pragma: no cover - the cluster is already gone
        pass


_TOKEN = [0]


def _tok():
    _TOKEN[0] += 1
    return f"{time.time_ns():x}{_TOKEN[0]}"


@dataclass
class ClusterFitState:
    """What the cluster fit found: the driver's parameters and where the sites live."""

    params: object                  # Params with the species / global fields
    x: np.ndarray
    value: float
    grad: np.ndarray
    converged: bool
    n_iter: int
    n_eval: int
    message: str
    elapsed: float
    scaled_grad: float
    cluster: ClusterState = None
    history: list = field(default_factory=list)
    interrupted: bool = False


JOINT = True            # the joint Newton phase (distributed_newton.py) first, where it applies
NEWTON_STEPS = 8        # profiled Newton-CG steps before the L-BFGS polish (they converge fast,
#                         then linearly: measured on 300 x 60 NB, 45 round trips with 8, 114 without)
CG_ITER = 50


def newton_phase(cluster, x, val, g, h, gtol, lo, hi, cb, max_steps=NEWTON_STEPS):
    """Newton steps on the profiled ELBO: the species coefficients by preconditioned CG on
    the Schur complement -(H_bb - C D^-1 C') (one round trip of matrix products per CG
    iteration, no family evaluation), the dispersions and global parameters by their
    diagonal curvature; each step halved until the profiled ELBO rises.

    Returns (x, val, g, h, site_scaled, steps, evaluations).
    """
    pos = cluster.coef_positions()
    live = pos >= 0
    n_eval, site_s = 0, np.inf
    for step in range(max_steps):
        if _scaled(x, g, h, lo, hi) <= gtol and site_s <= gtol:
            break
        gphi = np.where(live, g[np.where(live, pos, 0)], 0.0)
        dphi = _pcg(cluster, gphi, live, cluster.B)
        dx = np.where(np.isfinite(h), g / np.maximum(h, 1e-8), 0.0)
        dx[pos[live]] = dphi[live]
        dx = np.clip(x + dx, lo, hi) - x
        t, ok = 1.0, False
        for _ in range(12):
            v, gg, hh, ss = cluster.round(x + t * dx)
            n_eval += 1
            if np.isfinite(v) and v >= val - 1e-12 * abs(val):
                ok = True
                break
            t *= 0.5
        if not ok:
            cluster.round(x)            # sites back at x
            n_eval += 1
            break
        x, val, g, h, site_s = x + t * dx, v, gg, hh, ss
        cb(step + 1, -val, float(np.max(np.abs(g))) if g.size else 0.0)
    return x, val, g, h, site_s, step, n_eval


def _pcg(cluster, rhs, live, B, rtol=1e-4):
    """Solve -S x = rhs on the free species coefficients; -S x summed over the chunks."""
    m, ks = rhs.shape
    free = live.astype(float)
    Bm = -np.array(B, dtype=float) if B is not None else np.zeros((m, ks, ks))
    Bm = -Bm                        # B is already the negative curvature's blocks
    jj, kk = np.nonzero(~live)
    Bm[jj, kk, :] = 0.0
    Bm[jj, :, kk] = 0.0
    Bm[jj, kk, kk] = 1.0
    ridge = 1e-10 * np.abs(np.diagonal(Bm, axis1=1, axis2=2)).max(axis=1) + 1e-12
    try:
        Minv = np.linalg.inv(Bm + ridge[:, None, None] * np.eye(ks))
    except np.linalg.LinAlgError:
        Minv = np.broadcast_to(np.eye(ks), (m, ks, ks))

    def prec(r):
        return np.einsum("jkl,jl->jk", Minv, r) * free

    def A(v):
        t0 = time.perf_counter()
        out = np.sum(cluster.call(schur_product, v * free), axis=0) * free
        cluster.products.append((time.perf_counter() - t0, len(cluster.chunks) * 2 * v.nbytes))
        return out

    return truncated_cg(A, prec, rhs * free, rtol, CG_ITER)


def fit_cluster(cluster, start_x, *, maxiter=5000, gtol=1e-3, verbose=False, hook=None):
    """Maximise the profiled ELBO over the driver's parameters from ``start_x``.

    ``hook(iteration, cluster)``, when given, is called after each L-BFGS iteration
    (the fault-tolerance tests kill a worker there). Returns a :class:`ClusterFitState`.
    """
    from ..optim.lbfgs import minimize_lbfgs

    t0 = time.perf_counter()
    layout = cluster.layout
    cluster.gtol = float(gtol)
    lo, hi = _bounds(layout)
    x = np.asarray(start_x, dtype=float).copy()
    hist, it_total, n_eval = [], 0, 0
    val, g, smax, site_s = -np.inf, np.zeros_like(x), np.inf, np.inf
    printer = _progress(cluster, t0) if verbose else None
    message, interrupted = "converged at the start", False

    def ncb(it, f, gmax):
        hist.append((len(hist) + 1, f, gmax, time.perf_counter() - t0))
        if printer is not None:
            printer(len(hist), -f, gmax)
        if hook is not None:
            hook(len(hist), cluster)

    try:
        if JOINT and distributed_newton.supported(cluster):
            # the in-memory engine's joint Newton iterations, mapped over the chunks: few
            # passes over the cells; the profiled evaluation below confirms (or finishes)
            x, k, _ = distributed_newton.joint_phase(cluster, x, gtol, lo, hi, ncb)
            it_total += k
        val, g, h, site_s = cluster.round(x)
        n_eval += 1
        if not np.isfinite(val):
            raise JSDMError("the ELBO is not finite at the starting values; check the data (a "
                            "species or site with extreme values) or fit in memory first")
        smax = _scaled(x, g, h, lo, hi)
        if NEWTON_STEPS and max(smax, site_s) > gtol:
            x, val, g, h, site_s, k, ne = newton_phase(cluster, x, val, g, h, gtol, lo, hi, ncb,
                                                      min(NEWTON_STEPS, maxiter))
            it_total += k
            n_eval += ne
            smax = _scaled(x, g, h, lo, hi)
            message = "converged in the Newton phase"
        for _ in range(LBFGS_RESCALES + 1):
            if max(smax, site_s) <= gtol or it_total >= maxiter:
                break
            x0, sc = x.copy(), Scaling(h, cluster)

            def fg(y, x0=x0, sc=sc):
                v, gg, _, _ = cluster.round(x0 + sc.to_x(y), curvature=False)
                if not np.isfinite(v):
                    return np.inf, np.zeros_like(y)
                return -v, -sc.grad(gg)

            def cb(it, f, gmax):
                hist.append((len(hist) + 1, f, gmax, time.perf_counter() - t0))
                if printer is not None:
                    printer(len(hist), -f, gmax)
                if hook is not None:
                    hook(len(hist), cluster)

            res = minimize_lbfgs(fg, np.zeros_like(x0), maxiter=maxiter - it_total,
                                 gtol=0.5 * gtol, callback=cb, bounds=sc.bounds(lo, hi, x0),
                                 memory=LBFGS_MEMORY)
            it_total += res.n_iter
            n_eval += res.n_eval
            message = res.message
            x = x0 + sc.to_x(res.x)
            val, g, h, site_s = cluster.round(x)          # sites at x, with the curvature
            n_eval += 1
            smax = _scaled(x, g, h, lo, hi)
            if not str(message).startswith("CONVERGENCE"):
                break
    except KeyboardInterrupt:
        interrupted = True
        message = (f"interrupted by the user after {it_total + len(hist)} iterations: the "
                   "estimates are those of the last completed evaluation; not converged")
        x = cluster.x if cluster.x is not None else x
        warnings.warn("the cluster fit was interrupted (KeyboardInterrupt); returning the last "
                      "completed state, not converged. fit.save(path) keeps it; refit to finish.",
                      ConvergenceWarning, stacklevel=3)
        g = np.full_like(x, np.nan)
        smax = np.nan
        if not np.isfinite(val):        # interrupted in the joint phase: its last ELBO
            val = (getattr(cluster, "joint", None) or {}).get("value", val)
    converged = bool(np.isfinite(smax) and max(smax, site_s) <= gtol) and not interrupted
    if not converged and not interrupted:
        warnings.warn(
            f"the cluster fit did not converge: max scaled gradient = {max(smax, site_s):.3g} > "
            f"gtol = {gtol:g} after {it_total} iterations ({message}). Try a larger maxiter or "
            "fewer latent variables.", ConvergenceWarning, stacklevel=3)
    P = put_global(layout, cluster.template_params(), x)
    return ClusterFitState(P, x, val, g, converged, it_total, n_eval, str(message),
                           time.perf_counter() - t0, smax, cluster, hist, interrupted)


class Scaling:
    """Coordinates of the driver's L-BFGS: x = x0 + T y with T = R_j^-T on each species'
    free coefficients (B_j = R_j R_j' the species block of the profiled curvature, summed
    over the chunks) and 1 / sqrt(h_k) on the others (dispersions, global parameters)."""

    def __init__(self, h, cluster):
        self.d = np.sqrt(np.maximum(h, 1e-8))
        self.groups = []
        pos = cluster.coef_positions()          # (m, ks): packed position or -1
        B = getattr(cluster, "B", None)
        if B is None or not pos.size:
            return
        by_k = {}
        for j in range(pos.shape[0]):
            f = np.flatnonzero(pos[j] >= 0)
            if f.size:
                by_k.setdefault(f.size, []).append((pos[j, f], B[j][np.ix_(f, f)]))
        for items in by_k.values():
            P = np.array([p for p, _ in items])
            Bk = np.array([b for _, b in items])
            Bk = 0.5 * (Bk + np.swapaxes(Bk, 1, 2))
            w = np.linalg.eigvalsh(Bk)
            ok = w[:, 0] > 1e-10 * np.maximum(w[:, -1], 1e-300)
            if not ok.any():
                continue
            R = np.linalg.cholesky(Bk[ok])
            T = np.swapaxes(np.linalg.inv(R), 1, 2)            # R^-T
            self.groups.append((P[ok], T))

    def to_x(self, y):
        dx = y / self.d
        for P, T in self.groups:
            dx[P] = np.einsum("gkl,gl->gk", T, y[P])
        return dx

    def grad(self, g):
        gy = g / self.d
        for P, T in self.groups:
            gy[P] = np.einsum("glk,gl->gk", T, g[P])
        return gy

    def bounds(self, lo, hi, x0):
        blo, bhi = (lo - x0) * self.d, (hi - x0) * self.d
        for P, _ in self.groups:
            if np.isfinite(lo[P]).any() or np.isfinite(hi[P]).any():
                raise ValueError("bounded species coefficients cannot be block-scaled")
            blo[P], bhi[P] = -np.inf, np.inf
        return blo, bhi


def _bounds(layout):
    lo, hi = layout.bounds()
    gi = global_positions(layout)
    return lo[gi], hi[gi]


def _scaled(x, g, h, lo, hi):
    if not g.size:
        return 0.0
    g = g.copy()
    g[(x <= lo) & (g < 0)] = 0.0
    g[(x >= hi) & (g > 0)] = 0.0
    return float((np.abs(g) / np.sqrt(np.maximum(h, 1.0))).max())


def _progress(cluster, t0, every=1.0):
    import sys

    last = [-np.inf]
    link = getattr(cluster.client, "dashboard_link", None)
    if link:
        print(f"[jsdm] cluster fit: {len(cluster.chunks)} chunks of sites; dashboard {link}",
              file=sys.stderr)

    def cb(it, elbo, gmax):
        now = time.perf_counter()
        if now - last[0] >= every:
            last[0] = now
            r = cluster.rounds[-1] if cluster.rounds else (np.nan,)
            grad = "-" if not np.isfinite(gmax) else f"{gmax:.2e}"      # not checked yet
            per = "" if not np.isfinite(r[0]) else f"  {r[0]:.2f}s/evaluation"
            print(f"[jsdm] cluster iter {it:4d}  ELBO {elbo:.4f}  max|grad| {grad}{per}  "
                  f"{now - t0:.1f}s", file=sys.stderr)
    return cb


# --- setting up: chunks and starting values -------------------------------------------------
def model_description(prob):
    """The model part of a chunk spec, from a (driver-side) Problem."""
    return {"family": prob.family, "num_lv": prob.num_lv, "row_effect": prob.row_effect,
            "species": prob.species, "terms": prob.terms, "formula": prob.formula,
            "n_disp": prob.info.get("n_dispersion"), "model_terms": prob.model_terms}


def template_layout(model, p):
    """A layout of the model for two sites: the driver's slots (species and global ones)."""
    import pandas as pd

    m = len(model["species"])
    Y = np.zeros((2, m))
    info = {} if model["n_disp"] is None else {"n_dispersion": model["n_disp"]}
    prob = Problem(Y=Y, W=np.broadcast_to(1.0, Y.shape), X=np.zeros((2, p)),
                   family=model["family"], num_lv=model["num_lv"], row_effect=model["row_effect"],
                   sites=pd.Index(["_a", "_b"]), species=model["species"], terms=model["terms"],
                   formula=model["formula"], info=info, model_terms=model["model_terms"])
    return Layout(prob.predictor), prob


def split_rows(n, n_chunks):
    """Contiguous chunks of sites, as equal as possible: list of (start, stop)."""
    n_chunks = max(1, min(int(n_chunks), n))
    edges = np.linspace(0, n, n_chunks + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def specs_from_problem(prob, n_chunks):
    """Chunk specs holding slices of an in-memory Problem's arrays."""
    model = model_description(prob)
    specs = []
    for k, (a, b) in enumerate(split_rows(prob.n, n_chunks)):
        Y = np.where(prob.W[a:b] > 0, prob.Y[a:b], np.nan)
        arrays = {"Y": Y, "X": prob.X[a:b],
                  "offset": None if prob.offset is None else prob.offset[a:b],
                  "trials": None if prob.trials is None else prob.trials[a:b]}
        specs.append(ChunkSpec(k, a, list(prob.sites[a:b]), model, arrays=arrays))
    return specs


def glm_rows(n, m, max_sites=1000):
    """The sites the starting GLMs use (as :func:`jsdm.model.start.glm_start` picks them)."""
    keep = min(n, max_sites, max(200, 500_000 // max(m, 1)))
    return np.unique(np.linspace(0, n - 1, keep).round().astype(int))


def cluster_start(cluster, model, p, n, seed, jitter=0.0):
    """Starting driver vector x and the chunks' starting sites (futures), as the in-memory
    engine starts: per-species GLMs on the same subset of sites (gathered to the driver),
    then the leading factors of their Dunn-Smyth residuals (Gram matrix summed over chunks).
    """
    import pandas as pd

    from .start import glm_start
    from .terms.latent import triangular_rotation

    client = cluster.client
    rows = glm_rows(n, len(model["species"]))
    parts = []
    for k, spec in enumerate(cluster.specs):
        stop = spec.row0 + len(spec.sites)
        mine = rows[(rows >= spec.row0) & (rows < stop)]
        if mine.size:
            parts.append((k, mine))
    got = [client.submit(take_rows, cluster.chunks[k], mine, pure=False,
                         workers=[cluster.where[k]]) for k, mine in parts]
    got = cluster._gather(got)

    def cat(key):
        vals = [g[key] for g in got]
        return None if vals[0] is None else np.concatenate(vals, axis=0)

    Y = cat("Y")
    W = np.isfinite(Y).astype(float)
    info = {} if model["n_disp"] is None else {"n_dispersion": model["n_disp"]}
    sub = Problem(Y=np.where(W > 0, Y, model["family"].missing_fill), W=W, X=cat("X"),
                  family=model["family"], num_lv=model["num_lv"], row_effect=model["row_effect"],
                  sites=pd.RangeIndex(len(Y)), species=model["species"], terms=model["terms"],
                  offset=cat("offset"), trials=cat("trials"), formula=model["formula"], info=info,
                  model_terms=model["model_terms"])
    b, s = glm_start(sub, max_sites=len(Y))
    pred = sub.predictor
    P = pred.zeros()
    if s is not None:
        P.s = s.copy()
    at = 0
    for t in pred.glm_terms:
        w = t.species_width(pred)
        t.start(pred, P, {"glm": {t: b[:, at:at + w]}, "s": s, "rng": None, "jitter": jitter,
                          "eta0": None, "prob": sub})
        at += w
    for t in pred.terms:            # global fields (random row effects' sd): their own start
        if not t.bilinear and t.site_width(pred) and t.hyper_fields:
            t.start(pred, P, {"glm": {}, "s": s, "rng": None, "jitter": 0.0, "eta0": None,
                              "prob": sub})
    d = model["num_lv"]
    a_futs = [None] * len(cluster.chunks)
    if d:
        tot = tree_sum(cluster, cluster.call(residual_gram, b, s, seed, jitter, state=False,
                                             futures=True))
        nn = tot["n"]
        mean = tot["sum"] / nn
        G = tot["gram"] - nn * np.outer(mean, mean)
        lam, V = np.linalg.eigh(G)
        lam, V = lam[::-1][:d], V[:, ::-1][:, :d]
        sv = np.sqrt(np.maximum(lam, 1e-12))
        theta = (V * sv) / np.sqrt(nn)
        Q = triangular_rotation(theta)
        P.theta = np.tril(theta @ Q)
        a_futs = cluster.call(residual_scores, b, s, seed, jitter, mean, V, sv, nn, Q,
                              state=False)
    x0 = pack_global(cluster.layout, P)
    cluster.x = x0
    if d:
        cluster.call(set_sites, state=False,
                     per_chunk=[((cluster.token, k), x0, a) for k, a in enumerate(a_futs)])
    else:
        cluster.call(set_sites, (cluster.token, 0), x0, state=False,
                     per_chunk=[((cluster.token, k), x0) for k in range(len(cluster.chunks))])
    return x0


def _global_fields(layout):
    return list(dict.fromkeys(s.field for s in global_slots(layout)))


def check_supported(prob):
    """Refuse what the cluster engine does not do (yet), naming the alternative."""
    if prob.info.get("prior_sd") is not None:
        raise JSDMError("prior_sd= is not available with client= yet; fit without the penalty "
                        "or in memory")
    extra = [t.kind for t in prob.model_terms
             if t.kind not in ("intercepts", "slopes", "lv", "row_fixed", "row_random")]
    if extra:
        raise JSDMError(f"terms {extra} are not available with client= yet; fit them in memory")


def default_chunks(client, n, m):
    """Chunks of sites: at least two per worker, and at most about 5 million cells each."""
    try:
        workers = max(1, len(client.scheduler_info()["workers"]))
    except Exception:       # pragma: no cover - a client without scheduler info
        workers = 1
    return max(2 * workers, int(np.ceil(n * m / 5e6)))


def run(prob, client, *, chunks=None, n_init=1, seed=0, maxiter=5000, gtol=1e-3, verbose=False,
        hook=None, specs=None):
    """Fit ``prob`` (a driver-side Problem, or None with ``specs``) on the cluster."""
    if prob is not None:
        check_supported(prob)
        n_chunks = chunks or default_chunks(client, prob.n, prob.m)
        specs = specs_from_problem(prob, n_chunks)
    model = specs[0].model
    p = len(model["terms"])
    n = specs[-1].row0 + len(specs[-1].sites)
    layout, _ = template_layout(model, p)
    best = None
    for k in range(max(1, int(n_init))):
        cluster = ClusterState(client, specs, layout)
        x0 = cluster_start(cluster, model, p, n, seed, jitter=0.0 if k == 0 else 0.5)
        order = anchor_species(cluster, x0) if k == 0 else None
        if order is not None:       # as in memory: the fit runs with well-loaded anchors first
            x0 = reorder_cluster(cluster, x0, order)
        st = fit_cluster(cluster, x0, maxiter=maxiter, gtol=gtol, verbose=verbose, hook=hook)
        if order is not None:       # back to the data's species order and convention
            x = reorder_cluster(cluster, st.x, np.argsort(order))
            val, g, _, _ = cluster.round(x, curvature=False)
            st = replace(st, x=x, params=put_global(cluster.layout, cluster.template_params(), x),
                         grad=g, value=val if np.isfinite(val) else st.value)
        if best is None or st.value > best.value:
            best = st
        if st.interrupted:
            break
    return normalise_signs(best)


def anchor_species(cluster, x):
    """The in-memory fit's anchor order (``latent.anchor_order``) of the start's loadings, or
    None (the data's order is as good, or the model has no latent variables to pin)."""
    from .terms.latent import anchor_order

    model = cluster.specs[0].model
    if model.get("order") is not None or not model["num_lv"] or \
            not distributed_newton.supported(cluster):
        return None
    P = put_global(cluster.layout, cluster.template_params(), x)
    theta = getattr(P, "theta", None)
    return None if theta is None or not theta.size else anchor_order(theta)


def reorder_cluster(cluster, x, order):
    """Take the species in ``order`` (relative to the chunks' present order) on the driver and
    the chunks, and rotate the latent variables so that the new first d species' loadings are
    lower triangular (an exact symmetry: ``latent.to_triangular``); returns the new x."""
    from .fit import reorder_species
    from .terms.latent import _block_rotation, _block_tril, lv_blocks

    order = np.asarray(order)
    model = cluster.specs[0].model
    data_species = model.get("data_species", model["species"])
    total = order if model.get("order") is None else np.asarray(model["order"])[order]
    if np.array_equal(total, np.arange(len(total))):
        new_model = {k: v for k, v in model.items() if k not in ("order", "data_species")}
        new_model["species"] = data_species
    else:
        new_model = {**model, "order": total, "data_species": data_species,
                     "species": data_species[total]}
    P = reorder_species(put_global(cluster.layout, cluster.template_params(), x), order,
                        cluster.layout)
    blocks = lv_blocks(P)
    Qm = _block_rotation(P.theta, blocks)
    P.theta = _block_tril(P.theta @ Qm, blocks)
    cluster.specs = [replace(sp, model=new_model) for sp in cluster.specs]
    cluster.layout, _ = template_layout(new_model, len(new_model["terms"]))
    cluster._coef_pos = None
    x_new = pack_global(cluster.layout, P)
    cluster.call(reorder_chunk, per_chunk=[(order, Qm, x_new, sp) for sp in cluster.specs])
    cluster.x = x_new
    return x_new


def reorder_chunk(chunk, P, order, Qm, x, spec):
    """Worker task: the chunk's species in ``order`` and its sites rotated by Qm (a_i -> Qm' a_i,
    as ``latent.to_triangular``); the species fields from the driver's x; ``spec`` (the
    chunk's spec in the new order) rebuilds it."""
    from .terms.latent import transform_site_cov

    chunk.spec = spec
    chunk.prob = _species_order(chunk.prob, order)
    if chunk.row0 != 0:
        chunk.prob.predictor.pinned = []
    chunk.layout = Layout(chunk.prob.predictor)
    chunk.gidx = global_positions(chunk.layout)
    _LAST.pop(id(chunk), None)
    _OPS.pop(id(chunk), None)
    new = put_global(chunk.layout, P, x)
    new.a = P.a @ Qm
    new.L = transform_site_cov(P.L, Qm.T)
    return Updated(new, True)


def normalise_signs(st):
    """Flip latent variables so the loadings' diagonal is positive (on the workers too)."""
    P = st.params
    theta = getattr(P, "theta", None)
    if theta is None or theta.shape[1] == 0:
        return st
    d = theta.shape[1]
    sign = np.sign(np.diag(theta[:d]))
    sign[sign == 0] = 1.0
    if (sign > 0).all():
        return st
    cl = st.cluster
    P = P.copy()
    P.theta = theta * sign
    x = pack_global(cl.layout, P)
    flip = np.ones_like(x)
    flip[x != st.x] = -1.0
    cl.call(flip_signs, sign)
    cl.x = x
    return replace(st, params=P, x=x, grad=st.grad * flip)


# --- after the fit: results on the driver ------------------------------------------------------
def write_scores(chunk, P, path, names):
    """Worker task: the chunk's site scores to ``<path>/part-<k>.parquet``."""
    import os

    import pandas as pd

    os.makedirs(path, exist_ok=True)
    df = pd.DataFrame(np.asarray(P.a), index=pd.Index(chunk.prob.sites, name="site"),
                      columns=names)
    out = os.path.join(path, f"part-{chunk.index:05d}.parquet")
    df.to_parquet(out)
    return out


def schur_sum(cluster):
    """The negative Schur complement summed over the chunks, and the sites (global indices)
    whose variational block is not negative definite."""
    if cluster.specs[0].model["row_effect"] == "fixed":
        raise JSDMError("standard errors of a cluster fit with fixed row effects are not "
                        "available yet (their n - 1 estimates are model parameters); use random "
                        "row effects, or fit in memory")
    total = tree_sum(cluster, cluster.call(schur_part, futures=True))
    return total["negS"], total["bad"]


def tree_sum(cluster, futs):
    """Sum dicts of arrays (futures on the workers) pairwise on the workers; one result
    comes to the driver (the m x m and P x P sums never pile up there)."""
    while len(futs) > 1:
        nxt = [cluster.client.submit(_add_parts, futs[i], futs[i + 1], pure=False)
               for i in range(0, len(futs) - 1, 2)]
        futs = nxt + ([futs[-1]] if len(futs) % 2 else [])
    return cluster._gather(futs)[0]


def _add_parts(a, b):
    return {k: a[k] + b[k] for k in a if k in b}


def driver_problem(model, p, sites_total=0):
    """The model on zero sites: labels, terms and family for the driver's tables."""
    import pandas as pd

    m = len(model["species"])
    info = {} if model["n_disp"] is None else {"n_dispersion": model["n_disp"]}
    return Problem(Y=np.zeros((0, m)), W=np.broadcast_to(1.0, (0, m)), X=np.zeros((0, p)),
                   family=model["family"], num_lv=model["num_lv"], row_effect=model["row_effect"],
                   sites=pd.Index([]), species=model["species"], terms=model["terms"],
                   formula=model["formula"], info=info, model_terms=model["model_terms"])


def to_fit_state(st, prob0):
    """The engine's FitState for the driver's zero-site problem."""
    from .fit import FitState

    layout = Layout(prob0.predictor)
    P = prob0.predictor.zeros()
    for s in global_slots(layout):
        setattr(P, s.field, getattr(st.params, s.field))
    P.L = np.zeros((0, prob0.predictor.kr, prob0.predictor.kr))
    return FitState(P, float(st.value), np.asarray(st.grad, dtype=float), bool(st.converged),
                    int(st.n_iter), int(st.n_eval), st.message, float(st.elapsed), layout, [],
                    list(st.history), float(st.scaled_grad))


def nobs_of(cluster):
    return int(sum(cluster.call(_nobs, state=False)))


def _nobs(chunk):
    return float(np.broadcast_to(chunk.prob.W, chunk.prob.Y.shape).sum())


def sample_problem(fit, k, seed):
    """(Problem, FitState) on about k sites drawn from the chunks, with the fit's estimates."""
    import pandas as pd

    from .fit import FitState, make_layout
    from .objective import evaluate

    cl = fit._cluster
    n = len(fit.sites)
    per = [max(1, int(round(k * len(s.sites) / n))) for s in cl.specs]
    parts = cl.call(sample_data, per_chunk=[(kk, seed) for kk in per])

    def cat(key):
        vals = [g[key] for g in parts]
        return None if vals[0] is None else np.concatenate(vals, axis=0)

    model = cl.specs[0].model
    Y = cat("Y")
    W = np.isfinite(Y).astype(float)
    if W.all():
        W = np.broadcast_to(1.0, Y.shape)
    info = {} if model["n_disp"] is None else {"n_dispersion": model["n_disp"]}
    sites = pd.Index([s for g in parts for s in g["sites"]])
    prob = Problem(Y=np.where(W > 0, Y, model["family"].missing_fill), W=W, X=cat("X"),
                   family=model["family"], num_lv=model["num_lv"], row_effect=model["row_effect"],
                   sites=sites, species=model["species"], terms=model["terms"],
                   offset=cat("offset"), trials=cat("trials"), formula=model["formula"],
                   info=info, model_terms=model["model_terms"])
    P = prob.predictor.zeros()
    for f, v in fit.state.params.fields().items():
        if v is not None and f not in parts[0]["params"]:
            setattr(P, f, np.array(v, dtype=float))
    for f in parts[0]["params"]:
        setattr(P, f, np.concatenate([g["params"][f] for g in parts], axis=0))
    if fit.row_effect == "fixed":       # alpha_1 = 0 on the sample: shift into the intercepts
        P.beta0 = P.beta0 + P.alpha[0]
        P.alpha = P.alpha - P.alpha[0]
    layout = make_layout(prob)
    ev = evaluate(prob, P)
    st = FitState(P, float(ev.value), layout.pack_grad(ev.grad, P), fit.converged, fit.n_iter, 0,
                  "sites sampled from a cluster fit", fit.fit_time, layout, [], [],
                  fit.scaled_grad)
    return prob, st
