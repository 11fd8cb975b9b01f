"""The sections of the species association report, one function each.

Every function takes the fitted model and the report options (a dict) and
returns the HTML body of its section.
"""
import inspect

import numpy as np
import pandas as pd

from . import tables
from .html import esc, fmt, img, key_values, p_value, row, table


def _plot(fit, name, figsize, **kwargs):
    """Call ``jsdm.plotting.<name>(fit, ...)``, on a fresh Axes of ``figsize`` when it takes ``ax=``.

    Returns the matplotlib Figure (or whatever the plot function returned).
    """
    import matplotlib.pyplot as plt

    from .. import plotting

    func = getattr(plotting, name)
    if figsize is not None and "ax" in inspect.signature(func).parameters:
        fig, ax = plt.subplots(figsize=figsize)
        func(fit, ax=ax, **kwargs)
        return fig
    return func(fit, **kwargs)


def _pct(x):
    return f"{100 * x:.0f}%"


# --- data -------------------------------------------------------------------------
def data_section(fit, opts):
    """Sites, species, prevalence and covariates."""
    sp = tables.species_table(fit)
    prev = sp["prevalence"].dropna()
    W = fit.problem.W
    com = fit.community
    facts = [("sites", f"{fit.problem.n}"), ("species", f"{fit.problem.m}"),
             ("observed cells", f"{int(W.sum())} of {W.size} ({_pct(W.mean())})")]
    if com is not None:
        facts.append(("response type", esc(com.response_type)))
    facts += [("prevalence (share of sites with y > 0)",
               f"median {prev.median():.2f} (range {prev.min():.2f} to {prev.max():.2f})"),
              ("species present at fewer than 5 sites", str(int(((sp["prevalence"] * sp["sites observed"]) < 5).sum())))]
    if com is not None and com.trait_names:
        facts.append(("species traits", esc(", ".join(map(str, com.trait_names)))))
    cov = tables.covariate_table(fit)
    cov_html = ("<h3>Site covariates</h3>" + table(cov, left=("type", "summary"))
                if len(cov) else "<h3>Site covariates</h3><p>No site covariates.</p>")
    body = row("<h3>Overview</h3>" + key_values(facts), cov_html)
    for note in opts.get("notes") or []:
        body += f'<p class="box">{esc(note)}</p>'
    body += ("<details><summary>Per-species summary</summary>"
             + table(sp.sort_values("prevalence", ascending=False), digits=2) + "</details>")
    return body


# --- model and convergence -------------------------------------------------------
def model_section(fit, opts):
    """Model specification, fit statistics and diagnose() in plain words."""
    fam = fit.family
    spec = [("family", esc(getattr(fam, "composition", None) or f"{fam.name} (link: {fam.link})")),
            ("latent variables (num_lv)", str(fit.num_lv)),
            ("covariates", esc(fit.problem.formula or (", ".join(fit.terms) or "none"))),
            ("design terms (species-specific slopes)", esc(", ".join(fit.terms) or "none")),
            ("row (site) effect", esc(fit.row_effect or "none"))]
    if fit.row_sigma is not None:
        spec.append(("row effect sd", fmt(fit.row_sigma)))
    stats = [(k, fmt(v) if not isinstance(v, str) else esc(v)) for k, v in tables.fit_statistics(fit)]
    body = (row("<h3>Model</h3>" + key_values(spec), "<h3>Fit</h3>" + key_values(stats))
            + "<h3>Diagnostics</h3>" + diagnostics_html(fit))
    fams = fit.families
    if fams.nunique() > 1:                  # a family per species
        body += ("<details><summary>Family of each species</summary>"
                 + table(fams.to_frame()) + "</details>")
    disp = fit.dispersion
    if isinstance(disp, pd.DataFrame):      # ordinal cut points: species x cut point
        body += (f"<p>Cut points: {disp.shape[1]} per species ({esc(', '.join(map(str, disp.columns)))}; "
                 "the first is 0 by definition, the intercept sets the location). Cut points next "
                 "to categories a species never shows are not identified.</p>")
    elif disp is not None:
        body += (f"<p>Dispersion ({esc(disp.name)}): median {disp.median():.3g}, range "
                 f"{disp.min():.3g} to {disp.max():.3g} across species.</p>")
    return body


def diagnostics_html(fit):
    """The result of ``fit.diagnose()`` as plain sentences."""
    diag = fit.diagnose()
    if getattr(diag, "ok", False):
        eig = (getattr(diag, "stats", None) or {}).get("min scaled Hessian eigenvalue")
        hess = ("" if eig is None else f" (smallest scaled eigenvalue of the negative Hessian "
                f"{eig:.2g} &gt; 0: a maximum)")
        return ('<p class="box"><span class="ok">No problems found.</span> The gradient is '
                f"close to zero at the optimum (max |gradient| {fit.max_grad:.2g}), the Hessian is "
                f"negative definite{hess}, and the checks of coefficient sizes, covariate scaling, "
                "latent variables and sparse species found nothing to act on.</p>")
    items = []
    for prob in _problems(diag):
        items.append('<div class="box problem">' + "<br>".join(esc(x) for x in prob if x) + "</div>")
    if not items:
        items.append(f'<pre>{esc(str(diag))}</pre>')
    return '<p class="warn">Diagnostics found problems:</p>' + "".join(items)


def _problems(diag):
    """(statement, evidence, remedy) of each :class:`jsdm.analysis.diagnostics.Problem` record."""
    out = []
    for rec in getattr(diag, "problems", None) or []:
        evidence, remedy = getattr(rec, "evidence", ""), getattr(rec, "remedy", "")
        out.append((str(getattr(rec, "message", rec)), f"Evidence: {evidence}" if evidence else "",
                    f"What to do: {remedy}" if remedy else ""))
    return out


# --- model selection ---------------------------------------------------------------
def selection_section(fit, opts):
    """The table of candidate models (numbers of latent variables) with the chosen one marked."""
    tab = opts["select_table"]
    tab = tab if isinstance(tab, pd.DataFrame) else pd.DataFrame(tab)
    crit = _criterion(tab, opts)
    best = tab[crit].idxmin() if crit in tab.columns else None
    note = (f"<p>Candidate models differ in the number of latent variables; the row with the "
            f"smallest {esc(crit)} is highlighted.</p>" if best is not None else "")
    return note + table(tab, row_class=lambda lab: "best" if lab == best else None)


def _criterion(tab, opts):
    """Column of the selection table that chose the model (given, or the first of aicc/aic/bic)."""
    return opts.get("criterion") or next((c for c in ("aicc", "AICc", "aic", "AIC", "bic", "BIC")
                                          if c in tab.columns), None)


# --- coefficients --------------------------------------------------------------------
def coefficients_section(fit, opts):
    """Slope table (estimate and interval per species and covariate) and the forest plot."""
    coefs = tables.coefficient_table(fit, alpha=opts.get("alpha", 0.05))
    level = f"{100 * (1 - opts.get('alpha', 0.05)):.0f}%"
    tab = (f"<p>Estimate [{level} interval]; bold where the interval excludes zero.</p>"
           + table(_wide_coefficients(coefs, fit), index=True,
                   formatters={c: (lambda v: v) for c in ["Intercept", *fit.terms]}))
    if fit.terms:
        fig = _plot(fit, "plot_coefficients", None, alpha=opts.get("alpha", 0.05))
        width = min(540, 290 * len(fit.terms))
        body = row(img(fig, "coefficient plot", f"Slopes per species with {level} Wald intervals; "
                       "red where the interval excludes zero.", opts.get("dpi", 100), width=width), tab)
    else:
        body = "<p>The model has no covariates; the table shows the species intercepts.</p>" + tab
    full = coefs.copy()
    body += ("<details><summary>All parameters with standard errors, z and p</summary>"
             + table(full, formatters={"p": p_value}) + "</details>")
    return body


def _wide_coefficients(coefs, fit):
    """Species x term table of 'estimate [lower, upper]' cells (HTML)."""
    sub = coefs.xs("coef", level="block")
    cells = {}
    for (sp, term), row in sub.iterrows():
        sig = np.isfinite(row["lower"]) and (row["lower"] > 0 or row["upper"] < 0)
        txt = f"{row['estimate']:.2f} [{row['lower']:.2f}, {row['upper']:.2f}]"
        cells.setdefault(sp, {})[term] = f'<b>{txt}</b>' if sig else txt
    wide = pd.DataFrame.from_dict(cells, orient="index").reindex(index=list(fit.species))
    wide.index.name = "species"
    wide = wide[[c for c in ["Intercept", *fit.terms] if c in wide.columns]]
    disp = fit.dispersion
    if isinstance(disp, pd.DataFrame):
        wide[disp.columns.name or "cut points"] = [
            " < ".join(f"{v:.3g}" for v in r) for r in disp.reindex(wide.index).to_numpy()]
    elif disp is not None:
        wide[disp.name] = [f"{v:.3g}" for v in disp.reindex(wide.index)]
    return wide


# --- associations ------------------------------------------------------------------
def associations_section(fit, opts):
    """Residual correlation heatmap and the strongest pairs with intervals."""
    if fit.num_lv == 0:
        return "<p>The model has no latent variables, so it estimates no residual associations.</p>"
    alpha, top_n = opts.get("alpha", 0.05), opts.get("top_pairs", 15)
    size = min(9.0, 3.0 + 0.17 * fit.problem.m)
    fig = _plot(fit, "plot_associations", (size + 1.0, size), alpha=alpha)
    tab = fit.association_table(alpha=alpha)
    level = f"{100 * (1 - alpha):.0f}%"
    how = ("delta-method intervals on Fisher's z scale" if tab.attrs.get("method", "delta") == "delta"
           else "parametric-bootstrap percentile intervals")
    sig = tab[tab["excludes_zero"].astype(bool)]
    n_ex = len(sig)
    pick = sig if n_ex else tab
    which = ("whose interval excludes zero" if n_ex else "(no interval excludes zero)")
    top = pick.head(top_n).drop(columns=["se", "excludes_zero"], errors="ignore")
    top.index = np.arange(1, len(top) + 1)
    top.index.name = "rank"
    text = ('<p style="max-width:430px">'
            f"{n_ex} of {len(tab)} species pairs have a {level} interval that excludes zero "
            f"({how}). The {len(top)} strongest associations {which}:</p>")
    heat = img(fig, "residual correlation heatmap",
               "Residual correlations between species (latent-variable part of the linear predictor, "
               "link scale), species ordered by hierarchical clustering; red positive, blue negative.",
               opts.get("dpi", 100), width=min(640, 90 + 60 * size))
    return row(heat, text + table(top, digits=2))


# --- ordination ----------------------------------------------------------------------
def ordination_section(fit, opts):
    """The latent-variable biplot and the residual variance along each principal axis."""
    from ..analysis.associations import residual_trace

    if fit.num_lv == 0:
        return "<p>The model has no latent variables, so there is no ordination.</p>"
    if fit.num_lv == 1:
        load = fit.loadings.sort_values("LV1", ascending=False)
        return ("<p>With one latent variable there is no two-dimensional ordination. Species "
                "loadings on LV1, sorted (species at the same end co-occur more than the "
                "covariates explain):</p>" + table(load, digits=2))
    fig = _plot(fit, "plot_ordination", (8.0, 7.0), biplot=True)
    text = ("Sites (points) and species (labels) on the latent variables rotated to principal axes; "
            "species near each other co-occur more than the covariates explain.")
    pic = img(fig, "ordination biplot", text, opts.get("dpi", 100), width=660)
    tr = residual_trace(fit)[["principal", "principal_share"]]
    tr = tr.rename(columns={"principal": "variance", "principal_share": "share"})
    tr.index = [f"axis {i + 1}" if str(r).startswith("LV") else r for i, r in enumerate(tr.index)]
    side = ('<h3>Residual variance by axis</h3><p style="max-width:380px">Trace of the residual '
            "covariance &Theta;&Theta;&prime; split along the principal axes of the ordination."
            "</p>" + table(tr, digits=2))
    return row(pic, side)


# --- variance partition --------------------------------------------------------------
def variance_section(fit, opts):
    """Share of each species' linear-predictor variance by covariates, latent variables, row effects."""
    vp = fit.variance_partition()
    fig = _plot(fit, "plot_variance_partition", (10, 4.5))
    pic = img(fig, "variance partition", "Share of each species' variance in the linear predictor "
              "explained by each component.", opts.get("dpi", 100), width=760)
    return row(pic, "<h3>Across species</h3>" + table(tables.variance_summary(vp), digits=2))


# --- residuals -------------------------------------------------------------------------
def residuals_section(fit, opts):
    """Dunn-Smyth residual panels."""
    fig = _plot(fit, "plot_residuals", None)
    return img(fig, "residual panels",
               "Dunn-Smyth randomised quantile residuals (conditional on the site scores). For a "
               "well-specified model they look like standard normal noise: no trend against the "
               "linear predictor, points on the QQ line, even spread across sites and species.",
               opts.get("dpi", 100))


# --- methods -----------------------------------------------------------------------------
_FAMILY_TEXT = {
    "poisson": "a Poisson distribution",
    "negative_binomial": ("a negative binomial distribution with species-specific dispersion "
                          "&phi;<sub>j</sub> (variance &mu; + &phi;<sub>j</sub>&mu;<sup>2</sup>)"),
    "binomial": "a binomial distribution",
    "gaussian": "a Gaussian distribution with species-specific residual standard deviation",
    "ordinal": "a cumulative model for ordered categories with species-specific cut points",
}


def methods_section(fit, opts):
    """A methods paragraph for a paper: model, family, estimation, software, seed."""
    from .. import __version__

    prob, s = fit.problem, fit.settings
    fam = getattr(fit.family, "description", None) or \
        _FAMILY_TEXT.get(fit.family.name, f"a {esc(fit.family.name)} distribution")
    link = "each family's" if fit.family.link == "mixed" else esc(fit.family.link)
    cov = (f", species-specific slopes for the site covariates ({esc(', '.join(fit.terms))})"
           if fit.terms else "")
    row = {"fixed": " and fixed site effects", "random": " and normally distributed random site "
           "effects"}.get(fit.row_effect, "")
    lv = (f"{fit.num_lv} latent variable{'s' if fit.num_lv != 1 else ''} with species-specific "
          f"loadings &Theta;, so that residual associations between species are given by the "
          f"rank-{fit.num_lv} covariance &Theta;&Theta;&prime;" if fit.num_lv else "no latent variables")
    notes = " ".join(esc(n) for n in opts.get("notes") or [])
    text = (
        f"We fitted a generalized linear latent variable model (GLLVM), a joint species distribution "
        f"model, to the responses of {prob.m} species at {prob.n} sites. Responses were modelled with "
        f"{fam} and {link} link. The linear predictor had species-specific intercepts"
        f"{cov}{row}, and {lv}. {notes} "
        "Parameters were estimated by maximising the exact variational lower bound (evidence lower "
        "bound, ELBO) of the marginal log-likelihood, with a Gaussian variational distribution for "
        "each site's latent variables; expectations without a closed form were computed by "
        "one-dimensional Gauss-Hermite quadrature, so the bound itself is not approximated further. "
        f"The optimiser was run from {s.get('n_init', 1)} starting value{'s' if s.get('n_init', 1) != 1 else ''} "
        f"(per-species GLMs and a factor analysis of their residuals) with random seed {esc(s.get('seed'))}, "
        f"keeping the best bound; the fit {'converged' if fit.converged else 'did NOT converge'} "
        f"(max |gradient| {fit.max_grad:.1e}). Standard errors came from the Hessian of the bound; "
        "intervals for residual correlations by the delta method. Model fit was checked with "
        "Dunn-Smyth randomised quantile residuals. Analyses used jsdm "
        f"{esc(__version__)} (Python).")
    if opts.get("select_table") is not None:
        crit = _criterion(pd.DataFrame(opts["select_table"]), opts)
        name = {"aicc": "AICc", "aic": "AIC", "bic": "BIC"}.get(str(crit).lower(), "information criterion")
        text += f" The number of latent variables was chosen by {esc(name)} (see Model selection)."
    return f'<p class="methods">{text}</p>'
