"""Response families, found by name through one registry.

``get_family("nb")`` or ``get_family(NegativeBinomial())``; an unknown name
lists the valid ones. ``get_family({species: name, ...})`` (or a pandas Series,
e.g. a column of a species table) returns a :class:`Mixed` family: a family per
species.

==================  ======================  ==================================  =========================
family              links                   nuisance s (per species)            ell
==================  ======================  ==================================  =========================
poisson             log                     -                                   closed form
negative_binomial   log                     log phi, Var = mu + phi mu^2        quadrature (softplus only)
nb1                 log                     log phi, Var = mu (1 + phi)         quadrature
binomial            logit, probit, cloglog  -                                   quadrature (y-free kernels)
beta_binomial       logit                   log phi (overdispersion)            quadrature
gaussian            identity                log sd                              closed form
gamma               log                     log phi, Var = phi mu^2             closed form
exponential         log                     -                                   closed form
tweedie             log (power 1<p<2)       log phi, Var = phi mu^p             closed form + series
tweedie_power       log                     log phi, power (estimated)          closed form + series
zip                 log                     logit pi (zero inflation)           quadrature at y = 0
zinb                log                     log phi, logit pi                   quadrature
truncated_poisson   log                     -                                   quadrature
truncated_nb        log                     log phi                             quadrature
hurdle_poisson      log                     logit of P(y > 0)                   closed form + quadrature
hurdle_nb           log                     logit of P(y > 0), log phi          quadrature
beta                logit                   log phi (precision)                 quadrature
ordered_beta        logit                   log phi, two cut points             quadrature
beta_hurdle         logit                   log phi, logit of P(y = 0)          quadrature
ordinal             probit, logit           log cut-point gaps, (m, q)          quadrature
                                            or (1, q) common
==================  ======================  ==================================  =========================

Every ``ell`` is the exact expectation E[log f(y | eta)], eta ~ N(m, v), to
~1e-10 or better over m in [-30, 30], v in [0, 20] (tests/test_families.py,
tests/test_families_more.py).
"""
from ..exceptions import JSDMError
from .base import ELL, Family
from .beta import Beta
from .beta_binomial import BetaBinomial
from .beta_hurdle import BetaHurdle
from .binomial import Binomial
from .exponential import Exponential
from .gamma import Gamma
from .gaussian import Gaussian
from .nb1 import NegativeBinomial1
from .hurdle import HurdleNegativeBinomial, HurdlePoisson, two_part
from .mixed import Mixed
from .negative_binomial import NegativeBinomial
from .ordered_beta import OrderedBeta
from .ordinal import Ordinal
from .poisson import Poisson
from .truncated import TruncatedNegativeBinomial, TruncatedPoisson
from .tweedie import Tweedie, TweediePower
from .zinb import ZeroInflatedNegativeBinomial
from .zip import ZeroInflatedPoisson

_REGISTRY = {}


def register(cls):
    """Add a Family subclass to the registry under its name and aliases."""
    for key in (cls.name, *cls.aliases):
        _REGISTRY[key.lower()] = cls
    return cls


for _cls in (Poisson, NegativeBinomial, Binomial, Gaussian, Gamma, Tweedie, Ordinal,
             ZeroInflatedPoisson, Beta, ZeroInflatedNegativeBinomial, NegativeBinomial1,
             TruncatedPoisson, TruncatedNegativeBinomial, HurdlePoisson, HurdleNegativeBinomial, Exponential, OrderedBeta, BetaHurdle, BetaBinomial):
    register(_cls)


for _key in TweediePower.aliases:        # "tweedie_power": Tweedie(power=None); "tweedie" stays p = 1.5
    _REGISTRY[_key] = TweediePower


def get_family(family, link=None):
    """Return a Family instance from a name, class or instance, or a mixed family from a
    mapping.

    Parameters
    ----------
    family : str, Family subclass, Family, dict or pandas Series
        A registered name or alias ("poisson", "nb", "binomial", ...;
        case-insensitive, "-" and "." read as "_"), a class, or an instance;
        or a mapping {species: family} (a dict, or a pandas Series such as a
        column of a species table) for a family per species
        (:class:`~jsdm.families.Mixed`).
    link : str, optional
        Link function, where the family offers several (binomial: "logit",
        "probit", "cloglog"); default the family's own.

    Returns
    -------
    Family
        An instance; an unknown name raises :class:`jsdm.JSDMError` listing
        the valid ones (and the closest match).
    """
    if isinstance(family, dict) or _is_series(family):
        return Mixed(family, link=link)
    if isinstance(family, Family):
        if link is not None and link != family.link:
            return type(family)(link=link)
        return family
    if isinstance(family, type) and issubclass(family, Family):
        return family(link=link)
    key = str(family).lower().replace("-", "_").replace(".", "_").replace(" ", "_")
    if key not in _REGISTRY:
        import difflib

        names = sorted({c.name for c in _REGISTRY.values()})
        close = difflib.get_close_matches(key, list(_REGISTRY), n=1, cutoff=0.6)
        hint = f" (did you mean {_REGISTRY[close[0]].name!r}?)" if close else ""
        raise JSDMError(f"unknown family {family!r}{hint}; valid families: {', '.join(names)}")
    return _REGISTRY[key](link=link)


def _is_series(obj):
    return type(obj).__name__ == "Series" and hasattr(obj, "to_dict")


__all__ = ["ELL", "Beta", "BetaBinomial", "BetaHurdle", "Binomial", "Exponential", "Family", "Gamma",
           "Gaussian", "HurdleNegativeBinomial", "HurdlePoisson", "Mixed", "NegativeBinomial",
           "NegativeBinomial1", "OrderedBeta", "Ordinal", "Poisson", "TruncatedNegativeBinomial",
           "TruncatedPoisson", "Tweedie", "TweediePower", "ZeroInflatedNegativeBinomial",
           "ZeroInflatedPoisson", "get_family", "register", "two_part"]
