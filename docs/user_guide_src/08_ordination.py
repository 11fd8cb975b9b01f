"""
8. Ordination
=============

The site scores of the latent variables are a **model-based ordination**:
unlike a distance-based method (NMDS, CA) it uses the model's mean-variance
relationship, and with covariates in the model it shows the *residual*
gradients. jsdm rotates scores and loadings to principal axes (which do not
depend on the identifiability constraint) and draws a biplot.
"""

# %%
import jsdm

com = jsdm.datasets.load_mite()

# %%
# Unconstrained ordination: no covariates, the latent variables describe all
# the variation in composition. Colouring the sites by water content shows
# the main gradient.
unc = jsdm.gllvm(com, family="negative_binomial", num_lv=2, formula="~ 1")
ax = unc.plot_ordination(color="WatrCont")

# %%
# ``covariate_arrows=True`` adds the correlations of the site covariates with
# the scores (categorical covariates as one arrow per level); species arrows
# can be left out to see them:
ax = unc.plot_ordination(biplot=False, covariate_arrows=True, color="Topo")

# %%
# The scores as tables (``exponent`` sets the biplot scaling: 0.5 symmetric,
# 1 keeps the geometry of the sites, 0 that of the species):
o = unc.ordination(scaling="symmetric")
o.share

# %%
o.sites.head()

# %%
# Residual ordination: with the covariates in the model, what is left.
# Ellipses are 95% prediction regions of the site scores (``alpha=0.05``).
res = jsdm.gllvm(com, family="negative_binomial", num_lv=2,
                 formula="~ scale(SubsDens) + scale(WatrCont)")
ax = res.plot_ordination(color="Topo", ellipses=True, biplot=False)
