"""Residuals of a fitted GLLVM, conditional on the site scores.

All kinds use the fitted linear predictor at the variational means of the
latent variables, eta_ij = fixed_ij + a_i' theta_j (the plug-in that R gllvm
and the Dunn-Smyth residual plots use).
"""
import numpy as np
import pandas as pd

from ..exceptions import JSDMError
from ..model.residuals import dunn_smyth
from .predict import response_mean

KINDS = ("dunn-smyth", "response", "pearson")


def residuals(fit, kind="dunn-smyth", seed=None):
    """Residuals as a sites x species DataFrame (NaN for missing responses).

    Parameters
    ----------
    fit : GLLVMResults
    kind : {"dunn-smyth", "response", "pearson"}
        ``"dunn-smyth"``: randomised quantile residuals Phi^-1(u), u uniform
        between F(y-) and F(y) for discrete families (exactly N(0, 1) under the
        model); ``"response"``: y - mu; ``"pearson"``: (y - mu) / sqrt(Var(y | mu)).
    seed : int or Generator, optional
        Randomisation of the Dunn-Smyth residuals (same seed, same residuals; None
        means seed 0, so that repeated calls give the same residuals).

    Returns
    -------
    DataFrame, shape (n_sites, n_species)
    """
    key = str(kind).lower().replace("_", "-").replace(" ", "-")
    if key in ("ds", "dunnsmyth", "quantile"):
        key = "dunn-smyth"
    if key not in KINDS:
        raise ValueError(f"unknown residual kind {kind!r}; choose one of {', '.join(KINDS)}")
    prob, P = fit.problem, fit.state.params
    eta = fit.linear_predictor().to_numpy()
    y = np.where(prob.W > 0, prob.Y, np.nan)
    if key == "dunn-smyth":
        r = dunn_smyth(prob.family, y, eta, P.s, prob.trials, rng=seed)
    else:
        mu = response_mean(prob.family, eta, prob.trials, P.s)
        r = y - mu
        if key == "pearson":
            var = _variance(prob.family, mu, P.s, prob.trials)
            with np.errstate(divide="ignore", invalid="ignore"):
                r = r / np.sqrt(var)
    out = pd.DataFrame(r, index=fit.sites, columns=fit.species)
    out.attrs["families"] = fit.families.to_dict()       # which family each column's residuals use
    return out


def _variance(family, mu, s, trials):
    """Var(y | mu), or a JSDMError for families whose variance is not a function of the mean."""
    try:
        return family.variance(mu, s, trials)
    except NotImplementedError:
        raise JSDMError(f"Pearson residuals need Var(y) as a function of the mean, which family "
                        f"{family.name!r} does not have; use kind='dunn-smyth' (or 'response')") from None
