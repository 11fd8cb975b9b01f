"""Make a fit's records immutable in fact: read-only arrays and records that refuse assignment.

:func:`freeze` is applied by :class:`~jsdm.results.fitted.GLLVMResults` to the
problem and the optimiser state it is given. The engine's record classes stay
ordinary mutable classes (the optimiser updates them while it runs); a fit's
own instances are switched to a sealed subclass that raises on assignment.
Copies are ordinary again: ``dataclasses.replace(fit.state, params=P)`` and
``fit.state.params.copy()`` give mutable records with writable arrays, which is
what refits and perturbation studies need.
"""
import numpy as np

#: record classes whose instances a fit seals (by class name, so that the
#: engine's classes need not know about this module)
SEALED = ("FitState", "Params")

_SUBCLASSES = {}


def _rebuild(cls, state):
    """Unpickle / copy a sealed record: an instance of the engine's class, sealed again."""
    obj = object.__new__(cls)
    obj.__dict__.update(state)
    return freeze(obj)


class _Sealed:
    """Mixin of the sealed subclasses: assignment raises, construction gives a mutable record."""

    def __init__(self, *args, **kwargs):
        # dataclasses.replace(sealed, ...) and copy() construct type(self)(...): build an
        # ordinary (mutable) record of the engine's class instead
        base = type(self).__mro__[2]
        object.__setattr__(self, "__class__", base)
        base.__init__(self, *args, **kwargs)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__mro__[2].__name__} of a fitted model is read-only "
                             f"(cannot set {name!r}); work on a copy (.copy() or "
                             "dataclasses.replace) and build a new result from it")

    def __delattr__(self, name):
        raise AttributeError(f"{type(self).__mro__[2].__name__} of a fitted model is read-only")

    def __reduce_ex__(self, protocol):
        return _rebuild, (type(self).__mro__[2], dict(self.__dict__))


def _sealed_class(cls):
    if cls not in _SUBCLASSES:
        _SUBCLASSES[cls] = type(cls.__name__, (_Sealed, cls),
                                {"__module__": cls.__module__,
                                 "__qualname__": cls.__qualname__, "__doc__": cls.__doc__})
    return _SUBCLASSES[cls]


def _read_only(value):
    if isinstance(value, np.ndarray) and value.flags.writeable:
        value.setflags(write=False)


def freeze(obj):
    """Make ``obj``'s arrays read-only and seal it (and its nested records) against assignment.

    Parameters
    ----------
    obj : object
        A problem, optimiser state or parameter record. Records named in
        :data:`SEALED` are switched to a sealed subclass; any other object
        (e.g. the frozen ``Problem`` dataclass) only has its array attributes
        made read-only.

    Returns
    -------
    object
        ``obj`` itself, frozen in place.
    """
    attrs = getattr(obj, "__dict__", None)
    if attrs is None or isinstance(obj, _Sealed):
        return obj
    for value in attrs.values():
        _read_only(value)
        if type(value).__name__ in SEALED:
            freeze(value)
    cls = type(obj)
    if cls.__name__ in SEALED:
        object.__setattr__(obj, "__class__", _sealed_class(cls))
    return obj
