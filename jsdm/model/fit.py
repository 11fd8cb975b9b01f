"""Fitting: starts, block Newton warm-up, L-BFGS polish, best of several starts."""
from dataclasses import dataclass, field
import time
import warnings

import numpy as np

from ..exceptions import ConvergenceWarning, JSDMError
from ..optim.lbfgs import minimize_lbfgs
from .objective import cell_eval, evaluate, gradient_from, release_cache
from .params import Layout, Params
from .problem import unstandardised
from .blocks import curvature_diagonal, scaled_gradient, scaled_max, squarem_ascent
from .full_newton import affordable, full_newton
from .newton import newton_ascent
from .newton_nonlinear import DAMPING_MEMO
from .newton_nonlinear import supported as nonlinear_supported
from .start import glm_start, initial_params
from .terms.latent import ANCHOR_GAIN, anchor_order, normalise, to_triangular  # noqa: F401


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
    # per start: None when it ran to its end, else the index of the earlier start whose
    # optimum it joined (stopped early: see ``Joiner``; its start_values entry is that
    # optimum's ELBO)
    start_joined: list = field(default_factory=list)
    quadratic_starts: int = 0       # quadratic responses: the quadratic starts run (start_values)

    @property
    def max_grad(self):
        return float(np.max(np.abs(self.grad))) if self.grad.size else 0.0


def make_layout(prob):
    """The packed layout of the problem's terms (one per problem, kept on its predictor)."""
    pred = prob.predictor
    layout = pred.__dict__.get("_layout")
    if layout is None:
        layout = pred._layout = Layout(pred)
    return layout


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
    """Optimiser coordinates for a random site coordinate with prior sd sigma (random row effects).

    With the coordinate's mean mu_i and its row c of the joint Cholesky factor L_i
    (entries L_cl, l < c, and the diagonal L_cc on the log scale), the optimiser
    sees (sigma, u_i = mu_i / sigma, L_cl / sigma, log L_cc - log sigma): the
    alpha_i = sigma u_i, L_i = diag(.., sigma, ..) Lt_i parametrisation. In the
    packed (centred) coordinates the ELBO is badly curved as sigma -> 0 (prior
    precision 1/sigma^2 on alpha); in these the KL term no longer involves sigma
    and sigma can approach 0 smoothly. Only those slots change; everything else
    passes through. The term declares the pair by ``noncentred = (hyper slot, mean
    slot)``.
    """

    def __init__(self, prob, layout):
        self.prob, self.layout = prob, layout
        pred = prob.predictor
        found = [(t, sl) for t, sl in pred.random_site_terms if getattr(t, "noncentred", None)]
        self.on = bool(found)
        if not self.on:
            return
        term, sl = found[0]
        self.c = sl.start
        hyper, mean = term.noncentred
        self.ls, self.al = layout.slices[hyper], layout.slices[mean]
        slot = next(s for s in layout.slots if s.name == "L")
        nl, start = len(slot.tri[0]), layout.slices["L"].start
        row = np.flatnonzero(slot.tri[0] == self.c)                # entries of row c
        self.off = (start + np.arange(pred.n)[:, None] * nl + row[:-1][None, :]).ravel()
        self.diag = start + np.arange(pred.n) * nl + row[-1]
        self.off_cols = slot.tri[1][row[:-1]]
        self.lr = self.diag                                         # (kept name: log-sd slots)

    def to_opt(self, x):
        if not self.on:
            return x
        y = x.copy()
        sig = np.exp(x[self.ls])
        y[self.ls] = sig
        y[self.al] = x[self.al] / sig
        y[self.off] = x[self.off] / sig
        y[self.diag] = x[self.diag] - x[self.ls]
        return y

    def from_opt(self, y):
        if not self.on:
            return y
        x = y.copy()
        sig = max(abs(float(y[self.ls][0])), 1e-300)
        x[self.ls] = np.log(sig)
        x[self.al] = y[self.al] * y[self.ls][0]
        x[self.off] = y[self.off] * sig
        x[self.diag] = y[self.diag] + np.log(sig)
        return x

    def grad_to_opt(self, y, g, ev, P):
        """Chain rule for the gradient of the ELBO; g is the packed (centred) gradient.

        The ell part is differentiated through alpha = sigma u and L_c = sigma Lt_c; the
        KL part in these coordinates is free of sigma: -(u^2 + |Lt_c|^2) / 2 + log Lt_cc.
        """
        if not self.on:
            return g
        pred = self.prob.predictor
        out = g.copy()
        n, c = pred.n, self.c
        sig, u = y[self.ls][0], y[self.al]
        UR = pred.site_design(P, random_only=True)
        kr = UR.shape[1]
        UU = (UR[:, :, None] * UR[:, None, :]).reshape(len(UR), kr * kr)
        dS = (ev.Gv @ UU).reshape(n, kr, kr)
        gLc = 2.0 * np.einsum("il,ilk->ik", dS[:, c, :], P.L)       # ell part, d / dL_c. (n, kr)
        Lt = P.L[:, c, :] / abs(sig)                                 # (n, kr): row c / sigma
        gm = ev.Gm @ UR[:, c]
        out[self.al] = sig * gm - u
        off = self.off_cols
        out[self.off] = (abs(sig) * gLc[:, off] - Lt[:, off]).ravel()
        out[self.diag] = gLc[:, c] * P.L[:, c, c] - Lt[:, c] ** 2 + 1.0
        out[self.ls] = (gm * u).sum() + np.sign(sig) * (gLc[:, :c + 1] * Lt[:, :c + 1]).sum()
        return out


class GroupNonCentred:
    """Non-centred optimiser coordinates for the group-scope terms (``(1 | plot)``).

    Per term, (sigma, u_g = mu_g / sigma, t_g = log s_g - log sigma) in place of
    (log sigma, mu_g, log s_g): mu_g = sigma u_g, s_g = |sigma| e^t_g. The KL of a level,
    -t_g + (u_g^2 + e^(2 t_g)) / 2 - 1/2, is then free of sigma, which can approach 0
    smoothly (in the centred coordinates the prior precision 1 / sigma^2 makes the ELBO
    badly curved there: a grouping whose variance collapses crawled for 5000 iterations).
    """

    def __init__(self, prob, layout):
        self.prob, self.layout = prob, layout
        self.terms = [(t, layout.slices[t.f_lsd], layout.slices[t.f_mu], layout.slices[t.f_ls])
                      for t in prob.predictor.group_terms if hasattr(t, "f_ls")]
        self.on = bool(self.terms)

    def to_opt(self, x):
        if not self.on:
            return x
        y = x.copy()
        for _, lsd, mu, ls in self.terms:
            sig = np.exp(x[lsd])
            y[lsd], y[mu], y[ls] = sig, x[mu] / sig, x[ls] - x[lsd]
        return y

    def from_opt(self, y):
        if not self.on:
            return y
        x = y.copy()
        for _, lsd, mu, ls in self.terms:
            sig = y[lsd][0]
            lsig = np.log(max(abs(float(sig)), 1e-300))
            x[lsd], x[mu], x[ls] = lsig, y[mu] * sig, y[ls] + lsig
        return x

    def grad_to_opt(self, y, g, ev, P):
        """Chain rule: the likelihood part through mu = sigma u, log s = t + log |sigma|."""
        if not self.on:
            return g
        out = g.copy()
        for t, lsd, mu, ls in self.terms:
            sig = float(y[lsd][0])
            pr = 1.0 / sig ** 2
            mu_v, s2 = sig * y[mu], np.exp(2.0 * (y[ls] + np.log(abs(sig))))
            g_mu = g[mu] + pr * mu_v                 # likelihood parts (the KL's taken out)
            g_ls = g[ls] + s2 * pr - 1.0
            u, e2 = y[mu], np.exp(2.0 * y[ls])
            out[mu] = sig * g_mu - u
            out[ls] = g_ls - e2 + 1.0
            out[lsd] = float((g_mu * u).sum() + g_ls.sum() / sig)
        return out

    def scales(self, prob, P, scale):
        """Curvature scaling of its coordinates (written into ``scale``)."""
        C = -2.0 * cell_eval(prob, P)["Gv"]
        for t, lsd, mu, ls in self.terms:
            pred = prob.predictor
            codes, G = t.codes(pred), t.n_levels(pred)
            prec = np.bincount(codes, C.sum(1), minlength=G)
            sig = t.sigma(P)
            u = getattr(P, t.f_mu) / sig
            scale[mu] = np.sqrt(1.0 + sig ** 2 * prec)
            scale[ls] = np.sqrt(2.0)
            # no larger than the final check's scaling of log sigma (curvature 2 G), so
            # that L-BFGS's own convergence test is not looser than the fit's
            scale[lsd] = min(np.sqrt(max(float((u ** 2 * prec).sum()), 1.0)),
                             np.sqrt(2.0 * G) / max(abs(sig), 1e-12))


class _Both:
    """The row effects' and the group terms' non-centred coordinates together (disjoint slots)."""

    def __init__(self, a, b):
        self.a, self.b, self.on = a, b, a.on or b.on

    def to_opt(self, x):
        return self.b.to_opt(self.a.to_opt(x))

    def from_opt(self, y):
        return self.a.from_opt(self.b.from_opt(y))

    def grad_to_opt(self, y, g, ev, P):
        return self.b.grad_to_opt(y, self.a.grad_to_opt(y, g, ev, P), ev, P)


def neg_elbo_opt(prob, layout, nc):
    """f(y) = -ELBO and its gradient in the optimiser's coordinates (see NonCentred)."""
    def fg(y):
        x = nc.from_opt(y)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):   # a wild trial point
            P = layout.unpack(x)
            ev = evaluate(prob, P)
        if not np.isfinite(ev.value):
            return np.inf, np.zeros_like(y)
        return -ev.value, -nc.grad_to_opt(y, layout.pack_grad(ev.grad, P), ev, P)
    return fg


DEFAULT_SEED = 0     # seed=None means this seed: the same call gives the same fit, bit for bit


def fit_problem(prob, *, n_init=1, seed=None, maxiter=5000, gtol=1e-3, verbose=False,
                start=None):
    """Fit the model; return the best :class:`FitState` over ``n_init`` starts (None: the
    default, ``DEFAULT_N_INIT``; quadratic responses: see ``_quadratic_starts``).

    The starts are drawn from ``seed`` (``None`` means ``DEFAULT_SEED``, so that
    fits are reproducible by default; pass another seed for other starts). Start 1 is
    the per-species GLMs with an SVD of their Dunn-Smyth residuals; the others jitter
    the residuals. Where the family names a ``start_family`` (zero-inflated and hurdle
    counts) and ``n_init >= 2``, one more start comes after these: the fit of that
    family (see ``related_start``), so the default starts of such a family are a
    superset of the plain ones.

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
        release_cache(prob)         # the family's y-only terms: memory, not results


def _one_blas_thread():
    """Run the fit with one BLAS thread (the Newton step's big products ask for more).

    Multithreaded BLAS on the many small matrices of a fit, and for Cholesky
    factors, was slower than one thread here (a 175 x 175 Cholesky: 27 ms with
    OpenBLAS threads on a busy 2-core machine, 0.8 ms with one).
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


QUADRATIC_SCREEN = 150     # L-BFGS iterations per quadratic start before the best is finished
QUADRATIC_SCREEN_NEWTON = 200   # ... or iterations of the Newton route (newton_nonlinear covers the model)
QUADRATIC_SCREEN_GTOL = 0.05    # ... run to this scaled gradient (the fit's gtol, if larger)


DEFAULT_N_INIT = 3      # starts when n_init is None (the default of jsdm.gllvm)


def n_starts(n_init):
    """The number of starts n_init stands for (None: ``DEFAULT_N_INIT``)."""
    return DEFAULT_N_INIT if n_init is None else max(1, int(n_init))


def _quadratic_starts(prob, n_init, seed, maxiter, gtol):
    """Starting points for models with quadratic responses, from the linear fit.

    The ELBO of quadratic (unimodal) responses has many local maxima (on the mite data
    starting all D at 0.1 ends 100 nats below starting D at 1 on one latent variable).
    The linear model (the same terms without the quadratic one) is fitted first with
    the engine's Newton phases (``n_starts(n_init)`` starts); its estimates start the
    quadratic candidates: D = 0.5 and D = 1 on every latent variable, and D = 1 on
    latent variable k alone (0.1 on the others), k = 1..d; all d + 2 of them when n_init
    is None (the default), else the first n_init. Returns (list of Params, the linear
    fit's ELBO).
    """
    import dataclasses

    lin_terms = tuple(t for t in prob.model_terms if not getattr(t, "nonlinear", False))
    lin = dataclasses.replace(prob, model_terms=lin_terms, info=dict(prob.info))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        st = _fit(lin, n_starts(n_init), seed, maxiter, gtol, False, None)
    release_cache(lin)
    pred = prob.predictor
    d = pred.d
    shape = np.shape(pred.zeros().D_q)
    pats = [np.full(d, 0.5), np.full(d, 1.0)]
    for k in range(d if d > 1 else 0):
        v = np.full(d, 0.1)
        v[k] = 1.0
        pats.append(v)
    if n_init is not None:
        pats = pats[:max(1, int(n_init))]
    out = []
    for v in pats:
        P = pred.zeros()
        for k, val in st.params.fields().items():
            if hasattr(P, k):
                setattr(P, k, np.array(val, dtype=float) if np.ndim(val) else val)
        P.D_q = np.broadcast_to(v, shape).copy()
        out.append(P)
    return out, st.value


def _fit_nonlinear(prob, n_init, seed, maxiter, gtol, verbose):
    """Fit a model with nonlinear terms (quadratic responses): the candidates of
    :func:`_quadratic_starts`, each run to scaled gradient ``QUADRATIC_SCREEN_GTOL`` by the
    joint Newton route (``newton_nonlinear``: ``QUADRATIC_HOLD`` steps with D held first),
    or, where that route does not cover the model, polished for ``QUADRATIC_SCREEN``
    iterations of block sweeps and L-BFGS; the best one then to convergence."""
    t0 = time.perf_counter()
    layout = make_layout(prob)
    starts, _ = _quadratic_starts(prob, n_init, seed, maxiter, gtol)
    runs = []
    newton = nonlinear_supported(prob)
    # the Newton route runs each start to a looser tolerance first (ELBO within a fraction
    # of a nat of its optimum, which ranks the starts), and the best one on to ``gtol``
    screen = QUADRATIC_SCREEN_NEWTON if newton else QUADRATIC_SCREEN
    # (a single start has nothing to be ranked against: it runs to ``gtol`` at once)
    screen_gtol = max(gtol, QUADRATIC_SCREEN_GTOL) if newton and len(starts) > 1 else gtol
    if len(starts) == 1:
        screen = maxiter
    for k, P0 in enumerate(starts):
        runs.append(_run_start(prob, layout, P0, min(screen, maxiter), screen_gtol,
                               _printer(f"quadratic start {k + 1}", t0) if verbose else None,
                               hold=QUADRATIC_HOLD if newton else 0,
                               sigma_phase=len(starts) == 1))
    values = [r[1] for r in runs]
    best = runs[int(np.argmax(values))]
    P, value, n_iter, n_eval, message, hist = best
    used = sum(r[2] for r in runs)
    if screen_gtol > gtol and message.startswith("converged") and \
            _final_check(prob, layout, P)[2] <= gtol:
        screen_gtol = gtol      # the best start already meets gtol: no finishing run
    if used < maxiter and (screen_gtol > gtol or not message.startswith("converged")):
        P, value, more, n_more, message, h_more = _run_start(
            prob, layout, P, maxiter - used, gtol, _printer("finish", t0) if verbose else None,
            sigma_phase=True)
        n_iter, n_eval = n_iter + more, n_eval + n_more
        hist = hist + h_more
    P = normalise(P)
    value, g, smax = _final_check(prob, layout, P)
    state = FitState(P, value, g, smax <= gtol, n_iter, n_eval, message,
                     time.perf_counter() - t0, layout, values, hist, smax,
                     quadratic_starts=len(values))
    if not state.converged:
        warnings.warn(
            f"the fit did not converge: max scaled gradient = {smax:.3g} > gtol = {gtol:g} "
            f"(max |gradient| = {state.max_grad:.3g}) after {n_iter} iterations ({message}). "
            "Try a larger maxiter; fit.diagnose() shows which parameters carry the gradient.",
            ConvergenceWarning, stacklevel=3)
    return state


def _fit(prob, n_init, seed, maxiter, gtol, verbose, start):
    if prob.predictor.nonlinear_terms and start is None:
        return _fit_nonlinear(prob, n_init, seed, maxiter, gtol, verbose)
    t0 = time.perf_counter()
    layout = make_layout(prob)
    rng = np.random.default_rng(DEFAULT_SEED if seed is None else seed)
    glm = glm_start(prob)
    best, values, joined = None, [], []
    work, work_layout, order = prob, layout, None
    known = Joiner(work)
    n_plain = n_starts(n_init) if start is None else 1
    extra = 1 if start is None and n_plain >= 2 else 0         # the related-family start
    for k in range(n_plain + extra):
        if k == n_plain:
            P0 = related_start(prob, rng, glm)
            if P0 is None:              # the family names none, or the data do not suit it
                break
        else:
            P0 = start if start is not None else \
                initial_params(prob, rng, jitter=0.0 if k == 0 else 0.5, glm=glm)
        if k == 0 and not (prob.predictor.global_terms or prob.predictor.nonlinear_terms):
            order = anchor_order(P0.theta)
            if order is not None:
                work = _reordered_problem(prob, order)
                work_layout = make_layout(work)     # its held dispersion entries, in its order
        if order is not None:
            P0 = to_triangular(reorder_species(P0, order, layout))
        try:
            run = _run_start(work, work_layout, P0, maxiter, gtol,
                             _printer(k, t0) if verbose else None,
                             known.reset() if k > 0 else None)
        except (np.linalg.LinAlgError, FloatingPointError) as err:
            # a start that ran into a numerically singular step (e.g. a jittered start whose
            # linear predictor exploded) is one that failed: the others decide
            values.append(-np.inf)
            joined.append(None)
            failure = f"start {k + 1}: {type(err).__name__}: {err}"
            continue
        if known.hit is not None:       # heading to an optimum already found: not run out
            values.append(known.values[known.hit])
            joined.append(known.hit)
            continue
        values.append(run[1])
        joined.append(None)
        if k + 1 < n_plain + extra and start is None:
            known.add(run[0], run[1])
        if best is None or run[1] > best[1]:
            best = run
    if best is None:
        raise JSDMError(f"every start of the fit failed numerically ({failure}). Check the data "
                        "(a species with extreme values, covariates on very different scales), "
                        "try other starts (seed=, n_init=) or fewer latent variables.")
    P, _, n_iter, n_eval, message, hist = best
    if order is not None:       # back to the user's species order and identifiability convention
        release_cache(work)
        P = to_triangular(reorder_species(P, np.argsort(order), layout))
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
                     time.perf_counter() - t0, layout, values, hist, smax,
                     start_joined=joined)
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
                                           if k != "n_dispersion"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = fit_problem(sub, n_init=1, seed=int(rng.integers(2 ** 31)))
    P0 = initial_params(prob, rng, glm=glm)
    src = state.params
    for slot in make_layout(prob).slots:        # every term's parameters; s keeps its own start
        if slot.field == "s":
            continue
        val = getattr(src, slot.field)
        setattr(P0, slot.field, None if val is None else np.array(val, dtype=float))
    return P0


def reorder_species(P, order, layout=None, prob=None):
    """Params with every species-scope array (species on its first axis) taken in ``order``.

    The species-scope fields come from ``layout`` (or ``prob``'s terms); without either,
    the classic ones (beta0, B, theta, s).
    """
    if layout is None and prob is not None:
        layout = make_layout(prob)
    fields = ({s.field for s in layout.slots if s.scope == "species"} if layout is not None
              else {"beta0", "B", "theta", "s"})
    Q = P.copy()
    for f in fields:
        v = getattr(P, f)
        if v is not None and np.shape(v)[:1] == (len(order),):   # (not a shared dispersion)
            setattr(Q, f, np.asarray(v)[order])
    return Q


def _reordered_problem(prob, order):
    """The problem with its species (columns) in ``order`` (its own cache of family terms)."""
    from dataclasses import replace

    def cols(x):
        return None if x is None else x[:, order]

    W = prob.W if not any(prob.W.strides) else prob.W[:, order]      # all-ones view: as it is
    return replace(prob, Y=prob.Y[:, order], W=W, offset=cols(prob.offset),
                   trials=cols(prob.trials), species=prob.species[order],
                   family=prob.family.take_species(order),
                   info=_reordered_info(prob.info, order))


def _reordered_info(info, order):
    """``info`` with its species-indexed arrays (species traits) taken in ``order``."""
    out = dict(info)
    if out.get("traits") is not None:
        out["traits"] = np.asarray(out["traits"])[order]
    return out


def _final_check(prob, layout, P):
    """(ELBO, packed gradient, max scaled gradient) at P from one evaluation of the cells."""
    ce = cell_eval(prob, P, order=2 if P.s is not None else 1, clip=False)
    g = layout.pack_grad(gradient_from(prob, P, ce), P)
    h = curvature_diagonal(prob, layout, P, ce) if g.size else g
    return float(ce["site"].sum()), g, scaled_max(layout, P, g, h)


SQUAREM_ITERATIONS = 2      # block sweeps: cheap progress from the start
NEWTON_ITERATIONS = 15      # joint Newton steps on the means (linear convergence) ...
NEWTON_ITERATIONS_SMALL = 5     # ... or this many before a full Newton phase (``affordable``)
FULL_NEWTON_ITERATIONS = 100    # Newton steps in all parameters (small problems, full_newton.py)
NONLINEAR_SWEEPS = 10       # block sweeps before L-BFGS for terms with nonlinear moments
NONLINEAR_NEWTON_ITERATIONS = 60    # joint Newton steps for them (newton_nonlinear.py) ...
NONLINEAR_NEWTON_SWEEPS = 0     # ... after this many block sweeps
NONLINEAR_SQUAREM = True    # SQUAREM on those Newton steps (newton_ascent's ``accelerate``)
QUADRATIC_HOLD = 3          # first Newton steps of a quadratic start with D held at its start value
SIGMA_NEWTON_ITERATIONS = 20    # joint steps with Sigma's entries after an unconverged Newton phase


class Joiner:
    """The optima found by earlier starts, and whether a later start is heading to one.

    A later start stops early once it is within ``JOIN_ELBO`` nats (or ``JOIN_RTOL`` of
    |ELBO|, when larger) below an optimum already found *and* its mean linear predictor
    (invariant to the latent variables' rotation and gauge) is within ``JOIN_ETA`` of that
    optimum's at every cell: it is then in that optimum's neighbourhood, and running it out
    would only find the same optimum again. A start heading elsewhere (a better optimum or
    a worse one) differs in the linear predictor, and one that has already passed the
    optimum's ELBO is not stopped: both run out in full, so the best optimum over the
    starts is kept. ``hit`` is the index of the joined start, or None (reset by ``reset``
    before each start).
    """

    def __init__(self, prob):
        self.prob, self.values, self.means, self.hit = prob, [], [], None

    def reset(self):
        self.hit = None
        return self

    def add(self, P, value):
        self.values.append(float(value))
        self.means.append(self.prob.predictor.mean(P))

    def __call__(self, P, value):
        """True (and ``hit`` set) when (P, value) joins an optimum already found."""
        for k, v in enumerate(self.values):
            if not (v - max(JOIN_ELBO, JOIN_RTOL * abs(v)) <= value <= v):
                continue
            M = self.prob.predictor.mean(P)
            if np.max(np.abs(M - self.means[k]), initial=0.0) <= JOIN_ETA:
                self.hit = k
                return True
        return False


JOIN_ELBO = 0.05        # nats below a found optimum ...
JOIN_RTOL = 1e-6        # ... or this fraction of |ELBO|, when larger
JOIN_ETA = 0.05         # largest difference in the mean linear predictor (any cell)


def _run_start(prob, layout, P, maxiter, gtol, cb, join=None, hold=0, sigma_phase=False):
    """One start: returns (P, ELBO, iterations, evaluations, message, history).

    ``join`` (a :class:`Joiner`, for starts after the first) is asked after every
    Newton iteration; when it says the start joined an optimum already found, the start
    ends there (its caller reads ``join.hit``). ``sigma_phase`` (the run that finishes a
    quadratic fit): where its Newton phase ends unconverged, joint steps with the site
    covariances' entries follow before L-BFGS (``newton_nonlinear.JOINT_SIGMA``; not in
    the screening runs, whose endpoints rank the starts).
    """
    t0 = time.perf_counter()
    hist = []

    def record(phase):
        def rec(it, val):
            hist.append((len(hist) + 1, -val, np.nan, time.perf_counter() - t0))
            if cb is not None:
                cb(phase, it, -val, np.nan)
        return rec

    nonlinear = bool(prob.predictor.nonlinear_terms)
    # quadratic responses: the joint Newton step of newton_nonlinear.py where it covers the
    # model; otherwise block sweeps (their curvature leaves the term out) and L-BFGS
    nl_newton = nonlinear and nonlinear_supported(prob)
    if nl_newton:       # each start's damping of the dense Newton solve starts afresh
        prob.predictor.__dict__[DAMPING_MEMO] = {}
    n_sq = min(NONLINEAR_NEWTON_SWEEPS if nl_newton else NONLINEAR_SWEEPS if nonlinear
               else SQUAREM_ITERATIONS, maxiter)
    h1 = []
    if n_sq > 0:
        P, h1 = squarem_ascent(prob, layout, P, max_iter=n_sq, rtol=1e-10,
                               callback=record("blocks"))
    full = affordable(prob, layout) and not nonlinear
    # the joint mean steps converge linearly (slowly along flat ridges of the ELBO): where
    # the full Newton phase is cheap, hand over to it early (28 x 12 NB, 2 LVs, 3 starts:
    # 0.27 -> 0.24 s CPU, same optima; bench/bench_small.py). Terms with nonlinear moments
    # (quadratic responses): the joint step of newton_nonlinear.py where it covers the model
    # (no sweeps: their curvature leaves the term out); otherwise block sweeps
    # (monotone) hand over to L-BFGS directly
    n_nt = min(NONLINEAR_NEWTON_ITERATIONS if nl_newton else 0 if nonlinear else
               (NEWTON_ITERATIONS_SMALL if full else NEWTON_ITERATIONS), maxiter - len(h1))
    h2, done = [], False
    if nl_newton and hold > 0 and n_nt > 0:
        P, h2, _ = newton_ascent(prob, P, max_iter=min(hold, n_nt), rtol=1e-12,
                                 callback=record("held D"), hold_nonlinear=True)
    if n_nt - len(h2) > 0:
        P, h2b, done = newton_ascent(prob, P, max_iter=n_nt - len(h2), rtol=1e-12,
                                     callback=record("newton"), layout=layout, gtol=0.5 * gtol,
                                     stop=join, accelerate=nl_newton and NONLINEAR_SQUAREM)
        h2 = h2 + h2b
        if sigma_phase and nl_newton and not done and (join is None or join.hit is None) and \
                maxiter - len(h1) - len(h2) > 0:
            # unconverged: Newton steps with the site covariances' entries in the joint
            # step (where their fixed point cannot move them; newton_nonlinear.JOINT_SIGMA)
            P, h2b, done = newton_ascent(prob, P, max_iter=min(SIGMA_NEWTON_ITERATIONS,
                                                               maxiter - len(h1) - len(h2)),
                                         rtol=1e-14, callback=record("newton+S"), layout=layout,
                                         gtol=0.5 * gtol, stop=join, joint_sigma=True)
            h2 = h2 + h2b
    left = maxiter - len(h1) - len(h2)
    if join is not None and join.hit is not None:
        return P, h2[-1][1], len(h1) + len(h2), 0, "joined an earlier start's optimum", hist
    if done or left <= 0:
        val = h2[-1][1] if h2 else float(cell_eval(prob, P)["site"].sum())
        return (P, val, len(h1) + len(h2), 0,
                "converged in the Newton phase" if done else "iteration limit reached", hist)
    h3 = []
    if full:    # full Newton (all parameters, exact Hessian) where cheap
        P, h3, done = full_newton(prob, layout, P, min(left, FULL_NEWTON_ITERATIONS), gtol,
                                  callback=record("full"), stop=join)
        left -= len(h3)
        more = min(NEWTON_ITERATIONS - n_nt, left)
        if not done and more > 0 and len(h3) < FULL_NEWTON_ITERATIONS and \
                (join is None or join.hit is None):
            # it stalled (far from the optimum its quadratic model was off: a 400 x 6 ZINB
            # from 5 mean steps stayed at -5611.19, from 15 it converged at -5584.11): the
            # rest of the mean steps a larger problem gets, then the full phase again
            P, h2b, done = newton_ascent(prob, P, max_iter=more, rtol=1e-12,
                                         callback=record("newton"), layout=layout,
                                         gtol=0.5 * gtol, stop=join)
            left -= len(h2b)
            h3 = h3 + h2b
            if not done and left > 0 and (join is None or join.hit is None):
                P, h3b, done = full_newton(prob, layout, P, min(left, FULL_NEWTON_ITERATIONS),
                                           gtol, callback=record("full"), stop=join)
                left -= len(h3b)
                h3 = h3 + h3b
        if join is not None and join.hit is not None:
            return (P, h3[-1][1], len(h1) + len(h2) + len(h3), 0,
                    "joined an earlier start's optimum", hist)
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
    if nc.on:   # curvature in the non-centred slots: u, Lt near 1, sigma ~ sum of Gv
        scale[nc.al], scale[nc.off], scale[nc.diag] = 1.0, 1.0, np.sqrt(2.0)
        scale[nc.ls] = np.sqrt(max(float(-2.0 * cell_eval(prob, P)["Gv"].sum()), 1.0))
    gnc = GroupNonCentred(prob, layout)
    if gnc.on:
        gnc.scales(prob, P, scale)
        nc = _Both(nc, gnc)
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
