"""
6. Inference
============

Standard errors come from the Hessian of the ELBO in all parameters, with
the variational parameters profiled out (a Schur complement); intervals are
Wald intervals, with dispersions and variances handled on their log scale.
``alpha`` is 1 - confidence level everywhere in jsdm.
"""

# %%
import jsdm

com = jsdm.datasets.load_mite()
fit = jsdm.gllvm(com, family="negative_binomial", num_lv=2,
                 formula="~ scale(SubsDens) + scale(WatrCont)")

# %%
# Every parameter, labelled by (block, species, term):
fit.params.head()

# %%
fit.conf_int(alpha=0.1).head()

# %%
# The summary prints as text and renders as HTML in a notebook; its tables
# are DataFrames.
print(str(fit.summary())[:1500])

# %%
# Tests between nested models
# ---------------------------
# Does water content matter, given substrate density and the latent
# variables? A likelihood-ratio test of the two fits:
small = jsdm.gllvm(com, family="negative_binomial", num_lv=2,
                   formula="~ scale(SubsDens)")
jsdm.anova(small, fit, names=["SubsDens", "SubsDens + WatrCont"])

# %%
# Prediction
# ----------
# ``predict()`` and ``fitted()`` give the response scale by default (pass
# ``type="link"`` for the linear predictor). For new sites the latent
# variables are unknown and are integrated out (``lv="marginal"``).
import pandas as pd

new = pd.DataFrame({"SubsDens": [30.0, 50.0], "WatrCont": [300.0, 700.0]}, index=["dry", "wet"])
fit.predict(new, type="response").iloc[:, :5]

# %%
# ``predict_interval()`` always returns one row per site and species with the
# interval's bounds:
fit.predict_interval(new, interval="confidence", alpha=0.05).head()
