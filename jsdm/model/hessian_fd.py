"""Hessian blocks by central differences of the analytic gradient (models with species random
effects).

The analytic Hessian (:mod:`jsdm.model.hessian`) knows the species block, the site blocks
and site-term hyperparameters. A model with species random effects also has each species'
variational block (means b_mu_j and the Cholesky factor Lsp_j of its joint q) and the global
parameters of their prior. Their packed entries come right after the model parameters
(``LinearPredictor.slots``), so the "extended model block" E = [0, n_model + species
variational) is contiguous. Here every column of the Hessian in E is a central difference of
the packed analytic gradient (2 |E| gradient evaluations), and the site-diagonal blocks Hvv
are differences along one coordinate of *all* sites at once (each site's gradient depends
only on its own site parameters and the rest: 2 q evaluations). The model block of the
inverse of the full negative Hessian is then the top-left block of the inverse of the Schur
complement over E (site blocks eliminated), exactly as for the analytic blocks.

Cost: 2 (|E| + q) evaluations of the ELBO's gradient; |E| = model parameters + m (kb +
kb (kb + 1) / 2) for kb random coefficients per species. Fine for the sizes the Hessian is
affordable at anyway (its Schur complement is |E|^2 n q flops).
"""
import warnings

import numpy as np

from ..exceptions import JSDMWarning
from .objective import evaluate

_REL_STEP = 1e-5
#: gradient evaluations x cells above which the time it takes is announced
ANNOUNCE_CELLS = 2e9


def extended_size(layout):
    """Size of the extended model block: model entries plus species-scope variational ones."""
    return layout.n_model + sum(s.size for s in layout.slots if not s.model and s.scope == "species")


def _grad(prob, layout, x):
    P = layout.unpack(x)
    return layout.pack_grad(evaluate(prob, P).grad, P)


def fd_blocks(prob, P, layout):
    """:class:`~jsdm.model.hessian.HessianBlocks` with Hpp over the extended block (see module doc)."""
    from .hessian import HessianBlocks, site_positions

    x = layout.pack(P)
    ne = extended_size(layout)
    pos = site_positions(layout)                        # (n, q)
    n, q = pos.shape
    work = 2.0 * (ne + q) * prob.n * prob.m
    if work > ANNOUNCE_CELLS:
        warnings.warn(
            f"standard errors of this model come from differences of the gradient: "
            f"{2 * (ne + q)} gradient evaluations of {prob.n} x {prob.m} cells ({ne} model and "
            "species-variational parameters); this takes a while. Fit a subset of species for "
            "quicker standard errors.", JSDMWarning, stacklevel=4)
    H = np.zeros((layout.size, ne))
    for k in range(ne):
        h = _REL_STEP * max(1.0, abs(x[k]))
        xp, xm = x.copy(), x.copy()
        xp[k] += h
        xm[k] -= h
        H[:, k] = (_grad(prob, layout, xp) - _grad(prob, layout, xm)) / (2.0 * h)
    Hpp = H[:ne]
    Hpp = 0.5 * (Hpp + Hpp.T)
    Hpv = np.transpose(H[pos] if q else np.zeros((n, 0, ne)), (2, 0, 1))   # (ne, n, q)
    Hvv = np.zeros((n, q, q))
    for a in range(q):
        h = _REL_STEP * np.maximum(1.0, np.abs(x[pos[:, a]]))
        xp, xm = x.copy(), x.copy()
        xp[pos[:, a]] += h
        xm[pos[:, a]] -= h
        gp, gm = _grad(prob, layout, xp), _grad(prob, layout, xm)
        Hvv[:, :, a] = (gp[pos] - gm[pos]) / (2.0 * h[:, None])
    Hvv = 0.5 * (Hvv + np.swapaxes(Hvv, 1, 2))
    return HessianBlocks(Hpp, np.ascontiguousarray(Hpv), Hvv, pos)
