r"""
7. Species associations
=======================

The residual covariance ΘΘ' (Θ: the species' loadings) says which species
co-occur more (or less) than the covariates explain. jsdm reports its
correlations with each species' observation-level variance added to the
diagonal by default (so that a correlation means something at low rank;
:doc:`/associations` explains the choice and its alternatives), with
delta-method intervals whose coverage was checked by simulation.
"""

# %%
import jsdm

com = jsdm.datasets.load_mite()
fit = jsdm.gllvm(com, family="negative_binomial", num_lv=2,
                 formula="~ scale(SubsDens) + scale(WatrCont)")
R = fit.residual_correlation()
R.iloc[:5, :5].round(2)

# %%
# The pairs, strongest first, with 95% intervals. ``headline`` marks pairs
# of species with enough information (rare species and species without a
# finite optimum are left out of headline tables).
pairs = fit.association_table()
pairs[["species_1", "species_2", "estimate", "lower", "upper", "headline"]].head(8)

# %%
# The heatmap, species clustered by their correlations:
ax = fit.plot_associations()

# %%
# Only the pairs whose interval excludes zero:
ax = fit.plot_associations(only_significant=True)

# %%
# Environmental associations
# --------------------------
# Species can also co-occur because they respond alike to the measured
# covariates: the correlation across sites of their covariate parts.
fit.environmental_correlation().iloc[:5, :5].round(2)

# %%
# How much of each species' variation (on the link scale) is covariates and
# how much latent variables:
ax = fit.plot_variance_partition()
