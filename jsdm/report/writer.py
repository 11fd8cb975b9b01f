"""Assemble the report sections into one HTML file."""
import datetime as _dt
import time
import traceback
import warnings
from pathlib import Path

from ..exceptions import JSDMError, JSDMWarning
from . import sections as S
from .html import esc, page, section
from .predictive import predictive_section

#: (anchor id, heading, builder) in report order; "selection" only with a selection table.
SECTIONS = (
    ("careful", "What to be careful about", S.careful_section),
    ("data", "Data", S.data_section),
    ("model", "Model and convergence", S.model_section),
    ("selection", "Model selection", S.selection_section),
    ("coefficients", "Coefficients", S.coefficients_section),
    ("associations", "Species associations", S.associations_section),
    ("ordination", "Ordination", S.ordination_section),
    ("variance", "Variance partition", S.variance_section),
    ("residuals", "Residuals", S.residuals_section),
    ("predictive", "Predictive performance and approximation check", predictive_section),
    ("methods", "Methods", S.methods_section),
)


def write_report(fit, path, select_table=None, title=None, notes=None, alpha=0.05,
                 top_pairs=15, dpi=100, criterion=None, strict=False, min_records=None,
                 progress=None, cv=None):
    """Write the species association report of a fit as one self-contained HTML file.

    Sections: what to be careful about (every diagnosis that applies, in one
    box); data summary; model and convergence (``fit.diagnose()`` in plain
    words); model selection (when ``select_table`` is given); coefficient
    table and plot; residual correlation heatmap and the strongest
    associations with intervals; ordination biplot; variance partition;
    residual panels; predictive performance (cross-validation when ``cv`` is
    given) and the check of the variational approximation; a methods
    paragraph. Figures are embedded as base64 PNG, so the file can be sent on
    its own. Headline tables and plot labels use the species with enough
    information (``min_records``); the others are listed. Long tables show
    their top rows; the full ones are in scrolling boxes (and, from the command
    line, in the CSV files).

    Parameters
    ----------
    fit : GLLVMResults
        The fitted model (not modified).
    path : str or Path
        HTML file to write (its folder must exist).
    select_table : DataFrame, optional
        Candidate models (e.g. from :func:`jsdm.select_num_lv`), one row each.
    title : str, optional
        Report title (default: "Species association report").
    notes : list of str, optional
        Sentences about the data preparation (e.g. covariate standardisation),
        shown in the data section and the methods paragraph.
    alpha : float
        1 - confidence level of all intervals.
    top_pairs : int
        Number of strongest species associations listed.
    dpi : int
        Resolution of the embedded figures.
    criterion : str, optional
        Column of ``select_table`` whose minimum marks the chosen model.
    cv : CVResult, optional
        Cross-validation results (:func:`jsdm.cross_validate`) for the section on
        predictive performance.
    strict : bool
        Raise when a section fails. By default a failing section is replaced by
        a short note and a :class:`~jsdm.exceptions.JSDMWarning`, so that one
        problem does not cost the whole report.
    min_records : int, optional
        Informative records a species needs to appear in headline tables and
        plot labels (default :data:`jsdm.analysis.diagnostics.MIN_RECORDS`, 5).
    progress : callable, optional
        Called with one line of text after each section (name and seconds),
        e.g. ``print``; the command line shows these.

    Returns
    -------
    Path
        The file written. ``write_report.timings`` holds the seconds per section
        of the last call.
    """
    from ..analysis.diagnostics import MIN_RECORDS

    path = Path(path)
    if not path.parent.is_dir():
        raise JSDMError(f"cannot write the report to {str(path)!r}: folder {str(path.parent)!r} "
                        "does not exist")
    opts = dict(select_table=select_table, notes=list(notes or []), alpha=alpha,
                top_pairs=top_pairs, dpi=dpi, criterion=criterion, cv=cv,
                min_records=MIN_RECORDS if min_records is None else int(min_records))
    title = title or "Species association report"
    parts, nav, timings = [], [], {}
    for sid, heading, build in SECTIONS:
        if sid == "selection" and select_table is None:
            continue
        t0 = time.perf_counter()
        parts.append(section(sid, heading, _build(build, fit, opts, heading, strict)))
        timings[sid] = time.perf_counter() - t0
        if progress is not None:
            progress(f"report: {heading.lower()} ({timings[sid]:.1f} s)")
        nav.append((sid, heading))
    html = page(title, _subtitle(fit), nav, parts, _footer(fit))
    path.write_text(html, encoding="utf-8")
    write_report.timings = timings
    return path


def _build(build, fit, opts, heading, strict):
    """Run one section builder; on failure, a note (or raise when ``strict``)."""
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    try:
        return build(fit, opts)
    except Exception as exc:  # one section must not cost the whole report
        if strict:
            raise
        warnings.warn(f"report section {heading!r} could not be produced: "
                      f"{type(exc).__name__}: {exc}", JSDMWarning, stacklevel=3)
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return (f'<p class="unavailable">This section could not be produced '
                f"({esc(last)}).</p>")
    finally:
        for num in set(plt.get_fignums()) - before:
            plt.close(num)


def _subtitle(fit):
    from .. import __version__

    fam = fit.family
    when = _dt.date.today().isoformat()
    fam_text = getattr(fam, "composition", None) or f"{fam.name} ({fam.link})"
    return (f"{fit.problem.n} sites &times; {fit.problem.m} species &middot; {esc(fam_text)} "
            f"&middot; {fit.num_lv} latent variable{'s' if fit.num_lv != 1 else ''}"
            f" &middot; jsdm {esc(__version__)} &middot; {when}")


def _footer(fit):
    from .. import __version__

    return (f"Generated by jsdm {esc(__version__)}. Seed {esc(fit.settings.get('seed'))}. "
            "Figures are embedded; this file is self-contained.")
