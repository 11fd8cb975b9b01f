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


def common_sd_gaussian():
    """A Gaussian family with ONE residual sd shared by all species (s of shape (1, 1)), as
    lme4 / statsmodels MixedLM / glmmTMB fit it: the engine's shared-dispersion path (the
    one ordinal common cut points use), written here for the exact-likelihood checks."""
    import numpy as np

    from jsdm.families.base import ELL
    from jsdm.families.gaussian import Gaussian

    class CommonSDGaussian(Gaussian):
        name = "gaussian"
        shared_dispersion = True

        def n_dispersion(self, y, species=None):
            return 1

        def ell(self, y, m, v, s=None, trials=None, order=1):
            e = Gaussian.ell(self, y, m, v, np.asarray(s, dtype=float)[..., 0], trials, order)
            return ELL(e.value, e.d_m, e.d_v, e.d_s[..., None],
                       None if e.d_ss is None else e.d_ss[..., None, None])

        def dispersion_start(self, y, mu, n_dispersion=None):
            return Gaussian.dispersion_start(self, y, mu).mean()[None, None] + np.zeros((1, 1))

        def loglik(self, y, eta, s=None, trials=None):
            return Gaussian.loglik(self, y, eta, np.asarray(s, dtype=float)[..., 0], trials)

    return CommonSDGaussian()
