"""A ZIP archive of named members with checksums, size limits and atomic writes.

This layer knows nothing about fits: :mod:`jsdm.results.io` decides which
members exist (the manifest, one ``.npy`` per array) and hands them here as
bytes. What it guarantees, for any set of members:

- **checksums**: a member ``checksums.json`` records the SHA-256 and the size
  of every other member; reading verifies each one, so a changed byte
  anywhere in a member's content is found;
- **limits before reading**: the sizes that the ZIP directory declares are
  checked against limits (per member, in total, and a tighter one for named
  members such as the manifest) before anything is decompressed, and no
  member is ever read past its declared size, so a small file that would
  inflate to gigabytes (a "zip bomb") is refused at once;
- **atomic writes**: the archive is written to a temporary file in the
  target's folder, flushed to disk and renamed over the target, so a save
  that is interrupted (killed, disk full, power loss) leaves the earlier file
  as it was;
- **one error type**: every failure, whatever the cause (a damaged ZIP
  structure, a CRC error, a truncated file, an unreadable checksum list),
  raises :class:`~jsdm.exceptions.JSDMError` naming the file and the problem.
"""
import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

from ..exceptions import JSDMError

CHECKSUMS = "checksums.json"
ALGORITHM = "sha256"
MAX_CHECKSUMS_BYTES = 16 * 2**20
MAX_MEMBERS = 100_000
_CHUNK = 2**20


def _where(path):
    return repr(str(path))


# --- writing ----------------------------------------------------------------------------
def checksum_record(members):
    """The ``checksums.json`` text for ``members`` (name -> bytes)."""
    table = {name: {ALGORITHM: hashlib.sha256(data).hexdigest(), "size": len(data)}
             for name, data in members.items()}
    return json.dumps({"algorithm": ALGORITHM, "members": table}, indent=1, sort_keys=True)


def write_archive(path, members):
    """Write ``members`` (name -> bytes) and their checksums to ``path``, atomically.

    Parameters
    ----------
    path : Path
        Target file; replaced only once the new archive is complete on disk.
    members : dict of str -> bytes
        In the order they are written. ``checksums.json`` is added last.

    Raises
    ------
    JSDMError
        The folder is missing, the target is a folder, or writing failed (the
        message carries the system's reason); the target is then unchanged.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise JSDMError(f"cannot save to {_where(path)}: folder {_where(folder)} does not exist")
    if path.is_dir():
        raise JSDMError(f"cannot save to {_where(path)}: it is a folder; give a file name")
    if CHECKSUMS in members:
        raise JSDMError(f"a member may not be called {CHECKSUMS!r}")
    record = checksum_record(members).encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for name, data in members.items():
                    zf.writestr(name, data)
                zf.writestr(CHECKSUMS, record)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise JSDMError(f"cannot save to {_where(path)}: {exc.strerror or exc}; the "
                            "earlier file (if any) is unchanged") from None
        raise
    _sync_folder(folder)
    return path


def _mode_for(path):
    """Permissions of the file being replaced, else the usual ones under the umask."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _sync_folder(folder):
    """Flush the folder entry of the rename to disk where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- reading ----------------------------------------------------------------------------
def read_archive(path, max_bytes, limits=None):
    """Read every member of the archive at ``path``, checking the declared sizes first.

    Parameters
    ----------
    path : Path
    max_bytes : int
        Limit on the total uncompressed size of all members (and so on each).
    limits : dict of str -> int, optional
        Tighter limits for named members (e.g. the manifest).

    Returns
    -------
    (dict of str -> bytes, bytes or None)
        The members (without ``checksums.json``) and the checksum record (None
        when the archive has none); check them with :func:`verify`.

    Raises
    ------
    JSDMError
        Anything wrong, named with the file.
    """
    path = Path(path)
    if not path.is_file():
        where = "a folder, not a file" if path.is_dir() else "not found"
        raise JSDMError(f"saved fit {_where(path)} is {where}; check the path")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = _checked_infos(zf, path, max_bytes, dict(limits or {}))
            data = {info.filename: _read_member(zf, info, path) for info in infos}
    except JSDMError:
        raise
    except Exception as err:        # zipfile, zlib, struct, OSError, MemoryError, ...
        raise JSDMError(f"{_where(path)} is not a readable jsdm fit file ({type(err).__name__}: "
                        f"{err}); it may be damaged or not a fit. Save fits with "
                        "fit.save(path).") from None
    return data, data.pop(CHECKSUMS, None)


def _checked_infos(zf, path, max_bytes, limits):
    """The archive's members, after checking names, encryption and declared sizes."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise JSDMError(f"{_where(path)} has {len(infos)} members (limit {MAX_MEMBERS}); it is "
                        "not a jsdm fit file")
    limits.setdefault(CHECKSUMS, MAX_CHECKSUMS_BYTES)
    names, total = set(), 0
    for info in infos:
        if info.filename in names:
            raise JSDMError(f"{_where(path)} holds the member {info.filename!r} twice; the "
                            "file is damaged or was altered")
        names.add(info.filename)
        if info.flag_bits & 0x1:
            raise JSDMError(f"{_where(path)}: member {info.filename!r} is encrypted; jsdm "
                            "fit files never are")
        cap = min(limits.get(info.filename, max_bytes), max_bytes)
        if info.file_size > cap:
            raise JSDMError(
                f"{_where(path)}: member {info.filename!r} would inflate to {info.file_size:,} "
                f"bytes, above the limit of {cap:,} bytes (the file holds "
                f"{info.compress_size:,} compressed bytes). It was not read. If you trust the "
                "file, load it with a larger max_bytes=.")
        total += info.file_size
    if total > max_bytes:
        raise JSDMError(f"{_where(path)}: its members would inflate to {total:,} bytes in all, "
                        f"above the limit of {max_bytes:,} bytes; nothing was read. If you trust "
                        "the file, load it with a larger max_bytes=.")
    return infos


def _read_member(zf, info, path):
    """The bytes of one member, never more than its declared size (CRC checked by zipfile)."""
    out = bytearray()
    with zf.open(info) as fh:
        while True:
            chunk = fh.read(min(_CHUNK, info.file_size + 1 - len(out)))
            if not chunk:
                break
            out += chunk
            if len(out) > info.file_size:
                raise JSDMError(f"{_where(path)}: member {info.filename!r} holds more than its "
                                f"declared {info.file_size:,} bytes; the file is damaged")
    if len(out) != info.file_size:
        raise JSDMError(f"{_where(path)}: member {info.filename!r} holds {len(out):,} bytes, not "
                        f"the declared {info.file_size:,}; the file is damaged")
    return bytes(out)


def verify(data, record, path):
    """Compare every member with the recorded checksums (names, sizes, SHA-256); raise if any differ."""
    if record is None:
        raise JSDMError(f"{_where(path)} has no {CHECKSUMS} member, so its content cannot be "
                        "verified; the file is damaged or was not written by fit.save().")
    try:
        table = json.loads(record.decode("utf-8"))["members"]
        expected = {str(k): (int(v["size"]), str(v[ALGORITHM])) for k, v in table.items()}
    except Exception as err:
        raise JSDMError(f"{_where(path)}: its {CHECKSUMS} is unreadable ({type(err).__name__}: "
                        f"{err}); the file is damaged") from None
    missing = sorted(set(expected) - set(data))
    extra = sorted(set(data) - set(expected))
    if missing or extra:
        raise JSDMError(f"{_where(path)}: its members do not match its checksum list (missing: "
                        f"{missing[:5]}, not listed: {extra[:5]}); the file is damaged or was "
                        "altered")
    bad = [name for name, blob in data.items()
           if len(blob) != expected[name][0]
           or hashlib.sha256(blob).hexdigest() != expected[name][1]]
    if bad:
        raise JSDMError(f"{_where(path)}: the content of {len(bad)} member(s) does not match "
                        f"its checksum ({', '.join(repr(b) for b in bad[:5])}); the file is "
                        "damaged or was altered after it was saved. Save the fit again from "
                        "its source.")
