"""Fitting: starts, block Newton warm-up, L-BFGS polish, best of several starts."""
from dataclasses import dataclass, field
import time
import warnings

import numpy as np

from ..exceptions import ConvergenceWarning
from ..optim.lbfgs import minimize_lbfgs
from .objective import CACHE_KEY, cell_eval, evaluate, gradient_from
from .params import Layout, Params
from .problem import unstandardised
from .blocks import curvature_diagonal, scaled_gradient, scaled_max, squarem_ascent
from .full_newton import affordable, full_newton
from .newton import newton_ascent
from .start import glm_start, initial_params, triangular_rotation


@dataclass
class FitState:
    """What the optimiser found for one problem (the best start)."""

    params: Params
    value: float
    grad: np.ndarray          # packed gradient of the ELBO at params
    converged: bool
    n_iter: int
    n_eval: int
    message: str
    elapsed: float
    layout: Layout
    start_values: list = field(default_factory=list)   # final ELBO of each start
    history: list = field(default_factory=list)
    scaled_grad: float = float("nan")   # max_k |g_k| / sqrt(max(curvature_k, 1))

    @property
    def max_grad(self):
        return float(np.max(np.abs(self.grad))) if self.grad.size else 0.0


def make_layout(prob):
    return Layout(prob.n, prob.m, prob.p, prob.d, prob.family.has_dispersion, prob.row_effect,
                  prob.n_disp, prob.s_free, prob.family.shared_dispersion)


def neg_elbo(prob, layout):
    """f(x) = -ELBO and its packed gradient, for minimisers."""
    def fg(x):
        P = layout.unpack(x)
        ev = evaluate(prob, P)
        if not np.isfinite(ev.value):
            return np.inf, np.zeros_like(x)
        return -ev.value, -layout.pack_grad(ev.grad, P)
    return fg


class NonCentred:
    """Optimiser coordinates for random row effects: alpha_i = sigma u_i, rho_i = |sigma| tau_i.

    In the packed (centred) coordinates the ELBO is badly curved as sigma -> 0
    (prior precision 1/sigma^2 on alpha); in (sigma, u, log tau) the KL term no
    longer involves sigma and sigma can approach 0 smoothly. Only the random-row
    slots change; everything else passes through.
    """

    def __init__(self, prob, layout):
        self.prob, self.layout = prob, layout
        sl = layout.slices
        self.on = prob.row_effect == "random"
        self.ls, self.al, self.lr = sl["log_sigma"], sl["alpha_random"], sl["log_rho"]

    def to_opt(self, x):
        if not self.on:
            return x
        y = x.copy()
        sig = np.exp(x[self.ls])
        y[self.ls] = sig
        y[self.al] = x[self.al] / sig
        y[self.lr] = x[self.lr] - x[self.ls]
        return y

    def from_opt(self, y):
        if not self.on:
            return y
        x = y.copy()
        sig = max(abs(float(y[self.ls][0])), 1e-300)
        x[self.ls] = np.log(sig)
        x[self.al] = y[self.al] * y[self.ls][0]
        x[self.lr] = y[self.lr] + np.log(sig)
        return x

    def grad_to_opt(self, y, g, ev):
        """Chain rule for the gradient of the ELBO; g is the packed (centred) gradient."""
        if not self.on:
            return g
        out = g.copy()
        sig, u, tau2 = y[self.ls][0], y[self.al], np.exp(2.0 * y[self.lr])
        # d/du_i: the ell part gives sigma * sum_j Gm_ij, the KL part -u_i
        out[self.al] = sig * ev.Gm.sum(1) - u
        # d/dlog tau_i: 2 sigma^2 tau_i^2 sum_j Gv_ij (ell) - tau_i^2 + 1 (KL)
        out[self.lr] = 2.0 * sig * sig * tau2 * ev.Gv.sum(1) - tau2 + 1.0
        out[self.ls] = (ev.Gm.sum(1) * u).sum() + 2.0 * sig * (ev.Gv.sum(1) * tau2).sum()
        return out


def neg_elbo_opt(prob, layout, nc):
    """f(y) = -ELBO and its gradient in the optimiser's coordinates (see NonCentred)."""
    def fg(y):
        x = nc.from_opt(y)
        with np.errstate(over="ignore", invalid="ignore"):   # a line-search trial may be wild
            P = layout.unpack(x)
            ev = evaluate(prob, P)
        if not np.isfinite(ev.value):
            return np.inf, np.zeros_like(y)
        return -ev.value, -nc.grad_to_opt(y, layout.pack_grad(ev.grad, P), ev)
    return fg


def normalise(P):
    """Flip LV signs so the loadings' diagonal is positive (an exact symmetry)."""
    d = P.theta.shape[1]
    if d == 0:
        return P
    sign = np.sign(np.diag(P.theta[:d]))
    sign[sign == 0] = 1.0
    P = P.copy()
    P.theta = P.theta * sign
    P.a = P.a * sign
    P.L = P.L * sign[None, :, None]
    # keep L's diagonal positive: flip columns of L back (A = L L' is unchanged by column signs)
    P.L = P.L * sign[None, None, :]
    return P


DEFAULT_SEED = 0     # seed=None means this seed: the same call gives the same fit, bit for bit


def fit_problem(prob, *, n_init=1, seed=None, maxiter=5000, gtol=1e-3, verbose=False,
                start=None):
    """Fit the model; return the best :class:`FitState` over ``n_init`` starts.

    The starts are drawn from ``seed`` (``None`` means ``DEFAULT_SEED``, so that
    fits are reproducible by default; pass another seed for other starts). Start 1 is
    the per-species GLMs with an SVD of their Dunn-Smyth residuals; start 2, where the
    family names a ``start_family``, the fit of that family (see :func:`related_start`);
    the others jitter the residuals.

    Each start runs block Newton sweeps (SQUAREM-accelerated), joint Newton
    steps on the means, then a diagonally scaled L-BFGS polish; ``maxiter``
    bounds the iterations of all three together. Converged means the scaled
    gradient max_k |g_k| / sqrt(max(h_k, 1)) is at most ``gtol``, with h_k the
    curvature of the ELBO along parameter k.
    """
    try:
        with _one_blas_thread():
            return _fit(prob, n_init, seed, maxiter, gtol, verbose, start)
    finally:
        prob.info.pop(CACHE_KEY, None)      # the family's y-only terms: memory, not results


def _one_blas_thread():
    """Run the fit with one BLAS thread (the Newton step's big products ask for more).

    Multithreaded BLAS on the many small matrices of a fit, and for Cholesky
    factors, was slower than one thread here (a 175 x 175 Cholesky: 27 ms with
    OpenBLAS threads on a busy 2-core machine, 0.8 ms with one).
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _fit(prob, n_init, seed, maxiter, gtol, verbose, start):
    t0 = time.perf_counter()
    layout = make_layout(prob)
    rng = np.random.default_rng(DEFAULT_SEED if seed is None else seed)
    glm = glm_start(prob)
    best, values = None, []
    work, work_layout, order = prob, layout, None
    for k in range(max(1, int(n_init)) if start is None else 1):
        P0 = start if start is not None else (related_start(prob, rng, glm) if k == 1 else None)
        if P0 is None:
            P0 = initial_params(prob, rng, jitter=0.0 if k == 0 else 0.5, glm=glm)
        if k == 0:
            order = anchor_order(P0.theta)
            if order is not None:
                work = _reordered_problem(prob, order)
                work_layout = make_layout(work)     # its held dispersion entries, in its order
        if order is not None:
            P0 = to_triangular(reorder_species(P0, order))
        run = _run_start(work, work_layout, P0, maxiter, gtol,
                         _printer(k, t0) if verbose else None)
        values.append(run[1])
        if best is None or run[1] > best[1]:
            best = run
    P, _, n_iter, n_eval, message, hist = best
    if order is not None:       # back to the user's species order and identifiability convention
        work.info.pop(CACHE_KEY, None)
        P = to_triangular(reorder_species(P, np.argsort(order)))
    P = normalise(P)
    value, g, smax = _final_check(prob, layout, P)
    if order is not None and smax > gtol and n_iter < maxiter:
        # the scaled gradient is not rotation invariant: finish in the data's convention
        P, _, more, n_more, message, h_more = _run_start(
            prob, layout, P, maxiter - n_iter, gtol,
            _printer("finish (data order)", t0) if verbose else None)
        n_iter, n_eval = n_iter + more, n_eval + n_more
        hist = hist + [(len(hist) + 1 + i, *row[1:]) for i, row in enumerate(h_more)]
        P = normalise(P)
        value, g, smax = _final_check(prob, layout, P)
    state = FitState(P, value, g, smax <= gtol, n_iter, n_eval, message,
                     time.perf_counter() - t0, layout, values, hist, smax)
    if not state.converged:
        warnings.warn(
            f"the fit did not converge: max scaled gradient = {smax:.3g} > gtol = {gtol:g} "
            f"(max |gradient| = {state.max_grad:.3g}) after {n_iter} iterations ({message}). "
            "Try more starts (n_init=5), a larger maxiter, "
            + ("standardising covariates, " if unstandardised(prob.X) else "")
            + "or fewer latent variables; fit.diagnose() shows which parameters carry the gradient.",
            ConvergenceWarning, stacklevel=3)
    return state


def related_start(prob, rng, glm):
    """A start from the fit of a related, better-behaved family (``family.start_family``).

    Zero-inflated and hurdle count models have many local optima: whether a species'
    zeros are explained by the latent variables or by its zero probability is decided
    by where the fit starts. A negative binomial GLLVM (one start) on the same data puts
    the latent variables on the co-occurrence pattern with the overdispersion in phi
    (for the hurdle NB, a hurdle Poisson GLLVM, which fits the same truncated counts);
    its coefficients and variational parameters start the family's own fit (its
    nuisance parameters start as in the default start). None when the family names no
    such family, the model has no latent variables, or the data do not suit that family.
    """
    from dataclasses import replace

    from ..exceptions import JSDMError
    from ..families import get_family

    name = getattr(prob.family, "start_family", None)
    if name is None or prob.d == 0:
        return None
    other = get_family(name)
    try:
        other.check_y(np.where(prob.W > 0, prob.Y, np.nan), prob.trials)
    except JSDMError:
        return None
    sub = replace(prob, family=other, info={k: v for k, v in prob.info.items()
                                           if k not in ("n_dispersion", CACHE_KEY)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = fit_problem(sub, n_init=1, seed=int(rng.integers(2 ** 31)))
    P0 = initial_params(prob, rng, glm=glm)
    src = state.params
    for key in ("beta0", "B", "theta", "a", "L", "alpha", "log_sigma", "log_rho"):
        val = getattr(src, key)
        setattr(P0, key, None if val is None else np.array(val, dtype=float))
    return P0


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


def reorder_species(P, order):
    """Params with the species-indexed parts (beta0, B, theta, s) taken in ``order``."""
    Q = P.copy()
    Q.beta0, Q.B, Q.theta = P.beta0[order], P.B[order], P.theta[order]
    if P.s is not None and P.s.shape[0] == P.beta0.shape[0] > 1:     # not a shared dispersion
        Q.s = P.s[order]
    return Q


def to_triangular(P):
    """Rotate the latent variables so that theta's first d rows are lower triangular.

    a_i -> Q' a_i, A_i -> Q' A_i Q, theta_j -> Q' theta_j with Q orthogonal from a QR
    factorisation of theta_top': every m_ij, v_ij and KL term is unchanged.
    """
    if P.theta.shape[1] == 0:
        return P
    Qm = triangular_rotation(P.theta)
    new = P.copy()
    new.theta = np.tril(P.theta @ Qm)
    new.a = P.a @ Qm
    A = np.swapaxes(Qm, 0, 1)[None] @ P.A @ Qm[None]
    new.L = np.linalg.cholesky(0.5 * (A + np.swapaxes(A, 1, 2)))
    return new


def _reordered_problem(prob, order):
    """The problem with its species (columns) in ``order``; its own cache of family terms."""
    from dataclasses import replace

    def cols(x):
        return None if x is None else x[:, order]

    W = prob.W if not any(prob.W.strides) else prob.W[:, order]      # all-ones view: as it is
    return replace(prob, Y=prob.Y[:, order], W=W, offset=cols(prob.offset),
                   trials=cols(prob.trials), species=prob.species[order],
                   family=prob.family.take_species(order),
                   info={k: v for k, v in prob.info.items() if k != CACHE_KEY})


def _final_check(prob, layout, P):
    """(ELBO, packed gradient, max scaled gradient) at P from one evaluation of the cells."""
    ce = cell_eval(prob, P, order=2 if P.s is not None else 1, clip=False)
    g = layout.pack_grad(gradient_from(prob, P, ce), P)
    h = curvature_diagonal(prob, layout, P, ce) if g.size else g
    return float(ce["site"].sum()), g, scaled_max(layout, P, g, h)


SQUAREM_ITERATIONS = 2      # block sweeps: cheap progress from the start
NEWTON_ITERATIONS = 15      # joint Newton steps on the means (linear convergence)
FULL_NEWTON_ITERATIONS = 100    # Newton steps in all parameters (small problems, full_newton.py)


def _run_start(prob, layout, P, maxiter, gtol, cb):
    """One start: returns (P, ELBO, iterations, evaluations, message, history)."""
    t0 = time.perf_counter()
    hist = []

    def record(phase):
        def rec(it, val):
            hist.append((len(hist) + 1, -val, np.nan, time.perf_counter() - t0))
            if cb is not None:
                cb(phase, it, -val, np.nan)
        return rec

    n_sq = min(SQUAREM_ITERATIONS, maxiter)
    h1 = []
    if n_sq > 0:
        P, h1 = squarem_ascent(prob, layout, P, max_iter=n_sq, rtol=1e-10,
                               callback=record("blocks"))
    n_nt = min(NEWTON_ITERATIONS, maxiter - len(h1))
    if n_nt > 0:
        P, h2, done = newton_ascent(prob, P, max_iter=n_nt, rtol=1e-12, callback=record("newton"),
                                    layout=layout, gtol=0.5 * gtol)
    else:
        h2, done = [], False
    left = maxiter - len(h1) - len(h2)
    if done or left <= 0:
        val = h2[-1][1] if h2 else float(cell_eval(prob, P)["site"].sum())
        return (P, val, len(h1) + len(h2), 0,
                "converged in the Newton phase" if done else "iteration limit reached", hist)
    h3 = []
    if affordable(prob, layout):    # full Newton (all parameters, exact Hessian) where cheap
        P, h3, done = full_newton(prob, layout, P, min(left, FULL_NEWTON_ITERATIONS), gtol,
                                  callback=record("full"))
        left -= len(h3)
        if done or left <= 0:
            val = h3[-1][1] if h3 else float(cell_eval(prob, P)["site"].sum())
            return (P, val, len(h1) + len(h2) + len(h3), 0,
                    "converged in the full Newton phase" if done else "iteration limit reached",
                    hist)

    def lcb(it, f, gmax):
        hist.append((len(hist) + 1, f, gmax, time.perf_counter() - t0))
        if cb is not None:
            cb("lbfgs", it, f, gmax)

    used, n_eval = len(h1) + len(h2) + len(h3), 0
    for _ in range(LBFGS_RESCALES + 1):
        P, val, n_it, n_ev, message = _lbfgs(prob, layout, P, maxiter - used, gtol, lcb)
        used, n_eval = used + n_it, n_eval + n_ev
        # L-BFGS judged its gradient in coordinates scaled by the curvature where it
        # started; where the curvature has moved since, check again and rescale
        if not message.startswith("CONVERGENCE: NORM") or used >= maxiter:
            break
        if scaled_gradient(prob, layout, P) <= gtol:
            break
    return P, val, used, n_eval, message, hist


LBFGS_RESCALES = 3          # L-BFGS restarts with fresh scaling when its own test misleads


def _lbfgs(prob, layout, P, maxiter, gtol, lcb):
    """L-BFGS from P in curvature-scaled (and, for random row effects, non-centred) coordinates.

    Returns (P, ELBO, iterations, evaluations, message).
    """
    nc = NonCentred(prob, layout)
    scale = np.sqrt(curvature_diagonal(prob, layout, P))
    if nc.on:   # curvature in the non-centred slots: u and log tau near 1, sigma ~ sum of Gv
        scale[nc.al], scale[nc.lr] = 1.0, np.sqrt(2.0)
        scale[nc.ls] = np.sqrt(max(float(-2.0 * cell_eval(prob, P)["Gv"].sum()), 1.0))
    x0 = nc.to_opt(layout.pack(P))
    fg = neg_elbo_opt(prob, layout, nc)

    def fg_scaled(y):
        f, g = fg(x0 + y / scale)
        return f, g / scale

    lo, hi = layout.bounds()
    res = minimize_lbfgs(fg_scaled, np.zeros_like(x0), maxiter=maxiter, gtol=gtol * 0.5,
                         callback=lcb, bounds=((lo - x0) * scale, (hi - x0) * scale))
    P = layout.unpack(nc.from_opt(x0 + res.x / scale))
    return P, -res.fun, res.n_iter, res.n_eval, res.message


def _printer(k, t0, every=1.0):
    """Progress lines on stderr: the first iteration of each phase of a start, then at most one
    per ``every`` s."""
    import sys

    last = [-np.inf, None]
    label = k if isinstance(k, str) else f"start {k + 1}"

    def cb(phase, it, f, gmax):
        now = time.perf_counter()
        if phase != last[1] or now - last[0] >= every:
            last[0], last[1] = now, phase
            g = "" if np.isnan(gmax) else f"  max|grad| {gmax:.2e}"
            print(f"[jsdm] {label} {phase:6s} iter {it:4d}  ELBO {-f:.4f}{g}  "
                  f"{now - t0:.1f}s", file=sys.stderr)
    return cb
