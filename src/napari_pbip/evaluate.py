"""Score a folder of predicted masks against a data set split (``pbip evaluate``).

Predictions are index PNGs (grey or palette, holding the data set's mask indices) or RGB PNGs in
the data set's palette, named like the images (same stem, any image suffix). Metrics are those
of :mod:`napari_pbip.metrics`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .errors import DatasetError
from .events import Job, Progress, run
from .metrics import BOUNDARY_RATIO, MetricAccumulator

_EVENT_EVERY = 16  # images per progress event


def _predictions(pred_dir: Path, images: list[Path]) -> list[Path]:
    """The prediction file of each image, matched by stem; PNG wins over other suffixes."""
    from .data.images import list_images

    found: dict[str, Path] = {}
    for path in list_images(pred_dir):
        if path.stem not in found or path.suffix.lower() == ".png":
            found[path.stem] = path
    missing = [p.stem + ".png" for p in images if p.stem not in found]
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(images)} image(s) have no prediction in {pred_dir}, e.g. {missing[:3]}; "
            "expected one index or palette PNG per image, named like the image"
        )
    return [found[p.stem] for p in images]


def evaluate_folder_job(
    dataset_root: str | os.PathLike,
    split: str,
    pred_dir: str | os.PathLike,
    ratio: float = BOUNDARY_RATIO,
) -> Job[dict[str, Any]]:
    """Generator form of :func:`evaluate_folder`: yields :class:`Progress` (``evaluate``) events.

    Yields one event per 16 images with the running mIoU, and returns the result dict.
    """
    from .data.images import read_mask
    from .data.layouts import open_dataset

    dataset = open_dataset(dataset_root)
    spec = dataset.spec
    samples = dataset.samples(split)
    unmasked = [s.image.name for s in samples if s.mask is None]
    if unmasked or not samples:
        raise DatasetError(
            f"split {split!r} of {dataset.root} has {len(samples)} image(s), {len(unmasked)} without a mask "
            f"(e.g. {unmasked[:3]}); evaluation needs a val or test split with a mask per image"
        )
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DatasetError(f"prediction folder {pred_dir} does not exist or is not a folder")
    preds = _predictions(pred_dir, [s.image for s in samples])
    acc = MetricAccumulator(spec.n_classes, spec.background_index, spec.classes, ratio=ratio)
    total = len(samples)
    yield Progress("evaluate", 0, total, f"0/{total} images")
    for i, (sample, pred_path) in enumerate(zip(samples, preds, strict=True), start=1):
        gt = read_mask(sample.mask, spec)
        pred = read_mask(pred_path, spec)
        if pred.shape != gt.shape:
            raise DatasetError(
                f"prediction {pred_path} is {pred.shape[1]}x{pred.shape[0]} px but the mask {sample.mask} is "
                f"{gt.shape[1]}x{gt.shape[0]} px; predictions must have the size of their images"
            )
        acc.update(gt, pred)
        if i % _EVENT_EVERY == 0 or i == total:
            miou = acc.miou()
            metrics = {} if math.isnan(miou) else {"mIoU": miou}
            yield Progress("evaluate", i, total, f"{i}/{total} images", metrics)
    result = acc.result()
    result.update(
        dataset=str(dataset.root),
        layout=spec.layout,
        split=split,
        predictions=str(pred_dir),
        boundary_ratio=ratio,
    )
    return result


def evaluate_folder(
    dataset_root: str | os.PathLike,
    split: str,
    pred_dir: str | os.PathLike,
    ratio: float = BOUNDARY_RATIO,
) -> dict[str, Any]:
    """Score the predictions in ``pred_dir`` against the masks of a data set split.

    Args:
        dataset_root: a data set folder (any layout :func:`~napari_pbip.data.layouts.open_dataset` reads).
        split: ``val`` or ``test`` (a split with masks).
        pred_dir: folder of predicted masks named like the split's images.
        ratio: Boundary IoU width as a share of each image's diagonal.

    Returns:
        :meth:`MetricAccumulator.result` (per-class IoU, Dice, Boundary IoU; mIoU, FwIoU, mean
        Dice, mean Boundary IoU; number of images) plus ``dataset``, ``layout``, ``split``,
        ``predictions`` and ``boundary_ratio``.

    Raises:
        DatasetError: the split has no masks, or a prediction is missing, unreadable, of the wrong
            size or holds an index the data set does not have.
    """
    return run(evaluate_folder_job(dataset_root, split, pred_dir, ratio))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of an evaluation result: one row per class, then the mean row.

    Scores are shown in percent; ``-`` marks a class absent from both ground truth and prediction.
    """
    per_class = result["per_class"]
    total = sum(c["gt_pixels"] for c in per_class.values()) or 1
    width = max(len("class"), len("mean"), *(len(n) for n in per_class))
    header = f"{'class':<{width}}  {'IoU':>7}  {'Dice':>7}  {'bIoU':>7}  {'GT share':>8}"
    lines = [header, "-" * len(header)]
    for name, c in per_class.items():
        share = f"{100 * c['gt_pixels'] / total:.2f}"
        lines.append(
            f"{name:<{width}}  {_pct(c['iou']):>7}  {_pct(c['dice']):>7}  {_pct(c['biou']):>7}  {share:>8}"
        )
    lines.append("-" * len(header))
    lines.append(
        f"{'mean':<{width}}  {_pct(result['miou']):>7}  {_pct(result['mean_dice']):>7}  "
        f"{_pct(result['mean_biou']):>7}"
    )
    lines.append(
        f"FwIoU {_pct(result['fwiou'])}  pixel accuracy {_pct(result['pixel_accuracy'])}  "
        f"images {result['n_images']}  (scores in %, ground-truth background excluded)"
    )
    return "\n".join(lines)
