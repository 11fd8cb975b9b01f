"""Helpers shared by the engine, inference and ordinal tests."""
import numpy as np
import pytest

from jsdm.exceptions import JSDMError
from jsdm.families import get_family


def family_or_skip(name, link):
    """The family, or a skip naming it when it is not registered."""
    try:
        return get_family(name, link=link)
    except JSDMError as exc:
        pytest.skip(f"family {name!r} (link {link!r}) not available yet: {exc}")


def fd_hessian(fg, x, h=1e-5):
    """Hessian of the ELBO by central differences of the gradient of ``fg`` (= -ELBO, -grad)."""
    H = np.empty((x.size, x.size))
    for k in range(x.size):
        e = np.zeros(x.size)
        e[k] = h
        H[:, k] = -(fg(x + e)[1] - fg(x - e)[1]) / (2 * h)
    return H
