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
    outputs. Numeric covariates are z-scored first, as in the example (slopes
    per standard deviation); ``--no-standardise`` keeps the data's units.
    ``--select-num-lv`` compares 0-4 latent variables by AICc (no ``--num-lv``
    needed).

Both commands fit with a weak penalty on loadings and per-sd slopes
(``--prior-sd 5``, a N(0, 5^2) prior; ``--prior-sd none`` for maximum
likelihood), which keeps species without a finite optimum (perfect
separation, a species seen at one site) finite and leaves well-informed
species practically unchanged (docs/associations.md).

Outputs in DIR: ``report.html``, ``summary.txt``, ``coefficients.csv``
(estimates with SE, z, p, interval), ``residual_correlations.csv`` (species
pairs with intervals, prevalences and the headline flag), ``species.csv``
(prevalence, informative records, status), ``site_scores.csv``, ``loadings.csv``,
``variance_partition.csv``, ``diagnostics.csv``, ``model_selection.csv``
(with ``--select-num-lv``), ``cv.csv`` and ``cv_species.csv`` (with ``--cv K``:
K-fold cross-validation by sites, the fitted model against the same model
without latent variables) and ``fit.jsdm`` (reload with :func:`jsdm.load`).

The output folder is checked before anything else: a folder that is not empty
is refused unless ``--overwrite`` is given (and then only when it holds
nothing but jsdm's own outputs, which are replaced as a whole, so no file of
an earlier run stays behind). Outputs are written into a hidden temporary
folder beside DIR and moved into place at the end, so an interrupted or failed
run leaves DIR as it was.

Errors are one line on stderr with exit status 1 (2 for bad arguments);
``--debug`` shows the traceback instead. Progress goes to stderr; ``--quiet``
silences it (warnings are still shown).
"""
import argparse
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

EXIT_ERROR, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 3


class UsageError(Exception):
    """Inconsistent command-line options (exit status 2)."""


EXAMPLE = {"mite": dict(family="negative_binomial", num_lv=2, formula="~ SubsDens + WatrCont")}
#: the command line's penalty (prior sd of loadings and per-sd slopes); "none" for ML
PRIOR_SD = 5.0


def _prior_sd(text):
    """--prior-sd value: a positive number, or none/0 for no penalty."""
    if str(text).lower() in ("none", "0", "0.0", "off"):
        return None
    try:
        val = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'none', got {text!r}") from None
    if not val > 0 or val == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number or 'none', got {text!r}")
    return val


def _family_names():
    """Registered family names with their short aliases, for --family's help."""
    from .families import _REGISTRY

    out, seen = [], set()
    for cls in dict.fromkeys(_REGISTRY.values()):
        name = cls.name if cls.name not in seen else cls.aliases[0]    # tweedie / tweedie_power
        seen.add(cls.name)
        short = [a for a in cls.aliases if len(a) <= 3]
        out.append(name + (f" ({', '.join(short)})" if short else ""))
    return ", ".join(out)

#: Every file a run may write into --out (a folder holding only these may be overwritten).
OUTPUT_FILES = ("report.html", "summary.txt", "fit.jsdm", "coefficients.csv",
                "species.csv", "residual_correlations.csv", "site_scores.csv", "loadings.csv",
                "variance_partition.csv", "diagnostics.csv", "model_selection.csv", "cv.csv",
                "cv_species.csv")


def _positive_int(text):
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _name_list(text):
    """argparse type: comma-separated names (empty items dropped)."""
    return [x.strip() for x in text.split(",") if x.strip()]


# --- argument parsing -------------------------------------------------------------
def _common(p, example):
    """Options shared by ``fit`` and ``report``."""
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (created if missing; refused if not empty, see --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the outputs of an earlier run in --out (a folder holding other "
                   "files is still refused)")
    fam_default = EXAMPLE["mite"]["family"] if example else None
    p.add_argument("--family", required=not example, default=fam_default,
                   help=f"response family: {_family_names()}"
                   + (f" (default: {fam_default})" if example else ""))
    p.add_argument("--link", default=None, help="link function where the family has several")
    p.add_argument("--cutpoints", choices=["species", "common"], default=None,
                   help="ordinal family: cut points per species (default) or one set shared by "
                        "all species (R gllvm's zeta.struc = \"common\")")
    p.add_argument("--num-lv", type=int, default=EXAMPLE["mite"]["num_lv"] if example else None,
                   metavar="D", help="number of latent variables" + (
                       " (default: 2)" if example else "; needed unless --select-num-lv"))
    p.add_argument("--prior-sd", type=_prior_sd, default=PRIOR_SD, metavar="SD",
                   help=f"weak penalty: N(0, SD^2) prior on loadings and per-sd slopes (default: "
                   f"{PRIOR_SD:g}); 'none' for maximum likelihood")
    p.add_argument("--min-records", type=int, default=None, metavar="K",
                   help="informative records a species needs for the report's headline tables "
                   "and plot labels (default: 5)")
    p.add_argument("--row-effect", choices=["fixed", "random"], default=None,
                   help="site intercepts (default: none)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    p.add_argument("--n-init", type=_positive_int, default=None, metavar="K",
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
    fit.add_argument("--sep", default=",", help="field separator of the CSV files (default: ','; "
                     "';' for files from a German or French spreadsheet, '\\t' for tabs)")
    fit.add_argument("--decimal", default=".", choices=[".", ","], metavar="MARK",
                     help="decimal mark of the numbers in the CSV files: '.' (default) or ','")
    fit.add_argument("--na-values", type=_name_list, default=[], metavar="LIST",
                     help="further spellings of a missing value, comma-separated (e.g. 'n.d.,-'); "
                     "empty cells, NA, NaN, N/A, NULL, '.' are always missing")
    fit.add_argument("--categorical", type=_name_list, default=[], metavar="LIST",
                     help="covariate/trait columns (comma-separated) that are categorical on "
                     "purpose, even though they hold numbers")
    fit.add_argument("--formula", default=None, help='covariate formula, e.g. "~ temp + soil"; '
                     "default: every covariate")
    fit.add_argument("--standardise", "--standardize", dest="standardise", action="store_true",
                     default=True, help="z-score numeric covariates before fitting (the default)")
    fit.add_argument("--no-standardise", "--no-standardize", dest="standardise",
                     action="store_false", help="keep covariates in the units of the data")
    fit.add_argument("--cv", type=int, default=None, metavar="K",
                     help="K-fold cross-validation by sites of the fitted model and of the same "
                     "model without latent variables (cv.csv, cv_species.csv, report section)")
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
        text = as_flags(" ".join(str(message).split()))
        where = f" ({filename}:{lineno})" if self.debug else ""
        print(f"jsdm: warning: {category.__name__}: {text}{where}", file=sys.stderr, flush=True)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: Python argument names in library messages -> the command line's flags
_FLAGS = {"response": "--response", "site": "--site", "species": "--species", "sep": "--sep",
          "formula": "--formula", "num_lv": "--num-lv", "n_init": "--n-init",
          "prior_sd": "--prior-sd", "row_effect": "--row-effect", "family": "--family",
          "link": "--link", "seed": "--seed"}
_ARG = re.compile(r"\b(" + "|".join(_FLAGS) + r")=(\S*?)(?=[\s,;).]|$)")


def as_flags(text):
    """Library hints such as ``num_lv=1`` or ``response=`` rewritten as flags (``--num-lv 1``)."""
    def sub(m):
        flag, val = _FLAGS[m.group(1)], m.group(2).strip("'\"")
        return f"{flag} {val}" if val else flag
    return _ARG.sub(sub, text)


def _one_line(exc):
    """An exception's message on one line, without terminal colour codes, hints as flags."""
    return as_flags(" ".join(_ANSI.sub("", str(exc)).split())) or type(exc).__name__


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

    from .exceptions import JSDMError

    if args.long and (args.covariates or args.traits):
        raise UsageError("--covariates/--traits are for wide files; a long file carries its "
                         "covariate and trait columns itself")
    try:
        if args.long:
            return read_long(args.responses, site=args.site, species=args.species,
                             response=args.response, **_csv_options(args))
        return read_wide(args.responses, covariates=args.covariates, traits=args.traits,
                         **_csv_options(args))
    except JSDMError as err:
        hint = _sep_hint(args)
        if hint:
            raise JSDMError(f"{err} ({hint})") from None
        raise


def _csv_options(args):
    return dict(sep=args.sep, decimal=args.decimal, na_values=args.na_values,
                categorical=args.categorical)


def _sep_hint(args):
    """A hint naming --sep when an input file looks separated by something else."""
    for path in (args.responses, args.covariates, args.traits):
        if not path:
            continue
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                head = fh.readline()
        except OSError:
            continue
        counts = {c: head.count(c) for c in (",", ";", "\t", "|")}
        best = max(counts, key=counts.get)
        if counts[best] and best != args.sep and counts.get(args.sep, 0) == 0:
            shown = "\\t" if best == "\t" else best
            return (f"{path} looks separated by {shown!r}, not {args.sep!r}: "
                    f"add --sep '{shown}'")
    return None


# --- fitting -------------------------------------------------------------------------------
def _fit_options(args, spec):
    kw = dict(family=spec["family"], link=args.link, num_lv=spec["num_lv"],
              formula=spec["formula"], row_effect=args.row_effect, seed=args.seed,
              verbose=not args.quiet, prior_sd=args.prior_sd)
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
    pen = "no penalty" if args.prior_sd is None else f"prior sd {args.prior_sd:g}"
    con.say(f"fitted in {fit.fit_time:.1f} s: num_lv={fit.num_lv}, {pen}, ELBO {fit.llf:.2f}, "
            f"{status}")
    return fit, table


def _select(com, kw):
    """Fit 0..4 latent variables with :func:`jsdm.select_num_lv`; (table, best fit by AICc)."""
    from .selection import select_num_lv

    kw = {k: v for k, v in kw.items() if k != "num_lv"}
    res = select_num_lv(com, num_lv=range(0, min(4, com.n_species) + 1), criterion="aicc", **kw)
    return res.table, res.best


# --- outputs --------------------------------------------------------------------------------
def _tables(fit, select_table, min_records=None):
    """(file name, function returning a DataFrame or None, write the index?)."""
    from .report.tables import coefficient_table

    lv = fit.num_lv > 0
    def pairs():
        with warnings.catch_warnings():     # the rank-1 warning: said once, by the report
            warnings.simplefilter("ignore", JSDMWarning)
            return fit.association_table(min_records=min_records) if lv else None

    from .analysis.diagnostics import MIN_RECORDS, species_information
    from .exceptions import JSDMWarning
    from .report.tables import species_table

    min_records = MIN_RECORDS if min_records is None else min_records
    return [
        ("coefficients.csv", lambda: coefficient_table(fit), True),
        ("species.csv", lambda: species_table(fit, species_information(
            fit, min_records=min_records)).join(species_information(
                fit, min_records=min_records)[["rare", "no_finite_optimum", "headline"]]), True),
        ("residual_correlations.csv", pairs, False),
        ("site_scores.csv", lambda: fit.lv if lv else None, True),
        ("loadings.csv", lambda: fit.loadings if lv else None, True),
        ("variance_partition.csv", lambda: fit.variance_partition(), True),
        ("diagnostics.csv", lambda: fit.diagnose().to_frame(), False),
        ("model_selection.csv", lambda: select_table, True),
    ]


def _write_outputs(fit, out, select_table, notes, title, con, min_records=None, cv=None):
    """Write CSV tables, summary, saved fit and report into ``out``; return the report path."""
    from .report import write_report

    con.say("writing tables ...")
    tabs = _tables(fit, select_table, min_records)
    if cv is not None:
        tabs += [("cv.csv", lambda: cv.table, True), ("cv_species.csv", lambda: cv.species, True)]
    for name, make, index in tabs:
        df = _attempt(name, make, con)
        if df is not None:
            df.to_csv(out / name, index=index)
    text = _attempt("summary.txt", lambda: str(fit.summary()), con)
    if text is not None:
        (out / "summary.txt").write_text(text + "\n", encoding="utf-8")
    fit.save(out / "fit.jsdm")
    con.say("writing the report ...")
    return write_report(fit, out / "report.html", select_table=select_table, title=title,
                        notes=notes, criterion="aicc" if select_table is not None else None,
                        min_records=min_records, progress=con.say, cv=cv)


def _cross_validate(com, fit, kw, k, con):
    """K-fold CV by sites of ``fit`` and of the same model without latent variables."""
    from .results.crossval import cross_validate

    models = {f"num_lv={fit.num_lv}": fit}
    if fit.num_lv > 0:
        base = {key: v for key, v in kw.items() if key not in ("num_lv", "verbose")}
        models["num_lv=0"] = dict(data=com, num_lv=0, **base)
    con.say(f"{k}-fold cross-validation by sites of {len(models)} model(s) ...")
    cv = cross_validate(models, k=k, seed=fit.settings.get("seed") or 0)
    con.say("held-out lpd: " + ", ".join(f"{m} {v:.1f}" for m, v in cv.table["lpd"].items()))
    return cv


def _attempt(name, make, con):
    """``make()``, or None with a one-line warning when it fails (raise with --debug)."""
    from .exceptions import JSDMWarning

    try:
        return make()
    except Exception as exc:  # one output must not cost the others
        if con.debug:
            raise
        warnings.warn(f"{name} not written: {type(exc).__name__}: {exc}", JSDMWarning, stacklevel=2)
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
    if args.num_lv is None and not args.select_num_lv:
        raise UsageError("give --num-lv D (the number of latent variables), or --select-num-lv "
                         "to compare 0-4 by AICc")
    spec = dict(family=args.family, num_lv=args.num_lv, formula=args.formula)
    return com, spec, notes, args.title


def _run(args, con):
    import matplotlib

    matplotlib.use("Agg")
    t0 = time.perf_counter()
    out = Path(args.out)
    tmp = _claim_output(out, args.overwrite)
    try:
        from .families import get_family

        get_family(args.family, link=args.link)     # fail fast on an unknown family or link
        k = getattr(args, "cv", None)
        if k is not None and k < 2:
            raise UsageError(f"--cv needs K >= 2 folds, got {k}")
        com, spec, notes, title = _prepare(args)
        fit, table = _fit(com, _fit_options(args, spec), args, con)
        cv = None if k is None else _cross_validate(com, fit, _fit_options(args, spec), k, con)
        report = _write_outputs(fit, tmp, table, notes, title, con, args.min_records, cv=cv)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    con.say(f"wrote {out / report.name} and tables in {out} ({time.perf_counter() - t0:.1f} s)")
    return 0


# --- the output folder ------------------------------------------------------------------------
def _claim_output(out, overwrite):
    """Check ``--out`` before any work; return a new hidden folder beside it for the outputs."""
    from .data.validation import show

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {str(out)!r} is a file; give a folder")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir())
        if entries and not overwrite:
            raise UsageError(f"--out {str(out)!r} is not empty ({len(entries)} entries, e.g. "
                             f"{show(entries, 3)}); give a new folder, or --overwrite to replace "
                             "the outputs of an earlier jsdm run")
        foreign = [e for e in entries if e not in OUTPUT_FILES]
        if foreign:
            raise UsageError(f"--out {str(out)!r} holds files that jsdm did not write "
                             f"({show(foreign, 3)}), so --overwrite will not replace it; give "
                             "another folder")
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.absolute().name}.partial-", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)       # mkdtemp's 0700 would stay on the output folder
        return tmp
    except OSError as exc:
        from .exceptions import JSDMError
        raise JSDMError(f"cannot write the outputs to --out {str(out)!r}: "
                        f"{exc.strerror or exc} ({exc.filename or parent}); give a folder you "
                        "can write to") from None


def _move_into_place(tmp, out):
    """Replace ``out`` (absent, empty, or an earlier run's outputs) by the folder ``tmp``."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.absolute().name}.old-", dir=tmp.parent))
        os.replace(out, old / "out")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
