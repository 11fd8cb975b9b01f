"""Optional weak Gaussian penalty on slopes and loadings (``gllvm(..., prior_sd=tau)``).

Where a species' likelihood has no finite optimum (perfect separation by a
covariate or by the latent variables, a species seen at one site only), its
slopes and loadings run off to infinity and drag its linear predictor to
thousands. A weak Gaussian prior N(0, tau^2) on each loading and on each
slope *per standard deviation of its covariate* keeps them finite and leaves
well-informed species practically unchanged (docs/associations.md, "Rare and
separated species", and bench/study_separation.py). Intercepts, dispersions
and row effects are not penalised.

The penalised objective is

    ELBO(P) - sum_j [ sum_k (B_jk sd_k)^2 + sum_k theta_jk^2 ] / (2 tau^2)

with sd_k the standard deviation (divisor n) of design column k: a
species-local, separable quadratic. The terms say which of their species
coordinates it applies to and with what weight (``Term.penalty_weights``:
slopes sd_k^2 / tau^2, loadings 1 / tau^2, intercepts none), so the penalty is
a diagonal w over the species block (``species_curvature``). Everything about
it lives here; the engine calls these functions at five places, each marked
"penalty":

- ``add_to_cells`` (objective.cell_eval, objective.evaluate): adds each
  species' term to the per-species sums and spreads the total evenly over the
  per-site sums (so the site sums still add up to the objective, and
  per-site comparisons at fixed species parameters are unchanged);
- ``add_gradient`` (objective.gradient): -w * parameter;
- ``species_curvature`` (blocks.species_step, newton._species_blocks,
  blocks.curvature_diagonal, start.glm_start through ``glm_curvature``): the
  diagonal w of the negative Hessian on the species block, with
  ``species_gradient`` its gradient;
- ``kl_shift`` (newton.gauge_step): the change of the penalty under the
  gauge reparametrisation, added to the site sums;
- model.hessian.hessian_blocks: -w on the diagonal of each species block.

The reported ``fit.llf`` is the ELBO *without* the penalty at the penalised
estimates (still a lower bound of the log-likelihood there); see
:func:`value`.
"""
import numpy as np

#: key of the prior sd in ``Problem.info``
KEY = "prior_sd"


def prior_sd(prob):
    """The penalty's tau (float), or None when the fit is unpenalised."""
    tau = prob.info.get(KEY)
    return None if tau is None else float(tau)


def weights(prob):
    """(w_B (p,), w_theta) ridge weights of the classic terms, or None without a penalty.

    w_B[k] = sd_k^2 / tau^2 (per-sd slopes), w_theta = 1 / tau^2.
    """
    tau = prior_sd(prob)
    if tau is None:
        return None
    lam = 1.0 / tau ** 2
    sd2 = prob.X.var(axis=0) if prob.p else np.zeros(0)
    return lam * sd2, lam


def species_curvature(prob):
    """Diagonal w (ks,) of the penalty's negative Hessian on the species block, or None.

    With the classic terms the block is (beta0_j, B_j, theta_j) and w = (0, sd^2 / tau^2,
    1 / tau^2, ...); each term gives its part (``Term.penalty_weights``).
    """
    tau = prior_sd(prob)
    if tau is None:
        return None
    pred = prob.predictor
    parts = []
    for t, sl in pred.species_terms:
        w = t.penalty_weights(pred, tau)
        parts.append(np.zeros(sl.stop - sl.start) if w is None else np.asarray(w, dtype=float))
    return np.concatenate(parts) if parts else np.zeros(0)


def glm_curvature(prob):
    """The penalty's diagonal on the starting GLMs' coefficients (their terms), or None."""
    tau = prior_sd(prob)
    if tau is None:
        return None
    pred = prob.predictor
    parts = [np.zeros(t.species_width(pred)) if t.penalty_weights(pred, tau) is None
             else np.asarray(t.penalty_weights(pred, tau), dtype=float) for t in pred.glm_terms]
    return np.concatenate(parts) if parts else np.zeros(0)


def species_values(prob, P):
    """Penalty per species (m,), <= 0; zeros without a penalty."""
    w = species_curvature(prob)
    if w is None:
        return np.zeros(prob.m)
    phi = prob.predictor.species_coef(P)
    return -0.5 * (phi * phi) @ w


def value(prob, P):
    """Total penalty (a float, <= 0)."""
    return float(species_values(prob, P).sum()) if prior_sd(prob) is not None else 0.0


def add_to_cells(prob, P, site, species=None):
    """Add the penalty to per-site sums (spread evenly) and per-species sums, in place."""
    if prior_sd(prob) is None:
        return
    v = species_values(prob, P)
    site += v.sum() / max(prob.n, 1)
    if species is not None:
        species += v


def add_gradient(prob, P, g):
    """Add the penalty's gradient to a natural-coordinate gradient ``g`` (Params), in place."""
    gp = species_gradient(prob, P)
    if gp is None:
        return
    pred = prob.predictor
    pred.set_species_coef(g, (pred.species_coef(g) + gp) * pred.free)


def species_gradient(prob, P):
    """Penalty gradient (m, ks) in the species block's coordinates, or None."""
    w = species_curvature(prob)
    if w is None:
        return None
    return -prob.predictor.species_coef(P) * w


def kl_shift(prob, P_old, P_new):
    """Change of the penalty from P_old to P_new, spread per site (n,), or 0.0."""
    if prior_sd(prob) is None:
        return 0.0
    return (value(prob, P_new) - value(prob, P_old)) / max(prob.n, 1)
