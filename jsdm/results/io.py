"""Saving and loading fitted models in an open, versioned format (never pickle).

File layout
-----------
A saved fit is one ZIP archive (conventionally ``*.jsdm``) that is also a
valid NumPy ``.npz`` file:

- ``jsdm.json``: the manifest. ``format`` ("jsdm-fit"), ``format_version``,
  the jsdm version that wrote it, and a description of every object needed to
  rebuild the fit: the :class:`~jsdm.model.problem.Problem` (labels, terms,
  family name and link, number of latent variables, row effect, formula), the
  :class:`~jsdm.data.Community` tables (with their column dtypes, including
  categoricals with levels and order), the :class:`~jsdm.model.fit.FitState`
  (ELBO, gradient, convergence, iterations, message, time, start values,
  history) and the call's settings. ``terms`` lists the terms of the linear
  predictor (``Term.spec()`` of each, as ``parse_formula`` prints them); the
  problem's ``model_terms`` holds the same list and rebuilds them on loading.
- ``<path>.npy``: one NumPy array per numeric block (``problem/Y``,
  ``state/params/theta``, ...), written with ``allow_pickle=False``.

- ``checksums.json`` (format version 2): the SHA-256 and size of every other
  member (see :mod:`jsdm.results._archive`).

Everything can be read with a ZIP tool, any JSON reader and ``numpy.load``;
nothing is executed when loading. A file written by a newer format version
is refused with a :class:`~jsdm.exceptions.JSDMError`.

Versions
--------
3 (the terms architecture) stores the parameters by term (``Params`` fields), with
random row effects in the joint site covariance ``L`` (latent variables first).
Files of versions 1 and 2 are still read: their ``log_rho`` becomes the row
effect's entry of the joint factor (no covariance with the latent variables, which
is what those versions fitted, so the stored ELBO is reproduced exactly), their
terms are the classic ones from ``num_lv`` and ``row_effect``, and a stored
gradient whose packing changed (random row effects) is recomputed at the stored
estimates.

Integrity
---------
``save`` writes to a temporary file beside the target and renames it into
place, so an interrupted save leaves the earlier file intact. ``load`` checks
the sizes the archive declares against limits before decompressing anything
(``max_bytes``; the manifest at most :data:`MAX_MANIFEST_BYTES`), verifies
every member's checksum, rebuilds the fit, and then checks that it is
consistent: the arrays have the shapes the problem implies, and the ELBO
recomputed from the stored data and estimates (with the engine's public
:func:`jsdm.model.objective.evaluate`) equals the stored one. Whatever is
wrong, ``load`` raises one :class:`~jsdm.exceptions.JSDMError` that names the
file and the problem.
"""
import dataclasses
import datetime as _dt
import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..exceptions import DataWarning, JSDMError
from ._archive import read_archive, verify, write_archive

FORMAT = "jsdm-fit"
FORMAT_VERSION = 3           # 2: checksums.json with the SHA-256 of every member (issue 13)
#                              3: parameters stored by term; random row effects in the joint
#                                 site covariance L (issue 14)
MANIFEST = "jsdm.json"
MAX_MANIFEST_BYTES = 64 * 2**20
DEFAULT_MAX_BYTES = 2 * 2**30
ELBO_RTOL, ELBO_ATOL = 1e-8, 1e-6     # stored vs recomputed ELBO

__all__ = ["save", "load", "FORMAT_VERSION"]


# --- public API -----------------------------------------------------------------
def save(fit, path):
    """Save a fitted model to one open-format file (JSON manifest + NumPy arrays).

    Parameters
    ----------
    fit : GLLVMResults
        The fitted model (not modified).
    path : str or Path
        File to write (replaced if it exists). ``.jsdm`` is a good suffix.
        The file is written under a temporary name in the same folder and
        renamed at the end, so an interrupted save leaves an earlier file of
        that name intact.

    Returns
    -------
    Path
        The path written.

    See Also
    --------
    load : read the file back.
    """
    from .. import __version__

    path = Path(path)
    arrays = {}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "jsdm_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "summary": {"llf": _finite_or_str(fit.llf), "family": fit.family.name,
                    "link": fit.family.link, "num_lv": int(fit.num_lv)},
        "terms": [t.spec() for t in fit.problem.model_terms],
        "problem": _encode(fit.problem, "problem", arrays),
        "state": _encode(fit.state, "state", arrays),
        "settings": _encode(dict(fit.settings), "settings", arrays),
    }
    members = {MANIFEST: json.dumps(manifest, indent=1, allow_nan=False).encode("utf-8")}
    for key, arr in arrays.items():
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
        members[key + ".npy"] = buf.getvalue()
    return write_archive(path, members)


def load(path, *, max_bytes=DEFAULT_MAX_BYTES):
    """Load a fit saved with :func:`save` / ``fit.save(path)``.

    Parameters
    ----------
    path : str or Path
    max_bytes : int
        Largest total size the archive's members may inflate to (default
        2 GiB). Checked against the sizes the file declares before anything
        is decompressed; raise it for very large fits you trust.

    Returns
    -------
    GLLVMResults
        Same estimates, labels, data and settings as the saved fit; summary,
        plots, prediction and reports work as on the original.

    Raises
    ------
    JSDMError
        For every problem, with the file named: missing or not a jsdm fit;
        written by a newer format version; members larger than the limits;
        a damaged archive or a member whose checksum does not match; parts
        missing or of the wrong type; arrays whose shapes do not fit the
        problem; a stored ELBO that differs from the one recomputed from the
        stored data and estimates.
    """
    path = Path(path)
    stage = ["reading the file"]
    try:
        return _load(path, max_bytes, stage)
    except JSDMError as err:
        msg = str(err)
        raise JSDMError(msg if str(path) in msg else f"{str(path)!r}: {msg}") from None
    except Exception as err:        # whatever a damaged or altered file provokes
        raise JSDMError(f"{str(path)!r} could not be loaded: {type(err).__name__}: {err} (while "
                        f"{stage[0]}). The file is damaged, altered or not a jsdm fit; save the "
                        "fit again from its source.") from None


def _load(path, max_bytes, stage):
    from .fitted import GLLVMResults

    members, record = read_archive(path, max_bytes, {MANIFEST: MAX_MANIFEST_BYTES})
    stage[0] = "reading the manifest"
    try:
        manifest, version = _manifest(members, path)
    except Exception:
        if record is not None:          # a damaged member says more than the JSON error
            verify(members, record, path)
        raise
    if version >= 2:                    # version 1 files were written without checksums
        stage[0] = "verifying the checksums"
        verify(members, record, path)
    stage[0] = "reading the arrays"
    ctx = {"arrays": _arrays(members)}
    stage[0] = "rebuilding the fit"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        problem = _decode(manifest["problem"], ctx)
        _check_data_shapes(problem, path)
        ctx["problem"] = problem
        state = _decode(manifest["state"], ctx)
        if version < 3:
            state = _upgrade_state(problem, state)
        settings = _decode(manifest["settings"], ctx)
    if isinstance(settings, dict) and "cluster" in settings:     # fitted on a Dask cluster
        from .cluster import ClusterGLLVMResults
        fit = ClusterGLLVMResults(problem, state, settings)
    else:
        fit = GLLVMResults(problem, state, settings)
    stage[0] = "checking the fit's consistency"
    check_consistency(fit, path)
    return fit


def _manifest(members, path):
    """(manifest, format version) from the archive's members."""
    if MANIFEST not in members:
        raise JSDMError(f"{str(path)!r} is not a jsdm fit file (no {MANIFEST} inside); "
                        "save fits with fit.save(path)")
    manifest = json.loads(members[MANIFEST].decode("utf-8"))
    return manifest, _check_version(manifest, path)


def _arrays(members):
    """Every ``.npy`` member as an array (never pickled objects; no trailing bytes)."""
    out = {}
    for name, blob in members.items():
        if not name.endswith(".npy"):
            continue
        buf = io.BytesIO(blob)
        arr = np.lib.format.read_array(buf, allow_pickle=False)
        if buf.tell() != len(blob):
            raise JSDMError(f"member {name!r} has {len(blob) - buf.tell()} bytes after its array")
        out[name[:-4]] = arr
    return out


def _check_version(manifest, path):
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise JSDMError(f"{str(path)!r} is not a jsdm fit file (format is "
                        f"{manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                        f"expected {FORMAT!r})")
    version = manifest.get("format_version")
    if type(version) is not int or version < 1:         # True is an int to isinstance
        raise JSDMError(f"{str(path)!r} has an invalid format_version {version!r}; it must be a "
                        "whole number >= 1")
    if version > FORMAT_VERSION:
        raise JSDMError(
            f"{str(path)!r} was written with fit-file format version {version} by jsdm "
            f"{manifest.get('jsdm_version', '?')}; this jsdm reads format versions up to "
            f"{FORMAT_VERSION}. Upgrade jsdm (pip install -U jsdm) to load it.")
    return version


# --- consistency --------------------------------------------------------------------
def check_consistency(fit, path="the fit"):
    """Check that a (loaded) fit's parts agree with each other; raise JSDMError if not.

    The data arrays must have the shapes that the labels and terms imply, the
    estimates the shapes that the problem implies (they must survive the
    engine's pack/unpack unchanged), and the ELBO recomputed from the data and
    the estimates with :func:`jsdm.model.objective.evaluate` must equal the
    stored ``fit.llf`` (within 1e-6 + 1e-8 |llf|).
    """
    prob, state = fit.problem, fit.state
    _check_data_shapes(prob, path)          # again: check_consistency is also public
    if "cluster" in getattr(fit, "_settings", {}):
        _check_cluster_parts(fit, path)     # its data stayed on the cluster: no ELBO to recompute
        return
    _check_state_shapes(prob, state, path)
    stored = float(state.value)
    recomputed = _recomputed_elbo(prob, state.params)
    same = (stored == recomputed or (math.isnan(stored) and math.isnan(recomputed))
            or abs(stored - recomputed) <= ELBO_ATOL + ELBO_RTOL * abs(stored))
    if not same:
        raise JSDMError(
            f"{str(path)!r} is inconsistent: its stored ELBO ({stored:.10g}) differs from the ELBO "
            f"recomputed from its data and estimates ({recomputed:.10g}). The file was damaged "
            "or edited; do not use it, and save the fit again from its source.")


def _check_cluster_parts(fit, path):
    """A saved cluster fit: site scores and curvature of the shapes its labels imply."""
    from ..model.distributed import global_slots

    info = fit._settings["cluster"]
    n, k = len(info["sites"]), int(fit.state.layout.n_model)
    for s in global_slots(fit.state.layout):
        v = getattr(fit.state.params, s.field, None)
        if np.shape(v) != s.shape or not np.isfinite(np.asarray(v, dtype=float)).all():
            raise JSDMError(f"{str(path)!r} is inconsistent: estimate {s.field!r} has shape "
                            f"{np.shape(v)}, the model needs {s.shape} finite values")
    if np.shape(fit.state.grad) != (k,):
        raise JSDMError(f"{str(path)!r} is inconsistent: the stored gradient has shape "
                        f"{np.shape(fit.state.grad)}, the model has {k} parameters")
    lv = np.asarray(info.get("lv"))
    negS = np.asarray(info.get("neg_schur"))
    if lv.shape != (n, fit.num_lv) or negS.shape != (k, k):
        raise JSDMError(f"{str(path)!r} is inconsistent: a cluster fit of {n} sites and {k} model "
                        f"parameters stores site scores of shape {lv.shape} and a curvature of "
                        f"shape {negS.shape}")


def _check_data_shapes(prob, path):
    n, m, p = len(prob.sites), len(prob.species), len(prob.terms)
    wanted = {"Y": (n, m), "X": (n, p)}
    wanted.update({k: (n, m) for k in ("offset", "trials") if getattr(prob, k) is not None})
    for name, shape in wanted.items():
        arr = getattr(prob, name)
        if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype.kind != "f":
            raise JSDMError(f"{str(path)!r} is inconsistent: problem {name} has shape "
                            f"{getattr(arr, 'shape', None)} (dtype {getattr(arr, 'dtype', None)}), "
                            f"but its {n} sites, {m} species and {p} terms need {shape} floats")
    W = np.asarray(prob.W)
    if np.broadcast_shapes(W.shape, (n, m)) != (n, m) or not np.isin(W, (0.0, 1.0)).all():
        raise JSDMError(f"{str(path)!r} is inconsistent: the mask of observed cells W has shape "
                        f"{W.shape} or values other than 0 and 1")
    com = prob.info.get("community")
    if com is not None and not (com.sites.equals(prob.sites) and com.species.equals(prob.species)):
        raise JSDMError(f"{str(path)!r} is inconsistent: the stored community's sites and "
                        "species are not those of the fitted problem")


def _check_state_shapes(prob, state, path):
    """Estimates must have the problem's shapes: the engine's pack -> unpack returns them intact."""
    from ..model.fit import make_layout

    layout = make_layout(prob)
    P = state.params
    try:
        Q = layout.unpack(layout.pack(P))
    except (ValueError, TypeError, AttributeError, IndexError) as err:
        raise JSDMError(f"{str(path)!r} is inconsistent: the estimates do not have the shapes "
                        f"of a {prob.n} sites x {prob.m} species model with {prob.p} terms and "
                        f"{prob.d} latent variables ({type(err).__name__}: {err})") from None
    for name in set(P.fields()) | set(Q.fields()):
        a, b = getattr(P, name, None), getattr(Q, name, None)
        if (a is None) != (b is None) or (a is not None and not (
                np.shape(a) == np.shape(b)
                and np.allclose(a, b, rtol=1e-12, atol=0.0, equal_nan=True))):
            raise JSDMError(f"{str(path)!r} is inconsistent: estimate {name!r} does not fit the "
                            "model (wrong shape, an entry outside the model's structure, or a "
                            "part the model does not have)")
    if np.shape(state.grad) != (layout.size,):
        raise JSDMError(f"{str(path)!r} is inconsistent: the stored gradient has shape "
                        f"{np.shape(state.grad)}, the model has {layout.size} parameters")


def _upgrade_state(prob, state):
    """A state read from a format version 1-2 file, in this version's packing.

    Its Params were converted on decoding (``Params(..., log_rho=...)``); the packed
    gradient is recomputed at them where the packing changed (random row effects).
    """
    from ..model.fit import make_layout
    from ..model.objective import evaluate

    layout = make_layout(prob)
    if not isinstance(state.params, _params_class()) or np.shape(state.grad) == (layout.size,):
        return state
    with np.errstate(all="ignore"):
        ev = evaluate(prob, state.params)
        grad = layout.pack_grad(ev.grad, state.params)
    return dataclasses.replace(state, grad=grad, layout=layout)


def _params_class():
    from ..model.params import Params
    return Params


def _recomputed_elbo(prob, P):
    from ..model.objective import evaluate

    with np.errstate(all="ignore"):
        return float(evaluate(prob, P).value)


# --- encoding ---------------------------------------------------------------------
def _finite_or_str(x):
    x = float(x)
    return x if math.isfinite(x) else repr(x)


def _scalar(value):
    """JSON description of a Python or NumPy scalar (non-finite floats as text)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return {"kind": "float", "value": repr(value)}
    return {"kind": "scalar", "value": value}


def _encode(value, key, arrays):
    """Describe ``value`` as JSON; numeric blocks go into ``arrays`` under ``key``."""
    from ..data import Community
    from ..families import Family
    from ..model.params import Layout, Params
    from ..model.terms import Term

    if value is None:
        return {"kind": "none"}
    if isinstance(value, (bool, int, float, str, np.generic)):
        return _scalar(value)
    if isinstance(value, np.ndarray):
        return _encode_array(value, key, arrays)
    if isinstance(value, pd.Index):
        return {"kind": "index", "name": _label(value.name), **_encode_values(value, key, arrays)}
    if isinstance(value, pd.DataFrame):
        return _encode_frame(value, key, arrays)
    if isinstance(value, Community):
        return {"kind": "community", **{t: _encode(getattr(value, t), f"{key}/{t}", arrays)
                                        for t in ("Y", "X", "traits")}}
    if isinstance(value, Family):
        return _encode_family(value, key, arrays)
    if isinstance(value, Layout):
        return {"kind": "layout"}
    if isinstance(value, Term):
        return {"kind": "term", "spec": value.spec()}
    if isinstance(value, Params):
        return {"kind": "params", "fields": {k: _encode(v, f"{key}/{k}", arrays)
                                             for k, v in value.fields().items()}}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"kind": "dataclass", "class": type(value).__name__,
                "fields": {f.name: _encode(getattr(value, f.name), f"{key}/{f.name}", arrays)
                           for f in dataclasses.fields(value)}}
    if isinstance(value, dict):
        return _encode_dict(value, key, arrays)
    if isinstance(value, (list, tuple)):
        return _encode_sequence(value, key, arrays)
    return {"kind": "dropped", "type": type(value).__name__}


def _put(arrays, key, arr):
    """Store one array (never an object array) and return its key."""
    arr = np.asarray(arr)
    if arr.dtype == object:
        raise JSDMError(f"cannot save {key!r}: it is an object array and jsdm never pickles")
    arrays[key] = arr
    return key


def _encode_array(value, key, arrays):
    return {"kind": "array", "array": _put(arrays, key, value)}


def _encode_dict(value, key, arrays):
    items = {k: _encode(v, f"{key}/{k}", arrays) for k, v in value.items() if isinstance(k, str)}
    return {"kind": "dict", "items": items}


def _numeric_rows(value):
    """True for a non-empty list of equal-length rows of numbers (e.g. an optimiser history)."""
    if not value or not all(isinstance(r, (list, tuple)) for r in value):
        return False
    if len({len(r) for r in value}) != 1:
        return False
    return all(isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
               for r in value for x in r)


def _encode_sequence(value, key, arrays):
    """Lists of numeric rows are stored column-wise (exact dtypes); others item by item."""
    is_tuple = isinstance(value, tuple)
    if _numeric_rows(value):
        cols = [_put(arrays, f"{key}/col{k}", [r[k] for r in value]) for k in range(len(value[0]))]
        return {"kind": "rows", "tuple": is_tuple, "row_tuple": isinstance(value[0], tuple),
                "columns": cols}
    if value and all(isinstance(x, (float, np.floating)) for x in value):
        return {"kind": "float_list", "tuple": is_tuple, "array": _put(arrays, key, np.asarray(value, float))}
    return {"kind": "list", "tuple": is_tuple,
            "items": [_encode(v, f"{key}/{i}", arrays) for i, v in enumerate(value)]}


def _encode_family(fam, key, arrays):
    extra = {k: v for k, v in vars(fam).items()
             if k != "link" and (v is None or isinstance(v, (bool, int, str))
                                 or (isinstance(v, float) and math.isfinite(v)))}
    # arrays bound to the data (ordinal: the categories each species uses)
    data = {k: _put(arrays, f"{key}/{k}", v) for k, v in vars(fam).items()
            if isinstance(v, np.ndarray) and v.dtype != object}
    out = {"kind": "family", "name": fam.name, "link": fam.link, "attributes": extra,
           "arrays": data}
    if getattr(fam, "members", None) is not None:          # a family per species
        out["species"] = [_label(sp) for sp in fam.species]
        out["members"] = [_encode_family(f, f"{key}/member{i}", arrays)
                          for i, f in enumerate(fam.members)]
        out["groups"] = [_encode_family(g["family"], f"{key}/group{i}", arrays)
                         for i, g in enumerate(fam.groups)]          # bound to their columns
        out["member_q"] = None if fam.member_q is None else [
            None if q is None else int(q) for q in fam.member_q]
    return out


def _encode_frame(df, key, arrays):
    """A DataFrame keeping dtypes: one 2-D block when all columns share a NumPy numeric
    dtype (response tables), else column by column (categoricals with levels and order)."""
    dtypes = set(df.dtypes)
    if df.shape[1] and len(dtypes) == 1 and isinstance(df.dtypes.iloc[0], np.dtype) \
            and df.dtypes.iloc[0].kind in "biuf":
        return {"kind": "frame", "block": _put(arrays, f"{key}/values", df.to_numpy()),
                "index": {"name": _label(df.index.name), **_encode_values(df.index, f"{key}/index", arrays)},
                "columns": {"name": _label(df.columns.name), **_encode_values(df.columns, f"{key}/columns", arrays)}}
    cols = [{"name": _label(df.columns[k]), **_encode_values(df.iloc[:, k], f"{key}/c{k}", arrays)}
            for k in range(df.shape[1])]
    return {"kind": "frame",
            "index": {"name": _label(df.index.name), **_encode_values(df.index, f"{key}/index", arrays)},
            "columns_name": _label(df.columns.name), "columns_dtype": str(df.columns.dtype),
            "columns": cols}


def _label(x):
    """A row/column label or an index name as a JSON value."""
    if isinstance(x, np.generic):
        x = x.item()
    if x is None or isinstance(x, (str, int, bool)):
        return x
    if isinstance(x, float) and math.isfinite(x):
        return x
    return str(x)


def _encode_values(values, key, arrays):
    """The values of a Series or Index and what is needed to rebuild their dtype."""
    dtype = values.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        codes = values.codes if isinstance(values, pd.Index) else values.cat.codes
        levels = _encode_values(dtype.categories, key + "_levels", arrays)
        return {"values": "categorical", "array": _put(arrays, key, np.asarray(codes)),
                "categories": levels, "ordered": bool(dtype.ordered)}
    if isinstance(dtype, np.dtype) and dtype.kind in "biufcmM":
        return {"values": "array", "dtype": str(dtype), "array": _put(arrays, key, np.asarray(values))}
    if isinstance(dtype, pd.api.extensions.ExtensionDtype) and dtype.kind in "biuf":
        arr = values.to_numpy(dtype=float, na_value=np.nan)
        return {"values": "masked", "dtype": str(dtype), "array": _put(arrays, key, arr)}
    items = [None if _is_missing(v) else _label(v) for v in values]
    return {"values": "list", "dtype": str(dtype), "items": items}


def _is_missing(v):
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


# --- decoding ---------------------------------------------------------------------
_DROP = object()


def _decode(meta, ctx):
    """Rebuild the object described by ``meta`` (arrays and context in ``ctx``)."""
    kind = meta["kind"]
    simple = {"none": lambda: None, "scalar": lambda: meta["value"],
              "float": lambda: float(meta["value"]), "dropped": lambda: _DROP,
              "layout": lambda: _layout(ctx), "array": lambda: ctx["arrays"][meta["array"]]}
    if kind in simple:
        return simple[kind]()
    decoders = {"term": _decode_term, "params": _decode_params, "index": _decode_index,
                "frame": _decode_frame, "community": _decode_community, "family": _decode_family,
                "dataclass": _decode_dataclass, "dict": _decode_dict, "rows": _decode_rows,
                "float_list": _decode_float_list, "list": _decode_list}
    if kind not in decoders:
        raise JSDMError(f"unknown entry kind {kind!r} in the fit file; was it written by a newer jsdm?")
    return decoders[kind](meta, ctx)


def _layout(ctx):
    from ..model.fit import make_layout
    return make_layout(ctx["problem"])


def _decode_values(meta, ctx):
    """Values with their original dtype (a Series; the caller makes an Index if needed)."""
    arrays, how = ctx["arrays"], meta["values"]
    if how == "categorical":
        levels = pd.Index(_decode_values(meta["categories"], ctx))
        codes = arrays[meta["array"]]
        return pd.Series(pd.Categorical.from_codes(codes, categories=levels, ordered=meta["ordered"]))
    if how == "array":
        return pd.Series(arrays[meta["array"]])
    if how == "masked":
        return pd.Series(arrays[meta["array"]]).astype(meta["dtype"])
    try:
        return pd.Series(meta["items"], dtype=meta["dtype"])
    except (TypeError, ValueError):
        return pd.Series(meta["items"], dtype=object)


def _decode_index(meta, ctx):
    return pd.Index(_decode_values(meta, ctx), name=meta["name"])


def _decode_frame(meta, ctx):
    index = _decode_index(meta["index"], ctx)
    if "block" in meta:
        return pd.DataFrame(ctx["arrays"][meta["block"]], index=index,
                            columns=_decode_index(meta["columns"], ctx))
    data = {k: _decode_values(c, ctx).set_axis(index) for k, c in enumerate(meta["columns"])}
    df = pd.DataFrame(data, index=index)
    names = [c["name"] for c in meta["columns"]]
    try:
        df.columns = pd.Index(names, dtype=meta["columns_dtype"], name=meta["columns_name"])
    except (TypeError, ValueError):
        df.columns = pd.Index(names, name=meta["columns_name"])
    return df


def _decode_community(meta, ctx):
    from ..data import Community
    Y, X, T = (_decode(meta[t], ctx) for t in ("Y", "X", "traits"))
    return Community(Y, X, T)


def _decode_family(meta, ctx):
    from ..families import get_family
    if "members" in meta:
        return _decode_mixed(meta, ctx)
    fam = get_family(meta["name"], link=meta["link"])
    for k, v in meta.get("attributes", {}).items():
        if getattr(fam, k, _DROP) != v:
            setattr(fam, k, v)
    for k, name in meta.get("arrays", {}).items():
        setattr(fam, k, np.array(ctx["arrays"][name]))
    return fam


def _decode_mixed(meta, ctx):
    """A family per species, bound to the saved species order, each group's family bound to
    its columns as saved, with the saved nuisance widths."""
    from ..families import Mixed

    members = [_decode_family(m, ctx) for m in meta["members"]]
    bound = Mixed(dict(zip(meta["species"], members))).bind(pd.Index(meta["species"]))
    for g, gm in zip(bound.groups, meta.get("groups", [])):
        g["family"] = _decode_family(gm, ctx)
    widths = meta.get("arrays", {}).get("widths")
    if widths is not None:
        bound.widths = np.asarray(ctx["arrays"][widths], dtype=int)
        bound.member_q = list(meta["member_q"])
    return bound


def _dataclasses():
    from ..model.fit import FitState
    from ..model.problem import Problem
    return {"Problem": Problem, "FitState": FitState}


def _decode_term(meta, ctx):
    from ..model.terms import make_term
    return make_term(meta["spec"])


def _decode_params(meta, ctx):
    """Params from their fields (format 3), or from the version 1-2 dataclass fields, where
    ``log_rho`` (random row effects) becomes the row entry of the joint factor L."""
    from ..model.params import Params

    fields = {k: _decode(v, ctx) for k, v in meta["fields"].items()}
    return Params(**{k: v for k, v in fields.items() if v is not _DROP})


def _decode_dataclass(meta, ctx):
    if meta["class"] == "Params":           # format versions 1-2: a dataclass with log_rho
        return _decode_params(meta, ctx)
    classes = _dataclasses()
    cls = classes.get(meta["class"])
    if cls is None:
        raise JSDMError(f"the fit file holds an unknown object {meta['class']!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: _decode(v, ctx) for k, v in meta["fields"].items() if k in known}
    kwargs = {k: v for k, v in kwargs.items() if v is not _DROP}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise JSDMError(f"the fit file lacks parts of {meta['class']} that this jsdm needs "
                        f"({err}); re-save it with a matching jsdm version") from None


def _decode_dict(meta, ctx):
    out = {k: _decode(v, ctx) for k, v in meta["items"].items()}
    return {k: v for k, v in out.items() if v is not _DROP}


def _decode_rows(meta, ctx):
    cols = [ctx["arrays"][k].tolist() for k in meta["columns"]]
    make = tuple if meta["row_tuple"] else list
    rows = [make(r) for r in zip(*cols)]
    return tuple(rows) if meta["tuple"] else rows


def _decode_float_list(meta, ctx):
    vals = ctx["arrays"][meta["array"]].tolist()
    return tuple(vals) if meta["tuple"] else vals


def _decode_list(meta, ctx):
    vals = [v for v in (_decode(m, ctx) for m in meta["items"]) if v is not _DROP]
    return tuple(vals) if meta["tuple"] else vals
