"""
5. Checking convergence
=======================

A fit you have not checked is not a result. jsdm calls a fit *converged*
when the largest curvature-scaled gradient of the ELBO is below ``gtol``
(not merely when the optimiser stopped), warns at fit time about the cheap
problems it sees (badly scaled covariates, species with too few records,
latent variables collapsing to zero), and :meth:`~jsdm.GLLVMResults.diagnose`
runs every check, the Hessian included, and says what to do.
"""

# %%
import jsdm

com = jsdm.datasets.load_mite()
fit = jsdm.gllvm(com, family="negative_binomial", num_lv=2,
                 formula="~ scale(SubsDens) + scale(WatrCont)")
print(fit.converged, f"max scaled gradient {fit.scaled_grad:.2g}", f"{fit.n_iter} iterations")

# %%
# The optimiser's history (one row per recorded iteration):
fit.history.tail()

# %%
# ``diagnose()``: gradient, Hessian eigenvalues, scaling, collapsed latent
# variables, sparse species, dispersions at their bounds; every problem comes
# with its evidence and a remedy.
d = fit.diagnose()
print(d.ok)
d.to_frame()

# %%
# Several starts
# --------------
# A GLLVM's likelihood can have several local optima. ``n_init`` starts
# (3 by default; the first from per-species GLMs and a factor analysis of
# their residuals, the others jittered) keep the best; the ELBO of each
# start is kept on the fit. Fits are deterministic: the same data and call
# give the same fit, bit for bit; ``seed=`` chooses other starts.
print(fit.state.start_values)

# %%
# Unscaled covariates
# -------------------
# A covariate in grams per litre has slopes near 1e-3: the fit warns
# (:class:`jsdm.DataWarning`) and says to standardise. Warnings are Python
# warnings, so they can be turned into errors in a pipeline.
import warnings

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    jsdm.gllvm(com, family="poisson", num_lv=1, formula="~ WatrCont", n_init=1)
print([str(w.message)[:100] + " ..." for w in caught])
