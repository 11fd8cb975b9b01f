"""Covariance of the estimates, standard errors, Wald intervals, z and p values.

The covariance of the model parameters is the model block of the inverse of
the negative Hessian of the ELBO in *all* packed parameters (model and
variational). Because the variational block is block-diagonal by site, that
block is the inverse of the Schur complement

    S = H_pp - sum_i H_pv,i H_vv,i^-1 H_vp,i

computed from the analytic Hessian in :mod:`jsdm.model.hessian` (no finite
differences of the full gradient). ``-S`` is checked for positive definiteness
by the eigenvalues of its correlation-scaled form; when it fails, a
:class:`~jsdm.exceptions.HessianWarning` names the parameters carrying the
offending eigenvectors, their rows and columns are NaN, and the remaining
parameters' covariance is the inverse of the remaining block (that is,
conditional on the flagged ones). There is never a pseudo-inverse.

Units: intercepts, slopes, loadings and fixed row effects are reported as
estimated. Dispersions are reported on the family's scale (NB phi, Gaussian
sd) and the random row-effect sd as sigma; their covariance comes from the
unconstrained parameters (s, log sigma) by the delta method,
Cov = J Cov_s J' with J = d dispersion / d s. Their confidence intervals are
computed on the unconstrained scale and transformed back (so they stay
positive); z and p values for them test the reported value against 0 and
are of little use (reported for completeness, as R gllvm and statsmodels do).

Ordinal cut points: the free cut points tau_2 < ... < tau_(K-1) of each species
are reported; each depends on several log gaps (tau_k = sum_(i<=k) exp(c_i)),
so their covariance is J Cov_c J' with J a full (lower triangular) block per
species (``Information.jmat``), a cut point's SE is NaN when any gap it
depends on is flagged, and intervals are built on the log scale of the cut
point (they stay positive).
"""
from dataclasses import dataclass, field
import warnings
import weakref

import numpy as np
import pandas as pd
from scipy import stats

from ..exceptions import HessianWarning, JSDMError
from ..model.hessian import hessian_blocks

#: smallest eigenvalue of the correlation-scaled negative Schur complement
#: (relative to the largest) below which the Hessian counts as singular
SINGULAR_TOL = 1e-9
#: below this it counts as near-singular (reported by diagnose(), SEs kept)
NEAR_SINGULAR_TOL = 1e-6

#: largest model x variational block (entries) built in memory (three copies of it are alive)
MAX_CROSS_ENTRIES = 2e8

_CACHE = weakref.WeakKeyDictionary()


@dataclass
class Information:
    """Curvature of the ELBO in the model parameters at the optimum.

    Attributes
    ----------
    neg_schur : ndarray (P, P)
        Negative Schur complement (observed information, packed order).
    cov_packed : ndarray (P, P)
        Its inverse (NaN rows/cols for flagged parameters), packed order.
    eigenvalues : ndarray (P,)
        Eigenvalues of the correlation-scaled ``neg_schur`` (ascending); the
        eigenvectors are computed only when :meth:`weak_directions` asks.
    labels : MultiIndex
        The (block, species, term) label of each packed model parameter.
    flagged : list of tuple
        Labels of parameters whose SEs are NaN (not identified by the curvature).
    bad_sites : list
        Sites whose variational block is not negative definite.
    """

    neg_schur: np.ndarray
    cov_packed: np.ndarray
    eigenvalues: np.ndarray
    labels: pd.MultiIndex
    flagged: list = field(default_factory=list)
    bad_sites: list = field(default_factory=list)
    order: np.ndarray = None       # packed position of each fit.params entry
    jac: np.ndarray = None         # d reported / d packed for each fit.params entry
    jmat: object = None            # sparse d reported / d packed (k, P) where not diagonal, else None

    @property
    def min_eigenvalue(self):
        return float(self.eigenvalues[0]) if self.eigenvalues.size else np.inf

    def weak_directions(self, tol=NEAR_SINGULAR_TOL, top=5):
        """[(eigenvalue, [labels of the largest components])] for eigenvalues below ``tol``."""
        k = int(min(np.sum(self.eigenvalues <= tol * max(self.eigenvalues[-1], 1e-300)), 20))
        if k == 0:
            return []
        if getattr(self, "_vectors", None) is None or self._vectors.shape[1] < k:
            from scipy.linalg import eigh      # only the k smallest: fast for large Hessians

            A = self.neg_schur
            dg = np.abs(np.diag(A))
            sc = 1.0 / np.sqrt(np.where(dg > 0, dg, 1.0))
            with _one_blas_thread():
                self._vectors = eigh(A * sc[:, None] * sc[None, :], subset_by_index=[0, k - 1])[1]
        V = self._vectors
        out = []
        for k, w in enumerate(self.eigenvalues[:V.shape[1]]):
            if w > tol * max(self.eigenvalues[-1], 1e-300):
                break
            out.append((float(w), _top_labels(V[:, k], self.labels, top)))
        return out


def _packed_labels_and_order(fit):
    """Labels of the packed model parameters, and the packed position / Jacobian of each params row.

    The rows come from the terms (``LinearPredictor.reported``): each term says which
    packed entry stands behind each of its reported parameters and d reported / d packed.
    """
    from ..model.hessian_fd import extended_size

    layout = fit.state.layout
    rep = _reported(fit)
    ne = extended_size(layout)
    labels = [None] * ne
    if ne > layout.n_model:     # species random effects: their q's entries join the model block
        labels = list(packed_labels(fit)[:ne])
    for lab, pos in zip(rep["labels"], rep["positions"]):
        labels[pos] = lab
    idx = pd.MultiIndex.from_tuples(labels, names=["block", "species", "term"])
    return idx, rep["positions"], rep["jac"]


def packed_labels(fit):
    """(block, site or species, name) of every entry of the packed parameter vector.

    Model parameters carry their ``fit.params`` label; variational ones are
    labelled by their term ("lv_mean", "row_effect_mean") or as entries of the site's
    joint Cholesky factor ("lv_chol", "site_chol").
    """
    return fit.problem.predictor.packed_labels(fit.state.params, fit.state.layout)


def _reported(fit):
    """The terms' reported rows at the fit (``GLLVMResults._reported``)."""
    return fit._reported


def _free_entries(layout):
    """(row, k) of each packed entry of a vector dispersion, in packed order."""
    return list(zip(*np.nonzero(layout.s_free)))


def _free_positions(layout):
    return layout.slices["s"].start + np.arange(int(layout.s_free.sum()))


def _vector_dispersion_jacobian(family, s):
    """d (estimated cut points) / d s per row of s, (rows, q, q) (see terms.dispersion)."""
    from ..model.terms.dispersion import vector_dispersion_jacobian
    return vector_dispersion_jacobian(family, s)


def _reported_jacobian(fit, order, jac):
    """Sparse d reported / d packed (k, P) when a vector dispersion makes it non-diagonal, else None."""
    from scipy import sparse

    P = fit.state.params
    if P.s is None or np.ndim(P.s) != 2:
        return None
    from ..model.hessian_fd import extended_size

    layout = fit.state.layout
    # columns: the covariance's packed entries (with species random effects their q's
    # entries join the model block: ordinal cut points with random slopes failed here)
    J = sparse.lil_matrix((len(order), extended_size(layout)))
    J[np.arange(len(order)), order] = jac
    D = _vector_dispersion_jacobian(fit.family, P.s)
    pos = np.full(layout.s_free.shape, -1)
    pos[layout.s_free] = _free_positions(layout)
    where = {int(p): jk for p, jk in zip(_free_positions(layout), _free_entries(layout))}
    for r in np.flatnonzero(np.isin(order, list(where))):
        j, k = where[int(order[r])]
        cols = np.flatnonzero(layout.s_free[j])
        J[r, pos[j, cols]] = D[j, k, cols]
    return J.tocsr()


def _reported_cov(info):
    """J Cov J' for a non-diagonal Jacobian; NaN rows/columns for entries that touch a flagged parameter."""
    C = info.cov_packed
    bad = ~np.isfinite(np.diag(C))
    J = info.jmat
    JC = np.asarray(J @ np.where(np.isfinite(C), C, 0.0))
    out = np.asarray(J @ JC.T)
    hit = J[:, np.flatnonzero(bad)].getnnz(axis=1) > 0
    out[hit, :] = np.nan
    out[:, hit] = np.nan
    return 0.5 * (out + out.T)


def _vector_dispersion_interval(fit, pos, est, se, se_u, z):
    """Intervals for the free entries of a vector dispersion at packed positions ``pos``.

    An entry that depends on its own unconstrained parameter only (a zero-
    inflation probability, an NB dispersion, a first cut point, ...) gets the
    Wald interval of that parameter mapped through ``family.reported_dispersion`` (so a
    probability stays in (0, 1)). An entry that depends on several (ordinal cut
    points as sums of exponentials) gets the Wald interval of its logarithm,
    mapped back, where the family marks its column positive
    (``dispersion_positive``, default all), else the plain Wald interval.
    """
    s = np.asarray(fit.state.params.s, dtype=float)
    m, q = s.shape
    where = {int(p): jk for p, jk in zip(_free_positions(fit.state.layout),
                                         _free_entries(fit.state.layout))}
    j, k = (np.array(a, dtype=int) for a in zip(*[where[int(p)] for p in pos])) if len(pos) else \
        (np.zeros(0, int), np.zeros(0, int))
    D = np.nan_to_num(_vector_dispersion_jacobian(fit.family, s))
    off = np.abs(D - D * np.eye(q)).max(axis=2)             # (m, q): per reported entry
    own = off <= 1e-9 * np.maximum(np.abs(D).max(axis=(1, 2)), 1e-300)[:, None]
    positive = np.asarray(getattr(fit.family, "dispersion_positive", None) or [True] * q)
    lo_s, hi_s = s.copy(), s.copy()
    lo_s[j, k] -= z * se_u
    hi_s[j, k] += z * se_u
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        a = fit.family.reported_dispersion(lo_s)[j, k]
        b = fit.family.reported_dispersion(hi_s)[j, k]
        w = z * se / est
        mine = own[j, k]
        lo = np.where(mine, np.minimum(a, b), np.where(positive[k], est * np.exp(-w), est - z * se))
        hi = np.where(mine, np.maximum(a, b), np.where(positive[k], est * np.exp(w), est + z * se))
    return lo, hi


def _scaled_eigh(A, vectors=True):
    """Eigen-decomposition of D^-1/2 A D^-1/2 (D = |diag A|), ascending; eigenvalues only
    when ``vectors`` is False (several times faster for large A)."""
    dg = np.abs(np.diag(A))
    sc = 1.0 / np.sqrt(np.where(dg > 0, dg, 1.0))
    B = A * sc[:, None] * sc[None, :]
    return np.linalg.eigh(B) if vectors else np.linalg.eigvalsh(B)


def _top_labels(vec, labels, top):
    a = np.abs(vec)
    keep = np.argsort(-a)[:top]
    keep = [k for k in keep if a[k] >= 0.25 * a.max()]
    return [labels[k] for k in keep]


def _schur(blocks):
    """Negative Schur complement and the sites whose variational block is not negative definite."""
    Hpp, Hpv, Hvv = blocks.Hpp, blocks.Hpv, blocks.Hvv
    P, n, q = Hpv.shape
    if q == 0 or n == 0:
        return _drop_extra(-Hpp, blocks), []
    w = np.linalg.eigvalsh(-Hvv)
    bad = np.flatnonzero(~(w[:, 0] > 1e-12 * np.maximum(w[:, -1], 1e-300)))
    try:
        Z = np.linalg.solve(Hvv, np.transpose(Hpv, (1, 2, 0)))         # (n, q, P)
    except np.linalg.LinAlgError:                                      # a singular site block
        return np.full((P, P), np.nan), bad.tolist()
    S = Hpp - Hpv.reshape(P, n * q) @ Z.reshape(n * q, P)
    return _drop_extra(-0.5 * (S + S.T), blocks), bad.tolist()


def _drop_extra(negS, blocks):
    """Eliminate the group-scope variational parameters (the last ``blocks.n_extra`` rows)."""
    E = getattr(blocks, "n_extra", 0)
    if not E:
        return negS
    k = negS.shape[0] - E
    A, B, D = negS[:k, :k], negS[:k, k:], negS[k:, k:]
    try:
        S = A - B @ np.linalg.solve(D, B.T)
    except np.linalg.LinAlgError:
        return np.full((k, k), np.nan)
    return 0.5 * (S + S.T)


def _one_blas_thread():
    """One BLAS thread, as the fit uses (measured on the shared 2-core machine: eigh of a
    900 x 900 matrix 0.44 s with one thread, 2.2 s wall with two competing ones)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _invert_checked(A, labels, tol=SINGULAR_TOL, top=5, first=None):
    """Inverse of a symmetric matrix that should be positive definite.

    Parameters whose curvature is not positive (diagonal <= 0) or that carry
    an eigenvector with a tiny or negative eigenvalue are flagged; they get NaN
    rows and columns and the rest is inverted without them. ``first``: the
    scaled eigen-decomposition of A when already at hand.
    """
    P = A.shape[0]
    active = np.isfinite(A).all(axis=1) & (np.diag(A) > 0)
    flagged = [labels[k] for k in np.flatnonzero(~active)]
    cov = np.full((P, P), np.nan)
    for _ in range(P + 1):
        sub = A[np.ix_(active, active)]
        if not sub.size:
            break
        if first is not None and active.all():      # eigenvalues at hand: vectors only if needed
            w, V = first, None
            if (w <= tol * max(w[-1], 1e-300)).any():
                w, V = _scaled_eigh(sub)
        else:
            w, V = _scaled_eigh(sub)
        first = None
        bad = w <= tol * max(w[-1], 1e-300)
        if not bad.any():
            dg = np.sqrt(np.diag(sub))
            inv = np.linalg.inv(sub / dg[:, None] / dg[None, :]) / dg[:, None] / dg[None, :]
            cov[np.ix_(active, active)] = 0.5 * (inv + inv.T)
            break
        idx = np.flatnonzero(active)
        for k in np.flatnonzero(bad):
            a = np.abs(V[:, k])
            big = np.argsort(-a)[:top]
            hit = idx[big[a[big] >= 0.25 * a.max()]]
            flagged += [labels[h] for h in hit if active[h]]
            active[hit] = False
    return cov, flagged


def information(fit):
    """Curvature of the ELBO at the optimum as an :class:`Information` (cached per fit).

    Emits a :class:`~jsdm.exceptions.HessianWarning` (once per fit) when the
    Hessian is not negative definite, naming the parameters involved.
    """
    if fit in _CACHE:
        return _CACHE[fit]
    from_cluster = getattr(fit, "_cluster_information", None)     # a cluster fit: summed parts
    if from_cluster is not None:
        info = _CACHE[fit] = from_cluster()
        return info
    prob, layout = fit.problem, fit.state.layout
    entries = float(layout.n_model) * (layout.size - layout.n_model)
    if entries > MAX_CROSS_ENTRIES:
        raise JSDMError(
            f"the covariance of {layout.n_model} model parameters with {layout.size - layout.n_model} "
            f"variational ones needs about {3 * entries * 8 / 2**30:.1f} GiB; that is above the limit "
            f"({MAX_CROSS_ENTRIES:.0e} entries, jsdm.results.inference.MAX_CROSS_ENTRIES). Fit a "
            "subset of species or sites for standard errors, or raise the limit if memory allows.")
    labels, order, jac = _packed_labels_and_order(fit)
    jmat = _reported_jacobian(fit, order, jac)
    with _one_blas_thread():
        blocks = hessian_blocks(prob, fit.state.params, layout)
        negS, bad_sites = _schur(blocks)
        del blocks
        ok = negS.size and np.isfinite(negS).all()
        w = _scaled_eigh(negS, vectors=False) if ok else np.full(len(labels), np.nan)
        cov, flagged = _invert_checked(negS, labels, first=w if ok else None)
    info = Information(negS, cov, w, labels, flagged, [fit.sites[i] for i in bad_sites], order, jac,
                       jmat)
    _warn(info, fit)
    _CACHE[fit] = info
    return info


def information_from(fit, negS, bad_sites):
    """The :class:`Information` of a fit from its negative Schur complement ``negS`` (packed
    model order), computed elsewhere (a cluster fit sums it over its chunks of sites)."""
    labels, order, jac = _packed_labels_and_order(fit)
    jmat = _reported_jacobian(fit, order, jac)
    with _one_blas_thread():
        ok = negS.size and np.isfinite(negS).all()
        w = _scaled_eigh(negS, vectors=False) if ok else np.full(len(labels), np.nan)
        cov, flagged = _invert_checked(negS, labels, first=w if ok else None)
    info = Information(negS, cov, w, labels, flagged, list(bad_sites), order, jac, jmat)
    _warn(info, fit)
    return info


def _warn(info, fit=None):
    from ..model.problem import unstandardised

    if info.flagged:
        std = "standardise covariates, " if fit is None or unstandardised(fit.problem.X) else ""
        names = ", ".join("/".join(str(x) for x in lab if x != "") for lab in info.flagged[:8])
        more = f" (and {len(info.flagged) - 8} more)" if len(info.flagged) > 8 else ""
        warnings.warn(
            f"the Hessian of the ELBO is not negative definite (smallest scaled eigenvalue "
            f"{info.min_eigenvalue:.2e}); standard errors are NaN for: {names}{more}. These "
            "parameters are not identified by the data at this optimum: try fewer latent "
            f"variables, drop very rare species or use a weak penalty (prior_sd=5), {std}or refit "
            "with more starts (n_init=5). See fit.diagnose().", HessianWarning, stacklevel=5)
    if info.bad_sites:
        warnings.warn(
            f"the variational optimum is not a strict maximum for {len(info.bad_sites)} site(s) "
            f"(e.g. {list(info.bad_sites[:5])}); the fit may not have converged. Refit with a "
            "larger maxiter or more starts.", HessianWarning, stacklevel=5)


def cov_params(fit):
    """Covariance matrix of the model parameters.

    Parameters
    ----------
    fit : GLLVMResults

    Returns
    -------
    DataFrame, shape (k, k)
        Indexed and columned like ``fit.params`` (block, species, term).
        Dispersions and the row-effect sd are on the reported scale (delta
        method from the unconstrained parameter). NaN rows/columns mark
        parameters the Hessian does not identify (a HessianWarning said which).
    """
    info = information(fit)
    if info.jmat is not None:
        C = _reported_cov(info)
    else:
        C = info.cov_packed[np.ix_(info.order, info.order)] * info.jac[:, None] * info.jac[None, :]
    return pd.DataFrame(C, index=fit.params.index, columns=fit.params.index)


def bse(fit):
    """Standard errors of ``fit.params`` (Series, same index)."""
    info = information(fit)
    if info.jmat is not None:
        with np.errstate(invalid="ignore"):
            se = np.sqrt(np.diag(_reported_cov(info)))
        return pd.Series(se, index=fit.params.index, name="std_err")
    v = np.diag(info.cov_packed)[info.order]
    with np.errstate(invalid="ignore"):
        se = np.sqrt(v) * np.abs(info.jac)
    return pd.Series(se, index=fit.params.index, name="std_err")


def tvalues(fit):
    """Wald z statistics estimate / SE (Series)."""
    return (fit.params / bse(fit)).rename("z")


def pvalues(fit):
    """Two-sided normal p-values of the Wald z statistics (Series)."""
    z = tvalues(fit).to_numpy()
    return pd.Series(2.0 * stats.norm.sf(np.abs(z)), index=fit.params.index, name="p_value")


def conf_int(fit, alpha=0.05):
    """Wald confidence intervals at level 1 - ``alpha``.

    Dispersions and the row-effect sd use the interval on their unconstrained
    scale, transformed back (always positive).

    Returns
    -------
    DataFrame with columns ``lower``, ``upper``, indexed like ``fit.params``.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}; e.g. alpha=0.05 for 95% intervals")
    info = information(fit)
    z = stats.norm.isf(alpha / 2.0)
    est = fit.params.to_numpy()
    se = bse(fit).to_numpy()
    lo, hi = est - z * se, est + z * se
    block = fit.params.index.get_level_values("block")
    packed = fit.state.layout.pack(fit.state.params)[info.order]
    with np.errstate(invalid="ignore"):
        se_u = np.sqrt(np.diag(info.cov_packed)[info.order])
    if info.jmat is not None:          # a vector dispersion
        sel = np.asarray(block == "dispersion")
        lo[sel], hi[sel] = _vector_dispersion_interval(fit, info.order[sel], est[sel], se[sel],
                                                       se_u[sel], z)
    for rows, fwd in _reported(fit)["transforms"]:
        sel = np.zeros(len(est), dtype=bool)
        sel[rows] = True
        if info.jmat is not None:
            sel &= np.asarray(block != "dispersion")
        if sel.any():
            with np.errstate(over="ignore"):          # a huge SE gives an unbounded interval
                a, b = fwd(packed[sel] - z * se_u[sel]), fwd(packed[sel] + z * se_u[sel])
            lo[sel], hi[sel] = np.minimum(a, b), np.maximum(a, b)
    return pd.DataFrame({"lower": lo, "upper": hi}, index=fit.params.index)
