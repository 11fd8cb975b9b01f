"""One parameter shared by all species, estimated by profiling the ELBO: the Tweedie power.

The engine estimates nuisance parameters per species (``Tweedie(power=None)`` gives
each species its own power). A single power for the whole community is one more
parameter shared across species: here it is estimated by maximising the profile
ELBO(p) = max over everything else of the ELBO at power p, with Brent's method on
p in ``bounds`` (each evaluation is a complete fit at a fixed power, warm from the
same seed), as R's ``tweedie.profile`` does for one response. The ELBO stays an
exact lower bound at every p, so its maximum over p is the joint optimum the
engine would find with the power as a free global parameter.
"""
from dataclasses import dataclass, field

import pandas as pd

from ..exceptions import JSDMError


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


def profile_power(data, X=None, *, family="tweedie", powers=None, bounds=(1.02, 1.98), xtol=0.005,
                  **kwargs):
    """Estimate one Tweedie power shared by all species by maximising the profile ELBO.

    Parameters
    ----------
    data, X : as for :func:`jsdm.gllvm`
    family : "tweedie" or a Tweedie instance
        The family whose power is profiled (its own power is ignored).
    powers : sequence of float, optional
        Powers to try (a grid search); default: Brent's method on ``bounds``.
    bounds : (float, float)
        Search interval inside (1, 2).
    xtol : float
        Absolute tolerance on the power for Brent's method.
    **kwargs
        Passed to :func:`jsdm.gllvm` (num_lv, formula, seed, n_init, ...).

    Returns
    -------
    PowerProfile
        ``.power``, ``.best`` (the fit at that power), ``.table`` (power, llf, converged, best).
    """
    from scipy import optimize

    from ..api import gllvm
    from ..families import Tweedie, get_family

    base = get_family(family)
    if not isinstance(base, Tweedie):
        raise JSDMError(f"profile_power profiles the Tweedie power; got family {base.name!r}")
    from ..families.tweedie import _on_a_lattice
    from ..model.problem import _as_community

    Yv = _as_community(data, X, kwargs.get("response"), kwargs.get("site"),
                       kwargs.get("species")).Y.to_numpy(dtype=float)
    if _on_a_lattice(Yv):
        import warnings

        from ..exceptions import DataWarning
        warnings.warn("profile_power: the responses are whole numbers; near a power of 1 the "
                      "Tweedie likelihood of counts grows without bound (a lattice at multiples of "
                      "phi), so the profile tends to the lower bound of the search. Prefer a "
                      "count family for counts.", DataWarning, stacklevel=2)
    lo, hi = (float(b) for b in bounds)
    if not 1.0 < lo < hi < 2.0:
        raise JSDMError(f"bounds must satisfy 1 < lower < upper < 2; got {bounds!r}")
    fits = {}

    def fit_at(p):
        p = float(p)
        if p not in fits:
            fits[p] = gllvm(data, X, family=Tweedie(link=base.link, power=p), **kwargs)
        return fits[p]

    if powers is not None:
        for p in powers:
            if not 1.0 < float(p) < 2.0:
                raise JSDMError(f"Tweedie powers must lie strictly between 1 and 2; got {p!r}")
            fit_at(p)
    else:
        optimize.minimize_scalar(lambda p: -fit_at(p).llf, bounds=(lo, hi), method="bounded",
                                 options={"xatol": float(xtol)})
    table = pd.DataFrame([{"power": p, "llf": f.llf, "converged": f.converged}
                          for p, f in sorted(fits.items())]).set_index("power")
    best_p = float(table["llf"].idxmax())
    table["best"] = table.index == best_p
    best = fits[best_p]
    best.settings["profiled"] = {"power": best_p}
    return PowerProfile(best_p, best, table, fits)


def profiled_df(settings):
    """Number of parameters estimated by profiling (counted in ``df``)."""
    return len(settings.get("profiled", {}) or {})


__all__ = ["PowerProfile", "profile_power"]
