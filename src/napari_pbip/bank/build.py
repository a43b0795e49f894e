"""Build a bank from a weakly labelled data set (PBIP stage 0).

Steps: keep the single-class training patches with enough tissue; encode them in batches with
the frozen encoder (features cached by content hash); per class, spherical K-Means into K
sub-clusters and keep the N_K images nearest each centre; prototypes are the mean features.

An interrupted build keeps its encoded features in ``.<BANK>.partial/`` beside the output and a
rerun resumes from them; ``overwrite=True`` over an existing bank reuses that bank's features.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .. import _atomic
from ..errors import BankError
from ..events import Job, Progress
from . import eligibility as el
from . import media, store
from .cache import FeatureCache, image_hash
from .encode import ENCODE_STAGE, encode, encoder_info, load_encoder
from .kmeans import select_nearest, spherical_kmeans
from .settings import BankSettings

OUTPUT_KIND = "bank build"  # the command named in the bank folder's output marker
SCAN_STAGE, KMEANS_STAGE, THUMBNAILS_STAGE = "scan", "kmeans", "thumbnails"  # with ENCODE_STAGE
_SCAN_BATCH = 256
_FLUSH_EVERY = 512  # features written to a cache shard every this many new images


def build_bank(
    settings: BankSettings,
    dataset: Any,
    out: str | os.PathLike,
    device: str = "auto",
    overwrite: bool = False,
    encoder: Any = None,
) -> Job[store.Bank]:
    """Build an image bank (a generator job; drain it with ``events.run``).

    Args:
        settings: build settings (encoder, K, N_K, tissue threshold, ...).
        dataset: a data set folder or an opened ``Dataset``; its ``settings.split`` is used.
        out: the bank folder to write (atomically).
        device: torch device for the encoder ("auto": CUDA when present).
        overwrite: replace an existing bank at ``out`` (only a folder ``bank build`` wrote).
        encoder: an already built encoder to use instead of loading ``settings.encoder``.

    Yields:
        Progress of the stages ``scan``, ``encode`` (per batch, with images/s), ``kmeans`` (per
        class) and ``thumbnails``.

    Returns:
        The opened bank (version 1). Its ``report.json`` lists kept and skipped images.

    Raises:
        BankError: a class has no eligible image, or fewer eligible images than ``k``.
        OutputExistsError: ``out`` exists and ``overwrite`` is false, or it is not a bank.
        OutputConflictError: ``out`` is, contains or lies inside the data set.
    """
    from ..data.layouts import Dataset, open_dataset

    out = Path(out)
    inputs = {"data set": dataset}
    _atomic.check_output(out, OUTPUT_KIND, inputs, overwrite=overwrite)
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    candidates, counts = _candidates(ds, settings)
    enc = encoder if encoder is not None else load_encoder(settings.encoder, device)
    info = encoder_info(enc, settings.encoder)
    partial = out.parent / f".{out.name}.partial"
    _reuse_features(out, partial)
    cache = FeatureCache(partial / store.FEATURES, info["weights_hash"])
    sides = yield from _scan(candidates)
    reference = el.patch_size(sides)
    pool, skipped, stats = yield from _encode_pool(candidates, sides, reference, settings, enc, cache)
    _check_pool(pool, counts, skipped, settings)
    draft, clusters, stats["kmeans_seconds"] = yield from _cluster(pool, cache, settings)
    report = _report(ds, settings, info, reference, counts, pool, clusters, skipped, stats)
    base = {"settings": settings.to_dict(), "encoder": info, "patch_size": reference, "next_id": 0}
    edit = {"op": "build", "summary": _summary(ds, settings, draft)}
    with _atomic.atomic_dir(out, overwrite=overwrite, kind=OUTPUT_KIND, inputs=inputs) as tmp:
        yield from _thumbnails(tmp, draft, settings)
        tensors = store.compute_prototypes(draft, cache)
        manifest = store.make_manifest(draft, tensors, base, 1, None, edit)
        store.write_version(tmp, manifest, tensors)
        settings.save(tmp / "settings.json")
        _atomic.write_json(tmp / "report.json", report)
        _atomic.write_json(tmp / store.MANIFEST, manifest)
        if (partial / store.FEATURES).is_dir():
            os.replace(partial / store.FEATURES, tmp / store.FEATURES)
    shutil.rmtree(partial, ignore_errors=True)
    return store.open_bank(out)


def _candidates(ds: Any, settings: BankSettings) -> tuple[list[tuple[str, Path]], dict[str, Any]]:
    """Single-class samples of the split as ``(class, path)``; raises for classes without any."""
    samples = ds.samples(settings.split)
    classes = ds.spec.classes
    if not any(s.labels is not None for s in samples):
        raise BankError(
            f"split {settings.split!r} of {ds.root} has no image-level labels; build from the weakly labelled "
            "training split (e.g. made with `pbip data weak`)"
        )
    single = [(classes[_first(s.labels)], s.image) for s in samples if el.is_single_class(s.labels)]
    per_class = Counter(c for c, _ in single)
    counts = {
        "images": len(samples),
        "multi_class": sum(1 for s in samples if s.labels is not None and sum(s.labels) > 1),
        "single_class": {c: per_class.get(c, 0) for c in classes},
    }
    absent = [c for c in classes if not per_class.get(c)]
    if absent:
        raise BankError(
            f"class(es) {absent} have no single-class patches in split {settings.split!r} of {ds.root} "
            f"(single-class counts {counts['single_class']}); the bank needs patches showing only that class: "
            "tile with a smaller --tile or higher --min-fraction, or add a folder of such patches to the data set"
        )
    order = {c: i for i, c in enumerate(classes)}
    single.sort(key=lambda item: order[item[0]])  # class by class, each in data set order
    return single, counts


def _first(labels) -> int:
    return next(i for i, v in enumerate(labels) if v)


def _reuse_features(out: Path, partial: Path) -> None:
    """Link an existing bank's feature shards into the partial cache (overwrite without re-encoding)."""
    source = out / store.FEATURES
    if not source.is_dir():
        return
    target = partial / store.FEATURES
    target.mkdir(parents=True, exist_ok=True)
    for shard in source.glob("*.safetensors"):
        if not (target / shard.name).exists():
            try:
                os.link(shard, target / shard.name)
            except OSError:
                shutil.copy2(shard, target / shard.name)


def _scan(candidates: list[tuple[str, Path]]) -> Job[list[int | None]]:
    """Image sides from the file headers (cheap), to fix the bank's patch size."""
    sides: list[int | None] = []
    for start in range(0, len(candidates), _SCAN_BATCH):
        sides.extend(el.image_side(p) for _, p in candidates[start : start + _SCAN_BATCH])
        yield Progress(SCAN_STAGE, len(sides), len(candidates), f"read {len(sides)} image headers")
    return sides


def _encode_pool(candidates, sides, reference, settings: BankSettings, enc, cache: FeatureCache):
    """Read, check and encode the candidates; return the pool per class, skipped images and stats."""
    pool: dict[str, list[tuple[str, str]]] = {}
    seen: dict[str, dict[str, str]] = {}
    skipped: list[dict[str, str]] = []
    pending_hashes: list[str] = []
    pending_feats: list[np.ndarray] = []
    stats = {"encoded": 0, "from_cache": 0, "encode_seconds": 0.0}
    bs = settings.batch_size
    for start in range(0, len(candidates), bs):
        images, hashes = [], []
        for cls, path in candidates[start : start + bs]:
            image, why = _check(path, reference, settings)
            h = image_hash(image) if image is not None else ""
            if why is None and h in seen.setdefault(cls, {}):
                why = f"{el.DUPLICATE}: same pixels as {seen[cls][h]}"
            if why is not None:
                skipped.append({"path": str(path), "class": cls, "reason": why})
                continue
            seen[cls][h] = str(path)
            pool.setdefault(cls, []).append((h, str(Path(path).resolve())))
            if h in cache or h in hashes or h in pending_hashes:
                stats["from_cache"] += 1
            else:
                images.append(image)
                hashes.append(h)
        t0 = time.perf_counter()
        if images:
            pending_feats.append(encode(enc, images))
            pending_hashes.extend(hashes)
        stats["encode_seconds"] += time.perf_counter() - t0
        stats["encoded"] += len(images)
        if len(pending_hashes) >= _FLUSH_EVERY:
            cache.add(pending_hashes, np.concatenate(pending_feats))
            pending_hashes, pending_feats = [], []
        rate = stats["encoded"] / stats["encode_seconds"] if stats["encode_seconds"] else 0.0
        done = min(start + bs, len(candidates))
        yield Progress(ENCODE_STAGE, done, len(candidates), f"{done} images checked", {"images/s": rate})
    if pending_hashes:
        cache.add(pending_hashes, np.concatenate(pending_feats))
    return pool, skipped, stats


def _check(path: Path, reference: int | None, settings: BankSettings) -> tuple[np.ndarray | None, str | None]:
    image, why = el.as_rgb(path)
    if image is None:
        return None, why
    why = el.size_problem(image.shape, reference, settings.size_tolerance, settings.min_side)
    if why is None:
        tissue = el.tissue_fraction(image, settings.white_level)
        if tissue < settings.min_tissue:
            why = f"{el.LOW_TISSUE}: tissue fraction {tissue:.2f} < min_tissue {settings.min_tissue:g}"
    return image, why


def _check_pool(pool, counts: dict[str, Any], skipped: list[dict[str, str]], settings: BankSettings) -> None:
    for cls, n_single in counts["single_class"].items():
        n = len(pool.get(cls, ()))
        if n == 0:
            reasons = Counter(s["reason"].split(":")[0] for s in skipped if s["class"] == cls)
            raise BankError(
                f"class {cls!r} has no eligible images: its {n_single} single-class patch(es) were all skipped "
                f"({dict(reasons)}); lower --min-tissue (now {settings.min_tissue:g}), fix the listed files, or "
                "add patches of this class"
            )
        if n < settings.k:
            raise BankError(
                f"class {cls!r} has {n} eligible image(s), fewer than k={settings.k} sub-clusters; lower --k to at "
                f"most {n} or add more {cls!r} patches"
            )


def _cluster(pool, cache: FeatureCache, settings: BankSettings):
    """Spherical K-Means per class, N_K nearest per centre; members with stable ids."""
    members: list[store.Member] = []
    centres: list[np.ndarray] = []
    clusters: dict[str, dict[str, list[int]]] = {}
    seconds = 0.0
    for i, (cls, items) in enumerate(pool.items()):
        feats = cache.get([h for h, _ in items])
        t0 = time.perf_counter()
        result = spherical_kmeans(feats, settings.k, settings.seed, settings.n_init, settings.max_iter)
        seconds += time.perf_counter() - t0
        selected = select_nearest(result.labels, result.similarity, settings.k, settings.per_cluster)
        for (h, path), label, sim, sel in zip(items, result.labels, result.similarity, selected, strict=True):
            members.append(
                store.Member(len(members), cls, int(label), h, float(1.0 - sim), bool(sel), False, path)
            )
        centres.append(result.centres)
        sizes = np.bincount(result.labels, minlength=settings.k)
        kept = np.bincount(result.labels[selected], minlength=settings.k)
        clusters[cls] = {"sizes": sizes.tolist(), "selected": kept.tolist()}
        yield Progress(
            KMEANS_STAGE, i + 1, len(pool), f"{cls}: {len(items)} images -> sub-clusters {sizes.tolist()}"
        )
    return store.Draft(tuple(pool), tuple(centres), tuple(members)), clusters, seconds


def _thumbnails(root: Path, draft: store.Draft, settings: BankSettings) -> Job[None]:
    from ..data.images import read_rgb

    chosen = [m for m in draft.members if m.selected]
    for start in range(0, len(chosen), 64):
        for m in chosen[start : start + 64]:
            media.write_thumbnail(root, m.hash, read_rgb(m.path), settings.thumb_size)
        yield Progress(THUMBNAILS_STAGE, min(start + 64, len(chosen)), len(chosen))


def _summary(ds: Any, settings: BankSettings, draft: store.Draft) -> str:
    n_sel = sum(m.selected for m in draft.members)
    return (
        f"built from {ds.root} ({settings.split}): {len(draft.classes)} classes, K={settings.k}, "
        f"{n_sel} selected of {len(draft.members)} eligible images"
    )


def _report(ds, settings, info, reference, counts, pool, clusters, skipped, stats) -> dict[str, Any]:
    notes = []
    for cls, c in clusters.items():
        short = [
            f"{k}: {size}"
            for k, (size, kept) in enumerate(zip(c["sizes"], c["selected"], strict=True))
            if kept < settings.per_cluster
        ]
        if short:
            notes.append(
                f"{cls}: sub-cluster(s) {', '.join(short)} image(s), fewer than per_cluster={settings.per_cluster}; "
                "all of them kept"
            )
    rate = stats["encoded"] / stats["encode_seconds"] if stats["encode_seconds"] else None
    return {
        "dataset": str(ds.root),
        "split": settings.split,
        "encoder": info,
        "patch_size": reference,
        "images": counts["images"],
        "multi_class": counts["multi_class"],
        "classes": {
            cls: {"single_class": counts["single_class"][cls], "eligible": len(pool[cls]), **clusters[cls]}
            for cls in pool
        },
        "notes": notes,
        "skipped_counts": dict(Counter(s["reason"].split(":")[0] for s in skipped)),
        "skipped": skipped,
        "encoded": stats["encoded"],
        "from_cache": stats["from_cache"],
        "encode_seconds": round(stats["encode_seconds"], 3),
        "images_per_second": round(rate, 2) if rate else None,
        "kmeans_seconds": round(stats["kmeans_seconds"], 3),
    }
