"""The sections of the species association report, one function each.

Every function takes the fitted model and the report options (a dict) and
returns the HTML body of its section. What several sections need (the
diagnosis, the per-species information, the pair table, the coefficient
table) is computed once per report through :func:`shared`, so every section
and the summary box quote the same counts.

Rules the sections follow (issue 12):

- headline tables and plot labels use species with enough information
  (``species_information(fit)["headline"]``: at least ``min_records``
  informative records and a finite optimum); the others are listed;
- long tables show their top rows, the whole table sits in a scrolling box
  or in the CSV files of the command line;
- axes cover finite, identified estimates; what is left out is said.
"""
import inspect
import warnings

import numpy as np
import pandas as pd

from ..exceptions import JSDMWarning
from . import tables
from .html import esc, fixed, fmt, img, interval, key_values, num, p_value, prevalence, row, table

#: rows of a headline table
TOP_ROWS = 30
#: rows of a table in a scrolling box (beyond: the CSV files)
SCROLL_ROWS = 1500


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


# --- what several sections share ------------------------------------------------------
def shared(fit, opts, key):
    """The diagnosis, species information, pair table or coefficient table, computed once."""
    from ..analysis.diagnostics import species_information

    cache = opts.setdefault("_shared", {})
    if key in cache:
        return cache[key]
    if key == "diagnosis":
        val = fit.diagnose()
    elif key == "species":
        val = species_information(fit, shared(fit, opts, "diagnosis"), opts.get("min_records", 5))
    elif key == "pairs":
        with warnings.catch_warnings():         # the report says it in words (rank-1 box)
            warnings.simplefilter("ignore", JSDMWarning)
            val = fit.association_table(alpha=opts.get("alpha", 0.05),
                                        min_records=opts.get("min_records", 5))
    elif key == "coefs":
        val = tables.coefficient_table(fit, alpha=opts.get("alpha", 0.05))
    else:
        raise KeyError(key)
    cache[key] = val
    return val


def _headline(fit, opts):
    info = shared(fit, opts, "species")
    return list(info.index[info["headline"].to_numpy()])


def _names(labels, k=12):
    labels = [str(x) for x in labels]
    s = ", ".join(esc(x) for x in labels[:k])
    return s + (f" and {len(labels) - k} more" if len(labels) > k else "")


def _left_out(fit, opts, what="this table"):
    """A sentence listing the species left out of headline tables, and why."""
    info = shared(fit, opts, "species")
    rare = list(info.index[info["rare"].to_numpy()])
    sep = list(info.index[(info["no_finite_optimum"] & ~info["rare"]).to_numpy()])
    parts = []
    if rare:
        parts.append(f"{len(rare)} species with fewer than {info.attrs['min_records']} informative "
                     f"records ({_names(rare)})")
    if sep:
        parts.append(f"{len(sep)} species without a finite optimum ({_names(sep)})")
    if not parts:
        return ""
    return f'<p class="note">Not in {what}: ' + "; ".join(parts) + ".</p>"


# --- what to be careful about ---------------------------------------------------------
_SECTION_OF = {"convergence": "model", "hessian": "model", "near_singular": "model",
               "large_coefficient": "coefficients", "large_se": "coefficients",
               "penalty_dominated": "coefficients", "covariate_scaling": "model",
               "collapsed_lv": "ordination", "sparse_species": "data", "row_variance": "model",
               "degenerate_dispersion": "model", "dispersion_at_bound": "model"}


def careful_section(fit, opts):
    """The 'what to be careful about' box: every diagnosis that applies, in one place."""
    diag = shared(fit, opts, "diagnosis")
    info = shared(fit, opts, "species")
    items = []
    if fit.num_lv == 1:
        items.append('<b>One latent variable.</b> Every residual association is the product of '
                     "two species' loadings: all species lie on one axis and no pair-specific "
                     'association can be read (see <a href="#associations">Species associations</a>).')
    rare = int(info["rare"].sum())
    if rare:
        items.append(f"<b>{rare} species with fewer than {info.attrs['min_records']} informative "
                     "records</b> (or no more than their parameters): their estimates are mostly "
                     "noise; they are left out of the headline tables and plot labels "
                     '(<a href="#data">Data</a>).')
    for p in getattr(diag, "problems", []):
        if p.kind == "sparse_species":
            continue                 # said above, in the report's own words and threshold
        sid = _SECTION_OF.get(p.kind, "model")
        msg = p.message[:1].upper() + p.message[1:]
        items.append(f"<b>{esc(msg)}.</b> {esc(p.remedy[:1].upper() + p.remedy[1:])} "
                     f'(<a href="#{sid}">details</a>).')
    if fit.prior_sd is not None:
        items.append(f"The fit is penalised (prior_sd = {fit.prior_sd:g}): loadings and per-sd "
                     "slopes have a weak N(0, prior_sd&sup2;) prior that keeps species without a "
                     "finite optimum finite; well-informed species are barely affected.")
    if not items:
        return ('<div class="careful"><span class="ok">Nothing specific to this fit.</span> The '
                "checks of convergence, the Hessian, coefficient sizes, rare species and "
                "dispersions found nothing. The general limits of residual correlations still "
                'apply (<a href="#associations">Species associations</a>).</div>')
    lis = "".join(f"<li>{x}</li>" for x in items)
    return f'<div class="careful"><ul>{lis}</ul></div>'


# --- data -------------------------------------------------------------------------
def data_section(fit, opts):
    """Sites, species, prevalence and covariates; the per-species table."""
    info = shared(fit, opts, "species")
    prev = info["prevalence"]
    W = fit.problem.W
    com = fit.community
    k = info.attrs["min_records"]
    facts = [("sites", f"{fit.problem.n}"), ("species", f"{fit.problem.m}"),
             ("observed cells", f"{int(W.sum())} of {W.size} ({_pct(W.mean())})")]
    if com is not None:
        facts.append(("response type", esc(com.response_type)))
    facts += [("prevalence (share of sites with y > 0)",
               f"median {prev.median():.2f} (range {prev.min():.2f} to {prev.max():.2f})"),
              ("species seen at one site only", str(int((info["occupied"] == 1).sum()))),
              (f"species in headline tables (&ge; {k} informative records, finite optimum)",
               f"{int(info['headline'].sum())} of {len(info)}")]
    if com is not None and com.trait_names:
        facts.append(("species traits", esc(", ".join(map(str, com.trait_names)))))
    cov = tables.covariate_table(fit)
    cov_html = ("<h3>Site covariates</h3>" + table(cov, left=("type", "summary"))
                if len(cov) else "<h3>Site covariates</h3><p>No site covariates.</p>")
    body = row("<h3>Overview</h3>" + key_values(facts), cov_html)
    body += (f'<p class="note">Informative records: sites where the species is present (for '
             f"presence/absence, the fewer of presences and absences). Species with fewer than {k} "
             "(or no more than their number of parameters) are kept in the model but left out of "
             "headline tables and plot labels: in simulations with known truth "
             "(bench/study_rare_separated.py) their strongest estimated correlations were off by "
             "0.4 to 1.2.</p>")
    for note in opts.get("notes") or []:
        body += f'<p class="box">{esc(note)}</p>'
    sp = tables.species_table(fit, info).sort_values("prevalence", ascending=False)
    body += ("<details><summary>Per-species summary (all species; scroll, or search with the "
             "browser's find)</summary>"
             + table(sp.head(SCROLL_ROWS), digits=3, tall=True, left=("status",),
                     formatters={"prevalence": prevalence},
                     more="all species in species.csv") + "</details>")
    return body


# --- model and convergence -------------------------------------------------------
def _ordination_tables(fit):
    """Canonical coefficients (constrained / concurrent) and the quadratic summary, as HTML."""
    from ..results.ordination_terms import ordination_parts

    parts, quadratic = ordination_parts(fit)
    out = ""
    if parts & {"constrained", "concurrent"}:
        can = fit.canonical.reset_index()
        out += ("<h3>Canonical coefficients</h3><p>Effect of each ordination covariate on the "
                "site scores of the constrained / concurrent latent variables, with standard "
                "errors and 95% Wald intervals.</p>" + can.to_html(index=False, float_format="%.3g",
                                                                 classes="table"))
    if quadratic:
        gl = fit.gradient_length
        out += ("<h3>Quadratic responses</h3><p>Gradient length (range of the site scores in "
                "units of the median species tolerance): "
                + ", ".join(f"{esc(k)} {v:.2f}" for k, v in gl.items())
                + ". Species optima and tolerances: <code>fit.quadratic_table()</code>.</p>")
    return out



def model_section(fit, opts):
    """Model specification, fit statistics and diagnose() in plain words."""
    fam = fit.family
    spec = [("family", esc(getattr(fam, "composition", None) or f"{fam.name} (link: {fam.link})")),
            ("latent variables (num_lv)", str(fit.num_lv)),
            ("covariates", esc(fit.problem.formula or (", ".join(fit.terms) or "none"))),
            ("design terms (species-specific slopes)", esc(", ".join(fit.terms) or "none")),
            ("row (site) effect", esc(fit.row_effect or "none")),
            ("penalty (prior sd of loadings and per-sd slopes)",
             "none (maximum likelihood)" if fit.prior_sd is None else f"{fit.prior_sd:g}")]
    if fit.row_sigma is not None:
        spec.append(("row effect sd", fmt(fit.row_sigma)))
    pred = fit.problem.predictor
    for t in pred.group_terms:
        for g, _, _, _, sd in t.varcorr_rows(pred, fit.state.params):
            spec.append((esc(f"grouped site effect (1 | {g}) sd"), fmt(sd)))
    kind = fit.ordination_type
    if kind not in ("unconstrained", "none"):      # constrained / concurrent / quadratic
        spec.insert(2, ("ordination", esc(kind)))
        lvf = fit.problem.info.get("lv_formula")
        if lvf:
            spec.insert(3, ("ordination covariates (lv_formula)", esc(lvf)))
    stats = [(k, _stat(v)) for k, v in tables.fit_statistics(fit)]
    body = (row("<h3>Model</h3>" + key_values(spec), "<h3>Fit</h3>" + key_values(stats))
            + _ordination_tables(fit)
            + "<h3>Diagnostics</h3>" + diagnostics_html(fit, shared(fit, opts, "diagnosis")))
    fams = fit.families
    if fams.nunique() > 1:                  # a family per species
        body += ("<details><summary>Family of each species</summary>"
                 + table(fams.to_frame()) + "</details>")
    disp = fit.dispersion
    if isinstance(disp, pd.DataFrame) and hasattr(fam, "cutpoints"):   # ordinal: species x cut point
        note = getattr(fit.family, "structure_note", lambda: "per species")()
        body += (f"<p>Cut points {esc(note)}: {esc(', '.join(map(str, disp.columns)))} (the first "
                 "finite one is 0 by definition, the intercept sets the location; categories a "
                 "species never shows are merged with its neighbours: their cut points are equal, "
                 "or infinite beyond its smallest and largest category).</p>")
    elif isinstance(disp, pd.DataFrame):    # several nuisance parameters per species
        parts = [f"{esc(str(c))}: median {num(col.median())}, range {num(col.min())} to "
                 f"{num(col.max())} ({int(col.notna().sum())} species)"
                 for c, col in disp.items() if col.notna().any()]
        body += "<p>Nuisance parameters per species (" + "; ".join(parts) + ").</p>"
    elif disp is not None:
        info = shared(fit, opts, "species")
        at = info["dispersion_at_bound"].to_numpy()
        free = disp[~at]
        txt = (f"<p>Dispersion ({esc(disp.name)}): " + (
            f"median {num(free.median())}, range {num(free.min())} to {num(free.max())} across "
            f"{len(free)} species" if len(free) else "no species away from the bound"))
        if at.any():
            meaning = getattr(fam, "dispersion_floor_meaning", None) or "at the lower bound"
            txt += (f"; {int(at.sum())} species at the lower bound ({esc(disp.name)} = "
                    f"{num(float(disp[at].iloc[0]))}): {esc(meaning)}. Their {esc(disp.name)} is "
                    "printed as 'at bound' and has no meaningful interval")
        body += txt + ".</p>"
    return body


def _stat(v):
    """A fit statistic: text as it is, integers as integers, large values with one decimal."""
    if isinstance(v, str):
        return esc(v)
    if isinstance(v, (bool, np.bool_, int, np.integer)):
        return fmt(v)
    v = float(v)
    if not np.isfinite(v) or abs(v) < 1 or abs(v) >= 1e7:
        return num(v)
    return f"{v:.1f}" if abs(v) >= 1000 else f"{v:.2f}"


def diagnostics_html(fit, diag=None):
    """The result of ``fit.diagnose()`` as plain sentences."""
    diag = fit.diagnose() if diag is None else diag
    if getattr(diag, "ok", False):
        eig = (getattr(diag, "stats", None) or {}).get("min scaled Hessian eigenvalue")
        hess = ("" if eig is None else f" (smallest scaled eigenvalue of the negative Hessian "
                f"{eig:.2g} &gt; 0: a maximum)")
        return ('<p class="box"><span class="ok">No problems found.</span> The gradient is '
                f"close to zero at the optimum (largest curvature-scaled gradient "
                f"{fit.scaled_grad:.2g}, the convergence criterion; largest raw |gradient| "
                f"{fit.max_grad:.2g}), the Hessian is "
                f"negative definite{hess}, and the checks of coefficient sizes, covariate scaling, "
                "latent variables, dispersions and sparse species found nothing to act on.</p>")
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
    return note + table(tab, row_class=lambda lab: "best" if lab == best else None, digits=5)


def _criterion(tab, opts):
    """Column of the selection table that chose the model (given, or the first of aicc/aic/bic)."""
    return opts.get("criterion") or next((c for c in ("aicc", "AICc", "aic", "AIC", "bic", "BIC")
                                          if c in tab.columns), None)


# --- coefficients --------------------------------------------------------------------
def _random_coefficients(fit, opts):
    """Coefficients of a model with random species effects or community slopes: the fixed
    effects with intervals, the random effects' sds and correlations, the fourth corner (heatmap
    when there are trait interactions) and every species' own coefficients."""
    from ..results.random_effects import varcorr_se

    alpha = opts.get("alpha", 0.05)
    level = f"{100 * (1 - alpha):.0f}%"
    summ = fit.summary(alpha=alpha)
    body = ""
    if "fixed_effects" in summ.tables:
        body += (f"<h3>Community-level fixed effects ({level} intervals)</h3>"
                 + table(summ.tables["fixed_effects"].droplevel(0), formatters={"p_value": p_value}))
    if getattr(fit.problem.predictor, "ksr", 0):
        vc = varcorr_se(fit, alpha=alpha)
        body += ("<h3>Random species effects</h3><p>Standard deviations (var2 empty) and "
                 f"correlations with {level} intervals (log scale for sds, Fisher z for "
                 "correlations). A sd near 0 sits on the boundary of its range, where Wald "
                 "intervals and likelihood-ratio tests are unreliable.</p>" + table(vc))
    pred = fit.problem.predictor
    has_fc = any(getattr(t, "traits", ()) for t in getattr(pred, "global_terms", [])) or any(
        t.traits for t, _, _ in getattr(pred, "species_random_terms", []))
    if has_fc:
        fig = _plot(fit, "plot_fourth_corner", (4.5, 3.5), alpha=alpha)
        body += img(fig, "fourth corner", f"Fourth-corner coefficients (covariate x trait); * where "
                    f"the {level} Wald interval excludes zero.", opts.get("dpi", 100), width=420)
    body += ("<details><summary>Every species' own coefficients (fixed + random: lme4's "
             "coef())</summary>" + table(fit.coef, tall=True) + "</details>")
    return body


def coefficients_section(fit, opts):
    """Slope table (estimate and interval per species and covariate) and the forest plot."""
    pred = fit.problem.predictor
    if getattr(pred, "ksr", 0) or getattr(pred, "global_terms", None):
        return _random_coefficients(fit, opts)
    coefs = shared(fit, opts, "coefs")
    alpha = opts.get("alpha", 0.05)
    level = f"{100 * (1 - alpha):.0f}%"
    info = shared(fit, opts, "species")
    head = _headline(fit, opts)
    wide = _wide_coefficients(coefs, fit, info)
    top = wide.loc[[s for s in wide.index if s in set(head)]].drop(columns="status")
    cols = [c for c in wide.columns if c not in ("prevalence",)]
    tab = (f"<p>Estimate [{level} interval] for the {len(top)} species with enough information, "
           "most prevalent first; slopes in bold where the interval excludes zero.</p>"
           + table(top, index=True, formatters={c: (lambda v: v) for c in cols if c != "status"},
                   max_rows=TOP_ROWS, more="every species in the table below (and coefficients.csv)")
           + _left_out(fit, opts, "this table and the plot"))
    if fit.terms:
        fig = _plot(fit, "plot_coefficients", None, alpha=alpha, species=head or None)
        n_col = max(1, min(3, int(np.ceil(max(len(head), 1) / 40))))
        width = min(1100, 300 * (len(fit.terms) if n_col == 1 else n_col))
        body = row(img(fig, "coefficient plot", f"Slopes per species with {level} Wald intervals "
                       "(species with enough information and finite intervals); red where the "
                       "interval excludes zero; arrow heads mark intervals running past the axis.",
                       opts.get("dpi", 100), width=width), tab)
    else:
        body = "<p>The model has no covariates; the table shows the species intercepts.</p>" + tab
    body += ("<details><summary>Every species (scroll, or search with the browser's find)</summary>"
             + table(wide, formatters={c: (lambda v: v) for c in cols}, tall=True) + "</details>")
    full = coefs.copy()
    body += ("<details><summary>All parameters with standard errors, z and p</summary>"
             + table(full.head(SCROLL_ROWS), formatters={"p": p_value}, tall=True,
                     more="all rows in coefficients.csv") + "</details>")
    return body


def _wide_coefficients(coefs, fit, info):
    """Species x term table of 'estimate [lower, upper]' cells (HTML), prevalence and status."""
    sub = coefs.xs("coef", level="block")
    cells = {}
    for (sp, term), r in sub.iterrows():
        sig = term != "Intercept" and np.isfinite(r["lower"]) and (r["lower"] > 0 or r["upper"] < 0)
        txt = interval(r["estimate"], r["lower"], r["upper"])
        cells.setdefault(sp, {})[term] = f"<b>{txt}</b>" if sig else txt
    wide = pd.DataFrame.from_dict(cells, orient="index").reindex(index=list(fit.species))
    wide = wide[[c for c in ["Intercept", *fit.terms] if c in wide.columns]]
    disp = fit.dispersion
    if isinstance(disp, pd.DataFrame) and hasattr(fit.family, "cutpoints"):
        wide[disp.columns.name or "cut points"] = [
            " &lt; ".join(num(v) for v in np.unique(r[np.isfinite(r)]))   # merged ones once
            for r in disp.reindex(wide.index).to_numpy()]
    elif isinstance(disp, pd.DataFrame):    # zinb, hurdles, ordered beta, a family per species
        wide[disp.columns.name or "dispersion"] = [
            ", ".join(f"{esc(str(c))} {num(v)}" for c, v in r.items() if np.isfinite(v))
            for _, r in disp.reindex(wide.index).iterrows()]
    elif disp is not None:
        at = info["dispersion_at_bound"].reindex(wide.index).to_numpy()
        wide[disp.name] = ['<span class="flag">at bound</span>' if a else num(v)
                           for v, a in zip(disp.reindex(wide.index), at)]
    wide.insert(0, "prevalence", [prevalence(v) for v in info["prevalence"].reindex(wide.index)])
    wide["status"] = tables.species_status(info).reindex(wide.index)
    wide.index.name = "species"
    order = info["prevalence"].reindex(wide.index).sort_values(ascending=False, kind="stable").index
    return wide.loc[order]


# --- associations ------------------------------------------------------------------
RANK_TEXT = (
    "<b>What a residual correlation from a rank-{d} model can and cannot show.</b> It is the "
    "correlation between two species' responses on the link scale that the covariates do not "
    "explain, as carried by {d} latent variable{s}. It <i>can</i> show which species co-occur "
    "more (red) or less (blue) than the covariates predict. It <i>cannot</i> tell an interaction "
    "from a shared response to something unmeasured, and it is constrained by the rank: with d "
    "latent variables every species is a point in d dimensions, so with few latent variables and "
    "many species correlations come in blocks, and with one latent variable every pair is just "
    "the product of the two species' loadings. The intervals are conditional on d (they do not "
    "include uncertainty about the number of latent variables).")

MEASURE_TEXT = (
    "The measure adds each species' observation-level variance on the link scale to the "
    "latent covariance (&Theta;&Theta;&prime; + &sigma;<sup>2</sup><sub>j</sub>; Nakagawa et al. "
    "2017; for {fam} &sigma;<sup>2</sup><sub>j</sub> = {form}), so a correlation is large only when "
    "both species carry a strong latent signal; &Theta;&Theta;&prime; alone gives &plusmn;1 for every "
    "pair when d = 1 (fit.residual_correlation(add_family_variance=False)).")


def _measure_formula(fit):
    fam = fit.family
    if fam.link_residual_variance:
        return f"{num(fam.link_residual_variance)} (the latent {esc(fam.link)} residual)"
    if fam.observation_variance_formula:
        return f"{esc(fam.observation_variance_formula)} at the species' mean &mu;<sub>j</sub>"
    if fam.link == "log":
        return "log(1 + Var(y)/&mu;<sub>j</sub><sup>2</sup>) at the species' mean &mu;<sub>j</sub>"
    if fam.link == "identity":
        return "the residual variance"
    return "Var(y) g'(&mu;<sub>j</sub>)<sup>2</sup> at the species' mean"


def associations_section(fit, opts):
    """Residual correlation heatmap, the species table beside it, and the strongest pairs."""
    if fit.num_lv == 0:
        return "<p>The model has no latent variables, so it estimates no residual associations.</p>"
    alpha, top_n = opts.get("alpha", 0.05), opts.get("top_pairs", 15)
    d = fit.num_lv
    body = f'<p class="box">{RANK_TEXT.format(d=d, s="s" if d != 1 else "")}</p>'
    if d == 1:
        body += ('<p class="box problem"><b>Warning: one latent variable.</b> Every association '
                 "below is the product of two species' loadings (positive when they load on the "
                 "same side of the latent variable); no pair-specific association can be read "
                 "from this model. Fit two or more latent variables (compare them with "
                 "jsdm.anova or --select-num-lv) before interpreting pairs.</p>")
    body += f'<p class="note">{MEASURE_TEXT.format(fam=esc(fit.family.name), form=_measure_formula(fit))}</p>'
    tab = shared(fit, opts, "pairs")
    head = _headline(fit, opts)
    good = tab[tab["headline"].to_numpy()]
    level = f"{100 * (1 - alpha):.0f}%"
    sig = good[good["excludes_zero"].astype(bool)]
    pick = sig if len(sig) else good
    top = _pair_rows(pick.head(top_n))
    which = "whose interval excludes zero" if len(sig) else "(no interval excludes zero)"
    n_other = len(tab) - len(good)
    text = (f'<p style="max-width:520px">{len(sig)} of {len(good)} pairs of species with enough '
            f"information have a {level} interval that excludes zero (delta-method intervals on "
            f"the angle scale). The {len(top)} strongest associations {which}:</p>")
    pairs_html = text + table(top, formatters={"estimate [interval]": lambda v: v,
                                               "prev. 1": prevalence, "prev. 2": prevalence},
                              left=("species 1", "species 2"))
    pairs_html += ('<p class="note">' + (
        f"{n_other} other pairs involve species with too little information or without a finite "
        "optimum and are not ranked here; every" if n_other else "Every")
        + " pair is in residual_correlations.csv (fit.association_table()).</p>")
    body += _heatmap(fit, opts, head) + pairs_html
    return body


def _pair_rows(tab):
    out = pd.DataFrame({
        "species 1": tab["species_1"].astype(str).to_numpy(),
        "prev. 1": tab["prevalence_1"].to_numpy(),
        "species 2": tab["species_2"].astype(str).to_numpy(),
        "prev. 2": tab["prevalence_2"].to_numpy(),
        "estimate [interval]": [interval(e, lo, hi) for e, lo, hi in
                                zip(tab["estimate"], tab["lower"], tab["upper"])]})
    out.index = np.arange(1, len(out) + 1)
    out.index.name = "rank"
    return out


def _heatmap(fit, opts, head):
    """The clustered heatmap of the species with enough information and the table beside it."""
    if len(head) < 2:
        return ('<p class="note">Fewer than two species have enough information: no heatmap.</p>')
    m = len(head)
    size = min(9.0, 3.0 + 0.17 * m)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    from ..plotting import plot_associations

    plot_associations(fit, ax=ax, alpha=opts.get("alpha", 0.05), species=head)
    order = ax.species_order
    cap = (f"Residual correlations between the {m} species with enough information, ordered by "
           "hierarchical clustering; red positive, blue negative."
           + ("" if m <= 60 else " Too many species to name on the axes: the table beside "
              "gives the species at each position."))
    pic = img(fig, "residual correlation heatmap", cap, opts.get("dpi", 100),
              width=min(640, 90 + 60 * size))
    return row(pic, "<h3>Species in heatmap order</h3>" + table(
        _order_table(fit, opts, order), tall=True, left=("species", "most positive", "most negative"),
        formatters={"most positive": lambda v: v, "most negative": lambda v: v,
                    "prevalence": prevalence}))


def _order_table(fit, opts, order):
    """Position, prevalence and strongest partners of each species in heatmap order."""
    R = fit.residual_correlation().loc[order, order].to_numpy().copy()
    np.fill_diagonal(R, np.nan)
    info = shared(fit, opts, "species")
    pos_j, neg_j = np.nanargmax(R, axis=1), np.nanargmin(R, axis=1)
    rows = {"species": [str(s) for s in order],
            "prevalence": info["prevalence"].reindex(order).to_numpy(),
            "most positive": [f"{esc(order[j])} ({num(R[i, j], 2)})" for i, j in enumerate(pos_j)],
            "most negative": [f"{esc(order[j])} ({num(R[i, j], 2)})" for i, j in enumerate(neg_j)]}
    out = pd.DataFrame(rows, index=np.arange(1, len(order) + 1))
    out.index.name = "#"
    return out


# --- ordination ----------------------------------------------------------------------
def ordination_section(fit, opts):
    """The latent-variable biplot and the residual variance along each principal axis."""
    from ..analysis.associations import residual_trace

    if fit.num_lv == 0:
        return "<p>The model has no latent variables, so there is no ordination.</p>"
    head = _headline(fit, opts)
    info = shared(fit, opts, "species")
    if fit.num_lv == 1:
        load = fit.loadings.loc[head] if head else fit.loadings
        load = load.assign(prevalence=info["prevalence"].reindex(load.index))
        load = load.reindex(load["LV1"].abs().sort_values(ascending=False).index)
        return ("<p>With one latent variable there is no two-dimensional ordination. Loadings on "
                "LV1 of the species with enough information, largest first (species at the same "
                "end co-occur more than the covariates explain):</p>"
                + table(load, digits=3, max_rows=TOP_ROWS, more="all loadings in loadings.csv",
                        formatters={"prevalence": prevalence, "LV1": fixed})
                + _left_out(fit, opts))
    fig = _plot(fit, "plot_ordination", (8.0, 7.0), biplot=True, species=head or None)
    text = ("Sites (points) and species with enough information (arrows; the longest labelled) on "
            "the latent variables rotated to principal axes; species pointing the same way "
            "co-occur more than the covariates explain.")
    pic = img(fig, "ordination biplot", text, opts.get("dpi", 100), width=660)
    tr = residual_trace(fit)[["principal", "principal_share"]]
    tr = tr.rename(columns={"principal": "variance", "principal_share": "share"})
    tr.index = [f"axis {i + 1}" if str(r).startswith("LV") else r for i, r in enumerate(tr.index)]
    sep = info.index[info["no_finite_optimum"].to_numpy()]
    share = ""
    if len(sep):
        th2 = (fit.loadings ** 2).sum(axis=1)
        share = (f'<p class="note">{100 * th2[sep].sum() / max(th2.sum(), 1e-300):.0f}% of this '
                 f"trace comes from the {len(sep)} species without a finite optimum.</p>")
    side = ('<h3>Residual variance by axis</h3><p style="max-width:380px">Trace of the residual '
            "covariance &Theta;&Theta;&prime; split along the principal axes of the ordination."
            "</p>" + table(tr, digits=3) + share + _left_out(fit, opts, "the plot"))
    return row(pic, side)


# --- variance partition --------------------------------------------------------------
def variance_section(fit, opts):
    """Share of each species' linear-predictor variance by covariates, latent variables, row effects."""
    vp = fit.variance_partition()
    head = _headline(fit, opts)
    many = len(head) > 60
    fig = _plot(fit, "plot_variance_partition", (10, 4.5), species=head or None, sort=many)
    cap = ("Share of each species' variance in the linear predictor explained by each component "
           f"(the {len(head)} species with enough information" + (", sorted" if many else "") + ").")
    pic = img(fig, "variance partition", cap, opts.get("dpi", 100), width=760)
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
def methods_section(fit, opts):
    """A methods paragraph for a paper: model, family, estimation, software, seed."""
    from .. import __version__

    prob, s = fit.problem, fit.settings
    fam = esc(fit.family.describe())
    link = "each family's" if fit.family.link == "mixed" else esc(fit.family.link)
    cov = (f", species-specific slopes for the site covariates ({esc(', '.join(fit.terms))})"
           if fit.terms else "")
    row = {"fixed": " and fixed site effects", "random": " and normally distributed random site "
           "effects"}.get(fit.row_effect, "")
    lv = (f"{fit.num_lv} latent variable{'s' if fit.num_lv != 1 else ''} with species-specific "
          f"loadings &Theta;, so that residual associations between species are given by the "
          f"rank-{fit.num_lv} covariance &Theta;&Theta;&prime;" if fit.num_lv else "no latent variables")
    notes = " ".join(esc(n) for n in opts.get("notes") or [])
    pen = ("" if fit.prior_sd is None else
           f" Loadings and slopes (per standard deviation of their covariate) had a weak Gaussian "
           f"penalty (a N(0, {fit.prior_sd:g}&sup2;) prior; posterior-mode estimates), which "
           "keeps estimates finite for species whose likelihood has no finite optimum.")
    assoc = ("" if not fit.num_lv else
             " Residual correlations were computed on the link scale with each species' "
             "observation-level variance added to the diagonal of &Theta;&Theta;&prime; "
             "(Nakagawa, Johnson &amp; Schielzeth 2017).")
    k = shared(fit, opts, "species").attrs["min_records"]
    from ..model.fit import n_starts

    n_start = n_starts(s.get("n_init"))
    nq = s.get("quadratic_starts", 0)
    quad_starts = (f" of the model without the quadratic term, whose estimates then started {nq} "
                   f"fit{'s' if nq != 1 else ''} with quadratic responses (different starting "
                   "tolerances), keeping the best" if nq else "")
    text = (
        f"We fitted a generalized linear latent variable model (GLLVM), a joint species distribution "
        f"model, to the responses of {prob.m} species at {prob.n} sites. Responses were modelled with "
        f"{fam} and {link} link. The linear predictor had species-specific intercepts"
        f"{cov}{row}, and {lv}. {notes} "
        "Parameters were estimated by maximising the exact variational lower bound (evidence lower "
        "bound, ELBO) of the marginal log-likelihood, with a Gaussian variational distribution for "
        "each site's latent variables; expectations without a closed form were computed by "
        f"one-dimensional Gauss-Hermite quadrature, so the bound itself is not approximated further.{pen} "
        f"The optimiser was run from {n_start} starting value{'s' if n_start != 1 else ''} "
        f"(per-species GLMs and a factor analysis of their residuals) with random seed {esc(s.get('seed'))}, "
        f"keeping the best bound{quad_starts}; the fit {'converged' if fit.converged else 'did NOT converge'} "
        f"(largest curvature-scaled gradient |g<sub>k</sub>|/&radic;max(h<sub>k</sub>, 1) "
        f"{fit.scaled_grad:.1e}, tolerance {esc(s.get('gtol', 'n/a'))}). Standard errors came from "
        f"the Hessian of the bound; intervals for residual correlations by the delta "
        f"method.{assoc} Species with fewer than {k} informative records were kept in the model "
        "but not interpreted. Model fit was checked with Dunn-Smyth randomised quantile "
        "residuals. Analyses used jsdm "
        f"{esc(__version__)} (Python).")
    if opts.get("select_table") is not None:
        crit = _criterion(pd.DataFrame(opts["select_table"]), opts)
        name = {"aicc": "AICc", "aic": "AIC", "bic": "BIC"}.get(str(crit).lower(), "information criterion")
        text += f" The number of latent variables was chosen by {esc(name)} (see Model selection)."
    return f'<p class="methods">{text}</p>'
