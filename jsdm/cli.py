"""The ``jsdm`` command line: fit a JSDM to CSV files and write the report.

Commands
--------
``jsdm report --example mite --out DIR``
    Fit the bundled oribatid mite data (70 soil cores x 35 species) with the
    defaults below and write DIR/report.html, the CSV tables and the fit.
    Defaults: negative binomial family, 2 latent variables, formula
    ``~ SubsDens + WatrCont`` with the numeric covariates standardised to mean
    0 and sd 1 (so the slopes are per standard deviation, and the optimiser
    sees well-scaled columns), seed 1.
``jsdm fit Y.csv [--covariates X.csv] [--traits T.csv] --family F --num-lv D --out DIR``
    Fit a user's files (wide: sites x species with the site id first; or
    ``--long`` with ``--site/--species/--response`` columns) and write the same
    outputs. ``--standardise`` z-scores numeric covariates first (off by
    default, so slopes are in the units of the data).

Outputs in DIR: ``report.html``, ``summary.txt``, ``coefficients.csv``
(estimates with SE, z, p, interval), ``residual_correlations.csv`` (species
pairs with intervals), ``site_scores.csv``, ``loadings.csv``,
``variance_partition.csv``, ``diagnostics.csv``, ``model_selection.csv``
(with ``--select-num-lv``) and ``fit.jsdm`` (reload with :func:`jsdm.load`).

Errors are one line on stderr with exit status 1 (2 for bad arguments);
``--debug`` shows the traceback instead. Progress goes to stderr; ``--quiet``
silences it (warnings are still shown).
"""
import argparse
import re
import sys
import time
import warnings
from pathlib import Path

EXIT_ERROR, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 3


class UsageError(Exception):
    """Inconsistent command-line options (exit status 2)."""


EXAMPLE = {"mite": dict(family="negative_binomial", num_lv=2, formula="~ SubsDens + WatrCont")}


# --- argument parsing -------------------------------------------------------------
def _common(p, example):
    """Options shared by ``fit`` and ``report``."""
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    fam_default = EXAMPLE["mite"]["family"] if example else None
    p.add_argument("--family", required=not example, default=fam_default,
                   help="response family: poisson, negative_binomial (nb), binomial, gaussian, ..."
                   + (f" (default: {fam_default})" if example else ""))
    p.add_argument("--link", default=None, help="link function where the family has several")
    p.add_argument("--cutpoints", choices=["species", "common"], default=None,
                   help="ordinal family: cut points per species (default) or one set shared by "
                        "all species (R gllvm's zeta.struc = \"common\")")
    p.add_argument("--num-lv", type=int, required=not example,
                   default=EXAMPLE["mite"]["num_lv"] if example else None, metavar="D",
                   help="number of latent variables" + (" (default: 2)" if example else ""))
    p.add_argument("--row-effect", choices=["fixed", "random"], default=None,
                   help="site intercepts (default: none)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    p.add_argument("--n-init", type=int, default=None, metavar="K",
                   help="number of starts, best ELBO kept (default: the library's)")
    p.add_argument("--select-num-lv", action="store_true",
                   help="compare 0-4 latent variables by AICc; fit and report the best")
    p.add_argument("--title", default=None, help="report title")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def build_parser():
    """The argparse parser of the ``jsdm`` command."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="jsdm", description="Joint species distribution models (GLLVMs) by exact variational "
        "approximation: fit, report, save.")
    parser.add_argument("--version", action="version", version=f"jsdm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    rep = sub.add_parser("report", help="fit a bundled example data set and write the report",
                         description="Fit a bundled example and write report.html and tables.")
    rep.add_argument("--example", required=True, choices=sorted(EXAMPLE), help="bundled data set")
    rep.add_argument("--formula", default=None, help="covariate formula (default: ~ SubsDens + WatrCont)")
    _common(rep, example=True)
    fit = sub.add_parser("fit", help="fit your CSV files and write the report",
                         description="Fit a GLLVM to CSV files and write report.html, tables, fit.")
    fit.add_argument("responses", metavar="Y.csv", help="response table (wide: sites x species, "
                     "site id in the first column; or long with --long)")
    fit.add_argument("--covariates", metavar="X.csv", help="site covariates (site id first)")
    fit.add_argument("--traits", metavar="T.csv", help="species traits (species id first)")
    fit.add_argument("--long", action="store_true", help="Y.csv is long: one row per site x species")
    fit.add_argument("--site", default="site", help="long format: site id column (default: site)")
    fit.add_argument("--species", default="species", help="long format: species column (default: species)")
    fit.add_argument("--response", default="y", help="long format: response column (default: y)")
    fit.add_argument("--sep", default=",", help="field separator of the CSV files (default: ',')")
    fit.add_argument("--formula", default=None, help='covariate formula, e.g. "~ temp + soil"; '
                     "default: every covariate")
    fit.add_argument("--standardise", "--standardize", action="store_true",
                     help="z-score numeric covariates before fitting")
    _common(fit, example=False)
    return parser


# --- progress and warnings ------------------------------------------------------------
class _Console:
    """Progress lines on stderr (silenced by ``quiet``) and one-line warnings."""

    def __init__(self, quiet=False, debug=False):
        self.quiet, self.debug = quiet, debug

    def say(self, msg):
        """Print a progress line (unless quiet)."""
        if not self.quiet:
            print(f"jsdm: {msg}", file=sys.stderr, flush=True)

    def show_warning(self, message, category, filename, lineno, file=None, line=None):
        """Replacement for :func:`warnings.showwarning`: one line, no source excerpt."""
        text = " ".join(str(message).split())
        where = f" ({filename}:{lineno})" if self.debug else ""
        print(f"jsdm: warning: {category.__name__}: {text}{where}", file=sys.stderr, flush=True)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _one_line(exc):
    """An exception's message on one line, without terminal colour codes."""
    return " ".join(_ANSI.sub("", str(exc)).split()) or type(exc).__name__


# --- data --------------------------------------------------------------------------------
def _standardise(com):
    """A new Community whose numeric (non-boolean) covariates are z-scored; and a note."""
    import pandas as pd

    from .data import Community

    X = com.X
    if X is None:
        return com, None
    names = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c])
             and not pd.api.types.is_bool_dtype(X[c]) and X[c].std() > 0]
    if not names:
        return com, None
    for c in names:
        X[c] = (X[c] - X[c].mean()) / X[c].std()
    note = (f"Numeric covariates ({', '.join(map(str, names))}) were standardised to mean 0 and "
            "standard deviation 1 before fitting, so slopes are per standard deviation.")
    return Community(com.Y, X, com.traits), note


def _read_user_data(args):
    """Community from the ``fit`` command's files."""
    from .data import read_long, read_wide

    if args.long:
        if args.covariates or args.traits:
            raise UsageError("--covariates/--traits are for wide files; a long file carries its "
                             "covariate and trait columns itself")
        return read_long(args.responses, site=args.site, species=args.species,
                         response=args.response, sep=args.sep)
    return read_wide(args.responses, covariates=args.covariates, traits=args.traits, sep=args.sep)


# --- fitting -------------------------------------------------------------------------------
def _fit_options(args, spec):
    kw = dict(family=spec["family"], link=args.link, num_lv=spec["num_lv"],
              formula=spec["formula"], row_effect=args.row_effect, seed=args.seed,
              verbose=not args.quiet)
    if args.n_init is not None:
        kw["n_init"] = args.n_init
    if args.cutpoints is not None:
        kw["cutpoints"] = args.cutpoints
    return kw


def _fit(com, kw, args, con):
    """Fit one model, or select the number of latent variables first; (fit, selection table)."""
    from .api import gllvm

    if args.select_num_lv:
        con.say(f"comparing 0-4 latent variables ({kw['family']}) by AICc ...")
        table, fit = _select(com, kw)
    else:
        con.say(f"fitting {kw['family']} GLLVM with {kw['num_lv']} latent variable(s) to "
                f"{com.n_sites} sites x {com.n_species} species ...")
        table, fit = None, gllvm(com, **kw)
    status = "converged" if fit.converged else "NOT converged (see report: Model and convergence)"
    con.say(f"fitted in {fit.fit_time:.1f} s: num_lv={fit.num_lv}, ELBO {fit.llf:.2f}, {status}")
    return fit, table


def _select(com, kw):
    """Fit 0..4 latent variables with :func:`jsdm.select_num_lv`; (table, best fit by AICc)."""
    from .results.anova import select_num_lv

    kw = {k: v for k, v in kw.items() if k != "num_lv"}
    res = select_num_lv(com, num_lv=range(0, min(4, com.n_species) + 1), criterion="aicc", **kw)
    return res.table, res.best


# --- outputs --------------------------------------------------------------------------------
def _tables(fit, select_table):
    """(file name, function returning a DataFrame or None, write the index?)."""
    from .report.tables import coefficient_table

    lv = fit.num_lv > 0
    return [
        ("coefficients.csv", lambda: coefficient_table(fit), True),
        ("residual_correlations.csv", lambda: fit.association_table() if lv else None, False),
        ("site_scores.csv", lambda: fit.lv if lv else None, True),
        ("loadings.csv", lambda: fit.loadings if lv else None, True),
        ("variance_partition.csv", lambda: fit.variance_partition(), True),
        ("diagnostics.csv", lambda: fit.diagnose().to_frame(), False),
        ("model_selection.csv", lambda: select_table, True),
    ]


def _write_outputs(fit, out, select_table, notes, title, con):
    """Write CSV tables, summary, saved fit and report into ``out``; return the report path."""
    from .report import write_report

    for name, make, index in _tables(fit, select_table):
        df = _attempt(name, make, con)
        if df is not None:
            df.to_csv(out / name, index=index)
    text = _attempt("summary.txt", lambda: str(fit.summary()), con)
    if text is not None:
        (out / "summary.txt").write_text(text + "\n", encoding="utf-8")
    fit.save(out / "fit.jsdm")
    con.say("writing the report ...")
    return write_report(fit, out / "report.html", select_table=select_table, title=title,
                        notes=notes, criterion="aicc" if select_table is not None else None)


def _attempt(name, make, con):
    """``make()``, or None with a one-line warning when it fails (raise with --debug)."""
    from .exceptions import JSDMWarning

    try:
        return make()
    except Exception as exc:  # one output must not cost the others
        if con.debug:
            raise
        warnings.warn(f"{name} not written: {type(exc).__name__}: {exc}", JSDMWarning)
        return None


# --- commands --------------------------------------------------------------------------------
def _prepare(args):
    """(Community, model spec, notes, title) for the chosen command."""
    from .data import datasets

    if args.command == "report":
        com = datasets.load_mite()
        spec = dict(EXAMPLE[args.example], family=args.family, num_lv=args.num_lv)
        if args.formula:
            spec["formula"] = args.formula
        com, note = _standardise(com)
        title = args.title or "Oribatid mites (Borcard & Legendre 1994): species association report"
        return com, spec, [note] if note else [], title
    com = _read_user_data(args)
    notes = []
    if args.standardise:
        com, note = _standardise(com)
        notes += [note] if note else []
    spec = dict(family=args.family, num_lv=args.num_lv, formula=args.formula)
    return com, spec, notes, args.title


def _run(args, con):
    import matplotlib

    matplotlib.use("Agg")
    t0 = time.perf_counter()
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file; give a folder")
    from .families import get_family

    get_family(args.family, link=args.link)     # fail fast on an unknown family or link
    com, spec, notes, title = _prepare(args)
    fit, table = _fit(com, _fit_options(args, spec), args, con)
    out.mkdir(parents=True, exist_ok=True)
    report = _write_outputs(fit, out, table, notes, title, con)
    con.say(f"wrote {report} and tables in {out} ({time.perf_counter() - t0:.1f} s)")
    return 0


def main(argv=None):
    """Entry point of the ``jsdm`` command; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 for errors in the data or options, 2 for bad command
        usage, 3 for internal errors, 130 when interrupted.
    """
    from .exceptions import JSDMError

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version or a usage error already printed
        return int(exc.code or 0)
    con = _Console(args.quiet, args.debug)
    with warnings.catch_warnings():
        warnings.showwarning = con.show_warning
        try:
            return _run(args, con)
        except Exception as exc:
            if args.debug:
                raise
            return _report_error(exc, args, JSDMError)
        except KeyboardInterrupt:
            print("jsdm: interrupted", file=sys.stderr)
            return 130


def _report_error(exc, args, JSDMError):
    """Print one line for ``exc`` on stderr and return the exit status."""
    prog = f"jsdm {args.command}"
    if isinstance(exc, UsageError):
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, JSDMError):
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    if isinstance(exc, OSError):
        name = f": {exc.filename!r}" if exc.filename else ""
        print(f"{prog}: error: {exc.strerror or _one_line(exc)}{name}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{prog}: internal error: {type(exc).__name__}: {_one_line(exc)} "
          "(rerun with --debug for the traceback, and please report it)", file=sys.stderr)
    return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
