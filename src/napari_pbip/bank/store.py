"""The bank on disk: versioned, atomically written, readable by people and checked on load.

Layout of a bank folder::

    BANK/bank.json                      the current version's manifest (a copy of versions/<v>/bank.json)
    BANK/settings.json                  the BankSettings it was built with
    BANK/report.json                    what the build kept, skipped and why
    BANK/versions/000001/bank.json      manifest of version 1 (the build); later edits add 000002, ...
    BANK/versions/000001/prototypes.safetensors   prototypes (N, Kmax, d), valid (N, Kmax), centres
    BANK/features/*.safetensors         feature cache by image content hash (shared by all versions)
    BANK/thumbs/<hash>.png              member thumbnails; BANK/images/<hash>.png pixels of array members

A manifest holds the format, version and parent version, the edit that made it, the settings,
the encoder (name, weights id, weights hash, feature dim, input size), the classes with their
sub-clusters and members (id, image path or stored copy, source, content hash, cosine distance
to the sub-cluster centre, selected and locked flags) and ``content_hash``, a hash of the
prototypes and settings that :func:`open_bank` verifies.

A member is an image of a class's pool. The *selected* members of a sub-cluster (the N_K nearest
its centre after clustering, plus images added, moved or locked by hand) make its prototype: the
mean of their encoder features (paper, stage 0). A sub-cluster without selected members has no
prototype and is marked invalid in the validity mask.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .. import _atomic
from ..errors import BankError
from . import media
from .cache import FeatureCache
from .manifest import FORMAT, FORMAT_VERSION, validate_manifest
from .settings import BankSettings

MANIFEST = "bank.json"
TENSORS = "prototypes.safetensors"
VERSIONS = "versions"
FEATURES = "features"


@dataclasses.dataclass(frozen=True)
class Member:
    """One image of a class's pool.

    Attributes:
        id: stable identifier, unique within the bank across versions.
        class_name: the class it belongs to.
        cluster: its sub-cluster index within the class.
        hash: content hash of its pixels (keys the feature cache and thumbnails).
        distance: cosine distance ``1 - cos`` of its features to the sub-cluster centre.
        selected: whether it contributes to the sub-cluster's prototype.
        locked: locked members are never dropped by a re-cluster nor removed.
        path: the image file (absolute), or ``images/<hash>.png`` inside the bank for arrays.
        source: for arrays, where they came from (e.g. slide and coordinates), else None.
    """

    id: int
    class_name: str
    cluster: int
    hash: str
    distance: float
    selected: bool = True
    locked: bool = False
    path: str | None = None
    source: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The manifest entry (class and cluster are given by where it is listed)."""
        out = {
            "id": self.id,
            "hash": self.hash,
            "path": self.path,
            "distance": round(float(self.distance), 6),
        }
        out.update(selected=self.selected, locked=self.locked)
        if self.source is not None:
            out["source"] = self.source
        return out


@dataclasses.dataclass(frozen=True)
class Draft:
    """The content of a version to be written: classes, their centres and all members."""

    classes: tuple[str, ...]
    centres: tuple[np.ndarray, ...]  # per class, (k_i, d) unit vectors
    members: tuple[Member, ...]


class _Shared:
    """State shared by the Bank objects of one folder: the feature cache and a loaded encoder."""

    def __init__(self, cache: FeatureCache) -> None:
        self.cache = cache
        self.encoder: Any = None
        self.device: Any = None


class Bank:
    """One version of a bank folder (open with :func:`open_bank`; edits return new ``Bank`` objects)."""

    def __init__(self, root: Path, manifest: dict[str, Any], tensors: dict[str, np.ndarray], shared: _Shared):
        self.root = Path(root)
        self.manifest = manifest
        self._tensors = tensors
        self._shared = shared
        self._members = tuple(_parse_members(manifest))
        self._by_id = {m.id: m for m in self._members}

    def __repr__(self) -> str:
        ks = ", ".join(f"{c}: {k}" for c, k in zip(self.classes, self.ks, strict=True))
        return f"Bank({str(self.root)!r}, version {self.version}, encoder {self.encoder_name!r}, K {{{ks}}})"

    @property
    def version(self) -> int:
        """The version number of this state (1 is the build)."""
        return int(self.manifest["version"])

    @property
    def parent(self) -> int | None:
        """The version this one was made from (None for the build)."""
        return self.manifest.get("parent")

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in prototype order."""
        return tuple(c["name"] for c in self.manifest["classes"])

    @property
    def ks(self) -> tuple[int, ...]:
        """Sub-clusters per class (may differ after a re-cluster)."""
        return tuple(int(c["k"]) for c in self.manifest["classes"])

    @property
    def encoder_name(self) -> str:
        """Name of the encoder that made the features."""
        return str(self.manifest["encoder"]["name"])

    @property
    def encoder_record(self) -> dict[str, Any]:
        """Encoder name, weights id and hash, feature dim and input size."""
        return dict(self.manifest["encoder"])

    @property
    def content_hash(self) -> str:
        """Hash of this version's prototypes, validity mask, classes and settings."""
        return str(self.manifest["content_hash"])

    @property
    def settings(self) -> BankSettings:
        """The settings the bank was built with."""
        return BankSettings.from_dict(self.manifest["settings"])

    @property
    def patch_size(self) -> int | None:
        """The bank's reference patch side in pixels."""
        return self.manifest.get("patch_size")

    @property
    def last_edit(self) -> dict[str, Any]:
        """The edit that made this version (``op`` and its details, incl. skipped images)."""
        return dict(self.manifest.get("edit", {}))

    @property
    def cache(self) -> FeatureCache:
        """The bank's feature cache."""
        return self._shared.cache

    def members(
        self, class_name: str | None = None, cluster: int | None = None, selected: bool | None = None
    ) -> list[Member]:
        """Members, optionally of one class, one sub-cluster, and only (un)selected ones."""
        if class_name is not None:
            self.class_index(class_name)
        return [
            m
            for m in self._members
            if (class_name is None or m.class_name == class_name)
            and (cluster is None or m.cluster == cluster)
            and (selected is None or m.selected == selected)
        ]

    def member(self, member_id: int) -> Member:
        """The member with ``member_id``.

        Raises:
            BankError: no such member in this version.
        """
        try:
            return self._by_id[int(member_id)]
        except (KeyError, ValueError, TypeError):
            raise BankError(
                f"member id {member_id!r} is not in bank {self.root} version {self.version}; "
                f"ids run {min(self._by_id, default=0)}..{max(self._by_id, default=0)} (see `pbip bank members`)"
            ) from None

    def class_index(self, class_name: str) -> int:
        """Index of ``class_name``; raises BankError listing the classes when unknown."""
        try:
            return self.classes.index(class_name)
        except ValueError:
            raise BankError(
                f"class {class_name!r} is not in this bank; its classes are {list(self.classes)}"
            ) from None

    def prototype_tensor(self) -> tuple[np.ndarray, np.ndarray]:
        """Prototypes ``(N, Kmax, d)`` float32 and validity mask ``(N, Kmax)`` bool."""
        return self._tensors["prototypes"].copy(), self._tensors["valid"].astype(bool)

    def centres(self, class_name: str) -> np.ndarray:
        """The unit sub-cluster centres ``(k, d)`` of ``class_name``."""
        i = self.class_index(class_name)
        return self._tensors["centres"][i, : self.ks[i]].copy()

    def features(self, member_ids: list[int]) -> np.ndarray:
        """Cached encoder features ``(n, d)`` of the given members."""
        return self.cache.get([self.member(i).hash for i in member_ids])

    def image_file(self, member_id: int) -> Path:
        """The image file of a member: its source file (an absolute path, anywhere), or the copy kept
        in the bank (a path relative to the bank folder, inside it: checked on load)."""
        path = Path(self.member(member_id).path or "")
        return path if path.is_absolute() else self.root / path

    def image(self, member_id: int) -> np.ndarray:
        """The member's full image, RGB uint8.

        Raises:
            BankError: the image file is missing or unreadable.
        """
        from ..data.images import read_rgb
        from ..errors import PbipError

        path = self.image_file(member_id)
        try:
            return read_rgb(path)
        except (PbipError, OSError) as exc:
            m = self.member(member_id)
            raise BankError(
                f"member {m.id} of class {m.class_name!r}: its image {path} cannot be read ({exc}); restore "
                f"the file, or remove the member (`pbip bank remove {self.root} {m.id}`)"
            ) from None

    def thumbnail_path(self, member_id: int) -> Path:
        """The member's thumbnail PNG, written from its image when missing."""
        m = self.member(member_id)
        path = media.thumb_path(self.root, m.hash)
        if not path.exists():
            media.write_thumbnail(self.root, m.hash, self.image(member_id), self.settings.thumb_size)
        return path

    def thumbnail(self, member_id: int) -> np.ndarray:
        """The member's thumbnail, RGB uint8 ``(s, s, 3)``."""
        from ..data.images import read_rgb

        return read_rgb(self.thumbnail_path(member_id))

    def encoder(self, device: str = "auto", encoder: Any = None) -> Any:
        """The bank's encoder (loaded once per folder), checked against the recorded weights hash.

        Args:
            device: torch device for a freshly loaded encoder.
            encoder: use this module instead of loading one by name (it is checked, then kept).

        Raises:
            BankError: the encoder's weights differ from those the bank was built with.
        """
        from .encode import check_encoder, load_encoder

        shared = self._shared
        if encoder is not None and encoder is not shared.encoder:
            check_encoder(self.encoder_record, encoder, self.encoder_name)
            shared.encoder = encoder
        elif shared.encoder is None or (device != "auto" and device != shared.device):
            loaded = load_encoder(self.encoder_name, device)
            check_encoder(self.encoder_record, loaded, self.encoder_name)
            shared.encoder, shared.device = loaded, device
        return shared.encoder

    def history(self) -> list[dict[str, Any]]:
        """Every version in the folder: version, parent, edit, created, and which one is current."""
        out = []
        for folder in sorted((self.root / VERSIONS).glob("[0-9]*")):
            try:
                m = _read_manifest(folder / MANIFEST, self.root)
            except BankError:
                continue  # a damaged version is left out of the history (`pbip bank repair` skips it too)
            edit = m.get("edit", {})
            out.append(
                {
                    "version": m["version"],
                    "parent": m.get("parent"),
                    "op": edit.get("op", "?"),
                    "summary": edit.get("summary", ""),
                    "created": m.get("created"),
                    "current": m["version"] == self.version,
                }
            )
        return out


def open_bank(path: str | os.PathLike) -> Bank:
    """Open the current version of the bank folder ``path``.

    Raises:
        BankError: the folder is not a bank, or its files are damaged or inconsistent.
    """
    root = Path(path)
    manifest = _read_manifest(root / MANIFEST, root)
    return _open(root, manifest, _Shared(FeatureCache(root / FEATURES, manifest["encoder"]["weights_hash"])))


def open_version(path: str | os.PathLike, version: int) -> Bank:
    """Open ``versions/<version>`` of a bank folder as it was written, whatever ``bank.json`` says.

    Raises:
        BankError: the version folder is missing, damaged or inconsistent.
    """
    root = Path(path)
    manifest = _read_manifest(_version_dir(root, version) / MANIFEST, root)
    if manifest["version"] != version:
        raise BankError(
            f"{_version_dir(root, version) / MANIFEST} says version {manifest['version']}, not {version}; "
            "the folder was renamed or damaged"
        )
    return _open(root, manifest, _Shared(FeatureCache(root / FEATURES, manifest["encoder"]["weights_hash"])))


def _open(root: Path, manifest: dict[str, Any], shared: _Shared) -> Bank:
    tensors = _read_tensors(root, int(manifest["version"]))
    shape = tuple(manifest["prototype_shape"])
    expected = {"prototypes": shape, "valid": shape[:2], "centres": shape}
    found = {k: tuple(tensors[k].shape) if k in tensors else None for k in expected}
    if found != expected:
        raise BankError(
            f"bank {root} version {manifest['version']}: {TENSORS} holds {found}, but bank.json describes "
            f"{expected}; the files were changed by hand or damaged: run `pbip bank repair {root}` or rebuild"
        )
    bank = Bank(root, manifest, tensors, shared)
    _verify(bank)
    return bank


def _read_manifest(path: Path, root: Path) -> dict[str, Any]:
    """Read and check a manifest (see :mod:`.manifest`)."""
    if not path.is_file():
        raise BankError(
            f"{root} is not an image bank (no {MANIFEST}); build one with `pbip bank build --dataset DIR --out {root}`"
            if path.parent == root
            else f"bank {root} lacks {path}; the folder is incomplete: run `pbip bank repair {root}` or rebuild"
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BankError(
            f"{path} is not valid JSON ({exc}); run `pbip bank repair {root}` to restore the newest intact "
            "version, or rebuild the bank"
        ) from None
    except OSError as exc:
        raise BankError(f"{path} cannot be read ({exc.strerror or exc}); check its permissions") from None
    return validate_manifest(manifest, path, root)


def _version_dir(root: Path, version: int) -> Path:
    return root / VERSIONS / f"{version:06d}"


def _read_tensors(root: Path, version: int) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    path = _version_dir(root, version) / TENSORS
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise BankError(
            f"bank {root} version {version} lacks {path.name}; the folder is incomplete: run "
            f"`pbip bank repair {root}` or rebuild the bank"
        ) from None
    except Exception as exc:  # safetensors raises several types for damaged files
        raise BankError(
            f"cannot read {path} ({exc}); run `pbip bank repair {root}` or rebuild the bank"
        ) from exc


def _verify(bank: Bank) -> None:
    protos, valid = bank.prototype_tensor()
    expected = content_hash(protos, valid, bank.classes, bank.manifest["settings"])
    if expected != bank.content_hash:
        raise BankError(
            f"bank {bank.root} version {bank.version}: prototypes do not match bank.json (hash {expected[:12]} vs "
            f"{bank.content_hash[:12]}); the files were changed by hand or damaged: run `pbip bank repair {bank.root}` or rebuild"
        )


def content_hash(prototypes: np.ndarray, valid: np.ndarray, classes: tuple[str, ...], settings: dict) -> str:
    """Hex SHA-256 of prototypes, validity mask, class names and settings."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(prototypes, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(valid, dtype=np.uint8).tobytes())
    h.update(json.dumps([list(classes), settings], sort_keys=True).encode())
    return h.hexdigest()


def compute_prototypes(draft: Draft, cache: FeatureCache) -> dict[str, np.ndarray]:
    """Prototype, validity and centre tensors of ``draft``: each prototype is the mean feature of
    the selected members of its sub-cluster."""
    d = next((c.shape[1] for c in draft.centres if c.size), 0)
    kmax = max(c.shape[0] for c in draft.centres)
    n = len(draft.classes)
    protos = np.zeros((n, kmax, d), np.float32)
    valid = np.zeros((n, kmax), np.uint8)
    centres = np.zeros((n, kmax, d), np.float32)
    for i, name in enumerate(draft.classes):
        centres[i, : draft.centres[i].shape[0]] = draft.centres[i]
        for k in range(draft.centres[i].shape[0]):
            hashes = [m.hash for m in draft.members if m.class_name == name and m.cluster == k and m.selected]
            if hashes:
                protos[i, k] = cache.get(hashes).mean(axis=0)
                valid[i, k] = 1
    return {"prototypes": protos, "valid": valid, "centres": centres}


def make_manifest(
    draft: Draft,
    tensors: dict[str, np.ndarray],
    base: dict[str, Any],
    version: int,
    parent: int | None,
    edit: dict,
) -> dict[str, Any]:
    """The manifest of a new version; ``base`` supplies settings, encoder, patch size and next id."""
    classes = []
    for i, name in enumerate(draft.classes):
        clusters = []
        for k in range(draft.centres[i].shape[0]):
            ms = sorted(
                (m for m in draft.members if m.class_name == name and m.cluster == k),
                key=lambda m: (m.distance, m.id),
            )
            clusters.append({"index": k, "members": [m.to_json() for m in ms]})
        classes.append({"name": name, "k": int(draft.centres[i].shape[0]), "clusters": clusters})
    ids = [m.id for m in draft.members]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": version,
        "parent": parent,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "edit": edit,
        "settings": base["settings"],
        "encoder": base["encoder"],
        "patch_size": base.get("patch_size"),
        "content_hash": content_hash(
            tensors["prototypes"], tensors["valid"], draft.classes, base["settings"]
        ),
        "prototype_shape": list(tensors["prototypes"].shape),
        "next_id": max([int(base.get("next_id", 0)), *(i + 1 for i in ids)]),
        "classes": classes,
    }


def write_version(root: Path, manifest: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
    """Write ``versions/<v>/`` (manifest and tensors) as one atomic folder."""
    from safetensors.numpy import save_file

    with _atomic.atomic_dir(_version_dir(root, int(manifest["version"]))) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp / TENSORS))
        _atomic.write_json(tmp / MANIFEST, manifest)


def commit(bank: Bank, draft: Draft, edit: dict[str, Any]) -> Bank:
    """Write ``draft`` as a new version made from ``bank`` and make it current.

    The version folder is written whole before ``bank.json`` is switched to it, so a failure at
    any point leaves the previous version current and intact.

    Raises:
        BankError: ``bank`` is no longer the current version on disk, or a class would be left
            without any selected member.
    """
    check_current(bank)
    empty = [c for c in draft.classes if not any(m.selected and m.class_name == c for m in draft.members)]
    if empty:
        raise BankError(
            f"this edit would leave class(es) {empty} without any selected image, so without prototypes; "
            "keep at least one image per class (add images first, or remove fewer)"
        )
    tensors = compute_prototypes(draft, bank.cache)
    version = next_version(bank.root)
    manifest = make_manifest(draft, tensors, bank.manifest, version, bank.version, edit)
    write_version(bank.root, manifest, tensors)
    _atomic.write_json(bank.root / MANIFEST, manifest)
    return Bank(bank.root, manifest, tensors, bank._shared)


def checkout(bank: Bank, version: int) -> Bank:
    """Make an existing ``version`` current again (used by undo); returns it."""
    check_current(bank)
    manifest = _read_manifest(_version_dir(bank.root, version) / MANIFEST, bank.root)
    new = _open(bank.root, manifest, bank._shared)
    _atomic.write_json(bank.root / MANIFEST, manifest)
    return new


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    """Make ``manifest`` (already written under ``versions/``) the current ``bank.json``, atomically."""
    _atomic.write_json(root / MANIFEST, manifest)


def check_current(bank: Bank) -> None:
    """Raise BankError when ``bank`` is not the version currently on disk (someone else edited it)."""
    on_disk = _read_manifest(bank.root / MANIFEST, bank.root)
    if int(on_disk["version"]) != bank.version:
        raise BankError(
            f"bank {bank.root} is now at version {on_disk['version']}, but this edit starts from version "
            f"{bank.version}; reopen the bank (open_bank) and repeat the edit"
        )


def next_version(root: Path) -> int:
    """One more than the highest version folder present."""
    return max(version_numbers(root), default=0) + 1


def version_numbers(root: Path) -> list[int]:
    """The numbers of the version folders present, in ascending order."""
    return sorted(int(p.name) for p in (root / VERSIONS).glob("[0-9]*") if p.name.isdigit())


def draft_of(bank: Bank) -> Draft:
    """The editable content of ``bank``: classes, centres and members."""
    return Draft(bank.classes, tuple(bank.centres(c) for c in bank.classes), tuple(bank.members()))


def _parse_members(manifest: dict[str, Any]) -> list[Member]:
    out = []
    for cls in manifest["classes"]:
        for cluster in cls["clusters"]:
            for m in cluster["members"]:
                out.append(
                    Member(
                        id=int(m["id"]),
                        class_name=cls["name"],
                        cluster=int(cluster["index"]),
                        hash=m["hash"],
                        distance=float(m["distance"]),
                        selected=bool(m["selected"]),
                        locked=bool(m["locked"]),
                        path=m.get("path"),
                        source=m.get("source"),
                    )
                )
    return out
