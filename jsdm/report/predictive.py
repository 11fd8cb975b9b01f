"""Report section: predictive performance (cross-validation) and the check of the approximation."""
from .html import esc, fmt, img, key_values, row, table


def predictive_section(fit, opts):
    """Approximation check, goodness of fit and, when given, cross-validation."""
    parts = [_approximation(fit, opts), _goodness(fit, opts)]
    cv = opts.get("cv")
    parts.append(_cross_validation(cv, opts) if cv is not None else
                 "<h3>Cross-validation</h3><p>Not run. Held-out predictive performance comes from "
                 "<code>jsdm.cross_validate(fit)</code> or <code>jsdm fit ... --cv 5</code>.</p>")
    return "".join(parts)


def _approximation(fit, opts):
    head = "<h3>How good is the variational approximation?</h3>"
    if fit.num_lv == 0 and fit.row_effect != "random":
        return head + ("<p>The model has no latent variables: the ELBO is the exact "
                       "log-likelihood.</p>")
    from ..results.likelihood import not_per_site

    why = not_per_site(fit)
    if why:
        return head + (f"<p>Not checked: {esc(why)}, so the marginal likelihood does not split "
                       "into per-site integrals and the importance-sampling check does not apply. "
                       "The ELBO is a lower bound of the log-likelihood; compare such models by "
                       "cross-validation.</p>")
    n_draws = opts.get("is_draws", 500)
    est = fit.loglik_is(n_draws=n_draws, seed=0)
    n = len(est.sites)
    facts = [("ELBO (the bound that was maximised)", fmt(est.elbo)),
             ("log-likelihood, importance sampling", f"{fmt(est.value)} (Monte Carlo se {est.se:.2g})"),
             ("gap (log-likelihood - ELBO)", f"{est.gap:.3g} in total, {est.gap / n:.2g} per site"),
             ("largest gap at one site", f"{est.sites['gap'].max():.2g} "
                                         f"({esc(est.sites['gap'].idxmax())})"),
             ("smallest effective sample size", f"{est.min_ess:.0f} of {n_draws} draws")]
    verdict = ("small: the bound is tight, and comparisons of models by the ELBO (AIC, BIC, "
               "likelihood-ratio tests) are sound" if est.gap <= max(3 * est.se, 0.1 * n) else
               "noticeable: prefer <code>jsdm.anova(..., loglik='is')</code> or cross-validation "
               "to compare models")
    text = (f"<p>The ELBO is a lower bound of the marginal log-likelihood. Importance sampling from "
            f"a widened version of each site's variational posterior (multivariate t, {n_draws} "
            f"draws per site) estimates the log-likelihood itself at the fitted parameters; the gap "
            f"is the total divergence of the variational posteriors from the exact ones. Here it is "
            f"{verdict}.</p>")
    return head + row(key_values(facts), text)


def _goodness(fit, opts):
    from ..analysis.goodness import pseudo_r2, richness
    from ..results.latent import has_presence

    r2 = pseudo_r2(fit)
    out = ("<h3>Goodness of fit</h3><p>Pseudo-R<sup>2</sup> of Nakagawa, Johnson &amp; "
           "Schielzeth (2017) on the link scale, mean over species: covariates alone "
           f"(marginal) {r2.loc['overall', 'marginal']:.2f}, covariates and latent variables "
           f"(conditional) {r2.loc['overall', 'conditional']:.2f}.")
    if has_presence(fit.family):
        rich = richness(fit, n_draws=opts.get("richness_draws", 500), seed=0)
        out += (f" Observed species richness lies inside the model's 95% prediction interval "
                f"(latent variables drawn from their prior, as for a new site) at "
                f"{rich['inside'].mean():.0%} of the sites.")
    return out + "</p>"


def _cross_validation(cv, opts):
    tab = cv.table
    cols = [c for c in ("num_lv", "lpd", "lpd_se", "lpd_diff", "diff_se", "lpd_marginal",
                        "lpd_conditional", "auc", "tss", "rmse", "folds_converged")
            if c in tab.columns]
    best = cv.best
    by = cv.settings.get("by")
    text = (f"<p>{cv.settings['k']}-fold cross-validation by sites"
            + (f", blocked by {esc(by)}" if by else "")
            + ": each model was refitted without the held-out sites, which were then scored as new "
            "sites (their latent variables integrated out). <b>lpd</b>: log predictive density of "
            "the held-out sites, joint over species (higher is better); lpd_diff and diff_se: "
            "difference to the best model and its standard error over sites. lpd_marginal and "
            "lpd_conditional score species one at a time, without and with the other species at "
            "the site: their difference is what the residual associations add to prediction.</p>")
    fig = cv.plot().figure
    pic = img(fig, "cross-validation comparison", "Held-out lpd of each model minus the best "
              f"model's ({esc(best)}), with 2 standard errors.", opts.get("dpi", 100), width=520)
    return ("<h3>Cross-validation</h3>" + text
            + row(pic, table(tab[cols], digits=3, row_class=lambda lab: "best" if lab == best
                             else None)))
