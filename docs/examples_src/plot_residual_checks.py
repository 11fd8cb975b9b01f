"""
Residual checks
===============

Dunn-Smyth (randomised quantile) residuals are standard normal under the
model, for every family: the panels should show no trend and a straight Q-Q
line. A Poisson fit to over-dispersed counts fails that check; the negative
binomial passes.
"""
import jsdm

com = jsdm.datasets.load_mite()
pois = jsdm.gllvm(com, family="poisson", num_lv=2,
                  formula="~ scale(SubsDens) + scale(WatrCont)", n_init=1)
fig = pois.plot_residuals(seed=1)
fig.suptitle("Poisson")

# %%
nb = jsdm.gllvm(com, family="negative_binomial", num_lv=2,
                formula="~ scale(SubsDens) + scale(WatrCont)", n_init=1)
fig = nb.plot_residuals(seed=1)
fig.suptitle("Negative binomial")

# %%
# The AIC agrees:
print(f"AIC Poisson {pois.aic:.1f}, negative binomial {nb.aic:.1f}")
