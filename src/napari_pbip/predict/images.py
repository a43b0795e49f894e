"""Masks for a folder of images (ROIs, TMA cores, patches) with any trained model folder (``pbip predict``).

:func:`predict_images` reads the kind in the folder's ``model.json``
(:func:`~napari_pbip.predict.predictor.model_kind`):

* a stage-1 run (``pbip train``) goes to :func:`napari_pbip.stage1.predict_folder`: its classifier
  decides which classes each image holds, and :class:`~napari_pbip.stage1.CamSettings` apply;
* a stage-2 segmenter (``pbip train-seg``), or any other registered kind, runs as a dense
  predictor: each pixel gets its most probable mask index. Images no larger than the predictor's
  tile (a segmenter: twice its training tile) are predicted whole, same-size images batched;
  larger ones tile by tile with blended overlaps on the grid slide inference uses
  (:func:`~napari_pbip.predict.tiled.predict_block`), so memory stays bounded for any image.

Either way the output folder holds one palette PNG per image, named like the image, written
whole (atomically), with the settings used beside the masks.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import _atomic
from ..engine.tta import SCALES, DihedralTTA, ScaleTTA, with_tta
from ..errors import DatasetError, SettingsError
from ..events import Job, Progress
from .predictor import DensePredictor, load_predictor, model_kind

if TYPE_CHECKING:
    from ..stage1.pseudo import CamSettings

STAGE1_KIND = "pbip-stage1"
SETTINGS_FILE = (
    "predict_settings.json"  # beside the masks of a dense model, so any mask folder can be reproduced
)
OVERLAP = 32  # px shared by neighbouring tiles of a large image (at most a quarter tile), as in pbip segment


def predict_images(
    model: str | os.PathLike,
    images: str | os.PathLike,
    out: str | os.PathLike,
    settings: CamSettings | None = None,
    device: str = "auto",
    overwrite: bool = False,
    batch_size: int = 8,
    tta: bool | None = None,
    scales: Sequence[float] | None = None,
) -> Job[Path]:
    """Masks for the images in a folder with a stage-1 run or a stage-2 segmenter folder.

    Args:
        model: a trained model folder: a stage-1 run (``pbip train --out``) or a segmenter
            folder (``pbip train-seg --out``).
        images: folder of RGB images (PNG, JPEG, TIFF).
        out: output folder of palette PNGs named like the images (written whole, atomically).
        settings: a :class:`~napari_pbip.stage1.CamSettings` for a stage-1 run (None: its
            defaults); must be None for a segmenter, which predicts classes and background itself.
        device: torch device.
        overwrite: replace an existing ``out``.
        batch_size: images per forward pass (same-size images are batched together); tiles per
            pass for images larger than the model's tile.
        tta: average each mask's probabilities over the 8 symmetries of the square
            (:mod:`~napari_pbip.engine.tta`, 8 forward passes). None: on, unless ``settings.tta``
            says otherwise for a stage-1 run.
        scales: a segmenter's probabilities are also averaged over the image resized by each of
            these factors (:class:`~napari_pbip.engine.tta.ScaleTTA`). None: ``SCALES`` (0.75, 1,
            1.25) with TTA, none without; ``(1,)`` for the symmetries only. Segmenters only.

    Returns:
        A job yielding ``Progress("predict", ...)`` per batch and returning ``out``.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
        DatasetError: ``images`` holds no image, or two images would give masks of the same name.
        CheckpointError: ``model`` is neither a stage-1 run nor a segmenter folder.
        SettingsError: ``settings`` given with a segmenter folder; ``scales`` given with a stage-1
            run, with ``tta`` false, or not positive.
    """
    from ..data.images import list_images

    _atomic.check_output(out, "predict", {"model": model, "images": images}, overwrite=overwrite)
    paths = list_images(images)
    if not paths:
        raise DatasetError(
            f"no images (.png, .jpg, .tif, ...) in {images}; give the folder holding the images"
        )
    kind = model_kind(model)
    if scales is not None:
        _check_scales(scales, kind, tta)
    if kind == STAGE1_KIND:
        from ..stage1 import CamSettings, predict_folder

        if tta is not None:
            settings = dataclasses.replace(settings or CamSettings(), tta=tta)
        return (yield from predict_folder(model, images, out, settings, device, overwrite, batch_size))
    if settings is not None:
        raise SettingsError(
            f"CAM settings ({type(settings).__name__}: --threshold, --background, --white-level, --bg-power) "
            f"only apply to a stage-1 run, but {model} is a {kind!r} folder, which predicts every class and "
            "background itself; leave them out"
        )
    predictor = load_predictor(model, device=device)
    tta = tta is None or tta
    if tta and tuple(SCALES if scales is None else scales) != (1.0,):
        predictor = ScaleTTA(predictor, SCALES if scales is None else scales)
    predictor = with_tta(predictor, tta)
    return (yield from write_dense_masks(predictor, paths, Path(out), overwrite, batch_size, model))


def _check_scales(scales: Sequence[float], kind: str, tta: bool | None) -> None:
    if kind == STAGE1_KIND:
        raise SettingsError(
            f"scales {list(scales)} only apply to a segmenter folder, but the model is a stage-1 run, whose "
            "CAMs are made at the scale it was trained at; leave --scales out"
        )
    if tta is False:
        raise SettingsError(
            f"scales {list(scales)} are a test-time augmentation; leave out --no-tta or --scales"
        )
    if not scales or not all(0 < float(s) <= 4 for s in scales):
        raise SettingsError(f"scales {list(scales)} must be factors in (0, 4], e.g. 0.75 1 1.25")


def write_dense_masks(
    predictor: DensePredictor,
    paths: Sequence[Path],
    out: Path,
    overwrite: bool = False,
    batch_size: int = 8,
    model: str | os.PathLike | None = None,
) -> Job[Path]:
    """Argmax masks of ``predictor`` for ``paths``, as palette PNGs named like the images in ``out``.

    Args:
        predictor: any dense predictor (its ``tile`` decides which images are tiled).
        paths: the images.
        out: output folder (written whole, atomically).
        overwrite: replace an existing ``out``.
        batch_size: images (or tiles of a large image) per forward pass.
        model: the model folder, recorded in ``out/predict_settings.json`` with the tile (images
            up to it are predicted whole), the overlap of larger images' tiles and the batch size.

    Returns:
        A job yielding ``Progress("predict", ...)`` per batch and returning ``out``.
    """
    from ..data.images import mask_file_names, read_rgb, same_size_runs, write_mask

    names = mask_file_names(paths)
    tile = int(predictor.tile)
    overlap = min(OVERLAP, tile // 4)
    chunk = max(1, batch_size)
    record = {
        "model": None if model is None else str(Path(model).resolve()),
        "tile": tile,
        "overlap": overlap,
        "batch_size": chunk,
        "tta": isinstance(predictor, DihedralTTA),
        "scales": list(getattr(predictor, "scales", (1.0,))),
    }
    total = len(paths)
    inputs = {"model": model, **{f"image {p.name}": p for p in paths}}
    with _atomic.atomic_dir(out, overwrite=overwrite, kind="predict", inputs=inputs) as tmp:
        _atomic.write_json(tmp / SETTINGS_FILE, record)
        done = 0
        for start in range(0, total, chunk * 4):
            idx = list(range(start, min(total, start + chunk * 4)))
            images = [read_rgb(paths[i]) for i in idx]
            for run in same_size_runs([im.shape for im in images], chunk):
                first = images[run[0]]
                if max(first.shape[:2]) <= tile:
                    masks = _whole_masks(predictor, np.stack([images[j] for j in run]))
                else:
                    masks = [_tiled_mask(predictor, images[j], tile, overlap, chunk) for j in run]
                for j, mask in zip(run, masks, strict=True):
                    write_mask(tmp / names[idx[j]], mask, predictor.palette)
                done += len(run)
                yield Progress("predict", done, total, f"{done}/{total} masks")
    return Path(out)


def _whole_masks(predictor: DensePredictor, batch: np.ndarray) -> np.ndarray:
    """Label maps of a batch of same-size images, each predicted in one pass."""
    if hasattr(predictor, "predict_masks"):
        return predictor.predict_masks(batch)
    return predictor.predict(batch).argmax(axis=1).astype(np.uint8)


def _tiled_mask(
    predictor: DensePredictor, image: np.ndarray, tile: int, overlap: int, batch: int
) -> np.ndarray:
    """Label map of an image larger than ``tile``, tile by tile with blended overlaps."""
    from .tiled import predict_block

    h, w = image.shape[:2]
    block = predict_block(predictor, _reader(image), (0, 0, h, w), (h, w), tile, overlap, batch)
    return block.labels


def _reader(image: np.ndarray) -> Callable[[int, int, int, int], np.ndarray]:
    """``read(y, x, height, width)`` over ``image``, mirrored beyond its edges.

    Mirroring (without repeating the edge pixel) is how a one-pass prediction pads an image to a
    multiple of the network's stride, so the tiles of a large image see the same context at its
    edges as a whole-image pass would.
    """
    h, w = image.shape[:2]

    def read(y: int, x: int, height: int, width: int) -> np.ndarray:
        return image[np.ix_(_mirror(np.arange(y, y + height), h), _mirror(np.arange(x, x + width), w))]

    return read


def _mirror(index: np.ndarray, n: int) -> np.ndarray:
    """Indices folded into ``0..n-1`` by reflection about the first and last pixel."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.abs(index) % period
    return np.where(index >= n, period - index, index)
