"""lme4 / glmmTMB formula syntax on long data, translated onto the jsdm engine.

Users coming from mixed models write one formula for a long table (one row
per site x species), e.g.::

    count ~ species + species:SubsDens + rr(0 + species | site, d = 2) + (1 | site)

This module parses such a formula (:func:`parse_formula`) and translates it
into the arguments of the ordinary wide call (:func:`translate_call`): a
:class:`~jsdm.data.Community`, the engine's site formula ("~ SubsDens"),
``num_lv``, ``row_effect`` and ``offset``. The fit is then exactly the fit of
that wide call. Terms the engine cannot fit raise a
:class:`~jsdm.exceptions.JSDMError` that names the term; no term is ever
dropped silently.

Mapping (``site`` and ``species`` stand for the id columns' names):

============================================  ==========================================
formula term                                  jsdm
============================================  ==========================================
``y ~``                                       response column ``y``
``species``, ``0 + species``, ``species - 1``  species intercepts (always in the model)
``species:x``, ``species/x``, ``species*x``    species-specific slopes on site covariate x
``site`` (fixed)                              ``row_effect="fixed"``
``(1 | site)``                                ``row_effect="random"``
``(1 | plot)``, ``(1 | a) + (1 | b)``           ``site_effects=["plot"]``, ``["a", "b"]``
``(1 | a/b)``, ``(1 | a:b)``                   ``site_effects=["a", "a:b"]``, ``["a:b"]``
``(1 | plot/site)``                           ``site_effects=["plot"]``, ``row_effect="random"``
``rr(0 + species | site, d = k)``             ``num_lv=k`` (glmmTMB's default k = 2);
                                              no ``rr()`` term: ``num_lv=0``
``rr(..., lv = ~ x + z)``                     concurrent ordination: ``num_lv_c=k``,
                                              ``lv_formula="~ x + z"`` (jsdm extension)
``rr(..., lv = ~ x + z, residual = FALSE)``   constrained ordination: ``num_rr=k``
``rr(..., quadratic = TRUE)`` (or ``"lv"``)   ``quadratic=True`` (``"lv"``)
``offset(expr)``                              ``offset`` = expr evaluated per row
============================================  ==========================================
"""
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from ..exceptions import JSDMError

__all__ = ["ParsedFormula", "parse_formula", "parse_fourth_corner", "parse_random_species",
           "is_lme4_formula",
           "translate_call"]

#: ``num_lv`` of the unstructured term ``(0 + species | site)`` before the data are seen
UNSTRUCTURED = "species"
DEFAULT_RANK = 2   # glmmTMB: "d ... defaults to 2" (vignette "Covariance structures with glmmTMB")
COVSTRUCTS = ("rr", "us", "diag", "homdiag", "cs", "homcs", "ar1", "hetar1", "ou", "exp",
              "gau", "mat", "toep", "homtoep", "propto", "equalto")
_NAME = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")
_CALL = re.compile(r"^([A-Za-z_.][A-Za-z0-9_.]*)\s*\(")


def _supported(site, species):
    return (f"Supported: {species} (species intercepts), {species}:x (species-specific slopes "
            f"on a site covariate x), {site} (fixed site effects), (1 | {site}) (random site "
            f"effects), (1 | plot), (1 | plot/sub), (1 | a) + (1 | b) (grouped site effects by "
            f"site-level groupings), rr(0 + {species} | {site}, d = k) (k latent variables), "
            f"offset(expr).")


@dataclass(frozen=True)
class ParsedFormula:
    """The pieces of an lme4/glmmTMB-style formula, as the engine will use them.

    Attributes
    ----------
    formula : str
        The formula as the user wrote it.
    response : str or None
        Response column (the left-hand side); None for a one-sided formula.
    site, species : str
        Names of the site and species id columns.
    slopes : tuple of str
        Site-covariate terms with species-specific slopes, in engine syntax
        (``"SubsDens"``, ``"log(WatrCont)"``, ``"x:z"``).
    absorbed : tuple of str
        Shared slopes written next to their species-specific version (as in
        ``species*x``): the same model, so nothing is added.
    num_lv : int or "species"
        Rank ``d`` of the ``rr()`` term (0 without one); ``"species"`` for the
        unstructured ``(0 + species | site)``, fitted as a full-rank factor model with one
        latent variable per species (the number is set when the data are read).
    row_effect : None, "fixed" or "random"
    offsets : tuple of str
        Expressions inside ``offset(...)``, summed.
    site_effects : tuple of str
        Groupings of grouped site effects ``(1 | plot)`` (``"a:b"`` for an
        interaction; ``(1 | a/b)`` gives ``"a"`` and ``"a:b"``), the wide call's
        ``site_effects=``.
    terms : tuple of (str, str)
        Each term as read and what it becomes (see ``str(parsed)``).
    """

    formula: str
    response: Optional[str]
    site: str
    species: str
    slopes: tuple = ()
    absorbed: tuple = ()
    num_lv: int = 0
    row_effect: Optional[str] = None
    offsets: tuple = ()
    terms: tuple = ()
    site_effects: tuple = ()
    species_random: object = None       # a SpeciesRandom term (random species effects) or None
    community: object = None            # a CommunitySlopes term (x, x:trait fixed) or None

    @property
    def design_columns(self):
        """Site covariates of the design: species-specific slopes, then random-slope covariates."""
        extra = [] if self.species_random is None else [
            c for c in self.species_random.columns if c != "1" and c not in self.slopes]
        if self.community is not None:
            extra += [c for c in self.community.columns if c not in self.slopes + tuple(extra)]
        return tuple(self.slopes) + tuple(extra)
    num_lv_c: int = 0
    num_rr: int = 0
    lv_formula: Optional[str] = None
    quadratic: object = False

    @property
    def site_formula(self):
        """str or None: the engine's site-covariate formula, e.g. ``"~ SubsDens + WatrCont"``."""
        cols = self.design_columns
        return "~ " + " + ".join(cols) if cols else None

    def gllvm_arguments(self):
        """dict: ``formula``, ``num_lv`` and ``row_effect`` of the equivalent wide call (and
        ``random_species``, the species random-effect term, when there is one; ``site_effects``,
        the grouped site effects, when there are any)."""
        out = dict(formula=self.site_formula, num_lv=self.num_lv, row_effect=self.row_effect)
        com, sr = self.community, self.species_random
        if sr is not None:
            out["random_species"] = sr.lme4(species=self.species)
            if com is not None and not com.traits:      # shared slopes next to the bars
                out["random_species"] = com.lme4() + " + " + out["random_species"]
                com = None
        if com is not None:
            out["fourth_corner"] = com.lme4()
        if self.site_effects:
            out["site_effects"] = list(self.site_effects)
        if self.num_lv_c or self.num_rr:            # ordination (jsdm extension of rr())
            out.update(num_lv_c=self.num_lv_c, num_rr=self.num_rr, lv_formula=self.lv_formula)
            if out["formula"] is None and not self.design_columns:
                out["formula"] = "~ 1"  # the ordination covariates get no species slopes
        if self.quadratic:
            out["quadratic"] = self.quadratic
        return out

    @property
    def model_terms(self):
        """list of Term: the terms of the linear predictor this formula fits (``jsdm.model.terms``).

        The same list a fit reports (``fit.model_terms``) and a saved fit stores; species
        slopes are named by the formula's covariate terms here, by the design columns they
        expand to (factor levels) in the fit.
        """
        from .terms import default_terms
        from .terms.group_effects import _group_terms

        cols = self.design_columns
        d = 0 if self.num_lv == UNSTRUCTURED else self.num_lv
        terms = [t for t in default_terms(cols, d, self.row_effect,
                                          species_random=self.species_random,
                                          community=self.community)
                 if t.active(_Dims(cols))]
        if self.num_lv_c or self.num_rr or self.quadratic:     # ordination (terms/ordination.py)
            from .terms.ordination import ordination_terms
            lv_cols = tuple(c.strip() for c in (self.lv_formula or "~").split("~", 1)[1].split("+")
                            if c.strip())
            terms = [t for t in ordination_terms(tuple(default_terms(
                cols, d, self.row_effect, species_random=self.species_random,
                community=self.community)), self.num_lv_c, self.num_rr, lv_cols, self.quadratic)
                if t.kind in ("lv_c", "rr", "quadratic") or t.active(_Dims(cols))]
        if self.num_lv == UNSTRUCTURED:
            terms.append(_UnstructuredShown())
        return terms + _group_terms(list(self.site_effects))

    def __str__(self):
        width = max([len(t) for t, _ in self.terms] + [10])
        lines = [f"formula: {self.formula}"]
        lines += [f"  {t:<{width}}  ->  {meaning}" for t, meaning in self.terms]
        lines.append("terms of the linear predictor (eta = offset + sum of terms):")
        shown = [(t.lme4(self.site, self.species), t.describe()) for t in self.model_terms]
        if self.offsets:
            shown.insert(0, (" + ".join(f"offset({o})" for o in self.offsets),
                             "offset (coefficient fixed at 1)"))
        w2 = max(len(a) for a, _ in shown)
        lines += [f"  {a:<{w2}}  {b}" for a, b in shown]
        args = ", ".join(f"{k}={v!r}" for k, v in self.gllvm_arguments().items())
        lines.append(f"equivalent wide call: jsdm.gllvm(community, {args}"
                     + (", offset=<offset matrix>)" if self.offsets else ")"))
        return "\n".join(lines)


class _UnstructuredShown:
    """How the unstructured term is listed before the number of species is known."""

    def lme4(self, site="site", species="species"):
        return f"(0 + {species} | {site})"

    def describe(self):
        return ("unstructured species covariance by site, Sigma = Theta Theta' with Theta "
                "lower triangular (m x m): num_lv = number of species latent variables")


class _Dims:
    """What ``Term.active`` asks of a problem, before there is data (its covariate columns)."""

    def __init__(self, covariates):
        self.covariates = tuple(covariates)
        self.p = len(self.covariates)


# --- scanning ----------------------------------------------------------------------------
def _scan(text):
    """Yield (index, char, depth) for characters outside quotes and backticks.

    An opening bracket is reported at the depth outside it and its closing
    bracket at the same depth, so top-level characters have depth 0.
    """
    depth, quote = 0, None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
            continue
        if ch in "`'\"":
            quote = ch
            continue
        if ch in "([{":
            yield i, ch, depth
            depth += 1
            continue
        if ch in ")]}":
            depth -= 1
            if depth < 0:
                raise JSDMError(f"unbalanced brackets in formula part {text!r}: a closing "
                                f"{ch!r} at position {i} has no opening one; fix the brackets.")
        yield i, ch, depth
    if depth or quote:
        raise JSDMError(f"unbalanced {'quotes' if quote else 'brackets'} in formula part "
                        f"{text!r}; close every bracket, quote and backtick.")


def _split_top(text, seps):
    """Split ``text`` at top-level characters in ``seps``; returns the stripped parts."""
    cuts = [i for i, ch, depth in _scan(text) if depth == 0 and ch in seps]
    bounds = zip([-1] + cuts, cuts + [len(text)])
    return [text[a + 1:b].strip() for a, b in bounds]


def _additive_pieces(rhs):
    """Top-level ``+``/``-`` separated pieces of a right-hand side, as (sign, text)."""
    pieces, sign, start = [], "+", 0
    for i, ch, depth in _scan(rhs):
        if depth == 0 and ch in "+-":
            text = rhs[start:i].strip()
            if text:
                pieces.append((sign, text))
                sign = ch
            elif ch == "-":
                sign = "-" if sign == "+" else "+"
            start = i + 1
    text = rhs[start:].strip()
    if text:
        pieces.append((sign, text))
    elif rhs.strip():
        raise JSDMError(f"the formula's right-hand side {rhs.strip()!r} ends with an operator; "
                        "remove the trailing '+' or '-'.")
    return pieces


def _wrapped(piece):
    """The inside of ``( ... )`` when the brackets enclose the whole piece, else None."""
    if not piece.startswith("("):
        return None
    for i, ch, depth in _scan(piece):
        if ch == ")" and depth == 0:
            return piece[1:-1].strip() if i == len(piece) - 1 else None
    return None


def _call(piece):
    """(name, inside) when the piece is one call ``name(...)``, else None."""
    match = _CALL.match(piece)
    if not match:
        return None
    inner = _wrapped(piece[match.end() - 1:])
    return None if inner is None else (match.group(1), inner)


def _has_top(text, ch):
    return any(c == ch and d == 0 for _, c, d in _scan(text))


# --- parsing -----------------------------------------------------------------------------
class _Parts:
    """Mutable collector used while reading the terms of one formula."""

    def __init__(self, formula, site, species):
        self.formula, self.site, self.species = formula, site, species
        self.fixed, self.terms, self.offsets, self.random_terms = [], [], [], []
        self.num_lv, self.random_site, self.fixed_site = None, None, None
        self.has_species = False
        self.site_effects = []
        self.nested_site = None
        self.species_bars, self.has_intercept = [], False
        self.num_lv_c = self.num_rr = 0
        self.lv_formula, self.quadratic = None, False

    def fail(self, term, why):
        raise JSDMError(f"formula term {term!r} in {self.formula!r}: {why} "
                        + _supported(self.site, self.species))


def parse_formula(formula, site="site", species="species"):
    """Parse an lme4/glmmTMB-style formula for long community data.

    Parameters
    ----------
    formula : str
        E.g. ``"count ~ species + species:soil_dry + rr(0 + species | site, d = 2)"``.
    site, species : str
        Names of the site and species id columns used in the formula.

    Returns
    -------
    ParsedFormula
        ``str()`` of it shows each term and the equivalent wide call.

    Raises
    ------
    JSDMError
        Syntax errors, and terms the engine cannot fit (named in the message,
        with the supported forms).

    Examples
    --------
    >>> p = parse_formula("y ~ 0 + species + species:WatrCont + rr(0 + species | site, d = 2)")
    >>> p.site_formula, p.num_lv, p.row_effect
    ('~ WatrCont', 2, None)
    """
    return _parse(formula, site, species)


def _parse(formula, site, species, wide=False):
    """parse_formula; ``wide``: the species random effects of a wide call (no species term
    needed: the wide call has its own species intercepts)."""
    if not isinstance(formula, str) or not formula.strip():
        raise JSDMError(f"formula must be a non-empty string, got {formula!r}; e.g. "
                        f"'count ~ {species} + {species}:x + rr(0 + {species} | {site}, d = 2)'.")
    sides = _split_top(formula, "~")
    if len(sides) > 2:
        raise JSDMError(f"formula {formula!r} has more than one '~'; write 'response ~ terms'.")
    lhs, rhs = sides if len(sides) == 2 else ("", sides[0])
    response = _response_name(lhs, formula)
    if not rhs:
        raise JSDMError(f"formula {formula!r} has no terms after '~'; add at least '{species}'.")
    parts = _Parts(formula, site, species)
    parts.wide = wide
    if response is not None:
        parts.terms.append((lhs.strip(), f"response column {response!r}"))
    for sign, piece in _additive_pieces(rhs):
        _read_piece(parts, sign, piece)
    slopes, absorbed = _read_fixed(parts)
    return _finish(parts, response, slopes, absorbed)


def _response_name(lhs, formula):
    """The response column named on the left of ``~`` (None when empty)."""
    lhs = lhs.strip()
    if not lhs:
        return None
    if lhs.startswith("`") and lhs.endswith("`") and lhs.count("`") == 2:
        return lhs[1:-1]
    if _NAME.fullmatch(lhs):
        return lhs
    raise JSDMError(f"the left side of formula {formula!r} must be one response column, got "
                    f"{lhs!r}. Transform the column in the table first; for binomial counts give "
                    "the successes on the left and trials= to gllvm (cbind() is not supported).")


def _read_piece(parts, sign, piece):
    """Route one top-level term: random-effect bar, covariance structure, offset or fixed."""
    inner = _wrapped(piece)
    call = _call(piece)
    if inner is not None and _has_top(inner, "|"):
        _read_bar(parts, sign, piece, inner)
    elif call and call[0] in COVSTRUCTS:
        _read_covstruct(parts, sign, piece, *call)
    elif call and call[0] == "offset":
        if sign == "-":
            parts.fail("-" + piece, "an offset cannot be subtracted; write offset(-(expr)).")
        parts.offsets.append(call[1])
        parts.random_terms.append((piece, f"offset {call[1]} (coefficient fixed at 1)"))
    elif any(ch == "|" for _, ch, _d in _scan(piece)):
        parts.fail(piece, "a random-effect term must stand alone in brackets, e.g. (1 | site), "
                          "and cannot be part of a product or a function other than rr().")
    else:
        parts.fixed.append((sign, piece))


def _bar_sides(parts, term, text, double=None):
    """(left, group) of ``left | group``; ``||`` only when ``double`` (a list) is given, which
    then receives True."""
    cuts = [i for i, ch, d in _scan(text) if ch == "|" and d == 0]
    if len(cuts) == 2 and cuts[1] == cuts[0] + 1 and double is not None:
        double.append(True)
        text = text[:cuts[0]] + " " + text[cuts[1]:]
        cuts = [cuts[1]]
    if len(cuts) == 2 and cuts[1] == cuts[0] + 1:
        parts.fail(term, f"double-bar (uncorrelated) random effects '||' are supported by "
                         f"{parts.species} only, e.g. (1 + x || {parts.species}).")
    if len(cuts) != 1:
        parts.fail(term, "a random-effect term needs exactly one '|' (left | group).")
    left, group = text[:cuts[0]].strip(), text[cuts[0] + 1:].strip()
    if not left or not group:
        parts.fail(term, "both sides of '|' must be filled in, e.g. (1 | site).")
    return left, _group_name(parts, term, group)


def _group_name(parts, term, group):
    """Grouping of a bar term: one column, ``a:b`` (interaction) or ``a/b`` (nested), the
    last two returned as they are (after checking each column name)."""
    if _has_top(group, "/") or _has_top(group, ":"):
        names = [_group_name(parts, term, g) for g in re.split(r"[/:]", group)]
        seps = [c for c in group if c in "/:"]
        return "".join(n + (seps[k] if k < len(seps) else "") for k, n in enumerate(names))
    name = group[1:-1] if group.startswith("`") and group.endswith("`") else group
    if not _NAME.fullmatch(group) and name == group:
        parts.fail(term, f"the grouping {group!r} must be one column name.")
    return name


def _left_terms(parts, term, left):
    """Terms on the left of a bar as a set of strings; the intercept is '1'."""
    from formulaic import Formula

    try:
        return {str(t) for t in Formula(left)}
    except Exception as exc:  # formulaic raises many types
        parts.fail(term, f"could not read {left!r} ({exc}).")
    return set()


def _read_bar(parts, sign, piece, inner):
    """An lme4 random-effect term ``(left | group)``: only ``(1 | site)`` is supported."""
    double = []
    left, group = _bar_sides(parts, piece, inner, double)
    lt = _left_terms(parts, piece, left)
    site, species = parts.site, parts.species
    if sign == "-":
        parts.fail("-" + piece, "a random-effect term cannot be subtracted.")
    if double and group != species:
        parts.fail(piece, f"double-bar (uncorrelated) random effects '||' are supported by "
                          f"{species} only, e.g. (1 + x || {species}).")
    if group == site and lt == {"1"}:
        if parts.random_site:
            parts.fail(piece, f"(1 | {site}) is given twice.")
        parts.random_site = piece
        parts.random_terms.append((piece, "random site effects -> row_effect='random'"))
        return
    if group == site and lt == {species}:          # (0 + species | site): unstructured
        if parts.num_lv is not None:
            parts.fail(piece, "the unstructured term (0 + species | site) and rr() are two "
                              "covariance structures for the same effects; keep one.")
        parts.num_lv = UNSTRUCTURED
        parts.random_terms.append((piece, "unstructured species covariance by site: a full-rank "
                                          "factor model, num_lv = number of species"))
        return
    if group == site and species in lt:
        parts.fail(piece, f"write the unstructured species covariance as (0 + {species} | "
                          f"{site}) (no intercept), or rr(0 + {species} | {site}, d = k) for k "
                          "latent variables.")
    if group == site:
        parts.fail(piece, f"random slopes by {site} are not supported; only (1 | {site}).")
    if group == species:
        _read_species_bar(parts, piece, left, lt, bool(double))
        return
    if lt != {"1"}:
        parts.fail(piece, f"random slopes by {group!r} are not supported; only random intercepts "
                          f"(1 | {group}) by a site-level grouping.")
    _read_group(parts, piece, group)


def _read_group(parts, piece, group):
    """``(1 | plot)``, ``(1 | a:b)``, nested ``(1 | a/b)`` (= (1 | a) + (1 | a:b)); a nested
    level equal to the site column is the site effect ``(1 | site)``."""
    site = parts.site
    chain = group.split("/")
    added = []
    for k in range(len(chain)):
        name = ":".join(chain[:k + 1])
        if chain[k] == site and k == len(chain) - 1 and k > 0:   # (1 | plot/site): + (1 | site)
            if parts.random_site:
                parts.fail(piece, f"(1 | {site}) is given twice (once inside {piece}).")
            parts.random_site = piece
            parts.nested_site = (piece, name, len(parts.random_terms))
            added.append("{site_part}")
            continue
        if site in name.split(":") or parts.species in name.split(":"):
            parts.fail(piece, f"the grouping {name!r} involves the {site} or {parts.species} "
                              f"column; grouped site effects take site-level grouping columns, "
                              f"and {site} nested last ((1 | plot/{site})).")
        if name in parts.site_effects:
            parts.fail(piece, f"(1 | {name}) is given twice.")
        parts.site_effects.append(name)
        added.append(f"(1 | {name}) -> site_effects {name!r}")
    parts.random_terms.append((piece, "grouped site effects: " + "; ".join(added)))


def _place_nested_site(parts, num_lv):
    """``(1 | plot/site)``: without latent variables the site effects join their plot's joint q
    (the nested chain plot, plot:site: exact for Gaussian data); with latent variables they
    stay site effects ``(1 | site)``, whose q is joint with the site's latent variables."""
    piece, name, k = parts.nested_site
    site = parts.site
    text, meaning = parts.random_terms[k]
    if num_lv == 0:
        parts.random_site = None
        parts.site_effects.append(name)
        part = (f"(1 | {name}) -> site_effects {name!r} (no latent variables: each {site} "
                f"effect in the joint q of its {name.split(':')[-2]})")
    else:
        part = (f"(1 | {site}) -> row_effect='random' (q joint with the {site}'s latent "
                "variables)")
    parts.random_terms[k] = (text, meaning.replace("{site_part}", part))


def _read_species_bar(parts, piece, left, lt, double):
    """A species random-effect bar: ``(1 | species)``, ``(0 + x | species)``, ``(1 + x | species)``,
    ``(x || species)``; the coordinates are read in the order written, the intercept first."""
    from formulaic import Formula

    species = parts.species
    cols = []
    for term in Formula(left):
        names = [f.expr for f in term.factors]
        if names in ([], ["1"]):
            cols.append("1")
        elif species in names or parts.site in names:
            parts.fail(piece, f"the left side of a bar by {species} takes site covariates, not "
                              f"{species} or {parts.site}.")
        else:
            cols.append(":".join(_factor_text(parts, f, term) for f in term.factors))
    if not cols:
        parts.fail(piece, "a random-effect term needs at least one coefficient on the left of '|'.")
    taken = [c for _, cs, _ in parts.species_bars for c in cs]
    twice = [c for c in cols if c in taken]
    if twice:
        parts.fail(piece, f"the random species effect on {twice[0]} is given twice.")
    parts.species_bars.append((piece, cols, double))
    kind = "independent" if double or len(cols) == 1 else "correlated"
    shown = ", ".join("intercept" if c == "1" else c for c in cols)
    parts.random_terms.append((piece, f"random species effects on {shown} ({kind})"))


def _species_random_term(parts, bare):
    """The SpeciesRandom term of the species bars, with the fixed terms that are their means:
    the intercept, a bare ``x`` of a random slope, and ``x:trait`` (trait: a column that is not a
    site covariate: any factor of the interaction other than the random-slope covariate).
    Returns (term, the bare texts it used)."""
    from .terms import SpeciesRandom

    cols, blocks = [], []
    for _, cs, double in parts.species_bars:
        idx = list(range(len(cols), len(cols) + len(cs)))
        cols += cs
        blocks += [(i,) for i in idx] if double else [tuple(idx)]
    mean = [parts.has_intercept if c == "1" else False for c in cols]
    traits, used = {}, []
    for text_, shown in bare:
        if text_ in cols:
            mean[cols.index(text_)] = True
            used.append(text_)
            parts.terms.append((shown, f"community mean of the random {text_} slopes"))
            continue
        factors = text_.split(":")
        hit = [c for c in cols if c != "1" and c in factors]
        if hit and len(factors) > len(hit[0].split(":")):
            rest = [f for f in factors if f not in hit[0].split(":")]
            trait = ":".join(rest)
            traits.setdefault(hit[0], []).append(trait)
            used.append(text_)
            parts.terms.append((shown, f"trait interaction: {trait} in the mean of the random "
                                       f"{hit[0]} slopes (fourth corner)"))
    if "1" in cols and parts.has_intercept:
        parts.terms.append(("1", "community mean of the random species intercepts"))
    term = SpeciesRandom(cols, blocks=blocks, mean=mean,
                         traits=tuple((c, tuple(ts)) for c, ts in traits.items()),
                         group=parts.species)
    return term, used


def _read_covstruct(parts, sign, piece, name, inner):
    """glmmTMB covariance-structure terms: only ``rr(0 + species | site, d = k)``."""
    site, species = parts.site, parts.species
    if name != "rr":
        parts.fail(piece, f"the glmmTMB covariance structure {name}() is not supported yet; the "
                          f"only structured term is rr(0 + {species} | {site}, d = k).")
    if sign == "-":
        parts.fail("-" + piece, "an rr() term cannot be subtracted.")
    args = _split_top(inner, ",")
    left, group = _bar_sides(parts, piece, args[0])
    if group != site or _left_terms(parts, piece, left) - {"1"} != {species}:
        parts.fail(piece, f"the reduced-rank term must be rr(0 + {species} | {site}, d = k): "
                          f"latent variables by {site} with loadings by {species}.")
    if parts.num_lv == UNSTRUCTURED:
        parts.fail(piece, "the unstructured term (0 + species | site) and rr() are two covariance "
                          "structures for the same effects; keep one.")
    opts = _rr_options(parts, piece, args[1:])          # ordination options (jsdm extension)
    d = opts["d"]
    if opts["quadratic"]:
        parts.quadratic = opts["quadratic"]
    if opts["lv"] is not None:
        if parts.lv_formula is not None and parts.lv_formula != opts["lv"]:
            parts.fail(piece, "constrained and concurrent rr() terms must share one lv formula.")
        parts.lv_formula = opts["lv"]
        if opts["residual"]:
            if parts.num_lv_c:
                parts.fail(piece, "only one concurrent rr(..., lv = ~ ...) term is allowed.")
            parts.num_lv_c = d
            parts.random_terms.append((piece, f"{d} concurrent latent variable(s) on "
                                              f"{opts['lv']} -> num_lv_c={d}"))
        else:
            if parts.num_rr:
                parts.fail(piece, "only one constrained rr(..., residual = FALSE) term is allowed.")
            parts.num_rr = d
            parts.random_terms.append((piece, f"{d} constrained latent variable(s) on "
                                              f"{opts['lv']} -> num_rr={d}"))
        return
    if parts.num_lv is not None:
        parts.fail(piece, "only one rr() term without lv = is allowed.")
    parts.num_lv = d
    parts.random_terms.append((piece, f"{d} latent variable(s) -> num_lv={d}"))


def _rr_options(parts, piece, args):
    """d, lv (ordination formula), residual and quadratic of an rr() term's arguments."""
    opts = {"d": None, "lv": None, "residual": True, "quadratic": False}
    rank_args = []
    for a in args:
        key, _, value = a.partition("=")
        key, value = key.strip(), value.strip()
        if key == "lv":
            if not value.startswith("~"):
                parts.fail(piece, f"lv must be a one-sided formula, e.g. lv = ~ x + z; got {value!r}.")
            opts["lv"] = "~ " + value[1:].strip()
        elif key == "residual":
            if value.upper() not in ("TRUE", "FALSE", "T", "F"):
                parts.fail(piece, f"residual must be TRUE or FALSE, got {value!r}.")
            opts["residual"] = value.upper() in ("TRUE", "T")
        elif key == "quadratic":
            v = value.strip("'\"")
            if v.upper() in ("TRUE", "T"):
                opts["quadratic"] = True
            elif v.lower() == "lv":
                opts["quadratic"] = "lv"
            elif v.upper() not in ("FALSE", "F"):
                parts.fail(piece, f"quadratic must be TRUE, FALSE or \"lv\", got {value!r}.")
        else:
            rank_args.append(a)
    if not opts["residual"] and opts["lv"] is None:
        parts.fail(piece, "residual = FALSE (constrained ordination) needs lv = ~ covariates.")
    opts["d"] = _rank(parts, piece, rank_args)
    return opts


def _rank(parts, piece, args):
    """The rank d of an rr() term from its remaining arguments (default 2)."""
    if not args:
        return DEFAULT_RANK
    if len(args) > 1:
        parts.fail(piece, f"rr() takes the bar term and one rank d; got extra {args[1:]!r}.")
    key, _, value = args[0].rpartition("=")
    if key.strip() not in ("", "d"):
        parts.fail(piece, f"rr() has no argument {key.strip()!r}; the rank is given as d = k.")
    value = value.strip()
    value = value[:-1] if value.endswith("L") else value   # R integer literal 2L
    if not value.isdigit() or int(value) < 1:
        parts.fail(piece, f"the rank d must be a whole number >= 1, got {value!r}; leave the "
                          "rr() term out to fit no latent variables.")
    return int(value)


def _read_fixed(parts):
    """Expand the fixed-effect part with formulaic and sort its terms into engine pieces."""
    from formulaic import Formula

    text = " ".join(f"{s} {p}" for s, p in parts.fixed).lstrip("+ ").strip()
    if not text:                # lme4: 'y ~ (1 | g)' has the implicit intercept
        parts.has_intercept = True
    try:
        terms = list(Formula(text)) if text else []
    except Exception as exc:  # formulaic raises many types
        raise JSDMError(f"could not read the fixed-effect terms {text!r} of formula "
                        f"{parts.formula!r}: {exc}") from None
    slopes, bare = [], []
    for term in terms:
        _read_fixed_term(parts, term, slopes, bare)
    absorbed = []
    if parts.species_bars:
        parts.species_random, used = _species_random_term(parts, bare)
        bare = [b for b in bare if b[0] not in used]
    else:
        parts.species_random = None
    parts.community, bare = _community_term(parts, bare, slopes)
    if parts.has_intercept and not (parts.species_random is not None
                                    and "1" in parts.species_random.columns):
        parts.terms.append(("1", "overall intercept: absorbed by the species intercepts"))
    for text_, shown in bare:
        if text_ not in slopes:
            parts.fail(shown, f"a slope shared by all species is not available in the engine "
                              f"(every slope is species-specific); write "
                              f"{parts.species}:{shown} (or {parts.species}*{shown}) instead.")
        absorbed.append(text_)
        parts.terms.append((shown, f"absorbed by {parts.species}:{shown} (same model; the "
                                   "slope is reported per species)"))
    return tuple(slopes), tuple(absorbed)


def _factor_text(parts, factor, term):
    """Engine (formulaic) text of one factor; names that are not identifiers get backticks."""
    kind = getattr(factor.eval_method, "value", str(factor.eval_method))
    if kind == "lookup":
        return factor.expr if factor.expr.isidentifier() else f"`{factor.expr}`"
    if kind == "literal":
        parts.fail(str(term), "a number cannot be part of an interaction.")
    return factor.expr


def _read_fixed_term(parts, term, slopes, bare):
    """Sort one expanded fixed term into intercepts, site effects, slopes or bare slopes."""
    site, species = parts.site, parts.species
    names = [f.expr for f in term.factors]
    if names in ([], ["1"]):
        parts.has_intercept = True
    elif names == [species]:
        parts.terms.append((species, "species-specific intercepts (always in the model)"))
        parts.has_species = True
    elif names == [site]:
        parts.fixed_site = site
        parts.terms.append((site, "fixed site effects -> row_effect='fixed'"))
    elif site in names:
        parts.fail(str(term), f"interactions with {site} are not supported (one parameter per "
                              f"{site} and {species} or covariate).")
    elif species in names:
        rest = [_factor_text(parts, f, term) for f in term.factors if f.expr != species]
        slope = ":".join(rest)
        if slope not in slopes:
            slopes.append(slope)
        parts.terms.append((str(term), f"species-specific slope on site covariate {slope}"))
    else:
        shown = ":".join(_factor_text(parts, f, term) for f in term.factors)
        bare.append((shown, shown))


def _finish(parts, response, slopes, absorbed):
    """Check the combination of terms and build the :class:`ParsedFormula`."""
    site, species = parts.site, parts.species
    sr = parts.species_random
    if sr is not None:
        _check_species_random(parts, sr, slopes)
    if not parts.has_species and not (sr is not None and "1" in sr.columns) \
            and not getattr(parts, "wide", False):
        raise JSDMError(f"formula {parts.formula!r} has no {species} term: the engine always fits "
                        f"one intercept per species, so write it, e.g. '... ~ {species} + ...' "
                        f"(or 0 + {species}). " + _supported(site, species))
    if parts.random_site and parts.fixed_site:
        parts.fail(parts.random_site, f"{site} is both a fixed term and (1 | {site}); keep one "
                                      "(fixed or random site effects).")
    num_lv = parts.num_lv if parts.num_lv is not None else 0
    if parts.nested_site is not None:
        _place_nested_site(parts, num_lv)
    row_effect = "random" if parts.random_site else ("fixed" if parts.fixed_site else None)
    terms = parts.terms + parts.random_terms
    if parts.num_lv is None:
        terms.append(("(no rr() term)", "no latent variables -> num_lv=0"))
    return ParsedFormula(formula=parts.formula, response=response, site=site, species=species,
                         slopes=slopes, absorbed=absorbed, num_lv=num_lv, row_effect=row_effect,
                         offsets=tuple(parts.offsets), terms=tuple(terms), species_random=sr,
                         community=getattr(parts, "community", None),
                         site_effects=tuple(parts.site_effects),
                         num_lv_c=parts.num_lv_c, num_rr=parts.num_rr,
                         lv_formula=parts.lv_formula, quadratic=parts.quadratic)


def parse_random_species(text, species="species", both=False):
    """The species random-effect term of ``gllvm(..., random_species=text)`` (wide data).

    ``text`` is written as on long data in lme4: bars by species and the fixed terms
    that are their community means, e.g. ``"WatrCont + (1 + WatrCont | species)"``
    (the intercept is implicit, as in lme4: write ``0 + ...`` for a random intercept
    with mean 0), ``"(1 | species) + (0 + x | species)"``, ``"x + (x || species)"``,
    ``"x + x:height + (0 + x | species)"`` (a trait in the slopes' mean: the fourth
    corner). A :class:`~jsdm.model.terms.SpeciesRandom` is returned as it is.

    Returns
    -------
    SpeciesRandom
        (with ``both=True``: (SpeciesRandom, CommunitySlopes or None), the second holding
        community slopes written next to the bars, as ``x`` in ``"x + (1 | species)"``).
    """
    from .terms import SpeciesRandom

    if isinstance(text, SpeciesRandom):
        return (text, None) if both else text
    if not isinstance(text, str) or "|" not in text:
        raise JSDMError(f"random_species must be lme4-style bar terms by {species}, e.g. "
                        f"'x + (1 + x | {species})', got {text!r}.")
    body = text.split("~", 1)[1] if "~" in text else text
    parsed = _parse("~ " + body, "_no_site_", species, wide=True)
    if parsed.species_random is None:
        raise JSDMError(f"random_species={text!r} has no bar term by {species}; write e.g. "
                        f"'(1 | {species})'.")
    if parsed.num_lv or parsed.row_effect or parsed.slopes or parsed.offsets:
        raise JSDMError(f"random_species={text!r} may hold only bars by {species} and their "
                        "community means (the intercept, x, x:trait); give the other terms with "
                        "formula=, num_lv= and row_effect=.")
    if both:
        return parsed.species_random, parsed.community
    if parsed.community is not None:
        raise JSDMError(f"random_species={text!r} has community slopes without random slopes "
                        f"({parsed.community.lme4()}); pass it to gllvm(), which fits them.")
    return parsed.species_random


def _community_term(parts, bare, slopes=()):
    """Fixed trait interactions x:trait (the fourth corner) and the community slopes x (one
    slope shared by all species, also on their own): a CommunitySlopes term. A bare
    interaction whose first factor is a bare main effect is covariate:trait(s). A bare x that
    also has species-specific slopes (``species*x``) is left: absorbed by them. Returns (term
    or None, the bare terms left)."""
    from .terms import CommunitySlopes

    mains = [t for t, _ in bare if ":" not in t and t not in slopes]
    inter = [(t, s) for t, s in bare if ":" in t and t.split(":")[0] in mains]
    if not inter and not mains:
        return None, bare
    traits = {}
    for t, shown in inter:
        cov, trait = t.split(":", 1)
        traits.setdefault(cov, []).append(trait)
        parts.terms.append((shown, f"trait interaction {trait} x {cov} (fixed; the fourth corner)"))
    for c in mains:
        parts.terms.append((c, f"community slope on {c} (one slope shared by all species)"))
    term = CommunitySlopes(mains, traits=tuple((c, tuple(ts)) for c, ts in traits.items()))
    used = set(mains) | {t for t, _ in inter}
    return term, [b for b in bare if b[0] not in used]


def parse_fourth_corner(text, species="species"):
    """The fixed fourth-corner term of ``gllvm(..., fourth_corner=text)`` (wide data), written
    as in R gllvm's trait formula, e.g. ``"Snow + Slope + (Snow + Slope):(Height + SLA)"``:
    community slopes on the covariates and their interactions with species traits (the
    covariate first). Returns a :class:`~jsdm.model.terms.CommunitySlopes`."""
    from .terms import CommunitySlopes

    if isinstance(text, CommunitySlopes):
        return text
    body = text.split("~", 1)[1] if "~" in text else text
    try:
        parsed = _parse("~ 0 + " + species + " + " + body, "_no_site_", species, wide=True)
    except JSDMError as exc:
        # the formula reader's advice is for formula=; here the usual slip is an interaction
        # written without its covariate's main effect
        raise JSDMError(f"fourth_corner={text!r}: {exc} In fourth_corner= give each covariate's "
                        "community slope with its trait interactions, e.g. 'x + x:height' or "
                        "'x + x:(height + sla)'.") from None
    if parsed.community is None:
        raise JSDMError(f"fourth_corner={text!r} has no covariate:trait interaction; write e.g. "
                        "'x + x:height' (the covariate first, with its main effect).")
    if parsed.num_lv or parsed.row_effect or parsed.slopes or parsed.species_random is not None:
        raise JSDMError(f"fourth_corner={text!r} may hold only community slopes and their trait "
                        "interactions; give other terms with formula=, random_species=, num_lv=.")
    return parsed.community


def _check_species_random(parts, sr, slopes):
    """Refuse random species effects next to the fixed species effects they duplicate."""
    species = parts.species
    if "1" in sr.columns and parts.has_species:
        parts.fail(parts.species_bars[0][0], f"random species intercepts (1 | {species}) and fixed "
                   f"species intercepts ({species}) together are not identified; drop {species} "
                   f"(write e.g. 'y ~ 1 + (1 | {species})') or the random intercept.")
    both = [c for c in sr.columns if c in slopes]
    if both:
        parts.fail(parts.species_bars[0][0], f"random species slopes on {both[0]} and fixed "
                   f"species-specific slopes {species}:{both[0]} together are not identified; "
                   f"keep one (the community slope is written {both[0]}).")



# --- detection and translation -------------------------------------------------------------
def is_lme4_formula(formula, species=None):
    """True when ``formula`` is in lme4/glmmTMB style rather than a site-covariate formula.

    That is: it has a left-hand side, a ``|`` (random effects, ``rr()``), or a
    term on the species column.

    Parameters
    ----------
    formula : str or None
    species : str, optional
        Name of the species column (default "species").

    Returns
    -------
    bool
    """
    if not isinstance(formula, str):
        return False
    try:
        sides = _split_top(formula, "~")
    except JSDMError:
        return False
    if len(sides) > 1 and sides[0] or "|" in formula:
        return True
    species = species or "species"
    pattern = r"(?<![\w.])" + re.escape(species) + r"(?![\w.])|`" + re.escape(species) + "`"
    return re.search(pattern, sides[-1]) is not None


def translate_call(data, X, formula, *, num_lv=None, row_effect=None, offset=None,
                   response=None, site=None, species=None, site_effects=None):
    """Turn a :func:`jsdm.gllvm` call with an lme4/glmmTMB formula into the wide call.

    Parameters
    ----------
    data : long DataFrame (one row per site x species) or Community
        Not modified.
    X : None
        Site covariates come from the long table's columns.
    formula : str
        lme4/glmmTMB-style formula (see :func:`parse_formula`).
    num_lv, row_effect, offset, response, site, species
        As passed to :func:`jsdm.gllvm`; ``num_lv``, ``row_effect`` and
        ``response`` must agree with the formula when given. ``site`` and
        ``species`` default to "site" and "species".

    Returns
    -------
    (Community, None, dict)
        ``data`` and ``X`` for :func:`~jsdm.model.problem.build_problem`, and
        its keyword arguments ``formula`` (the engine's site formula),
        ``num_lv``, ``row_effect``, ``offset`` (an (n, m) array when the
        formula has ``offset()``), ``response``, ``site`` and ``species``
        (None: the Community is already built).
    """
    from ..data import Community

    site, species = site or "site", species or "species"
    parsed = parse_formula(formula, site=site, species=species)
    resp = _response_column(parsed, response)
    if X is not None:
        raise JSDMError(f"X= cannot be combined with the formula {formula!r}: with an lme4-style "
                        "formula the site covariates are columns of the long table. Join them "
                        "to the long table (or use a one-sided formula '~ x' with X=).")
    long = _long_table(data, resp, site, species)
    covs = _covariate_columns(parsed, long, resp)
    covs += [c for c in _grouping_columns(parsed, long, resp) if c not in covs]
    trs = _trait_columns(parsed, long)
    com = Community.from_long(long[[site, species, resp] + covs + trs], site=site, species=species,
                              response=resp, covariates=covs, traits=trs)
    args = _merge_arguments(parsed, num_lv, row_effect, offset)
    if parsed.species_random is not None:
        args["random_species"] = parsed.species_random
    if parsed.community is not None:
        args["fourth_corner"] = parsed.community
    if site_effects is not None and list(site_effects) != list(parsed.site_effects):
        raise JSDMError(f"site_effects={site_effects!r} contradicts the formula {formula!r}, whose "
                        f"grouped site effects are {list(parsed.site_effects)!r}; write them as "
                        "(1 | plot) terms in the formula and leave site_effects out.")
    args["site_effects"] = list(parsed.site_effects) or None
    if parsed.offsets:
        args["offset"] = _offset_matrix(parsed, long, com, resp)
    args.update(response=None, site=None, species=None)
    return com, None, args


def _response_column(parsed, response):
    """The response column: the formula's left side, or ``response=`` for a one-sided formula."""
    if parsed.response is None and response is None:
        raise JSDMError(f"formula {parsed.formula!r} names no response; write it on the left, "
                        f"e.g. 'count ~ {parsed.formula.strip().lstrip('~').strip()}'.")
    if parsed.response is not None and response is not None and response != parsed.response:
        raise JSDMError(f"response={response!r} contradicts the formula {parsed.formula!r}, whose "
                        f"response is {parsed.response!r}; name the response in one place.")
    return parsed.response if parsed.response is not None else response


def _long_table(data, resp, site, species):
    """The long table to read (a Community is stacked into one); checked for the id columns."""
    from ..data import Community
    from ..data.validation import show

    if isinstance(data, Community):
        data = data.to_long(response=resp)
    if not isinstance(data, pd.DataFrame):
        raise JSDMError(f"an lme4-style formula needs a long pandas DataFrame (one row per site x "
                        f"species), got {type(data).__name__}.")
    missing = [c for c in (resp, site, species) if c not in data.columns]
    if missing:
        raise JSDMError(
            f"the long table has no column(s) {show(missing)}; its columns are "
            f"{show(data.columns, 20)}. An lme4-style formula needs a long table: name its "
            "response on the left of '~' and its id columns with site= and species= (defaults "
            "'site', 'species'); wide tables take a one-sided formula such as '~ x'.")
    return data


def _columns_in(expr, columns):
    """Columns of the long table named in one term (plain, dotted or backticked names)."""
    names = set(re.findall(r"`([^`]*)`", expr))
    for token in _NAME.findall(re.sub(r"`[^`]*`", " ", expr)):
        names.add(token)
        names.update(token.split("."))
    return [c for c in columns if c in names]


def _covariate_columns(parsed, long, resp):
    """Site covariates used by the slopes, checked to be constant within site."""
    from ..data.reshape import varies_within
    from ..data.validation import show

    site, species = parsed.site, parsed.species
    covs = []
    lv_terms = [] if not parsed.lv_formula else [
        c.strip() for c in parsed.lv_formula.split("~", 1)[1].split("+") if c.strip()]
    for slope in list(parsed.design_columns) + [c for c in lv_terms
                                                if c not in parsed.design_columns]:
        used = _columns_in(slope, list(long.columns))
        if not used:
            raise JSDMError(f"the term {species}:{slope} names no column of the long table; its "
                            f"columns are {show(long.columns, 20)}.")
        for col in used:
            if col in (site, species, resp):
                raise JSDMError(f"the term {species}:{slope} uses the id or response column "
                                f"{col!r}; a slope needs a site covariate.")
            bad = varies_within(long, site, col)
            if len(bad):
                raise JSDMError(
                    f"{species}:{slope} needs {col!r} to be a site covariate (one value per "
                    f"{site}), but it takes several values within {site} {show(bad)}. The engine's "
                    f"slopes are on site covariates only; fix those rows, or leave {col!r} out.")
            if col not in covs:
                covs.append(col)
    return covs


def _grouping_columns(parsed, long, resp):
    """Site-level grouping columns of the grouped site effects, checked to be constant within
    site."""
    from ..data.reshape import varies_within
    from ..data.validation import show

    site = parsed.site
    cols = []
    for name in parsed.site_effects:
        for col in name.split(":"):
            if col == site:                 # (1 | plot/site): the site level itself
                continue
            if col not in long.columns:
                raise JSDMError(f"the term (1 | {name}) names the column {col!r}, which the long "
                                f"table does not have; its columns are {show(long.columns, 20)}.")
            bad = varies_within(long, site, col)
            if len(bad):
                raise JSDMError(
                    f"(1 | {name}) needs {col!r} to be a site-level grouping (one value per "
                    f"{site}), but it takes several values within {site} {show(bad)}. Grouped "
                    "site effects group whole sites; fix those rows.")
            if col not in cols:
                cols.append(col)
    return cols
def _trait_columns(parsed, long):
    """Species traits named in the species random effects' means (columns of the long table)."""
    from ..data.validation import show

    names = sorted({t for term in (parsed.species_random, parsed.community) if term is not None
                    for _, ts in term.traits for t in ts})
    missing = [t for t in names if t not in long.columns]
    if missing:
        raise JSDMError(f"the trait(s) {show(missing)} in {parsed.formula!r} are not columns of "
                        f"the long table; its columns are {show(long.columns, 20)}.")
    return names


def _merge_arguments(parsed, num_lv, row_effect, offset):
    """Engine arguments from the formula, refusing explicit arguments that contradict it."""
    where = f"the formula {parsed.formula!r}"
    if parsed.num_lv == UNSTRUCTURED and num_lv is not None:
        raise JSDMError(f"num_lv={num_lv!r} contradicts {where}, whose (0 + {parsed.species} | "
                        f"{parsed.site}) term has one latent variable per species; leave num_lv "
                        "out.")
    if parsed.num_lv != UNSTRUCTURED and num_lv is not None and (
            isinstance(num_lv, bool) or num_lv != parsed.num_lv):
        rr = f"rr(0 + {parsed.species} | {parsed.site}, d = k)"
        raise JSDMError(
            f"num_lv={num_lv!r} contradicts {where}, which has num_lv={parsed.num_lv} (the d of "
            f"{rr}; no rr() term means 0). Give the number of latent variables in one place: "
            f"set d in {rr} and leave num_lv out.")
    if row_effect is not None and row_effect != parsed.row_effect:
        raise JSDMError(
            f"row_effect={row_effect!r} contradicts {where}, which has row_effect="
            f"{parsed.row_effect!r}. Write site effects in the formula ((1 | {parsed.site}) for "
            f"random, + {parsed.site} for fixed) and leave row_effect out.")
    if offset is not None and parsed.offsets:
        raise JSDMError(f"an offset is given twice: offset= and offset({parsed.offsets[0]}) in "
                        f"{where}; keep one.")
    out = dict(formula=parsed.site_formula, num_lv=parsed.num_lv, row_effect=parsed.row_effect,
               offset=offset)
    if parsed.num_lv_c or parsed.num_rr:            # ordination (jsdm extension of rr())
        out.update(num_lv_c=parsed.num_lv_c, num_rr=parsed.num_rr, lv_formula=parsed.lv_formula)
        if out["formula"] is None and not parsed.design_columns:
            out["formula"] = "~ 1"      # the ordination covariates get no species slopes
    if parsed.quadratic:
        out["quadratic"] = parsed.quadratic
    return out


def _offset_values(expr, long):
    """One offset expression evaluated on every row of the long table."""
    import formulaic

    try:
        with np.errstate(all="ignore"):
            mm = formulaic.model_matrix(f"0 + I({expr})", long, na_action="ignore")
        values = np.asarray(mm, dtype=float)
    except Exception as exc:  # formulaic raises many types
        raise JSDMError(f"could not evaluate offset({expr}) on the long table: {exc}. Its "
                        f"columns are {list(long.columns)[:20]}.") from None
    if values.ndim != 2 or values.shape[1] != 1:
        raise JSDMError(f"offset({expr}) must give one number per row, got {values.shape[1]} "
                        "columns (is it categorical?).")
    return values[:, 0]


def _offset_matrix(parsed, long, com, resp):
    """Sum of the offset expressions as an (n_sites, n_species) matrix in community order."""
    from ..data.validation import show

    values = sum(_offset_values(expr, long) for expr in parsed.offsets)
    observed = long[resp].notna().to_numpy()
    bad = observed & ~np.isfinite(values)
    if bad.any():
        rows = list(zip(long[parsed.site].to_numpy()[bad], long[parsed.species].to_numpy()[bad],
                        values[bad]))
        raise JSDMError(
            f"the offset {' + '.join(parsed.offsets)} is missing or infinite at (site, species, "
            f"value) {show(rows)}; e.g. log(0) for zero effort. Fix or drop those rows.")
    i = com.sites.get_indexer(long[parsed.site].to_numpy())
    j = com.species.get_indexer(long[parsed.species].to_numpy())
    out = np.zeros((com.n_sites, com.n_species))
    out[i[observed], j[observed]] = values[observed]
    return out


def with_rank(formula, k, site="site", species="species"):
    """The lme4-style ``formula`` with its reduced-rank term set to ``d = k`` (none for k = 0).

    Used to compare numbers of latent variables (:func:`jsdm.select_num_lv`) on a
    formula written with ``rr(0 + species | site, d = ...)``.
    """
    lhs, rhs = formula.split("~", 1) if "~" in formula else ("", formula)
    kept = []
    for sign, piece in _additive_pieces(rhs):
        call = _call(piece)
        if call is not None and call[0] == "rr":
            continue
        kept.append(f"{sign} {piece}")
    if k > 0:
        kept.append(f"+ rr(0 + {species} | {site}, d = {int(k)})")
    body = " ".join(kept).lstrip("+ ").strip()
    return f"{lhs.strip()} ~ {body}".strip()
