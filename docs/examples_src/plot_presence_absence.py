"""
Presence-absence with a probit link
===================================

Turn the mite counts into 0/1 and fit a binomial JSDM with a probit link: the
latent-variable model of the multivariate probit, whose residual correlations
(with the probit's unit variance added on the diagonal) are correlations of
the species' latent liabilities.
"""
import jsdm

com = jsdm.datasets.load_mite()
pa = jsdm.Community((com.Y > 0).astype(int), com.X)
fit = jsdm.gllvm(pa, family="binomial", link="probit", num_lv=2,
                 formula="~ scale(WatrCont)", n_init=1)
print(fit)
ax = fit.plot_associations()
