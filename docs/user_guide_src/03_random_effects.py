r"""
3. Random effects
=================

Sites differ in ways the covariates miss: a core may be richer in every
species. A **random site effect** (lme4: ``(1 | site)``) adds one intercept
per site, shared by all species, drawn from a normal distribution:

.. code-block:: text

    log μ_ij = α_i + β_0j + x_i' β_j,      α_i ~ N(0, σ²)

It is the simplest way species become dependent: two species at a rich site
are both more abundant. In jsdm it is ``row_effect="random"`` (or
``row_effect="fixed"`` for one fixed intercept per site).
"""

# %%
import jsdm

com = jsdm.datasets.load_mite()
rows = jsdm.gllvm(com, family="negative_binomial", num_lv=0, row_effect="random",
                  formula="~ scale(SubsDens) + scale(WatrCont)")
print(f"sd of the site effects: {rows.row_sigma:.3f}")

# %%
# The predicted site effects (random-effect predictions, one per site):
rows.row_effects.sort_values().tail()

# %%
# The same model in lme4/glmmTMB syntax on the long table:
long = com.to_long(response="count")
same = jsdm.gllvm(long, family="nb",
                  formula="count ~ 0 + species + species:scale(SubsDens) + species:scale(WatrCont)"
                          " + (1 | site)")
print(f"ELBO, wide call {rows.llf:.4f}; lme4-style call {same.llf:.4f}")

# %%
# A random site effect makes every pair of species positively correlated by
# the same amount. Real communities have species that replace each other
# along gradients nobody measured: positive *and* negative associations, a
# different one for each pair. The joint model of the next chapter lets the
# data say which.
