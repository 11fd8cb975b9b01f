"""A statsmodels-like summary of a fitted GLLVM (text, HTML and DataFrames)."""
import html

import numpy as np
import pandas as pd

_COLS = ["estimate", "std_err", "z", "p_value", "lower", "upper"]


class Summary:
    """Summary of a fitted GLLVM.

    Attributes
    ----------
    header : dict
        Model and fit statistics (family, link, sizes, num_lv, ELBO, AIC, ...).
    tables : dict of DataFrame
        ``"coefficients"`` (species, term), ``"loadings"`` (species, LV),
        ``"dispersion"`` (species), ``"row_effects"``: each with estimate,
        std_err, z, p_value and the CI bounds; absent blocks are left out.
    alpha : float
        1 - confidence level of the intervals.
    notes : list of str
        Sentences printed under the tables (what the numbers mean, warnings).
    families : Series or None
        The family of each species where a model has a family per species
        (``family=`` a mapping), else None.
    """

    def __init__(self, header, tables, alpha, notes, families=None):
        self.header = header
        self.tables = tables
        self.alpha = alpha
        self.notes = list(notes)
        self.families = families       # Series species -> family where it varies, else None

    @property
    def coefficients(self):
        """Intercepts and slopes: DataFrame indexed by (species, term)."""
        return self.tables["coefficients"]

    def __getitem__(self, key):
        return self.tables[key]

    def to_frame(self):
        """All parameter rows in one DataFrame.

        Returns
        -------
        DataFrame, shape (k, 6)
            Indexed by (block, species, term); columns estimate, std_err, z,
            p_value, lower, upper.
        """
        return pd.concat(self.tables, names=["block"])

    def _header_lines(self):
        items = [(k, _fmt(v)) for k, v in self.header.items()]
        half = (len(items) + 1) // 2
        left, right = items[:half], items[half:] + [("", "")] * (2 * half - len(items))
        w = max(len(k) for k, _ in items) + 2
        return [f"{lk + ':':<{w}}{lv:>16}    {rk + ':' if rk else '':<{w}}{rv:>16}"
                for (lk, lv), (rk, rv) in zip(left, right)]

    def __str__(self):
        title = "GLLVM results (variational approximation)"
        lines = self._header_lines()
        width = max(len(title), *(len(s) for s in lines))
        out = [title.center(width), "=" * width, *lines, "=" * width]
        level = f"[{self.alpha / 2:.3g}, {1 - self.alpha / 2:.3g}]"
        if self.families is not None:
            out += ["", "Families (per species):", self.families.to_frame().to_string(), "-" * width]
        for name, tab in self.tables.items():
            out += ["", f"{name.replace('_', ' ').capitalize()} (CI {level}):",
                    _table_text(tab), "-" * width]
        out += [f"Note: {n}" for n in self.notes]
        return "\n".join(out)

    def __repr__(self):
        return str(self)

    def _repr_html_(self):
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
                       for k, v in self.header.items())
        parts = [f"<h4>GLLVM results</h4><table>{rows}</table>"]
        if self.families is not None:
            parts.append("<h4>Families (per species)</h4>" + self.families.to_frame().to_html())
        for name, tab in self.tables.items():
            parts.append(f"<h4>{html.escape(name.replace('_', ' ').capitalize())}</h4>"
                         + tab.to_html(float_format=lambda x: f"{x:.4g}"))
        parts += [f"<p>Note: {html.escape(n)}</p>" for n in self.notes]
        return "\n".join(parts)


def _fmt(v):
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "NO"
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}" if abs(v) < 1e-3 or abs(v) >= 1e5 else f"{v:.3f}"
    return str(v)


def _table_text(tab):
    fmt = {"p_value": lambda x: "nan" if not np.isfinite(x) else ("<0.001" if x < 1e-3 else f"{x:.3f}")}
    return tab.to_string(float_format=lambda x: f"{x:.4f}", formatters=fmt)


def _header(fit):
    prob = fit.problem
    fam = fit.family
    h = {"Family": getattr(fam, "composition", fam.name),
         "Link": "per species" if fam.link == "mixed" else fam.link, "Sites": prob.n,
         "Species": prob.m, "Observations": fit.nobs, "Latent variables": fit.num_lv,
         "Row effect": fit.row_effect or "none", "Covariates": ", ".join(fit.terms) or "none",
         "ELBO (log-lik bound)": float(fit.llf), "Df (parameters)": fit.df, "AIC": float(fit.aic),
         "AICc": float(fit.aicc), "BIC": float(fit.bic), "Converged": bool(fit.converged),
         "Max scaled gradient": float(fit.scaled_grad), "Max |gradient|": float(fit.max_grad),
         "Iterations": fit.n_iter,
         "Fit time (s)": float(fit.fit_time)}
    if fit.ordination_type not in ("unconstrained", "none"):
        h["Ordination"] = fit.ordination_type
    structure = getattr(fit.family, "cut_structure", None)
    if structure is not None:                     # ordinal: cut points per species or common
        h["Cut points"] = structure
    return h


def summary(fit, alpha=0.05):
    """Summary of a fitted GLLVM.

    Parameters
    ----------
    fit : GLLVMResults
    alpha : float
        Intervals have level 1 - alpha.

    Returns
    -------
    Summary
        Prints as text, renders as HTML in notebooks, and exposes the
        per-block tables as DataFrames (``.tables``, ``.coefficients``).
    """
    notes = ["the ELBO is a lower bound of the marginal log-likelihood; AIC/BIC use it.",
             "SEs: inverse of the negative Hessian of the ELBO (model block, variational "
             "parameters profiled by the Schur complement); dispersion SEs by the delta method."]
    from .inference import information

    info = information(fit)
    est, se = fit.params, fit.bse
    ci = fit.conf_int(alpha=alpha)
    if info.flagged:
        notes.append(f"the Hessian is not negative definite: SEs are NaN for {len(info.flagged)} "
                     "parameter(s) not identified at this optimum (see fit.diagnose()).")
    with np.errstate(divide="ignore", invalid="ignore"):
        z = est / se
    from scipy import stats

    full = pd.DataFrame({"estimate": est, "std_err": se, "z": z,
                         "p_value": 2.0 * stats.norm.sf(np.abs(z)),
                         "lower": ci["lower"], "upper": ci["upper"]})[_COLS]
    note = getattr(fit.family, "structure_note", None)
    if note is not None:
        notes.append(f"cut points: {note()}.")
    if fit.num_lv and fit.num_lv > 0:
        notes.append("loadings are identified by zeros above the diagonal and a positive diagonal; "
                     "their z and p depend on this choice (rotation-invariant: Theta Theta').")
    if not fit.converged:
        notes.append("the fit did NOT converge: estimates and SEs are unreliable (see fit.diagnose()).")
    tables = {}
    names = {"fixef": "fixed_effects", "coef": "coefficients", "loading": "loadings",
             "dispersion": "dispersion", "row_effect": "row_effects", "row_sigma": "row_effects_sd",
             "group_sd": "grouped_site_effects_sd"}
    for block, name in names.items():
        if block in full.index.get_level_values("block"):
            tables[name] = full.xs(block, level="block")
    if getattr(fit.problem.predictor, "ksr", 0):      # species random effects: as VarCorr
        from .random_effects import varcorr_se
        vc = varcorr_se(fit, alpha=alpha).set_index(["group", "var1", "var2"])
        tables["random_effects"] = vc.rename(columns={"sdcor": "sd / cor"})
        notes.append("random effects: one row per sd (var2 empty) and correlation, as R's "
                     "as.data.frame(VarCorr()); intervals on the log (sd) and Fisher-z (cor) scales. "
                     "A variance near 0 sits on the boundary: its Wald SE and likelihood-ratio "
                     "tests are not reliable there.")
    fams = fit.families
    return Summary(_header(fit), tables, alpha, notes, fams if fams.nunique() > 1 else None)
