"""Sphinx extension of the jsdm site: pages generated from the package and the docs folder.

Family pages: at ``builder-inited`` it writes ``families/generated/<name>.rst`` for every
family class registered in :mod:`jsdm.families` (and a summary table), from
the class's attributes (name, aliases, links, dispersion) and docstrings. A
family added to the registry therefore gets its page without editing the
docs; a family whose docstring is missing fails the docstring test
(tests/test_docstrings.py) instead.

Topic pages: the markdown files in ``docs/`` (engine.md, performance.md, ...)
are listed in ``_generated_topics.rst``, which topics.rst includes, so a new
page written there joins the site by itself.
"""
import re
import sys
import textwrap
from pathlib import Path

# |x| (an absolute value in the plain-text maths of the docstrings), outside ``literals``
_BARS = re.compile(r"(?<![|\\\w])\|([^|\s`][^|`]*?)\|(?![|\w])")
_LITERAL = re.compile(r"(``.*?``)")


def _families():
    """[(slug, class, [names it is registered under])], sorted by name."""
    from jsdm import families

    by_class = {}
    for key, cls in families._REGISTRY.items():
        by_class.setdefault(cls, []).append(key)
    out = []
    for cls, keys in by_class.items():
        # the name it is registered under, else its first own alias (two classes may share
        # a ``name``, e.g. a fixed-power and an estimated-power Tweedie)
        own = [a.lower() for a in getattr(cls, "aliases", ()) if a.lower() in keys]
        slug = cls.name if families._REGISTRY.get(cls.name) is cls else (own or sorted(keys))[0]
        out.append((slug, cls, sorted(keys, key=lambda k: (k != slug, k))))
    return sorted(out, key=lambda t: t[0])


def _first_line(text):
    text = (text or "").strip()
    return text.splitlines()[0].strip() if text else ""


def _dispersion(cls):
    if not getattr(cls, "has_dispersion", False):
        return "none"
    return f"``{cls.dispersion_name or 'dispersion'}`` per species (``fit.dispersion``)"


def _page(slug, cls, keys):
    mod = sys.modules[cls.__module__]
    path = f"{cls.__module__.rsplit('.', 1)[0]}.{cls.__name__}"      # jsdm.families.X
    public = hasattr(sys.modules["jsdm.families"], cls.__name__)
    target = path if public else f"{cls.__module__}.{cls.__name__}"
    links = list(getattr(cls, "links", ()))
    default = getattr(cls, "default_link", "") or (links[0] if links else "")
    rows = [
        ("Name in ``family=``", ", ".join(f'``"{k}"``' for k in keys)),
        ("Class", f":class:`{target}`"),
        ("Links", ", ".join(f"``{lk}``" + (" (default)" if lk == default else "") for lk in links)),
        ("Responses", "discrete" if getattr(cls, "discrete", False) else "continuous"),
        ("Nuisance parameter", _dispersion(cls)),
    ]
    title = f"{slug}"
    lines = [f".. _family-{slug}:", "", title, "=" * len(title), "",
             _first_line(cls.__doc__) or "(no docstring)", "",
             ".. list-table::", "   :widths: 30 70", ""]
    for k, v in rows:
        lines += [f"   * - {k}", f"     - {v}"]
    link_arg = f', link="{links[-1]}"' if len(links) > 1 else ""
    lines += ["", "Usage", "-----", "", ".. code-block:: python", "",
              f'   fit = jsdm.gllvm(community, family="{keys[0]}"{link_arg}, num_lv=2)', ""]
    notes = (mod.__doc__ or "").strip("\n")
    if notes:
        lines += ["How jsdm computes it", "--------------------", "",
                  "From the module's notes (the expectation of the log-density under a normal "
                  "linear predictor is what the engine needs from a family; "
                  ":doc:`/engine` explains why):", "", ".. code-block:: text", "   :class: jsdm-notes",
                  "",
                  textwrap.indent(textwrap.dedent(notes), "   "), ""]
    lines += ["Reference", "---------", "", f".. autoclass:: {target}", "   :members:", ""]
    return "\n".join(lines)


def _table(fams):
    lines = [".. list-table::", "   :header-rows: 1", "   :widths: 22 28 22 28", "",
             "   * - family", "     - what it is", "     - links", "     - nuisance parameter"]
    for slug, cls, _ in fams:
        lines += [f"   * - :ref:`{slug} <family-{slug}>`", f"     - {_first_line(cls.__doc__)}",
                  f"     - {', '.join(getattr(cls, 'links', ()))}",
                  f"     - {cls.dispersion_name or '-' if cls.has_dispersion else '-'}"]
    return "\n".join(lines) + "\n"


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def generate(app):
    out = Path(app.srcdir) / "families" / "generated"
    fams = _families()
    keep = {"table.rst"}
    _write(out / "table.rst", _table(fams))
    for slug, cls, keys in fams:
        _write(out / f"{slug}.rst", _page(slug, cls, keys))
        keep.add(f"{slug}.rst")
    for old in out.glob("*.rst"):          # a family that left the registry loses its page
        if old.name not in keep:
            old.unlink()


def topics(app):
    src = Path(app.srcdir)
    pages = sorted(p.stem for p in src.glob("*.md") if p.stem.lower() != "readme")
    text = ".. toctree::\n   :maxdepth: 1\n\n" + "".join(f"   {p}\n" for p in pages)
    _write(src / "_generated_topics.rst", text)


def escape_bars(app, what, name, obj, options, lines):
    """Docstrings write absolute values as |x|; reST would read a substitution: escape them.

    Grid-table lines (``+---+`` borders, rows that start and end with ``|``) are left alone,
    and so is text inside double-backtick literals; a line block (``| text``) never matches.
    """
    for k, line in enumerate(lines):
        bare = line.strip()
        if "|" not in line or bare.startswith("+") or (bare.startswith("|") and bare.endswith("|")):
            continue
        parts = _LITERAL.split(line)
        lines[k] = "".join(p if p.startswith("``") else _BARS.sub(r"\\|\1\\|", p) for p in parts)


#: documented under their public names: a reference to the module path resolves there
ALIASES = {
    "jsdm.exceptions.": "jsdm.",
    "jsdm.data.community.": "jsdm.",
    "jsdm.data.Community": "jsdm.Community",
    "jsdm.data.simulate.": "jsdm.",
    "jsdm.data.io.": "jsdm.",
    "jsdm.results.fitted.": "jsdm.",
    "jsdm.results.io.load": "jsdm.load",
    "jsdm.api.": "jsdm.",
    "jsdm.selection.": "jsdm.",
    "jsdm.results.anova.anova": "jsdm.anova",
    "jsdm.families.get_family": "jsdm.get_family",
}


_KINDS = {"func": {"function"}, "meth": {"method", "property"}, "class": {"class", "exception"},
          "attr": {"attribute", "property"}, "exc": {"exception", "class"}}


def resolve_alias(app, env, node, contnode):
    """Resolve a Python reference written with a module path (or a name relative to its
    module) to the one place the object is documented, when that place is unambiguous."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    domain = env.get_domain("py")
    candidates = []
    for old, new in ALIASES.items():
        if target.startswith(old):
            candidates.append(new + target[len(old):])
    kinds = _KINDS.get(node["reftype"])
    bare = target.lstrip("~.")
    # a name relative to its module, or a public jsdm.X documented in its module: by suffix
    tails = [bare] + ([bare.rsplit(".", 1)[-1]] if bare.startswith("jsdm.") else [])
    for tail in tails:
        if candidates:
            break
        names = [name for name, _, kind, *_ in domain.get_objects()
                 if name.endswith("." + tail) and (kinds is None or kind in kinds)]
        if len(names) == 1:
            candidates.append(names[0])
    for cand in candidates:
        new = node.deepcopy()
        new["reftarget"] = cand
        res = domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], cand, new,
                                  contnode)
        if res is not None:
            return res
    return None


def setup(app):
    app.connect("missing-reference", resolve_alias)
    app.connect("autodoc-process-docstring", escape_bars, priority=400)
    app.connect("builder-inited", generate)
    app.connect("builder-inited", topics)
    return {"version": "1", "parallel_read_safe": True}
