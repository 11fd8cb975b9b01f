"""Terms of the linear predictor (see docs/engine_terms.md).

``default_terms(covariates, num_lv, row_effect)`` gives the terms of the classic
wide call; ``make_term(spec)`` rebuilds a term from its ``spec()`` (saved fits);
``register_term(cls)`` adds a new kind of term.
"""
from .base import Reported, Term
from .dispersion import S_BOUNDS, Dispersion
from .group_effects import GroupEffects, JointGroupEffects, NestedGroupEffects
from .latent import LatentVariables
from .ordination import ConcurrentLatentVariables, ReducedRank
from .quadratic import QuadraticResponse
from .predictor import LinearPredictor
from .row_effects import FixedRowEffects, RandomRowEffects
from .slots import CholeskySlot, MaskedSlot, PinnedFirstSlot, Slot
from .species_effects import SpeciesIntercepts, SpeciesSlopes
from .species_random import SpeciesRandom
from .community_slopes import CommunitySlopes

_TERMS = {}


def register_term(cls):
    """Make a Term subclass known by its ``kind`` (for ``make_term`` and saved fits)."""
    _TERMS[cls.kind] = cls
    return cls


for _cls in (SpeciesIntercepts, SpeciesSlopes, LatentVariables, FixedRowEffects, RandomRowEffects,
             SpeciesRandom, CommunitySlopes, GroupEffects, JointGroupEffects,
             NestedGroupEffects, ConcurrentLatentVariables, ReducedRank, QuadraticResponse):
    register_term(_cls)


def make_term(spec):
    """The term described by ``spec`` (a dict from ``Term.spec()``)."""
    spec = dict(spec)
    kind = spec.pop("kind")
    if kind not in _TERMS:
        from ...exceptions import JSDMError
        raise JSDMError(f"unknown term kind {kind!r}; known: {', '.join(sorted(_TERMS))}. Was the "
                        "fit saved by a newer jsdm?")
    return _TERMS[kind](**spec)


def default_terms(covariates=(), num_lv=0, row_effect=None, species_random=None, community=None):
    """The terms of ``gllvm(..., num_lv=, row_effect=)`` with species slopes on ``covariates``.

    Species intercepts, species slopes and latent variables are always listed (with
    zero width when there are no covariates or latent variables) so that every fit
    has ``beta0``, ``B``, ``theta`` and ``a``; a row effect only when asked for.
    ``species_random`` (a ``SpeciesRandom``): random species coefficients, which
    take the place of the fixed species intercepts / slopes on the same columns
    (those are then held at 0). ``community`` (a ``CommunitySlopes``): community slopes
    and trait interactions (the fourth corner); the species slopes on its columns are held.
    """
    if species_random is not None or community is not None:
        cols = species_random.columns if species_random is not None else ()
        ccols = community.columns if community is not None else ()
        held = tuple(dict.fromkeys([c for c in cols if c != "1"] + list(ccols)))
        terms = [SpeciesIntercepts(held="1" in cols), SpeciesSlopes(tuple(covariates), held=held)]
        terms += [t for t in (community, species_random) if t is not None]
        terms.append(LatentVariables(int(num_lv)))
    else:
        terms = [SpeciesIntercepts(), SpeciesSlopes(tuple(covariates)), LatentVariables(int(num_lv))]
    if row_effect == "fixed":
        terms.append(FixedRowEffects())
    elif row_effect == "random":
        terms.append(RandomRowEffects())
    return tuple(terms)


__all__ = ["CommunitySlopes", "CholeskySlot", "ConcurrentLatentVariables", "Dispersion",
           "FixedRowEffects", "GroupEffects", "JointGroupEffects", "LatentVariables",
           "LinearPredictor", "NestedGroupEffects", "MaskedSlot", "PinnedFirstSlot",
           "QuadraticResponse", "RandomRowEffects", "ReducedRank", "Reported", "S_BOUNDS", "Slot",
           "SpeciesIntercepts", "SpeciesRandom", "SpeciesSlopes", "Term", "default_terms", "make_term",
           "register_term"]
