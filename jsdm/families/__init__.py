"""Response families, found by name through one registry.

``get_family("nb")`` or ``get_family(NegativeBinomial())``; an unknown name
lists the valid ones.

==================  =====================  =================================  ====================
Every ``ell`` is the exact expectation E[log f(y | eta)], eta ~ N(m, v), to
~1e-10 or better over m in [-30, 30], v in [0, 20] (tests/test_families.py).
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
    mapping {species: family} (dict or pandas Series, e.g. a column of a species table)."""
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
