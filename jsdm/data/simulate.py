"""Draw communities from a GLLVM with known parameters.

The model (sites i, species j, latent variables k = 1..d)::

    eta_ij = beta0_j + x_i' beta_j + z_i' theta_j,   x_i ~ N(0, I_p),  z_i ~ N(0, I_d)
    y_ij | eta_ij ~ F(g^-1(eta_ij), dispersion_j)

with Theta (species x d) lower triangular with a positive diagonal. Default
scales give ecologically plausible data: for counts the median species mean
is about 1-2 individuals per site, some species are rare, a few abundant.
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from ..exceptions import JSDMError
from .community import Community



@dataclass
class SimulationTruth:
    """The parameters a simulated community was drawn from.

    Attributes
    ----------
    beta0 : Series, length n_species
        Species intercepts.
    B : DataFrame, shape (n_species, n_covariates)
        Species covariate effects.
    theta : DataFrame, shape (n_species, num_lv)
        Loadings; lower triangular with positive diagonal.
    z : DataFrame, shape (n_sites, num_lv)
        Latent variables (site scores).
    dispersion : Series, length n_species, DataFrame, or None
        The family's dispersion per species (NB phi, Gaussian sd, ...); for
        "ordinal" a DataFrame of cut points tau1 = 0 < tau2 < ... (species x
        K-1); None for families without dispersion.
    eta : DataFrame, shape (n_sites, n_species)
        Linear predictor.
    family : str
        Family name.
    link : str
        Link function.
    trials : ndarray, shape (n_sites, n_species), or None
        Binomial number of trials (None: 0/1 data).
    """

    beta0: pd.Series
    B: pd.DataFrame
    theta: pd.DataFrame
    z: pd.DataFrame
    dispersion: Optional[object]
    eta: pd.DataFrame
    family: str = "poisson"
    link: str = "log"
    trials: Optional[np.ndarray] = None

    @property
    def residual_covariance(self):
        """DataFrame, shape (n_species, n_species): Theta Theta' (link scale)."""
        th = self.theta.to_numpy()
        return pd.DataFrame(th @ th.T, index=self.theta.index, columns=self.theta.index)


def simulate_community(n_sites=50, n_species=20, num_lv=2, family="poisson", n_covariates=2,
                       seed=None, *, link=None, dispersion=None, trials=None,
                       intercept=None, intercept_sd=1.0, coef_sd=0.5, loading_sd=0.7):
    """Draw a community from a GLLVM with known truth.

    Parameters
    ----------
    n_sites, n_species : int
        Size of the community.
    num_lv : int
        Number of latent variables d (0 <= d <= n_species).
    family : str, Family, list or mapping
        "poisson", "negative_binomial" ("nb"), "binomial", "gaussian", or any
        registered family; or one family per species (a list of n_species, or a
        mapping {"sp01": ..., ...}), which share the latent variables.
    n_covariates : int
        Number of site covariates x1..xp, drawn N(0, 1) (standardised).
    seed : int, Generator or None
        Same seed, same community.
    link : str, optional
        Link (e.g. "probit" for binomial); default: the family's.
    dispersion : float or array, shape (n_species,), optional
        The family's dispersion on its reported scale: NB phi (Var = mu + phi mu^2,
        default 0.5), Gaussian sd (default 1), zero-inflation probability pi for
        "zip" (default 0.3), beta precision phi (default 10), Tweedie and gamma
        phi (default 1); for "ordinal" the cut points tau_1 = 0 < tau_2 < ...
        (K-1 values, or one row per species; default (0, 1, 2): categories 0-3).
        Families with several nuisance parameters per species take one value of
        each (or one row per species), in the order of ``family.dispersion_labels``
        (zinb: pi, phi; hurdle_nb: p_present, phi; ordered_beta: cut_zero,
        cut_one, phi; tweedie_power: phi, power); each family's own default
        otherwise (``family.default_dispersion``). A family per species takes the
        members' defaults, or an (n_species, q) array with NaN where a species
        has fewer.
    trials : int or array broadcastable to (n_sites, n_species), optional
        Binomial trials; None gives 0/1 data.
    intercept : float, optional
        Mean of the species intercepts beta0_j ~ N(intercept, intercept_sd^2);
        default 0 (counts: median species mean about 1-2; binomial: prevalence
        around one half).
    intercept_sd, coef_sd, loading_sd : float
        Spread of intercepts, of covariate effects beta_jk ~ N(0, coef_sd^2) and
        of loadings theta_jk ~ N(0, loading_sd^2) (diagonal: absolute value).

    Returns
    -------
    (Community, SimulationTruth)
        Sites "site01".., species "sp01".., covariates "x1"..; the truth
        holds every parameter, the latent variables and eta. With binomial
        ``trials`` the Community holds the successes and ``truth.trials`` the
        trials.
    """
    from ..families import get_family

    _check_sizes(n_sites, n_species, num_lv, n_covariates)
    if isinstance(family, (list, tuple)):              # a family per species, in order
        if len(family) != n_species:
            raise JSDMError(f"family as a list needs one family per species ({n_species}), got "
                            f"{len(family)}")
        family = dict(zip(_labels("sp", n_species), family))
    fam = get_family(family, link=link).bind(_labels("sp", n_species))
    rng = np.random.default_rng(seed)
    beta0 = rng.normal(0.0 if intercept is None else intercept, intercept_sd, n_species)
    B = rng.normal(0.0, coef_sd, (n_species, n_covariates))
    theta = _loadings(rng, n_species, num_lv, loading_sd)
    X = rng.standard_normal((n_sites, n_covariates))
    Z = rng.standard_normal((n_sites, num_lv))
    eta = beta0 + X @ B.T + Z @ theta.T
    disp = _dispersion(fam, dispersion, n_species)
    tri = None if trials is None else np.broadcast_to(np.asarray(trials, dtype=float),
                                                      eta.shape).copy()
    y = fam.sample(eta, None if disp is None else fam.dispersion_param(disp), tri, rng)
    return _label(fam, y, X, beta0, B, theta, Z, disp, eta, tri)


def _label(fam, y, X, beta0, B, theta, Z, disp, eta, trials):
    """Wrap the simulated arrays into a Community and a labelled SimulationTruth."""
    (n, m), p, d = y.shape, B.shape[1], theta.shape[1]
    sites, species = _labels("site", n), _labels("sp", m)
    covs, lvs = [f"x{k + 1}" for k in range(p)], [f"LV{k + 1}" for k in range(d)]
    Y = pd.DataFrame(y, index=sites, columns=species)
    com = Community(Y, pd.DataFrame(X, index=sites, columns=covs) if p else None)
    truth = SimulationTruth(
        beta0=pd.Series(beta0, index=species, name="beta0"),
        B=pd.DataFrame(B, index=species, columns=covs),
        theta=pd.DataFrame(theta, index=species, columns=lvs),
        z=pd.DataFrame(Z, index=sites, columns=lvs),
        dispersion=None if disp is None else (
            pd.Series(disp, index=species, name="dispersion") if disp.ndim == 1 else
            pd.DataFrame(disp, index=species, columns=_dispersion_columns(fam, disp.shape[1]))),
        eta=pd.DataFrame(eta, index=sites, columns=species),
        family=fam.name, link=fam.link, trials=trials,
    )
    return com, truth


def _dispersion_columns(fam, k):
    """Column labels of a vector dispersion: the family's, or tau1.. for cut points."""
    if hasattr(fam, "cutpoints") or not hasattr(fam, "dispersion_labels"):
        return [f"tau{j + 1}" for j in range(k)]
    return list(fam.dispersion_labels(k))


def _check_sizes(n_sites, n_species, num_lv, n_covariates):
    for name, value, low in (("n_sites", n_sites, 1), ("n_species", n_species, 1),
                             ("num_lv", num_lv, 0), ("n_covariates", n_covariates, 0)):
        if int(value) != value or value < low:
            raise JSDMError(f"{name} must be a whole number >= {low}, got {value!r}.")
    if num_lv > n_species:
        raise JSDMError(f"num_lv={num_lv} exceeds n_species={n_species}; the loadings are "
                        "identifiable only with num_lv <= n_species. Lower num_lv.")


def _labels(prefix, n):
    width = max(2, len(str(n)))
    return pd.Index([f"{prefix}{i + 1:0{width}d}" for i in range(n)])


def _loadings(rng, m, d, sd):
    """Lower-triangular (m, d) loadings with positive diagonal."""
    theta = np.tril(rng.normal(0.0, sd, (m, d)))
    idx = np.arange(d)
    theta[idx, idx] = np.abs(theta[idx, idx])
    return theta


#: default ordinal cut points (4 categories 0..3; tau_1 = 0, the intercepts carry the location)
DEFAULT_CUTPOINTS = (0.0, 1.0, 2.0)


def _cutpoints(fam, cuts, m):
    """Ordinal cut points (m, K-1): tau_1 = 0 < tau_2 < ..., one row per species."""
    cuts = np.asarray(DEFAULT_CUTPOINTS if cuts is None else cuts, dtype=float)
    if cuts.ndim == 1:
        cuts = np.broadcast_to(cuts, (m, cuts.size))
    if cuts.ndim != 2 or cuts.shape[0] != m or cuts.shape[1] < 2:
        raise JSDMError(f"ordinal dispersion = cut points: give K-1 >= 2 increasing values (or one "
                        f"row of them per species, shape ({m}, K-1)); got shape {cuts.shape}.")
    if not (np.isfinite(cuts).all() and np.all(cuts[:, 0] == 0.0) and np.all(np.diff(cuts, axis=1) > 0)):
        raise JSDMError("ordinal cut points must start at 0 (tau_1 = 0: the species intercepts "
                        "carry the location) and increase strictly, e.g. dispersion=(0, 1, 2) "
                        "for 4 categories.")
    return cuts.copy()


def _dispersion(fam, dispersion, m):
    """Per-species dispersion array (m,) or None for families without one."""
    groups = fam.column_groups(m)
    if groups[0][0] is not fam and fam.has_dispersion:  # a family per species: each its own default
        q = fam.n_dispersion(np.full((1, m), np.nan))     # the widest member's nuisance count
        if dispersion is not None:
            disp = np.asarray(dispersion, dtype=float)
            if disp.shape != (m, q):
                raise JSDMError(f"a mixed-family community takes dispersion=None (each family's "
                                f"default) or an array (n_species, {q}) on the "
                                "families' reported scales, NaN where a species has fewer")
            return disp
        out = np.full((m, q), np.nan)
        for member, cols in groups:
            d = _dispersion(member, None, cols.size)
            if d is not None:
                out[cols, :1 if d.ndim == 1 else d.shape[1]] = d.reshape(cols.size, -1)
        return out
    if not fam.has_dispersion:
        if dispersion is not None:
            raise JSDMError(f"family {fam.name!r} has no dispersion parameter; "
                            f"leave dispersion=None (got {dispersion!r}).")
        return None
    if hasattr(fam, "cutpoints"):
        return _cutpoints(fam, dispersion, m)
    if dispersion is None:
        dispersion = fam.default_dispersion if fam.default_dispersion is not None else 1.0
    q = fam.n_dispersion(np.full((1, m), np.nan))       # a fixed vector per species, or None
    try:
        disp = np.broadcast_to(np.asarray(dispersion, dtype=float), (m,) if q is None else (m, q)).copy()
    except ValueError:
        raise JSDMError(f"family {fam.name!r} takes {q or 1} dispersion value(s) per species "
                        f"({', '.join(fam.dispersion_labels(q)) if q else fam.dispersion_name}); "
                        f"give {q or 1} value(s) or one row of them per species, got "
                        f"shape {np.shape(dispersion)}.") from None
    positive = np.asarray(getattr(fam, "dispersion_positive", None) or True)   # per column
    if not (np.isfinite(disp).all() and np.where(positive, disp > 0, True).all()):
        raise JSDMError(f"dispersion must be finite (and positive where it is a scale or a "
                        f"probability), got {dispersion!r}.")
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = np.isfinite(fam.dispersion_param(disp))
    if not ok.all():
        raise JSDMError(f"dispersion {float(disp[~ok][0]):g} is outside what family {fam.name!r} allows "
                        f"for its {fam.dispersion_name} (e.g. a zero-inflation probability must be "
                        "below 1).")
    return disp
