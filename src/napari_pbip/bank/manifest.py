"""The schema of ``bank.json``, checked whenever a manifest is read.

A bank folder may come from elsewhere (a colleague, a download) or be edited by hand, and its
manifest decides file names: member hashes name ``thumbs/<hash>.png`` and ``images/<hash>.png``,
versions name ``versions/<v>/``. :func:`validate_manifest` checks every key, type and value range
of format 1 so that the rest of the bank code can trust them, and a bad manifest stops with one
:class:`~napari_pbip.errors.BankError` line naming the key (``classes[0].clusters[1].members[2].hash``)
and the fix, never a ``KeyError`` later, nor a file written outside the bank.

Member image paths are either absolute (the source files ``pbip bank build`` and ``pbip bank add``
record, which may lie anywhere) or relative to the bank folder (copies of array members under
``images/``); a relative path must stay inside the bank.
"""

from __future__ import annotations

import math
import re
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import BankError

FORMAT = "napari-pbip-bank"
FORMAT_VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")

# The keys of each object in a format-1 manifest, in the order the bank writes them.
_TOP = (
    "format",
    "format_version",
    "version",
    "parent",
    "created",
    "edit",
    "settings",
    "encoder",
    "patch_size",
    "content_hash",
    "prototype_shape",
    "next_id",
    "classes",
)
_OPTIONAL_TOP = {"created", "patch_size"}
_ENCODER = ("name", "weights_id", "weights_hash", "feature_dim", "input_size")
_CLASS = ("name", "k", "clusters")
_CLUSTER = ("index", "members")
_MEMBER = ("id", "hash", "path", "distance", "selected", "locked", "source")
_OPTIONAL_MEMBER = {"path", "source"}


def is_sha256(value: Any) -> bool:
    """True for a hex SHA-256 as the bank writes it: 64 lowercase hexadecimal characters."""
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def check_hash(value: Any, what: str = "image hash") -> str:
    """``value`` when it is a hex SHA-256 (safe as a file name), else a :class:`BankError`."""
    if not is_sha256(value):
        raise BankError(
            f"{what} {_show(value)} is not a SHA-256 (64 lowercase hex characters); it cannot name a bank "
            "file: the bank is damaged, run `pbip bank repair BANK` or rebuild it"
        )
    return value


def validate_manifest(manifest: Any, path: Path, root: Path) -> dict[str, Any]:
    """Check a parsed ``bank.json`` against the format-1 schema; return it unchanged.

    Args:
        manifest: the parsed JSON.
        path: the file it came from (named in messages).
        root: the bank folder (relative member paths must stay inside it).

    Raises:
        BankError: one line naming the file, the key, the bad value, what was expected and the fix.
    """
    v = _Validator(path, root)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BankError(f"{path} is not a napari-pbip bank manifest (format {FORMAT!r} expected)")
    fv = manifest.get("format_version")
    if _is_int(fv) and fv > FORMAT_VERSION:
        raise BankError(
            f"{path} has bank format {fv}, newer than this napari-pbip reads ({FORMAT_VERSION}); "
            "upgrade napari-pbip"
        )
    v.keys(manifest, "", _TOP, _OPTIONAL_TOP)
    v.expect(_is_int(fv) and 1 <= fv, "format_version", fv, f"an integer 1..{FORMAT_VERSION}")
    version = manifest["version"]
    v.expect(_is_int(version) and version >= 1, "version", version, "an integer >= 1")
    parent = manifest["parent"]
    v.expect(
        parent is None or (_is_int(parent) and 1 <= parent < version),
        "parent",
        parent,
        f"null (the build) or an earlier version 1..{version - 1}",
    )
    v.expect(
        manifest.get("created") is None or isinstance(manifest["created"], str),
        "created",
        manifest.get("created"),
        "a date string",
    )
    v.expect(isinstance(manifest["edit"], dict), "edit", manifest["edit"], "an object (op, summary, ...)")
    _check_settings(v, manifest["settings"])
    _check_encoder(v, manifest["encoder"])
    size = manifest.get("patch_size")
    v.expect(size is None or (_is_int(size) and size >= 1), "patch_size", size, "null or an integer >= 1")
    v.expect(
        is_sha256(manifest["content_hash"]),
        "content_hash",
        manifest["content_hash"],
        "64 lowercase hex characters (a SHA-256)",
    )
    shape = manifest["prototype_shape"]
    v.expect(
        isinstance(shape, list) and len(shape) == 3 and all(_is_int(n) and n >= 0 for n in shape),
        "prototype_shape",
        shape,
        "[classes, Kmax, feature dim], three integers",
    )
    top = max(_check_classes(v, manifest["classes"], shape), default=-1)
    next_id = manifest["next_id"]
    v.expect(
        _is_int(next_id) and next_id > top, "next_id", next_id, f"an integer above every member id (> {top})"
    )
    return manifest


class _Validator:
    """Raises one-line BankErrors naming the manifest file and the key."""

    def __init__(self, path: Path, root: Path) -> None:
        self.path, self.root = path, root

    def fail(self, key: str, value: Any, expected: str) -> None:
        raise BankError(
            f"{self.path}: {key} is {_show(value)}; expected {expected}. The manifest is damaged or was "
            f"edited by hand: run `pbip bank repair {self.root}` to restore the newest intact version, "
            "or rebuild the bank"
        )

    def expect(self, ok: bool, key: str, value: Any, expected: str) -> None:
        if not ok:
            self.fail(key, value, expected)

    def keys(self, obj: Any, where: str, known: tuple[str, ...], optional: set[str] = frozenset()) -> None:
        """``obj`` is an object with every required key of ``known`` and no other key."""
        label = where or "the manifest"
        if not isinstance(obj, dict):
            self.fail(label, obj, f"an object with the keys {list(known)}")
        missing = [k for k in known if k not in obj and k not in optional]
        if missing:
            raise BankError(
                f"{self.path}: {label} lacks the key {missing[0]!r} (expected keys {list(known)}); the "
                f"manifest is damaged or was edited by hand: run `pbip bank repair {self.root}` to restore "
                "the newest intact version, or rebuild the bank"
            )
        unknown = sorted(set(obj) - set(known), key=str)
        if unknown:
            self.fail(
                f"{where + '.' if where else ''}{unknown[0]}",
                obj[unknown[0]],
                f"no such key (the keys of {label} are {list(known)})",
            )


def _check_settings(v: _Validator, settings: Any) -> None:
    from .settings import BankSettings

    if not isinstance(settings, dict):
        v.fail("settings", settings, "an object of BankSettings fields")
    try:
        BankSettings.from_dict(settings)
    except (ValueError, TypeError) as exc:  # SettingsError is a ValueError
        v.fail("settings", settings, f"valid BankSettings ({' '.join(str(exc).split())})")


def _check_encoder(v: _Validator, encoder: Any) -> None:
    v.keys(encoder, "encoder", _ENCODER)
    for key in ("name", "weights_id"):
        v.expect(
            isinstance(encoder[key], str) and (key != "name" or bool(encoder[key])),
            f"encoder.{key}",
            encoder[key],
            "a string",
        )
    v.expect(
        is_sha256(encoder["weights_hash"]),
        "encoder.weights_hash",
        encoder["weights_hash"],
        "64 lowercase hex characters (a SHA-256)",
    )
    for key in ("feature_dim", "input_size"):
        v.expect(
            _is_int(encoder[key]) and encoder[key] >= 1, f"encoder.{key}", encoder[key], "an integer >= 1"
        )


def _check_classes(v: _Validator, classes: Any, shape: list[int]) -> set[int]:
    """Check classes, sub-clusters and members; return every member id."""
    v.expect(isinstance(classes, list) and len(classes) >= 1, "classes", classes, "a non-empty list")
    v.expect(shape[0] == len(classes), "prototype_shape", shape, f"{len(classes)} classes first")
    ids: set[int] = set()
    names: set[str] = set()
    for i, cls in enumerate(classes):
        where = f"classes[{i}]"
        v.keys(cls, where, _CLASS)
        name, k, clusters = cls["name"], cls["k"], cls["clusters"]
        v.expect(
            isinstance(name, str) and bool(name) and name not in names,
            f"{where}.name",
            name,
            "a class name used once",
        )
        names.add(name)
        v.expect(_is_int(k) and 1 <= k <= shape[1], f"{where}.k", k, f"an integer 1..{shape[1]} (Kmax)")
        v.expect(
            isinstance(clusters, list) and len(clusters) == k,
            f"{where}.clusters",
            clusters,
            f"a list of k={k} sub-clusters",
        )
        for j, cluster in enumerate(clusters):
            at = f"{where}.clusters[{j}]"
            v.keys(cluster, at, _CLUSTER)
            v.expect(
                _is_int(cluster["index"]) and cluster["index"] == j, f"{at}.index", cluster["index"], str(j)
            )
            v.expect(isinstance(cluster["members"], list), f"{at}.members", cluster["members"], "a list")
            for n, member in enumerate(cluster["members"]):
                ids.add(_check_member(v, member, f"{at}.members[{n}]", ids))
    return ids


def _check_member(v: _Validator, m: Any, at: str, ids: set[int]) -> int:
    v.keys(m, at, _MEMBER, _OPTIONAL_MEMBER)
    v.expect(
        _is_int(m["id"]) and m["id"] >= 0 and m["id"] not in ids,
        f"{at}.id",
        m["id"],
        "an integer >= 0 used by no other member",
    )
    v.expect(
        is_sha256(m["hash"]), f"{at}.hash", m["hash"], "64 lowercase hex characters (a SHA-256 of the image)"
    )
    d = m["distance"]
    v.expect(_is_number(d) and math.isfinite(d), f"{at}.distance", d, "a finite number (cosine distance)")
    for key in ("selected", "locked"):
        v.expect(isinstance(m[key], bool), f"{at}.{key}", m[key], "true or false")
    path = m.get("path")
    v.expect(
        path is None or (isinstance(path, str) and bool(path) and "\x00" not in path),
        f"{at}.path",
        path,
        "null or a file path",
    )
    if path is not None and not Path(path).is_absolute():
        parts = PurePosixPath(path.replace("\\", "/")).parts
        v.expect(
            ".." not in parts,
            f"{at}.path",
            path,
            "an absolute path, or a path inside the bank (such as images/<hash>.png)",
        )
    v.expect(
        m.get("source") is None or isinstance(m["source"], dict),
        f"{at}.source",
        m.get("source"),
        "null or an object saying where the image came from",
    )
    return m["id"]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _show(value: Any, limit: int = 60) -> str:
    """A short one-line repr of a manifest value."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
