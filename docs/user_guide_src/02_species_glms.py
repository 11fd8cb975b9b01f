r"""
2. One GLM per species
======================

The simplest community model fits each species on its own: a generalized
linear model with its own intercept and its own slopes on the site
covariates:

.. code-block:: text

    log μ_ij = β_0j + x_i' β_j,      y_ij ~ NB(μ_ij, φ_j)

In jsdm this is :func:`jsdm.gllvm` with ``num_lv=0``: no latent variables,
so the species are independent and the fit is exactly the per-species GLMs
(the test suite checks this against statsmodels).
"""

# %%
import jsdm

com = jsdm.datasets.load_mite()
glms = jsdm.gllvm(com, family="negative_binomial", num_lv=0,
                  formula="~ scale(SubsDens) + scale(WatrCont)")
glms

# %%
# ``scale()`` in the formula standardises a covariate, so that slopes are per
# standard deviation and comparable between covariates (and the optimiser is
# better conditioned). Estimates come as labelled tables:
glms.coef.head()

# %%
# ``summary()`` has every parameter with its standard error, z, p and a 95%
# interval; ``alpha=`` sets 1 - confidence level everywhere in jsdm.
s = glms.summary()
s.coefficients.head(6)

# %%
# The negative binomial's dispersion per species (Var = mu + phi mu^2):
glms.dispersion.head()

# %%
# A forest plot of each species' slope, red where the interval excludes 0:
fig = glms.plot_coefficients(term="scale(WatrCont)")

# %%
# What independent GLMs cannot tell you: whether two species co-occur more
# (or less) than their responses to the environment explain. That needs a
# model of the species together, which the next chapters build.
