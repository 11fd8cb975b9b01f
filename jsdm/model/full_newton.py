"""Newton steps in every parameter at once (model and variational), for small and medium problems.

The block Newton phase (``newton.py``) steps the means with the variational
covariances and the dispersions held fixed, then updates those by their own
steps. Where they move together with the loadings that alternation converges
only linearly. The case that made this phase: species that the latent
variables separate almost perfectly (on aravo, 75 sites, the species seen at 2
sites). Their loadings grow (to |theta| ~ 80) while every site's covariance
shrinks along them, on a ridge of the ELBO whose scaled Hessian has
eigenvalues near 1e-5; the alternation gained a factor of ~0.97 in the
gradient per iteration there and L-BFGS needed 2,300 iterations.

Here each step solves the full Newton system with the exact Hessian
(:func:`jsdm.model.hessian.hessian_blocks`), the site blocks eliminated
(Schur complement over the model parameters), with Levenberg-Marquardt
damping (lambda times the diagonal, raised where the system is not positive
definite or the step fails, lowered after full steps) and a backtracking line
search (Armijo). Parameters without curvature (nothing in the data depends on
them) or pinned at their box bound are held. Every accepted step raises the
ELBO.

Cost per iteration: the Hessian (six passes of the family over the cells,
arrays of n x m x (model entries of a species) x (entries of a site)), the
Schur complement (P^2 n q flops for P model and n q site parameters) and a
P x P Cholesky factor; ``affordable`` says when that is cheap enough.
"""
import numpy as np

from .blocks import curvature_diagonal, scaled_max
from .hessian import hessian_blocks
from .objective import cell_eval, gradient_from

#: largest P^2 * (n q) (Schur complement flops) and P * (n q) (entries) for this phase
MAX_FLOPS = 3e9
MAX_ENTRIES = 1e7
_LAM_MAX = 1e6


def affordable(prob, layout):
    """Whether this phase runs: a full Newton step costs little enough (see module doc), and
    there are no random row effects (in these centred coordinates the ELBO is badly curved as
    their sd goes to 0; the L-BFGS polish works in non-centred ones, ``fit.NonCentred``)."""
    pred = prob.predictor
    fd_only = any(not t.global_fields(pred) for t in pred.global_terms)   # fourth corner
    if (prob.row_effect == "random" or pred.ksr or fd_only or pred.nonlinear_terms
            or pred.group_terms):
        return False
    pm = layout.n_model
    nv = layout.size - pm
    site_width = nv // max(prob.n, 1)
    k_species = pm / max(prob.m, 1)
    cells = float(prob.n) * prob.m * (k_species + 2) * max(site_width, 1)
    return (float(pm) ** 2 * nv <= MAX_FLOPS and float(pm) * nv <= MAX_ENTRIES
            and cells <= MAX_ENTRIES)


#: a full Newton phase that makes this many accepted steps in a row, each raising the ELBO by
#: at most this fraction of it, has stalled (its caller goes on another way)
_FLAT_STEPS = 5
_FLAT_RTOL = 1e-12


def full_newton(prob, layout, P, max_iter, gtol, callback=None, stop=None):
    """Levenberg-Marquardt iterations in all parameters until the scaled gradient is at most ``gtol``.

    Parameters
    ----------
    prob, layout : the problem and its parameter layout
    P : Params, the starting point
    max_iter : int
    gtol : float, the fit's convergence tolerance (see :func:`blocks.scaled_max`)
    callback : callable(iteration, ELBO), optional
    stop : callable(P, ELBO) -> bool, optional; ends the iterations when true

    Returns
    -------
    (P, history, converged): history a list of (iteration, ELBO); ``converged``
    when the scaled gradient reached ``gtol``. Stops early when no damped step
    raises the ELBO.
    """
    order = 2 if P.s is not None else 1
    ce = cell_eval(prob, P, order=order, clip=False)
    hist, lam, nu, converged = [], 1e-3, 2.0, False
    it, flat = 0, 0
    while it < max_iter:
        g = layout.pack_grad(gradient_from(prob, P, ce), P)
        if scaled_max(layout, P, g, curvature_diagonal(prob, layout, P, ce)) <= gtol:
            converged = True
            break
        hb = hessian_blocks(prob, P, layout, forward=True)
        while True:
            if lam > _LAM_MAX:
                return P, hist, False
            step, lam, model = _direction(layout, P, g, hb, lam)
            T, ct, gain = _try(prob, layout, P, ce, step, order)
            tiny = model <= 1e-12 * (1.0 + abs(float(ce["site"].sum())))
            rho = 1.0 if (tiny and gain == 0.0) else (gain / model if model > 0 else -1.0)
            if (gain > 0 or tiny) and rho > 0:
                lam *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
                nu = 2.0
                break
            lam, nu = max(lam, 1e-6) * nu, 2.0 * nu
        before = float(ce["site"].sum())
        P, ce = T, ct
        it += 1
        val = float(ce["site"].sum())
        # accepted steps that no longer raise the ELBO while the gradient is not small: the
        # quadratic model is off here (stalled); hand back rather than creep
        flat = flat + 1 if val - before <= _FLAT_RTOL * (1.0 + abs(val)) else 0
        if flat >= _FLAT_STEPS:
            hist.append((it, val))
            if callback is not None:
                callback(it, val)
            return P, hist, False
        hist.append((it, val))
        if callback is not None:
            callback(it, val)
        if stop is not None and stop(P, val):
            return P, hist, False
    else:
        g = layout.pack_grad(gradient_from(prob, P, ce), P)
        converged = scaled_max(layout, P, g, curvature_diagonal(prob, layout, P, ce)) <= gtol
    return P, hist, converged


def _direction(layout, P, g, hb, lam):
    """Solve (N + lam diag N) step = g with N = -Hessian, site blocks eliminated.

    Returns (step in packed coordinates, the lambda used: raised until the
    system is positive definite, and the gain g'step - step' N step / 2 that the
    quadratic model predicts).
    """
    pm = hb.Hpp.shape[0]
    pos = hb.site_pos
    x = layout.pack(P)
    lo, hi = layout.bounds()
    Npp, Npv, Nvv = -hb.Hpp, -hb.Hpv, -hb.Hvv
    gp, gv = g[:pm], g[pos]
    dpp = np.diag(Npp).copy()
    held = ~(dpp > 1e-12 * max(np.abs(dpp).max(), 1.0))
    held |= ((x[:pm] <= lo[:pm]) & (gp < 0)) | ((x[:pm] >= hi[:pm]) & (gp > 0))
    dvv = np.maximum(np.abs(np.diagonal(Nvv, axis1=1, axis2=2)), 1e-12)
    eye_v = np.eye(Nvv.shape[1])
    for _ in range(40):
        out = _solve(Npp, Npv, Nvv, gp, gv, held, dpp, dvv, eye_v, lam)
        if out is not None:
            dp, dv = out
            step = np.zeros_like(x)
            step[:pm] = dp
            step[pos] = dv
            quad = dp @ Npp @ dp + 2.0 * np.einsum("p,pia,ia->", dp, Npv, dv) \
                + np.einsum("ia,iab,ib->", dv, Nvv, dv)
            return step, lam, float(g @ step - 0.5 * quad)
        lam = max(10.0 * lam, 1e-6)
    raise np.linalg.LinAlgError("could not make the Newton system positive definite")


def _solve(Npp, Npv, Nvv, gp, gv, held, dpp, dvv, eye_v, lam):
    """One damped solve; None when a block is not positive definite at this lambda."""
    Dv = Nvv + lam * dvv[:, :, None] * eye_v
    try:
        Cv = np.linalg.cholesky(Dv)
    except np.linalg.LinAlgError:
        return None
    Npv_h = np.where(held[:, None, None], 0.0, Npv)
    # Z = Dv^-1 Nvp per site: (n, q, P)
    Z = _chol_solve(Cv, np.transpose(Npv_h, (1, 2, 0)))
    pm = Npp.shape[0]
    S = Npp - Npv_h.reshape(pm, -1) @ Z.reshape(-1, pm)
    S = 0.5 * (S + S.T)
    S[np.diag_indices(pm)] += lam * np.maximum(dpp, 1e-12)
    S[held, :] = 0.0
    S[:, held] = 0.0
    S[held, held] = 1.0
    zg = _chol_solve(Cv, gv[:, :, None])[:, :, 0]                    # Dv^-1 gv
    rhs = np.where(held, 0.0, gp - np.einsum("pia,ia->p", Npv_h, zg))
    d = np.diag(S)
    if not np.all(d > 0):
        return None
    d = np.sqrt(d)
    try:
        c = np.linalg.cholesky(S / d[:, None] / d[None, :])
    except np.linalg.LinAlgError:
        return None
    dp = np.linalg.solve(c.T, np.linalg.solve(c, rhs / d)) / d
    dv = zg - np.einsum("iap,p->ia", Z, dp)
    return dp, dv


def _chol_solve(C, B):
    """Solve (C C') X = B for batches of lower Cholesky factors C (n, q, q), B (n, q, k)."""
    Y = np.linalg.solve(C, B)
    return np.linalg.solve(np.swapaxes(C, 1, 2), Y)


def _try(prob, layout, P, ce, step, order):
    """The point P + step (clipped to the box), its cell evaluation and the ELBO gained."""
    x = layout.pack(P)
    lo, hi = layout.bounds()
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        T = layout.unpack(np.clip(x + step, lo, hi))
        ct = cell_eval(prob, T, order=order, clip=False)
    old, val = float(ce["site"].sum()), float(ct["site"].sum())
    gain = val - old if np.isfinite(val) else -np.inf
    if gain <= 0 and gain >= -1e-12 * abs(old):      # rounding level: no worse
        gain = 0.0
    return T, ct, gain
