"""Atomic file writes, the output guard and content hashing: outputs either appear whole or not at all.

Every command checks its output with :func:`check_output` before it does any work: an output may
not be, contain or lie inside one of the job's inputs, it must be writable (its folder is a folder
this process may write in, or can be created in one), and ``--overwrite`` only replaces a previous
output of the same command. Output folders carry a marker file (:data:`MARKER`) naming the command
that wrote them; a folder without it is never deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import OutputConflictError, OutputExistsError, OutputNotWritableError

MARKER = ".pbip-output.json"  # in every output folder: {"kind": <command>, "written_by": ...}
ZARR_META = "zarr.json"
ZARR_MARKER = "pbip_output"  # the same mark in the root attributes of a zarr output (mark_output)

PathLike = str | os.PathLike
Inputs = Mapping[str, PathLike | None] | Iterable[PathLike | None]


def _read_umask() -> int:
    """The process umask (read once, at import, while nothing else creates files)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix or path.suffix or ".tmp", dir=path.parent
    )
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600: give the file the mode open() would
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


def read_json_object(
    path: PathLike, error: type[Exception], fix: str, required: Iterable[str] = ()
) -> dict[str, Any]:
    """Read a JSON file that must hold an object with the ``required`` keys.

    Args:
        path: the file.
        error: the exception class to raise (the project's error for that kind of file).
        fix: what the user can do, appended to every message.
        required: keys the object must have.

    Raises:
        error: the file cannot be read, is not JSON, is not an object, or lacks a required key;
            one line naming the file and ``fix``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise error(f"{path} is not readable JSON ({reason}); {fix}") from None
    if not isinstance(data, dict):
        kind = "null" if data is None else _JSON_TYPES.get(type(data), type(data).__name__)
        raise error(f"{path} holds a JSON {kind}, not an object; {fix}")
    missing = [k for k in required if k not in data]
    if missing:
        raise error(f"{path} lacks the key(s) {missing}; {fix}")
    return data


def json_default(obj: Any) -> Any:
    """``default=`` for :func:`json.dumps`: paths as strings, numpy scalars and arrays as lists."""
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


@contextlib.contextmanager
def atomic_dir(
    path: PathLike, overwrite: bool = False, kind: str | None = None, inputs: Inputs = ()
) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path``.

    Args:
        path: the folder to write.
        overwrite: replace an existing ``path``.
        kind: the command whose output ``path`` is: :func:`check_output` guards it first and the
            finished folder carries the :data:`MARKER` of ``kind``. None for a folder inside an
            output the caller has already checked (a checkpoint, a bank version).
        inputs: what the job reads (see :func:`check_output`); only used with ``kind``.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is false, or (with ``kind``) it is
            not a previous output of ``kind``.
        OutputConflictError: (with ``kind``) ``path`` is, contains or lies inside an input.
    """
    path = Path(path)
    if kind is not None:
        check_output(path, kind, inputs, overwrite=overwrite)
    elif path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path} already exists; choose another output or pass overwrite=True (--overwrite)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700: colleagues could not read the results
    try:
        yield tmp
        if kind is not None:
            mark_output(tmp, kind)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def check_writable(path: PathLike, overwrite: bool, inputs: Inputs = ()) -> Path:
    """Guard a single-file output (see :func:`check_output` with ``kind=None``); return it as a Path."""
    return check_output(path, None, inputs, overwrite=overwrite)


# output kinds that are not a command's name: how messages name the command that wrote them
KIND_NAMES = {"segment-cohort": "`pbip segment` cohort"}


def describe_kind(kind: str) -> str:
    """The command an output kind comes from, as messages name it (e.g. "`pbip train`")."""
    return KIND_NAMES.get(kind, f"`pbip {kind}`")


def check_output(
    path: PathLike,
    kind: str | None,
    inputs: Inputs = (),
    *,
    overwrite: bool = False,
    resume: bool = False,
) -> Path:
    """Refuse an output that would destroy or mix data, before any work is done; return it as a Path.

    Args:
        path: the output: a folder when ``kind`` is given, else a single file.
        kind: the command whose output folder ``path`` is (``"train"``, ``"segment"``, ...), as
            written in its :data:`MARKER`; None for a single-file output (CSV, GeoJSON, JSON, TIFF).
        inputs: every path the job reads (data set, bank, run or model folder, slide, images), as
            ``{role: path}`` (the role names it in the message) or plain paths; an opened data
            set, bank or slide stands for its ``root`` or ``path``; None is skipped.
        overwrite: an existing output may be replaced: a file that is not an input, or a folder that
            is empty or carries the marker of ``kind``.
        resume: an existing output is continued, not replaced: nothing is deleted, so a folder
            without a marker passes, but one marked by another command does not.

    Raises:
        OutputConflictError: ``path`` is, contains or lies inside one of ``inputs`` (symlinks resolved).
        OutputNotWritableError: ``path`` cannot be written: a folder on its way is a file, or its
            folder (or, for an existing output folder, the folder itself) is not writable.
        OutputExistsError: ``path`` exists and neither ``overwrite`` nor ``resume`` is given; or it
            exists and is not something this command may replace.
    """
    path = Path(path)
    _check_inputs(path, inputs)
    check_location(path)
    if not os.path.lexists(path) or (kind is not None and path.is_dir() and not _entries(path)):
        return path  # nothing there, or an empty folder: nothing to lose
    what = describe_kind(kind) if kind else "pbip"
    if kind is None and path.is_dir():
        raise OutputExistsError(
            f"{path} is a folder, but this output is a single file; refusing to replace the folder: "
            "give the path of a file"
        )
    if kind is not None and not path.is_dir():
        raise OutputExistsError(
            f"{path} is a file, not a previous {what} output folder; refusing to replace it: "
            "choose another output path"
        )
    found = output_kind(path) if kind is not None else None
    if resume:
        if found is not None and found != kind:
            raise OutputExistsError(
                f"{path} is a {describe_kind(found)} output, not a {what} one, so it cannot be continued; "
                "choose another output path"
            )
        return path
    if not overwrite:
        raise OutputExistsError(f"{path} already exists; choose another output or pass --overwrite")
    if kind is not None and found != kind:
        entries = _entries(path)
        shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
        whose = f"a {describe_kind(found)} output" if found else f"not a {what} output (it has no {MARKER})"
        raise OutputExistsError(
            f"{path} is {whose}; --overwrite would delete its {len(entries)} "
            f"{'entry' if len(entries) == 1 else 'entries'} ({shown}): "
            f"choose another output path, or delete the folder yourself if you mean to"
        )
    return path


def check_location(path: PathLike) -> None:
    """Refuse an output that could not be written, before the work that would produce it.

    The nearest existing folder on the way to ``path`` must be a folder this process may write
    in (missing folders below it are created when the output is written); an existing output
    folder must be writable too, as a resumed job writes into it.

    Raises:
        OutputNotWritableError: a path on the way is a file, or the folder is not writable.
    """
    path = Path(path)
    folder = Path(os.path.abspath(path)).parent
    while not os.path.exists(folder) and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputNotWritableError(
            f"cannot write {path}: {folder} is a file, not a folder; choose an output path whose "
            "folders are folders"
        )
    for where in (folder, path) if path.is_dir() else (folder,):
        if not os.access(where, os.W_OK | os.X_OK):
            raise OutputNotWritableError(
                f"cannot write {path}: no permission to write in {where} (read-only folder or file "
                "system); choose an output in a folder you can write to"
            )


def _entries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir()]


def _input_path(obj: Any) -> Path | None:
    """A path, or the folder/file an opened data set, bank or slide stands for (None: nothing on disk)."""
    if obj is None or isinstance(obj, str | os.PathLike):
        return None if obj is None else Path(obj)
    found = getattr(obj, "root", None) or getattr(obj, "path", None)
    return Path(found) if isinstance(found, str | os.PathLike) else None


def _check_inputs(path: Path, inputs: Inputs) -> None:
    if isinstance(inputs, str | os.PathLike):
        inputs = (inputs,)
    pairs = inputs.items() if isinstance(inputs, Mapping) else (("input", p) for p in inputs)
    out = path.resolve()
    for role, obj in pairs:
        given = _input_path(obj)
        if given is None:
            continue
        source = given.resolve()
        if out == source or (out.exists() and source.exists() and os.path.samefile(out, source)):
            where, fix = "is", "choose an output path that is not an input"
        elif source in out.parents:
            where, fix = "lies inside", f"choose an output path outside {given}"
        elif out in source.parents:
            where, fix = "contains", f"choose an output path that does not contain {given}"
        else:
            continue
        raise OutputConflictError(
            f"the output {path} {where} the {role} {given}; writing it would destroy or mix what the job "
            f"reads: {fix}"
        )


def output_kind(folder: PathLike) -> str | None:
    """The command named by the :data:`MARKER` of an output folder, or by the ``pbip_output``
    attribute of a zarr store's root (None without a readable one)."""
    try:
        return json.loads((Path(folder) / MARKER).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        pass
    try:
        return json.loads((Path(folder) / ZARR_META).read_text())["attributes"][ZARR_MARKER]["kind"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def mark_output(folder: PathLike, kind: str, in_zarr: bool = False) -> None:
    """Mark ``folder`` as the output of ``kind`` (kept when it already names ``kind``).

    Args:
        folder: the output folder.
        kind: the command that wrote it.
        in_zarr: write the mark into the ``pbip_output`` attribute of the zarr (format 3) store
            ``folder`` instead of a :data:`MARKER` file, so zarr finds no file that is not part of
            its hierarchy (it warns about each one).
    """
    from . import __version__

    if output_kind(folder) == kind:
        return
    mark = {"kind": kind, "written_by": f"napari-pbip {__version__}"}
    if not in_zarr:
        write_json(Path(folder) / MARKER, mark)
        return
    meta = json.loads((Path(folder) / ZARR_META).read_text())
    meta.setdefault("attributes", {})[ZARR_MARKER] = mark
    write_json(Path(folder) / ZARR_META, meta)


def clear_output(path: PathLike, kind: str, inputs: Inputs = ()) -> None:
    """Delete a previous output folder of ``kind`` so a command can write it again.

    The same guard as ``check_output(..., overwrite=True)`` runs first, so only an empty folder or
    one carrying the marker of ``kind`` is ever deleted.
    """
    path = check_output(path, kind, inputs, overwrite=True)
    if path.is_symlink():
        raise OutputExistsError(
            f"{path} is a symbolic link to {path.resolve()}; give the folder itself as the output"
        )
    if path.is_dir():
        shutil.rmtree(path)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()
