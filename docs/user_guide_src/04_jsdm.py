r"""
4. The joint model: latent variables as a reduced-rank random effect
=====================================================================

A joint species distribution model gives each site a few **latent
variables** z_i ~ N(0, I), d of them (unmeasured gradients), and each
species a **loading** θ_j on them:

.. code-block:: text

    log μ_ij = β_0j + x_i' β_j + z_i' θ_j

The term z_i' θ_j is a random effect per site and species whose species x
species covariance ΘΘ' has rank d:
a *reduced-rank* random effect (glmmTMB: ``rr(0 + species | site, d = 2)``).
Its correlations are the **residual associations** between species; the
site scores are a **model-based ordination**. jsdm fits it by an exact
variational approximation (:doc:`/engine`).
"""

# %%
import jsdm

com = jsdm.datasets.load_mite()
fit = jsdm.gllvm(com, family="negative_binomial", num_lv=2,
                 formula="~ scale(SubsDens) + scale(WatrCont)")
fit

# %%
# The warning says that for a few species the negative binomial's dispersion
# went to its lower bound: their counts show no over-dispersion beyond the
# Poisson, which is a finding, not a failure (:doc:`05_convergence` has more on
# what jsdm checks). The loadings (zero above the diagonal and a positive diagonal: the
# constraint that identifies the latent variables) and the site scores:
fit.loadings.head()

# %%
fit.lv.head()

# %%
# The same model in glmmTMB syntax; the fit is identical, bit for bit:
long = com.to_long(response="count")
same = jsdm.gllvm(long, family="nb",
                  formula="count ~ 0 + species + species:scale(SubsDens) + species:scale(WatrCont)"
                          " + rr(0 + species | site, d = 2)")
print(same.llf == fit.llf)

# %%
# How many latent variables?
# --------------------------
# :func:`jsdm.select_num_lv` fits each candidate and picks the smallest
# information criterion (AICc by default). The ELBO stands in for the
# log-likelihood, as in R's gllvm. (One start per candidate keeps this page
# quick; use the default ``n_init=3`` for real work.)
sel = jsdm.select_num_lv(com, num_lv=range(0, 4), family="negative_binomial",
                         formula="~ scale(SubsDens) + scale(WatrCont)", n_init=1)
sel.table

# %%
# Held-out sites are the sterner test: ``fit.cross_validate(k=5)`` refits the
# model without each fold of sites and scores their log predictive density
# (:func:`jsdm.cross_validate` compares several models on the same folds).
#
# Nested models can also be compared by a likelihood-ratio test. Adding
# latent variables tests a variance on the boundary, so the p-value is
# conservative (the table says so in ``boundary``).
jsdm.anova(sel.fits[1], sel.fits[2])
