"""Model-based ordination: site scores and species loadings on principal axes.

The latent part of the linear predictor, ``a Theta'`` (sites x species, with
``a`` the variational means), does not change when the latent variables are
rotated (``a R``, ``Theta R`` with R orthogonal), so its singular value
decomposition gives principal axes that do not depend on the
identifiability constraint. With ``a Theta' = U S V'`` and ``S_n = S / sqrt(n)``:

    site scores     sqrt(n) U S_n^exponent
    species scores  V S_n^(1 - exponent)

so that site scores times species scores' is ``a Theta'`` for every
exponent. ``exponent = 1`` ("sites" scaling) keeps the geometry of the
sites, ``exponent = 0`` ("species") gives site scores with unit mean square
per axis and species scores on the scale of the loadings, ``exponent = 0.5``
is the symmetric biplot (the exponent was called ``alpha`` before; in jsdm
``alpha`` is always 1 - confidence level). The map from the fitted latent
variables to the site scores is linear (``a T``), so the variational
covariances become
``T' A_i T`` (prediction ellipses). Axes are signed so that the largest
species score on each axis is positive.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from .._deprecation import warn_renamed
from ..exceptions import JSDMError

_SCALINGS = {"sites": 1.0, "species": 0.0}


@dataclass
class Ordination:
    """Result of :func:`ordination`.

    Attributes
    ----------
    sites : DataFrame (n, d)
        Site scores on the principal axes (columns LV1..LVd).
    species : DataFrame (m, d)
        Species scores on the same axes.
    share : Series (d,)
        Share of the variation in ``a Theta'`` on each axis (S^2 / sum S^2).
    singular_values : ndarray (d,)
    site_cov : ndarray (n, d, d)
        Variational covariances of the site scores on the principal axes.
    site_transform, species_transform : ndarray (d, d)
        ``sites = a @ site_transform``, ``species = Theta @ species_transform``.
    covariates : DataFrame (covariates, d) or None
        Correlation of each numeric site covariate with the site scores.
    scaling : str
    exponent : float
        Exponent of the singular values given to the site scores.
    """

    sites: pd.DataFrame
    species: pd.DataFrame
    share: pd.Series
    singular_values: np.ndarray
    site_cov: np.ndarray
    site_transform: np.ndarray
    species_transform: np.ndarray
    covariates: Optional[pd.DataFrame]
    scaling: str
    exponent: float

    @property
    def alpha(self):
        """Deprecated name of ``exponent``."""
        import warnings

        warnings.warn("Ordination.alpha is deprecated and will be removed in a future version; "
                      "use Ordination.exponent", FutureWarning, stacklevel=2)
        return self.exponent

    @property
    def axis_labels(self):
        """Axis titles such as 'LV1 (62.3%)'."""
        return [f"{c} ({100 * s:.1f}%)" for c, s in self.share.items()]


def _resolve_exponent(scaling, exponent):
    if scaling == "symmetric":
        a = float(exponent)
    elif scaling in _SCALINGS:
        a = _SCALINGS[scaling]
    else:
        raise JSDMError(f"scaling must be 'symmetric', 'sites' or 'species'; got {scaling!r}")
    if not 0.0 <= a <= 1.0:
        raise JSDMError(f"exponent must lie in [0, 1], got {exponent!r}")
    return a


def principal_axes(a, theta, exponent=0.5):
    """Linear maps to principal axes of ``a theta'`` with the biplot scaling.

    Parameters
    ----------
    a : ndarray (n, d)
        Site scores (variational means).
    theta : ndarray (m, d)
        Loadings.
    exponent : float in [0, 1]
        Exponent of the singular values given to the site scores.

    Returns
    -------
    T_site, T_species : ndarray (d, d)
        ``a @ T_site`` and ``theta @ T_species`` are the scaled scores;
        ``T_site @ T_species.T`` is the identity.
    s : ndarray (d,)
        Singular values of ``a theta'`` (largest first).
    """
    n, d = a.shape
    Ra = np.linalg.qr(a, mode="r")
    Rt = np.linalg.qr(theta, mode="r")
    u, s, vt = np.linalg.svd(Ra @ Rt.T)
    if np.any(s <= s[0] * 1e-12):
        raise JSDMError("the fitted latent structure a Theta' has rank below num_lv "
                        f"(singular values {np.round(s, 6).tolist()}); refit with fewer latent variables")
    sn = s / np.sqrt(n)
    T_site = np.linalg.solve(Ra, u) * (np.sqrt(n) * sn ** exponent)
    T_species = np.linalg.solve(Rt, vt.T) * sn ** (1.0 - exponent)
    sp = theta @ T_species
    sign = np.sign(sp[np.argmax(np.abs(sp), axis=0), np.arange(d)])
    sign[sign == 0] = 1.0
    return T_site * sign, T_species * sign, s


def covariate_correlations(fit, scores):
    """Correlation of the site covariates with the site scores (covariate columns x axes).

    Numeric covariates enter as they are, categorical ones as one 0/1 column
    per level (named ``covariate[level]``). Covariates that are in the model
    correlate with the scores near zero by construction: the latent variables
    describe what the covariates leave unexplained.
    """
    X = getattr(fit.community, "X", None)
    if X is None:
        X = pd.DataFrame(np.asarray(fit.problem.X), index=fit.sites, columns=list(fit.terms))
    parts = []
    for c in X.columns:
        col = X[c]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            parts.append(col.astype(float).rename(str(c)))
        else:
            dum = pd.get_dummies(col.astype("category"), prefix=str(c), prefix_sep="[", dtype=float)
            parts.append(dum.rename(columns=lambda n: n + "]"))
    if not parts:
        return None
    Z = pd.concat(parts, axis=1).reindex(scores.index)
    Z = Z.loc[:, Z.std(ddof=0) > 0]
    out = {c: [Z[c].corr(scores[k]) for k in scores.columns] for c in Z.columns}
    return pd.DataFrame.from_dict(out, orient="index", columns=scores.columns)


def ordination(fit, scaling="symmetric", exponent=0.5, covariates=True, *, alpha=None):
    """Rotate site scores and loadings to principal axes with a biplot scaling.

    Parameters
    ----------
    fit : GLLVMResults
        A fit with ``num_lv >= 1``.
    scaling : {"symmetric", "sites", "species"}
        "sites" is exponent = 1, "species" exponent = 0, "symmetric" uses
        ``exponent``.
    exponent : float in [0, 1]
        Exponent of the singular values given to the site scores (symmetric
        scaling); 0.5 is the symmetric biplot.
    covariates : bool
        Add correlations of the numeric site covariates with the site scores
        (for covariate arrows).
    alpha : float, optional
        Deprecated name of ``exponent`` (FutureWarning).

    Returns
    -------
    Ordination
    """
    if fit.num_lv < 1:
        raise JSDMError("ordination needs a model with latent variables (num_lv >= 1)")
    if alpha is not None:
        warn_renamed("alpha", "exponent", "ordination", stacklevel=2)
        exponent = alpha
    al = _resolve_exponent(scaling, exponent)
    a = np.asarray(fit.lv, dtype=float)
    th = np.asarray(fit.loadings, dtype=float)
    Ts, Tp, s = principal_axes(a, th, al)
    names = fit.lv_names
    sites = pd.DataFrame(a @ Ts, index=fit.sites, columns=names)
    species = pd.DataFrame(th @ Tp, index=fit.species, columns=names)
    site_cov = np.einsum("ka,ikl,lb->iab", Ts, np.asarray(fit.lv_cov, dtype=float), Ts)
    share = pd.Series(s ** 2 / np.sum(s ** 2), index=names, name="share")
    cov = covariate_correlations(fit, sites) if covariates else None
    return Ordination(sites, species, share, s, site_cov, Ts, Tp, cov, scaling, al)
