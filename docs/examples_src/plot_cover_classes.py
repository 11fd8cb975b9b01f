"""
Cover classes: an ordinal model
===============================

The dune meadow data record plant cover on an ordinal scale (classes 0-9).
The ordinal family treats them as ordered categories with cut points per
species (a cumulative probit), without pretending they are counts.
"""
import jsdm

dune = jsdm.datasets.load_dune()
fit = jsdm.gllvm(dune, family="ordinal", num_lv=2, formula="~ A1", n_init=1)
print(fit)
ax = fit.plot_ordination(color="Management")
