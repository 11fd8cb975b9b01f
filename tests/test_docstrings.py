"""Every public name of ``jsdm`` and of the fitted object is documented (numpydoc).

What is checked, for each public function, class, method and property of the
``jsdm`` namespace (and of the modules it exports, ``jsdm.datasets`` and
``jsdm.exceptions``), for every public member of :class:`jsdm.GLLVMResults`,
and for the result classes its methods return (Summary, Diagnosis, Ordination,
...):

- it has a docstring;
- a callable that takes arguments (besides ``self``) has a ``Parameters``
  section that names every argument (``*args``/``**kwargs`` as written), and
  names no argument it does not take;
- a function or method that returns something has a ``Returns`` (or
  ``Yields``) section; a class documents its constructor's arguments in its
  own docstring.

The API reference on the documentation site is built from these docstrings,
so a new public name without them fails here first, with the list of what is
missing. The parser below is a small one on purpose (the test suite does not
depend on numpydoc): section headers underlined with dashes, entries
``name : type`` at the section's indentation, several names separated by
commas.
"""
import inspect
import re
import types

import pytest

import jsdm
from jsdm import GLLVMResults

#: callables that return nothing and so need no Returns section
RETURNS_NOTHING = {"jsdm.exceptions.*"}


def _sections(doc):
    """{section title: [lines]} of a numpydoc docstring (the summary under "")."""
    lines = inspect.cleandoc(doc or "").splitlines()
    out, title, k = {"": []}, "", 0
    while k < len(lines):
        line = lines[k]
        nxt = lines[k + 1] if k + 1 < len(lines) else ""
        if line.strip() and re.fullmatch(r"\s*-{3,}\s*", nxt) and len(nxt.strip()) >= len(line.strip()) - 1:
            title = line.strip()
            out[title] = []
            k += 2
            continue
        out.setdefault(title, []).append(line)
        k += 1
    return out


def _documented_names(section_lines):
    """Argument names of a Parameters section: entries at its smallest indentation."""
    entries = [ln for ln in section_lines if ln.strip()]
    if not entries:
        return set()
    base = min(len(ln) - len(ln.lstrip()) for ln in entries)
    names = set()
    for ln in entries:
        if len(ln) - len(ln.lstrip()) != base:
            continue
        head = ln.strip().split(" : ")[0].rstrip(":").strip()
        for name in head.split(","):
            names.add(name.strip())
    return names


def _arguments(func, drop_first):
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return []
    if drop_first and params:
        params = params[1:]
    out = []
    for p in params:
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        out.append(prefix + p.name)
    return out


def _problems(qualname, obj, *, kind, drop_first=False, owner_doc=None):
    """What is missing from the docstring of one public object (list of str)."""
    doc = inspect.getdoc(obj) if kind != "property" else (obj.__doc__ or "")
    if not (doc or "").strip():
        return [f"{qualname}: no docstring"]
    if kind == "property":
        return []
    secs = _sections(doc)
    args = _arguments(obj.__init__ if kind == "class" else obj, drop_first or kind == "class")
    if kind == "class" and obj.__init__ is object.__init__:
        args = []
    if kind == "class" and type(obj) is type and issubclass(obj, BaseException):
        args = []                                   # exceptions take their message
    problems = []
    if args:
        params = secs.get("Parameters", []) + secs.get("Other Parameters", [])
        if kind == "class" and not params:
            params = secs.get("Attributes", [])    # dataclasses document their fields there
        if not params:
            problems.append(f"{qualname}: no Parameters section (arguments: {', '.join(args)})")
        else:
            have = _documented_names(params)
            loose = {a.lstrip("*") for a in args}
            missing = [a for a in args if a not in have and a.lstrip("*") not in have]
            extra = sorted(h for h in have if h.lstrip("*") not in loose)
            if missing:
                problems.append(f"{qualname}: Parameters section lacks {', '.join(missing)}")
            if extra:
                problems.append(f"{qualname}: Parameters section names {', '.join(extra)}, "
                                "which the signature does not have")
    if kind in ("function", "method") and not any(
            fnmatch_any(qualname, RETURNS_NOTHING) for _ in [0]):
        if not (secs.get("Returns") or secs.get("Yields")):
            problems.append(f"{qualname}: no Returns section")
    return problems


def fnmatch_any(name, patterns):
    import fnmatch

    return any(fnmatch.fnmatch(name, p) for p in patterns)


def _class_members(cls, prefix):
    """(qualname, object, kind) of the public members a jsdm class defines or inherits from jsdm."""
    out = []
    for name in sorted(dir(cls)):
        if name.startswith("_"):
            continue
        owner = next((k for k in cls.__mro__ if name in k.__dict__), None)
        if owner is None or not owner.__module__.startswith("jsdm"):
            continue                                # inherited from Python or pandas
        raw = owner.__dict__[name]
        if isinstance(raw, property):
            out.append((f"{prefix}.{name}", raw, "property"))
        elif isinstance(raw, (staticmethod, classmethod)):     # bound: no self/cls to drop
            out.append((f"{prefix}.{name}", getattr(cls, name), "function"))
        elif inspect.isfunction(raw):
            out.append((f"{prefix}.{name}", raw, "method"))
        elif type(raw).__name__ in ("cached_property",):
            out.append((f"{prefix}.{name}", raw, "property"))
    return out


def _public_objects():
    """(qualname, object, kind) of every public name of jsdm and of the fitted object."""
    out = []
    for name in sorted(jsdm.__all__):
        obj = getattr(jsdm, name)
        if isinstance(obj, types.ModuleType):
            public = getattr(obj, "__all__", None) or [n for n in dir(obj) if not n.startswith("_")]
            for sub in sorted(public):
                member = getattr(obj, sub)
                if isinstance(member, types.ModuleType) or getattr(member, "__module__", "") is None:
                    continue
                if not str(getattr(member, "__module__", "")).startswith("jsdm"):
                    continue
                out += _entries(f"jsdm.{name}.{sub}", member)
        else:
            out += _entries(f"jsdm.{name}", obj)
    return out


def _result_classes():
    """Classes the fitted object's methods return (their members are learnt by tab-completion too)."""
    from jsdm.analysis.associations import CorrelationIntervals
    from jsdm.analysis.diagnostics import Diagnosis, Problem
    from jsdm.analysis.ordination import Ordination
    from jsdm.results.summary import Summary

    out = [Summary, Diagnosis, Problem, Ordination, CorrelationIntervals]
    for mod, name in (("jsdm.results.likelihood", "LoglikIS"), ("jsdm.results.crossval", "CVResult")):
        try:
            import importlib

            out.append(getattr(importlib.import_module(mod), name))
        except (ImportError, AttributeError):
            pass
    return out


def _entries(qualname, obj):
    if inspect.isclass(obj):
        return [(qualname, obj, "class")] + _class_members(obj, qualname)
    if callable(obj):
        return [(qualname, obj, "function")]
    return []


PUBLIC = _public_objects()
for _cls in _result_classes():
    PUBLIC += _entries(f"{_cls.__module__}.{_cls.__qualname__}", _cls)


def test_the_public_api_is_what_jsdm_all_says():
    """A public function or class in the jsdm namespace must be listed in jsdm.__all__ (and so
    in the API reference and in these checks)."""
    unlisted = [n for n in dir(jsdm) if not n.startswith("_") and n not in jsdm.__all__
                and not isinstance(getattr(jsdm, n), types.ModuleType)]
    assert not unlisted, f"add to jsdm.__all__ (and document): {unlisted}"
    assert {"gllvm", "GLLVMResults", "Community", "anova", "select_num_lv", "load"} <= set(jsdm.__all__)


def test_every_public_member_of_the_fitted_object_is_checked():
    names = {q for q, _, _ in PUBLIC if q.startswith("jsdm.GLLVMResults.")}
    public = {n for n in dir(GLLVMResults) if not n.startswith("_")}
    assert {f"jsdm.GLLVMResults.{n}" for n in public} == names


@pytest.mark.parametrize("qualname,obj,kind", PUBLIC, ids=[q for q, _, _ in PUBLIC])
def test_public_name_has_a_numpydoc_docstring(qualname, obj, kind):
    problems = _problems(qualname, obj, kind=kind, drop_first=(kind == "method"))
    assert not problems, "\n".join(problems)


# --- the checker itself ---------------------------------------------------------------------
def _good(a, b=1, *rest, **options):
    """Do something.

    Parameters
    ----------
    a, b : int
        Numbers.
    *rest : float
        More.
    **options
        Passed on.

    Returns
    -------
    int
    """


def _bad(a, c=2):
    """Do something.

    Parameters
    ----------
    a : int
    b : int
    """


def test_the_checker_accepts_a_complete_docstring_and_names_what_is_missing():
    assert _problems("good", _good, kind="function") == []
    problems = _problems("bad", _bad, kind="function")
    assert any("lacks c" in p for p in problems)
    assert any("names b" in p for p in problems)
    assert any("no Returns" in p for p in problems)
    assert _problems("none", lambda x: x, kind="function") == ["none: no docstring"]
