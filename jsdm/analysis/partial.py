"""Direct species associations: partial correlations and a sparse (graphical-lasso) network.

Residual correlations (``fit.residual_correlation()``) mix direct and indirect
associations: two species that both track an unmeasured third one correlate
without interacting. Partial correlations condition on all other species:

    Sigma = Theta Theta' + diag(delta_j)        (link scale)
    P = Sigma^-1,   pcor_jk = -P_jk / sqrt(P_jj P_kk)

``delta_j`` is the link-scale variance of the observation-level residual
(``diagonal``): without it Theta Theta' has rank d and no inverse. Default
("observation"): the distribution-specific variance of Nakagawa, Johnson &
Schielzeth (2017, J. R. Soc. Interface 14: 20170213) at each species' mean,
the same term as the default of ``fit.residual_correlation()``
(:func:`jsdm.analysis.associations.family_variance`: probit 1, logit pi^2/3,
cloglog pi^2/6, Gaussian sd_j^2, Poisson log(1 + 1/mu_j), NB
log(1 + 1/mu_j + phi_j), ...), so the partial correlations are those of the
covariance whose correlations ``residual_correlation`` reports.

The inverse of a low-rank-plus-diagonal matrix is dense: every pair gets a
partial correlation. :func:`graphical_lasso` estimates a sparse precision
matrix from the correlation matrix of Sigma (penalty on the off-diagonal
entries, ADMM as in Boyd et al. 2011, Foundations and Trends in Machine
Learning 3: 1, section 6.5), with the penalty chosen by BIC (Yuan & Lin 2007,
Biometrika 94: 19; n = number of sites) or by cross-validation over sites.
Written here rather than taken from scikit-learn, which jsdm does not depend on.
"""
import numpy as np
import pandas as pd

from .._numerics import analysis_rng
from ..exceptions import JSDMError

SELECT = ("bic", "ebic", "cv")


# --- the covariance -------------------------------------------------------------------------
def direct_covariance(fit, diagonal="observation"):
    """Sigma = Theta Theta' + diag(delta) (m x m DataFrame) and delta (Series); see module notes.

    Parameters
    ----------
    fit : GLLVMResults
    diagonal : {"observation", "lognormal", "trigamma"} or array-like (m,)
        The term of :func:`jsdm.analysis.associations.family_variance`
        ("lognormal": R gllvm's ``getResidualCor``, 0 for Poisson, which leaves
        Sigma singular: an error), or the variances themselves.
    """
    from .associations import family_variance

    th = np.asarray(fit.loadings, dtype=float)
    m = th.shape[0]
    if isinstance(diagonal, str):
        if diagonal not in ("observation", "lognormal", "trigamma"):
            raise JSDMError(f"diagonal must be 'observation', 'lognormal', 'trigamma' or an array "
                            f"of {m} variances; got {diagonal!r}")
        delta = family_variance(fit, nb_variance=diagonal).to_numpy()
    else:
        delta = np.asarray(diagonal, dtype=float).reshape(-1)
        if delta.shape != (m,) or not np.all(np.isfinite(delta)) or np.any(delta < 0):
            raise JSDMError(f"diagonal must hold {m} non-negative finite variances")
    S = th @ th.T + np.diag(delta)
    ev = np.linalg.eigvalsh(S)
    if not np.all(np.isfinite(delta)) or ev.min() <= 1e-10 * max(ev.max(), 1e-300):
        raise JSDMError("the residual covariance Theta Theta' + diag(delta) is singular (delta is "
                        f"0 for some species with diagonal={diagonal!r} and family "
                        f"{fit.family.name!r}), so partial correlations do not exist; use "
                        "diagonal='observation' or give the observation-level variances as an "
                        "array")
    return (pd.DataFrame(S, index=fit.species, columns=fit.species),
            pd.Series(delta, index=fit.species, name="diagonal"))


def _cov2cor(S):
    sd = np.sqrt(np.diag(S))
    return S / np.outer(sd, sd)


def precision_to_partial(P):
    """Partial correlations from a precision matrix (unit diagonal)."""
    d = np.sqrt(np.diag(P))
    pc = -P / np.outer(d, d)
    np.fill_diagonal(pc, 1.0)
    return pc


# --- graphical lasso ------------------------------------------------------------------------
def graphical_lasso(S, penalty, rho=1.0, tol=1e-6, maxiter=5000, start=None):
    """Sparse precision matrix maximising log det P - tr(S P) - penalty * sum_{j != k} |P_jk|.

    ADMM with the split P = Z (Boyd et al. 2011, section 6.5; step size rho
    adapted by residual balancing, their section 3.4.1); the diagonal is not
    penalised. Returns (Z, info): Z has exact zeros off its support and is
    the estimate; info holds the iterations, convergence, and the dual
    variables for warm starts (``start``).

    Parameters
    ----------
    S : ndarray (p, p), symmetric positive definite
    penalty : float >= 0
    """
    S = np.asarray(S, dtype=float)
    p = S.shape[0]
    off = ~np.eye(p, dtype=bool)
    if start is None:
        Z = np.linalg.inv(S)
        U = np.zeros_like(S)
    else:
        Z, U, rho = start[0].copy(), start[1].copy(), start[2]
    converged = False
    for it in range(1, int(maxiter) + 1):
        ev, Q = np.linalg.eigh(rho * (Z - U) - S)
        X = (Q * ((ev + np.sqrt(ev ** 2 + 4.0 * rho)) / (2.0 * rho))) @ Q.T
        Z_old = Z
        V = X + U
        Z = np.where(off, np.sign(V) * np.maximum(np.abs(V) - penalty / rho, 0.0), V)
        U = U + X - Z
        r = np.linalg.norm(X - Z)
        s = rho * np.linalg.norm(Z - Z_old)
        scale = max(np.linalg.norm(X), np.linalg.norm(Z), 1.0)
        if r < tol * scale and s < tol * scale:
            converged = True
            break
        if r > 10.0 * s:            # residual balancing; U is scaled with 1 / rho
            rho, U = 2.0 * rho, U / 2.0
        elif s > 10.0 * r:
            rho, U = rho / 2.0, U * 2.0
    Z = 0.5 * (Z + Z.T)
    return Z, {"iterations": it, "converged": converged, "X": 0.5 * (X + X.T), "U": U, "rho": rho}


def _loglik(S, P):
    sign, logdet = np.linalg.slogdet(P)
    return logdet - np.trace(S @ P) if sign > 0 else -np.inf


def _edges(P, tol=0.0):
    iu = np.triu_indices_from(P, 1)
    return int((np.abs(P[iu]) > tol).sum())


def glasso_path(R, penalties, n, gamma=0.5, stop=None, patience=5):
    """Graphical lasso over a path of penalties (largest first, warm starts).

    ``stop``: "bic" or "ebic" ends the path once that criterion has risen above
    its minimum for ``patience`` penalties in a row (the rest cannot be chosen
    unless the curve has several minima).

    Returns (list of precision estimates, DataFrame with penalty, edges,
    loglik (per site), bic, ebic).
    """
    p = R.shape[0]
    out, rows, start = [], [], None
    for lam in sorted(penalties, reverse=True):
        if stop and len(rows) > patience:
            crit = [r[stop] for r in rows]
            if int(np.argmin(crit)) < len(crit) - patience:
                break
        Z, info = graphical_lasso(R, lam, start=start)
        start = (Z, info["U"], info["rho"])
        ll = _loglik(R, info["X"])
        k = _edges(Z)
        bic = -n * ll + np.log(n) * k
        rows.append({"penalty": lam, "edges": k, "loglik": ll, "bic": bic,
                     "ebic": bic + 4.0 * gamma * k * np.log(p), "converged": info["converged"]})
        out.append(Z)
    return out, pd.DataFrame(rows)


def default_penalties(R, n_penalties=30, ratio=0.01):
    """Log-spaced penalties from the largest off-diagonal |R_jk| (empty graph) down by ``ratio``."""
    iu = np.triu_indices_from(R, 1)
    top = float(np.abs(R[iu]).max()) if iu[0].size else 1.0
    return np.geomspace(top, top * ratio, int(n_penalties))


# --- the user-facing function ---------------------------------------------------------------
def partial_correlation(fit, method="glasso", diagonal="observation", select="bic", penalty=None,
                        penalties=None, n_folds=5, seed=0):
    """Direct associations between species: partial correlations on the link scale.

    Parameters
    ----------
    fit : GLLVMResults
    method : {"glasso", "inverse"}
        "inverse": all partial correlations, from the inverse of
        Sigma = Theta Theta' + diag(delta). "glasso" (default): a sparse estimate
        by the graphical lasso on the correlation matrix of Sigma; pairs with no
        direct association are exactly 0.
    diagonal : {"observation", "lognormal", "trigamma"} or array (m,)
        The observation-level variances delta (see the module notes).
    select : {"bic", "ebic", "cv"}
        How the glasso penalty is chosen when ``penalty`` is None: BIC with n =
        number of sites (Yuan & Lin 2007), extended BIC (gamma 0.5; Foygel &
        Drton 2010) for sparser graphs, or ``n_folds``-fold cross-validation over
        sites on seeded draws of each site's link-scale residual
        Theta z_i + e_i (z_i from its variational posterior, e_i ~ N(0, delta)).
    penalty : float, optional
        A fixed penalty (on the correlation scale) instead of selection.
    penalties : array, optional
        The path searched (default: 30 log-spaced values from the largest
        |correlation| down to 1% of it).
    n_folds, seed : for ``select="cv"``.

    Returns
    -------
    DataFrame (m x m), species x species
        Unit diagonal. ``attrs``: ``method``, ``diagonal`` (Series),
        ``penalty`` (chosen), ``path`` (DataFrame: penalty, edges, loglik, bic,
        ebic, and cv score with ``select="cv"``), ``edges`` (number of
        non-zero pairs).
    """
    if method not in ("glasso", "inverse"):
        raise JSDMError(f"method must be 'glasso' or 'inverse', got {method!r}")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):       # small matrices: threads only cost
        return _partial_correlation(fit, method, diagonal, select, penalty, penalties, n_folds,
                                    seed)


def _partial_correlation(fit, method, diagonal, select, penalty, penalties, n_folds, seed):
    S, delta = direct_covariance(fit, diagonal)
    R = _cov2cor(S.to_numpy())
    labels = fit.species
    if method == "inverse":
        pc = precision_to_partial(np.linalg.inv(R))
        out = pd.DataFrame(pc, index=labels, columns=labels)
        out.attrs.update(method="inverse", diagonal=delta, edges=_edges(pc, 1e-12))
        return out
    n = fit.problem.n
    if penalty is not None:
        if not (np.isfinite(penalty) and penalty >= 0):
            raise JSDMError(f"penalty must be a non-negative number, got {penalty!r}")
        Z, _ = graphical_lasso(R, float(penalty))
        path, chosen = None, float(penalty)
    else:
        if select not in SELECT:
            raise JSDMError(f"select must be one of {SELECT}, got {select!r}")
        pens = default_penalties(R) if penalties is None else np.asarray(penalties, dtype=float)
        ests, path = glasso_path(R, pens, n, stop=None if select == "cv" else select)
        if select == "cv":
            path["cv_loglik"] = _cv_scores(fit, delta.to_numpy(), path["penalty"].to_numpy(),
                                           n_folds, seed)
            best = int(path["cv_loglik"].fillna(-np.inf).idxmax())
        else:
            best = int(path[select].idxmin())
        Z, chosen = ests[best], float(path["penalty"][best])
    pc = precision_to_partial(Z)
    out = pd.DataFrame(pc, index=labels, columns=labels)
    out.attrs.update(method="glasso", diagonal=delta, penalty=chosen, path=path,
                     edges=_edges(Z), select=None if penalty is not None else select)
    return out


def _pseudo_residuals(fit, delta, seed):
    """One seeded draw per site of Theta z_i + e_i, z_i ~ q(z_i), e_i ~ N(0, diag(delta))."""
    rng = analysis_rng(seed)
    th = np.asarray(fit.loadings, dtype=float)
    a = np.asarray(fit.lv, dtype=float)
    n, d = a.shape
    if d:
        L = np.linalg.cholesky(np.asarray(fit.lv_cov) + 1e-12 * np.eye(d))
        z = a + np.einsum("iab,ib->ia", L, rng.standard_normal((n, d)))
    else:
        z = np.zeros((n, 0))
    return z @ th.T + rng.standard_normal((n, th.shape[0])) * np.sqrt(delta)


def _cv_scores(fit, delta, pens, n_folds, seed, patience=5):
    """Mean held-out Gaussian log-likelihood (per site) along the penalty path (NaN where
    the path was stopped: ``patience`` penalties in a row below the best score)."""
    E = _pseudo_residuals(fit, delta, seed)
    n = E.shape[0]
    if int(n_folds) != n_folds or n_folds < 2 or n_folds > n:
        raise JSDMError(f"n_folds must be a whole number between 2 and the number of sites ({n}); "
                        f"got {n_folds!r}")
    fold = np.empty(n, dtype=int)
    fold[analysis_rng(seed).permutation(n)] = np.arange(n) % int(n_folds)
    parts = []
    for f in range(int(n_folds)):
        tr, te = E[fold != f], E[fold == f]
        mu, sd = tr.mean(0), tr.std(0, ddof=1)
        zte = (te - mu) / sd
        parts.append((np.corrcoef(tr, rowvar=False) + 1e-6 * np.eye(E.shape[1]),
                      zte.T @ zte / len(te), len(te), None))
    score = np.full(len(pens), np.nan)
    for i, lam in enumerate(pens):          # largest first, as glasso_path orders them
        total = 0.0
        for f, (Rtr, Rte, k, start) in enumerate(parts):
            Z, info = graphical_lasso(Rtr, lam, start=start)
            parts[f] = (Rtr, Rte, k, (Z, info["U"], info["rho"]))
            total += _loglik(Rte, info["X"]) * k
        score[i] = total / n
        best = int(np.nanargmax(score[: i + 1]))
        if i - best >= patience:
            break
    return score
