"""Deterministic synthetic H&E-like data set in the generic layout, for tests and the offline demo.

Patches come from a few virtual "slides" per split (each with its own stain), mixing single-class
patches (what the prototype bank needs) with patches of two or three classes separated by
irregular boundaries, some with white background. Training images carry their image-level label
in the file name (``synth-train-0007-[1 0 1 0].png``); val and test images have exact palette masks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import _atomic
from ..events import Job, Progress, run
from ..settings import check
from . import texture as tx
from .render import BACKGROUND_COLOR, DEFAULT_STYLES, STYLE_COLORS, check_styles, render_tissue

__all__ = [
    "demo_image",
    "palette_for",
    "patch_labels",
    "render_tissue",
    "synthetic_dataset_job",
    "is_single",
    "synthetic_patch",
    "write_synthetic_dataset",
]

SPLITS = ("train", "val", "test")
# um/px the patches stand for: render_tissue draws in pixels, and `pbip data synth-slide` draws the
# same tissue at its default 0.5 um/px, so models trained on these patches segment that slide 1:1
SYNTH_MPP = 0.5
_SPLIT_IDS = {"train": 1, "val": 2, "test": 3, "demo": 4}
SLIDES_PER_SPLIT = 6  # virtual slides (stains) each split's patches are drawn from
# Which patch indices are single-class, by index modulo the period: 2 in 5 (40%) for training,
# 1 in 4 for val/test. Fixed patterns keep patch i the same whatever the split size.
_SINGLE = {"train": (5, (0, 2)), "val": (4, (0,)), "test": (4, (0,)), "demo": (1, ())}
MIN_CLASS_SHARE = 0.06  # each class drawn in a mixed patch covers at least this share


def palette_for(classes: Sequence[str]) -> list[list[int]]:
    """Display colour per mask index: one per class, then white for background."""
    return [list(STYLE_COLORS[c]) for c in check_styles(classes)] + [list(BACKGROUND_COLOR)]


def _seed(*keys: int) -> int:
    return int(tx.hash_u64(*keys) >> np.uint64(33))


def patch_labels(
    seed: int, size: int, n_classes: int, classes: Sequence[int], background: float = 0.0
) -> np.ndarray:
    """A label map with ``classes`` in irregular regions and optional white background.

    Regions are a warped Voronoi partition around random sites, so boundaries are smooth but
    irregular; every listed class keeps at least :data:`MIN_CLASS_SHARE` of the tissue.

    Args:
        seed: random seed of this patch.
        size: side in pixels.
        n_classes: number of tissue classes (background index = ``n_classes``).
        classes: tissue class indices to place (one gives a single-class patch).
        background: target share of white background (0 for none).

    Returns:
        (size, size) uint8 label map.
    """
    classes = list(classes)
    shape, origin = (size, size), (0, 0)
    for attempt in range(16):
        s = _seed(seed, attempt)
        labels = np.full(shape, classes[0], np.uint8)
        if len(classes) > 1:
            labels = _voronoi(s, shape, classes)
        if background > 0:
            field = tx.blobs(s, 7, origin, shape, size * 0.45)
            labels[field < np.quantile(field, background)] = n_classes
        counts = np.bincount(labels.ravel(), minlength=n_classes + 1)[:n_classes]
        tissue = max(int(counts.sum()), 1)
        if all(counts[c] >= MIN_CLASS_SHARE * tissue for c in classes):
            return labels
    return labels  # rare: accept the last try, its names still follow the map


def _voronoi(seed: int, shape: tuple[int, int], classes: list[int]) -> np.ndarray:
    size = shape[0]
    sites = tx.uniform(seed, 1, np.arange(2 * len(classes))).reshape(-1, 2) * size
    warp_y = (tx.value_noise(seed, 2, (0, 0), shape, size * 0.4) - 0.5) * size * 0.6
    warp_x = (tx.value_noise(seed, 3, (0, 0), shape, size * 0.4) - 0.5) * size * 0.6
    yy = np.arange(size, dtype=np.float32)[:, None] + warp_y
    xx = np.arange(size, dtype=np.float32)[None, :] + warp_x
    dist = np.stack([(yy - sy) ** 2 + (xx - sx) ** 2 for sy, sx in sites])
    return np.asarray(classes, np.uint8)[np.argmin(dist, axis=0)]


def synthetic_patch(
    split: str,
    index: int,
    seed: int = 0,
    size: int = 224,
    n_classes: int = 4,
    styles: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``index``-th patch of a split exactly as :func:`write_synthetic_dataset` writes it.

    Returns:
        (rgb, labels): (size, size, 3) uint8 image and its (size, size) uint8 label map.
    """
    styles = check_styles(styles or DEFAULT_STYLES[:n_classes])
    n = len(styles)
    key = _seed(seed, _SPLIT_IDS[split], index)
    u = tx.uniform(key, 10, np.arange(8))
    if is_single(split, index):
        period, slots = _SINGLE[split]
        present = [(len(slots) * (index // period) + slots.index(index % period)) % n]
    else:
        k = min(n, 2 if u[0] < 0.65 else 3)
        present = sorted(int(c) for c in np.argsort(tx.uniform(key, 11, np.arange(n)))[:k])
    background = float(0.05 + 0.35 * u[2]) if u[1] < 0.3 else 0.0
    labels = patch_labels(key, size, n, present, background)
    slide_seed = _seed(seed, _SPLIT_IDS[split], 1000 + index % SLIDES_PER_SPLIT)
    origin = (int(u[3] * 2**20), int(u[4] * 2**20))
    return render_tissue(labels, slide_seed, origin, styles), labels


def is_single(split: str, index: int) -> bool:
    """Whether patch ``index`` of ``split`` shows one tissue class (40% of train, 25% of val/test)."""
    period, slots = _SINGLE[split]
    return index % period in slots


def label_suffix(labels: np.ndarray, n_classes: int) -> str:
    """The file-name label of a label map, e.g. ``[1 0 1 0]`` (classes with any pixel)."""
    present = np.bincount(np.asarray(labels).ravel(), minlength=n_classes + 1)[:n_classes] > 0
    return "[" + " ".join(str(int(p)) for p in present) + "]"


def synthetic_dataset_job(
    out: str | os.PathLike,
    seed: int = 0,
    n_train: int = 300,
    n_val: int = 40,
    n_test: int = 40,
    size: int = 224,
    classes: Sequence[str] = DEFAULT_STYLES,
    overwrite: bool = False,
) -> Job[Path]:
    """Generator version of :func:`write_synthetic_dataset`, yielding progress per 20 patches."""
    classes = check_styles(classes)
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        check(isinstance(value, int) and value >= 0, name, value, "a whole number >= 0")
    check(isinstance(size, int) and size >= 32, "size", size, "an integer >= 32 (pixels)")
    counts = {"train": n_train, "val": n_val, "test": n_test}
    total, done = sum(counts.values()), 0
    with _atomic.atomic_dir(out, overwrite=overwrite, kind="data synth") as tmp:
        for split in SPLITS:
            for index in range(counts[split]):
                _write_patch(tmp, split, index, seed, size, classes)
                done += 1
                if done % 20 == 0 or done == total:
                    yield Progress("synth", done, total, f"{split} patch {index + 1}/{counts[split]}")
        spec = {
            "name": f"synthetic-he-seed{seed}",
            "classes": list(classes),
            "palette": palette_for(classes),
            "background_index": len(classes),
            "label_format": "space",
            "mpp": SYNTH_MPP,
        }
        _atomic.write_json(tmp / "dataset.json", spec)
        made_by = {
            "generator": "napari_pbip.synthetic.synth.write_synthetic_dataset",
            "seed": seed,
            "size": size,
        }
        _atomic.write_json(tmp / "synthetic.json", {**made_by, "classes": list(classes), **counts})
    return Path(out)


def _write_patch(root: Path, split: str, index: int, seed: int, size: int, classes: tuple[str, ...]) -> None:
    from PIL import Image

    rgb, labels = synthetic_patch(split, index, seed, size, styles=classes)
    stem = f"synth-{split}-{index:04d}"
    if split == "train":
        path = root / "train" / f"{stem}-{label_suffix(labels, len(classes))}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path)
        return
    for sub in ("img", "mask"):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(root / split / "img" / f"{stem}.png")
    mask = Image.fromarray(labels, mode="P")
    mask.putpalette([v for color in palette_for(classes) for v in color])
    mask.save(root / split / "mask" / f"{stem}.png")


def write_synthetic_dataset(
    out: str | os.PathLike,
    seed: int = 0,
    n_train: int = 300,
    n_val: int = 40,
    n_test: int = 40,
    size: int = 224,
    classes: Sequence[str] = DEFAULT_STYLES,
    overwrite: bool = False,
) -> Path:
    """Write a deterministic synthetic H&E-like data set in the generic layout.

    ``out/dataset.json`` names the classes, palette and background index; ``out/train`` holds
    ``synth-train-NNNN-[1 0 1 0].png`` (about 40% single-class, the rest 2-3 classes, some with
    white background); ``out/val`` and ``out/test`` hold ``img/*.png`` and palette ``mask/*.png``.
    The same arguments always give byte-identical files.

    Args:
        out: output folder (written atomically).
        seed: random seed.
        n_train, n_val, n_test: patches per split.
        size: patch side in pixels.
        classes: tissue classes in label order, names among ``tissue.STYLES``.
        overwrite: replace an existing ``out`` that a previous ``data synth`` wrote.

    Returns:
        ``out`` as a Path.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is false, or it is a folder that
            ``data synth`` did not write.
        SettingsError: a count, size or class name is invalid.
    """
    return run(synthetic_dataset_job(out, seed, n_train, n_val, n_test, size, classes, overwrite))


def demo_image(size: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic H&E image with all four default classes and some background (napari sample).

    Returns:
        (rgb, labels): (size, size, 3) uint8 image and its uint8 label map (4 = background).
    """
    check(isinstance(size, int) and size >= 32, "size", size, "an integer >= 32 (pixels)")
    key = _seed(seed, _SPLIT_IDS["demo"])
    labels = patch_labels(key, size, 4, [0, 1, 2, 3], background=0.15)
    return render_tissue(labels, key), labels
