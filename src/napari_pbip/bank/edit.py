"""Edits of a bank: add, remove, move, lock, re-cluster, undo.

Every edit starts from a :class:`~.store.Bank` (which must be the version current on disk),
writes a new version atomically and returns it; prototypes are recomputed from the cached
features, so only images never seen before are encoded. A failed edit raises
:class:`~napari_pbip.errors.BankError` and leaves the previous version current.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BankError
from ..events import Job, Progress, run
from . import eligibility as el
from . import media, store
from .cache import image_hash
from .encode import ENCODE_STAGE, encode
from .kmeans import normalise, select_nearest, spherical_kmeans

Item = np.ndarray | str | os.PathLike


def add_images_job(
    bank: store.Bank,
    class_name: str,
    items: Sequence[Item],
    sources: Sequence[dict[str, Any] | None] | None = None,
    cluster: int | None = None,
    device: str = "auto",
    encoder: Any = None,
) -> Job[store.Bank]:
    """Add image files or RGB arrays to ``class_name`` (a generator job; see :func:`add_images`)."""
    ci = bank.class_index(class_name)
    _check_cluster(bank, ci, cluster)
    if sources is not None and len(sources) != len(items):
        raise BankError(
            f"got {len(sources)} sources for {len(items)} images; give one source (or None) per image"
        )
    if encoder is not None:
        bank.encoder(device, encoder)
    owners = {m.hash: m for m in bank.members()}
    s = bank.settings
    added: list[tuple[str, np.ndarray, str, dict | None]] = []
    skipped: list[dict[str, str]] = []
    for i, item in enumerate(items):
        name = str(item) if isinstance(item, (str, os.PathLike)) else f"array #{i}"
        image, why = el.as_rgb(item)
        if image is not None:
            why = el.size_problem(image.shape, bank.patch_size, s.size_tolerance, s.min_side)
        if why is None:
            tissue = el.tissue_fraction(image, s.white_level)
            if tissue < s.min_tissue:
                why = f"{el.LOW_TISSUE}: tissue fraction {tissue:.2f} < min_tissue {s.min_tissue:g}"
        h = image_hash(image) if image is not None else ""
        if why is None and h in owners:
            m = owners[h]
            why = f"{el.DUPLICATE}: already member {m.id} of class {m.class_name!r} (use move to change its class)"
        if why is not None:
            skipped.append({"item": name, "reason": why})
            continue
        owners[h] = store.Member(-1, class_name, 0, h, 0.0)
        path = str(Path(item).resolve()) if isinstance(item, (str, os.PathLike)) else None
        added.append((h, image, path, None if sources is None else sources[i]))
    if not added:
        raise BankError(
            f"none of the {len(items)} image(s) could be added to {class_name!r}: "
            + "; ".join(f"{x['item']}: {x['reason']}" for x in skipped[:5])
        )
    yield from _encode_missing(bank, [(h, im) for h, im, _, _ in added], device)
    draft = store.draft_of(bank)
    feats = bank.cache.get([h for h, _, _, _ in added])
    clusters, distances = _assign(draft.centres[ci], feats, cluster)
    next_id = int(bank.manifest["next_id"])
    new = []
    for j, (h, image, path, source) in enumerate(added):
        if path is None:
            path = media.store_image(bank.root, h, image)
            source = dict(source or {})
        media.write_thumbnail(bank.root, h, image, s.thumb_size)
        new.append(
            store.Member(
                next_id + j, class_name, int(clusters[j]), h, float(distances[j]), True, False, path, source
            )
        )
    draft = dataclasses.replace(draft, members=draft.members + tuple(new))
    edit = {
        "op": "add",
        "class": class_name,
        "added": [m.id for m in new],
        "skipped": skipped,
        "summary": f"added {len(new)} image(s) to {class_name!r}"
        + (f", skipped {len(skipped)}" if skipped else ""),
    }
    return store.commit(bank, draft, edit)


def add_images(
    bank: store.Bank,
    class_name: str,
    items: Sequence[Item],
    sources: Sequence[dict[str, Any] | None] | None = None,
    cluster: int | None = None,
    device: str = "auto",
    encoder: Any = None,
) -> store.Bank:
    """Add image files or RGB arrays (e.g. regions cut from a slide) to a class.

    Each image must pass the bank's eligibility rules (readable, about the bank's patch size,
    enough tissue) and not be a member already; the others are skipped and listed in the new
    version's ``last_edit["skipped"]``. New members join the given sub-cluster or the one with the
    nearest centre, and count in its prototype. Only images never seen are encoded.

    Args:
        bank: the current version.
        class_name: the class to add to.
        items: image file paths and/or ``uint8 (H, W, 3)`` arrays.
        sources: per item, a JSON-able dict saying where it came from (e.g. ``{"slide": "a.svs",
            "x": 1024, "y": 2048, "level": 0}``); kept in the manifest. Arrays' pixels are stored
            in the bank under ``images/``.
        cluster: sub-cluster to join (default: nearest centre).
        device: torch device for encoding.
        encoder: an encoder module to use (checked against the bank's weights hash).

    Returns:
        The new version.

    Raises:
        BankError: unknown class or cluster, no image could be added, or a different encoder.
    """
    return run(add_images_job(bank, class_name, items, sources, cluster, device, encoder))


def remove(bank: store.Bank, member_ids: Iterable[int]) -> store.Bank:
    """Remove members from the bank (locked ones must be unlocked first); returns the new version."""
    ids = _ids(bank, member_ids)
    locked = sorted(i for i in ids if bank.member(i).locked)
    if locked:
        raise BankError(f"member(s) {locked} are locked; unlock them first (lock(bank, ids, locked=False))")
    draft = store.draft_of(bank)
    draft = dataclasses.replace(draft, members=tuple(m for m in draft.members if m.id not in ids))
    return store.commit(
        bank, draft, {"op": "remove", "ids": sorted(ids), "summary": f"removed {len(ids)} member(s)"}
    )


def move(
    bank: store.Bank, member_ids: Iterable[int], to_class: str, to_cluster: int | None = None
) -> store.Bank:
    """Move members to another class and/or sub-cluster (nearest centre when ``to_cluster`` is None).

    Moved members are selected (they count in their new prototype). Returns the new version.
    """
    ids = _ids(bank, member_ids)
    ci = bank.class_index(to_class)
    _check_cluster(bank, ci, to_cluster)
    clash = [
        m.id
        for m in bank.members(to_class)
        if m.id not in ids and m.hash in {bank.member(i).hash for i in ids}
    ]
    if clash:
        raise BankError(
            f"class {to_class!r} already holds the same image(s) as members {clash}; remove one copy first"
        )
    order = sorted(ids)
    clusters, distances = _assign(bank.centres(to_class), bank.features(order), to_cluster)
    moved = {
        i: dataclasses.replace(
            bank.member(i), class_name=to_class, cluster=int(c), distance=float(d), selected=True
        )
        for i, c, d in zip(order, clusters, distances, strict=True)
    }
    draft = store.draft_of(bank)
    draft = dataclasses.replace(draft, members=tuple(moved.get(m.id, m) for m in draft.members))
    where = f"{to_class!r}" + ("" if to_cluster is None else f" sub-cluster {to_cluster}")
    return store.commit(
        bank,
        draft,
        {
            "op": "move",
            "ids": order,
            "to_class": to_class,
            "to_cluster": to_cluster,
            "summary": f"moved {len(order)} member(s) to {where}",
        },
    )


def lock(bank: store.Bank, member_ids: Iterable[int], locked: bool = True) -> store.Bank:
    """Lock (or unlock) members: locked members stay selected through re-clustering and cannot be removed."""
    ids = _ids(bank, member_ids)
    draft = store.draft_of(bank)
    members = tuple(
        dataclasses.replace(m, locked=locked, selected=m.selected or locked) if m.id in ids else m
        for m in draft.members
    )
    word = "locked" if locked else "unlocked"
    return store.commit(
        bank,
        dataclasses.replace(draft, members=members),
        {"op": "lock" if locked else "unlock", "ids": sorted(ids), "summary": f"{word} {len(ids)} member(s)"},
    )


def recluster(bank: store.Bank, class_name: str, k: int, per_cluster: int | None = None) -> store.Bank:
    """Re-cluster one class's pool into ``k`` sub-clusters and reselect the N_K nearest each centre.

    Locked members stay selected (joining their nearest new centre) and count towards N_K;
    other hand-made choices of the class are replaced by the new selection.

    Raises:
        BankError: ``k`` is not in ``1..(images of the class)``.
    """
    ci = bank.class_index(class_name)
    pool = bank.members(class_name)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= len(pool):
        raise BankError(
            f"cannot re-cluster class {class_name!r} into k={k!r} sub-clusters: it has {len(pool)} image(s); "
            f"choose k between 1 and {len(pool)}, or add images first"
        )
    s = bank.settings
    n_k = s.per_cluster if per_cluster is None else int(per_cluster)
    if n_k < 1:
        raise BankError(f"per_cluster={per_cluster!r} is invalid: expected an integer >= 1")
    result = spherical_kmeans(bank.features([m.id for m in pool]), k, s.seed, s.n_init, s.max_iter)
    keep = np.array([m.locked for m in pool], dtype=bool)
    selected = select_nearest(result.labels, result.similarity, k, n_k, keep=keep)
    new = {
        m.id: dataclasses.replace(m, cluster=int(c), distance=float(1.0 - sim), selected=bool(sel))
        for m, c, sim, sel in zip(pool, result.labels, result.similarity, selected, strict=True)
    }
    draft = store.draft_of(bank)
    centres = list(draft.centres)
    centres[ci] = result.centres
    members = tuple(new.get(m.id, m) for m in draft.members)
    edit = {
        "op": "recluster",
        "class": class_name,
        "k": k,
        "per_cluster": n_k,
        "summary": f"re-clustered {class_name!r} into k={k} ({int(selected.sum())} selected of {len(pool)})",
    }
    return store.commit(bank, dataclasses.replace(draft, centres=tuple(centres), members=members), edit)


def undo(bank: store.Bank) -> store.Bank:
    """Go back to the version this one was made from; returns it.

    Raises:
        BankError: this is the build (version without a parent).
    """
    if bank.parent is None:
        raise BankError(f"bank {bank.root} is at version {bank.version}, the build; there is nothing to undo")
    return store.checkout(bank, int(bank.parent))


def repair(path: str | os.PathLike) -> tuple[store.Bank, bool, Path | None]:
    """Make the newest intact version current when the bank cannot be opened.

    ``bank.json`` is a copy of ``versions/<v>/bank.json``; when it (or its version's files) is
    damaged, the newest version folder whose manifest, prototypes and content hash check out
    becomes current again. The damaged ``bank.json`` is kept beside it as
    ``bank.json.damaged-<UTC time>``. An intact bank is left as it is.

    Returns:
        The bank now current, whether it was repaired, and where the damaged ``bank.json`` was kept
        (None when nothing was repaired or bank.json was missing).

    Raises:
        BankError: the folder holds no intact version, or its manifest is of a newer format.
    """
    import json
    from datetime import datetime

    root = Path(path)
    try:
        return store.open_bank(root), False, None
    except BankError as exc:
        damage = exc
    current = root / store.MANIFEST
    try:
        newer = json.loads(current.read_text()).get("format_version", 0) > store.FORMAT_VERSION
    except (OSError, ValueError, AttributeError, TypeError):
        newer = False
    if newer:
        raise damage  # a newer napari-pbip wrote it: nothing is damaged, and nothing is replaced
    for version in reversed(store.version_numbers(root)):
        try:
            bank = store.open_version(root, version)
        except BankError:
            continue
        kept = None
        if current.exists():
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            kept = root / f"{store.MANIFEST}.damaged-{stamp}"
            n = 1
            while kept.exists():
                n += 1
                kept = root / f"{store.MANIFEST}.damaged-{stamp}-{n}"
            os.replace(current, kept)
        store.write_manifest(root, bank.manifest)
        return bank, True, kept
    raise BankError(
        f"cannot repair {root}: {' '.join(str(damage).split())}; and no folder under {root / store.VERSIONS} holds "
        "an intact version to restore: rebuild the bank (`pbip bank build --overwrite`)"
    )


def _ids(bank: store.Bank, member_ids: Iterable[int]) -> set[int]:
    ids = list(member_ids)
    if not ids:
        raise BankError("no member ids given; list them with `pbip bank members BANK`")
    return {bank.member(i).id for i in ids}


def _check_cluster(bank: store.Bank, ci: int, cluster: int | None) -> None:
    k = bank.ks[ci]
    if cluster is not None and (not isinstance(cluster, (int, np.integer)) or not 0 <= cluster < k):
        raise BankError(
            f"sub-cluster {cluster!r} does not exist in class {bank.classes[ci]!r}, which has k={k} "
            f"(indices 0..{k - 1}); pick one of those or leave it to the nearest centre"
        )


def _assign(centres: np.ndarray, feats: np.ndarray, cluster: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Sub-cluster (given, or nearest centre) and cosine distance to its centre for each feature row."""
    sims = normalise(feats) @ centres.T
    labels = np.full(len(feats), cluster) if cluster is not None else sims.argmax(axis=1)
    return labels, 1.0 - sims[np.arange(len(feats)), labels]


def _encode_missing(bank: store.Bank, items: list[tuple[str, np.ndarray]], device: str) -> Job[None]:
    todo = {h: im for h, im in items if h not in bank.cache}
    if not todo:
        return
    enc = bank.encoder(device)
    hashes = list(todo)
    bs = bank.settings.batch_size
    feats = []
    for start in range(0, len(hashes), bs):
        feats.append(encode(enc, [todo[h] for h in hashes[start : start + bs]]))
        yield Progress(ENCODE_STAGE, min(start + bs, len(hashes)), len(hashes))
    bank.cache.add(hashes, np.concatenate(feats))
