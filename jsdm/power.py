"""One parameter shared by all species, estimated by profiling the ELBO: the Tweedie power.

This module sits above the fitter (:func:`jsdm.gllvm`), like :mod:`jsdm.selection`:
profiling means fitting the model at several values of the parameter.

The engine estimates nuisance parameters per species (``Tweedie(power=None)`` gives
each species its own power). A single power for the whole community is one more
parameter shared across species: here it is estimated by maximising the profile
ELBO(p) = max over everything else of the ELBO at power p, with Brent's method on
p in ``bounds`` (each evaluation is a complete fit at a fixed power, from the
same seed), as R's ``tweedie.profile`` does for one response. The ELBO stays an
exact lower bound at every p, so its maximum over p is the joint optimum the
engine would find with the power as a free global parameter.
"""
from dataclasses import dataclass, field

import pandas as pd

from .api import gllvm
from .exceptions import JSDMError


@dataclass
class PowerProfile:
    """Result of :func:`profile_power`.

    Attributes
    ----------
    power : float
        The power with the highest ELBO.
    best : GLLVMResults
        The fit at that power (its ``df`` counts the shared power).
    table : DataFrame
        One row per power tried (sorted): ELBO, converged, whether it is the best.
    fits : dict
        power -> fit.
    """

    power: float
    best: object
    table: pd.DataFrame
    fits: dict = field(default_factory=dict)

    def __iter__(self):
        return iter((self.power, self.best))


def profile_power(data, X=None, *, family="tweedie", powers=None, bounds=None, xtol=0.005,
                  **kwargs):
    """Estimate one power shared by all species (Tweedie) by maximising the profile ELBO.

    ``family=Tweedie(power=None)`` (or ``family="tweedie_power"``) in :func:`jsdm.gllvm`
    estimates a power per species; this function estimates a single power for the whole
    community: each evaluation is a complete fit at a fixed power, and Brent's method
    (or the grid ``powers``) finds the power with the highest ELBO.

    Parameters
    ----------
    data, X : as for :func:`jsdm.gllvm`
    family : str or Family
        A family with a power parameter ("tweedie" or a Tweedie instance); its own
        power is ignored.
    powers : sequence of float, optional
        Powers to try (a grid search); default: Brent's method on ``bounds``.
    bounds : (float, float), optional
        Search interval, inside the family's range (Tweedie: (1, 2); default (1.02, 1.98)).
    xtol : float
        Absolute tolerance on the power for Brent's method.
    **kwargs
        Passed to :func:`jsdm.gllvm` (num_lv, formula, seed, n_init, ...).

    Returns
    -------
    PowerProfile
        ``.power``, ``.best`` (the fit at that power; its ``df`` counts the shared
        power and ``settings["profiled"]`` records it), ``.table`` (power, llf,
        converged, best) and ``.fits``.
    """
    import warnings

    from scipy import optimize

    from .exceptions import DataWarning
    from .families import get_family
    from .model.problem import _as_community
    from .results.fitted import GLLVMResults

    base = get_family(family)
    if not hasattr(base, "with_power"):
        raise JSDMError(f"profile_power profiles a family's power parameter (family='tweedie'); "
                        f"family {base.name!r} has none")
    Yv = _as_community(data, X, kwargs.get("response"), kwargs.get("site"),
                       kwargs.get("species")).Y.to_numpy(dtype=float)
    why = base.power_warning(Yv)
    if why:
        warnings.warn(f"profile_power: {why}", DataWarning, stacklevel=2)
    lo_p, hi_p = base.power_range
    lo, hi = (float(b) for b in (base.power_search if bounds is None else bounds))
    if not lo_p < lo < hi < hi_p:
        raise JSDMError(f"bounds must satisfy {lo_p:g} < lower < upper < {hi_p:g}; got {bounds!r}")
    fits = {}

    def fit_at(p):
        p = float(p)
        if p not in fits:
            fits[p] = gllvm(data, X, family=base.with_power(p), **kwargs)
        return fits[p]

    if powers is not None:
        for p in powers:
            if not lo_p < float(p) < hi_p:
                raise JSDMError(f"powers must lie strictly between {lo_p:g} and {hi_p:g}; got {p!r}")
            fit_at(p)
    else:
        optimize.minimize_scalar(lambda p: -fit_at(p).llf, bounds=(lo, hi), method="bounded",
                                 options={"xatol": float(xtol)})
    table = pd.DataFrame([{"power": p, "llf": f.llf, "converged": f.converged}
                          for p, f in sorted(fits.items())]).set_index("power")
    best_p = float(table["llf"].idxmax())
    table["best"] = table.index == best_p
    found = fits[best_p]             # fits are read-only: the best one again, with the profile noted
    best = GLLVMResults(found.problem, found.state, {**found.settings, "profiled": {"power": best_p}})
    fits[best_p] = best
    return PowerProfile(best_p, best, table, fits)


__all__ = ["PowerProfile", "profile_power"]
