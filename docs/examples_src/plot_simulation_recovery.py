"""
Simulate a community and recover it
===================================

:func:`jsdm.simulate_community` draws a community from a GLLVM with known
parameters. Fitting it back is the quickest check that a model can be
identified from data of your size: here the true and estimated residual
correlations (rotation-invariant, so directly comparable).
"""
import matplotlib.pyplot as plt
import numpy as np

import jsdm

com, truth = jsdm.simulate_community(n_sites=80, n_species=12, num_lv=2,
                                     family="poisson", seed=3)
fit = jsdm.gllvm(com, family="poisson", num_lv=2, n_init=1)

true_cor = truth.residual_covariance.to_numpy()
sd = np.sqrt(np.diag(true_cor))
true_cor = true_cor / np.outer(sd, sd)
est = fit.residual_correlation(add_family_variance=False).to_numpy()
iu = np.triu_indices_from(est, 1)

fig, ax = plt.subplots(figsize=(4.5, 4.5))
ax.scatter(true_cor[iu], est[iu], s=12)
ax.plot([-1, 1], [-1, 1], color="0.6", lw=0.8)
ax.set_xlabel("true residual correlation")
ax.set_ylabel("estimated")
print(f"correlation between true and estimated: {np.corrcoef(true_cor[iu], est[iu])[0, 1]:.3f}")
