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


def fit_with_copied_column(com, column, **kwargs):
    """A fit whose design has ``column`` twice (as ``column + 'copy'``), so its slopes are
    not identified. ``jsdm.gllvm`` refuses such a design before fitting (issue 13); this
    builds it below that check, to test how the Hessian and diagnostics treat an
    unidentified parameter."""
    import warnings
    from dataclasses import replace

    import jsdm
    from jsdm.model.fit import fit_problem
    from jsdm.model.problem import build_problem
    from jsdm.results.fitted import GLLVMResults

    family = kwargs.pop("family")
    fit_kw = {k: kwargs.pop(k) for k in ("seed", "n_init") if k in kwargs}
    prob = build_problem(com, family=family, **kwargs)
    k = prob.terms.index(column)
    prob = replace(prob, X=np.column_stack([prob.X, prob.X[:, k]]),
                   terms=prob.terms + (column + "copy",))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jsdm.JSDMWarning)
        state = fit_problem(prob, **fit_kw)
    return GLLVMResults(prob, state, dict(family=family, **fit_kw))
