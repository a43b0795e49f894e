"""Weak tiling: turn pixel-annotated images into a weakly labelled training set.

Each annotated image is cut into ``tile`` x ``tile`` crops every ``stride`` pixels (plus one crop
flush with the right and bottom edges); a crop is labelled with the tissue classes that cover at
least ``min_fraction`` of it, and dropped when background (mask background or near-white pixels)
covers more than ``max_background``. Images smaller than a tile are padded with white
background. The crops are written in the generic layout (``train/<stem>-y<y>-x<x>-[1 0 1].png``
plus ``dataset.json``), ready for the image bank and stage-1 training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import _atomic
from ..errors import DatasetError
from ..events import Job, Progress
from ..settings import Settings, check
from .images import list_images, read_mask, read_rgb, write_mask, write_rgb
from .labels import labelled_name
from .layouts import SPLITS, DatasetSpec, open_dataset, read_spec, write_spec

OUTPUT_KIND = "data weak"  # the command named in the data set folder's output marker


# The defaults are what the WSSS4LUAD cross-validation scores (benchmarks/compare_real.py,
# docs/benchmarks.md). min_fraction 0.1: at 0.05 a tile is single-class only where one class fills
# 95% of it, too few for a bank when a fold holds out the image most of them come from.
# max_background 0.8: normal lung is mostly white airspace, and at 0.5 one fold trained on 4 normal
# tiles of 263 (16 at 0.8); stage 2 on the 0.8 tiles scored higher in every fold.


@dataclass(frozen=True)
class WeakSettings(Settings):
    """How annotated images are tiled into weakly labelled patches.

    Attributes:
        tile: side of the square tiles in pixels.
        stride: step between tile origins in pixels.
        min_fraction: a class labels a tile when it covers at least this share of the tile.
        max_background: tiles whose background share (mask background or near-white) exceeds
            this are dropped.
        white_level: a pixel whose three channels are all at least this counts as background.
        save_masks: also write each tile's mask crop to ``train_masks/`` (same file name), to
            score pseudo-masks against.
    """

    tile: int = 224
    stride: int = 56
    min_fraction: float = 0.1
    max_background: float = 0.8
    white_level: int = 220
    save_masks: bool = False

    def __post_init__(self) -> None:
        check(isinstance(self.tile, int) and self.tile >= 8, "tile", self.tile, "an integer >= 8 (pixels)")
        check(
            isinstance(self.stride, int) and self.stride >= 1,
            "stride",
            self.stride,
            "an integer >= 1 (pixels)",
        )
        check(0 < self.min_fraction <= 1, "min_fraction", self.min_fraction, "a share in (0, 1], e.g. 0.05")
        check(
            0 <= self.max_background <= 1,
            "max_background",
            self.max_background,
            "a share in [0, 1], e.g. 0.5",
        )
        check(
            0 <= self.white_level <= 255, "white_level", self.white_level, "a grey level in 0..255, e.g. 220"
        )


def infer_spec(images: str | os.PathLike) -> DatasetSpec:
    """The spec of the data set an annotated image folder belongs to.

    Recognised: ``<root>/<split>/img`` of a data set :func:`open_dataset` can read, or a
    ``dataset.json`` in the folder or its parent.

    Raises:
        DatasetError: no spec can be found; the message says to pass a ``dataset.json``.
    """
    folder = Path(images).resolve()
    for candidate in (folder / "dataset.json", folder.parent / "dataset.json"):
        if candidate.is_file():
            return read_spec(candidate)
    if folder.name == "img" and folder.parent.name in SPLITS:
        try:
            return open_dataset(folder.parent.parent).spec
        except DatasetError as exc:
            reason = f" ({exc})"
    else:
        reason = ""
    raise DatasetError(
        f"cannot tell the classes of the images in {folder}: it is not the <split>/img folder of a known data "
        f"set and holds no dataset.json{reason}; pass a dataset.json (--dataset-json FILE) with classes, "
        "palette and background_index"
    )


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile origins along one axis: every ``stride``, plus one flush with the end; ``[0]`` if short."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def _pad(image: np.ndarray, mask: np.ndarray, tile: int, background: int) -> tuple[np.ndarray, np.ndarray]:
    pad_y, pad_x = max(0, tile - image.shape[0]), max(0, tile - image.shape[1])
    if pad_y or pad_x:
        image = np.pad(image, ((0, pad_y), (0, pad_x), (0, 0)), constant_values=255)
        mask = np.pad(mask, ((0, pad_y), (0, pad_x)), constant_values=background)
    return image, mask


def tile_label(
    mask: np.ndarray, white: np.ndarray, spec: DatasetSpec, settings: WeakSettings
) -> tuple[int, ...] | str:
    """The multi-hot label of one tile, or the reason it is dropped (``"background"``, ``"unlabelled"``)."""
    background = (mask == spec.background_index) | white
    if background.mean() > settings.max_background:
        return "background"
    counts = np.bincount(mask.ravel(), minlength=len(spec.palette)) / mask.size
    labels = tuple(int(counts[i] >= settings.min_fraction) for i in spec.tissue_indices)
    return labels if any(labels) else "unlabelled"


def _pairs(images: Path, masks: Path) -> list[tuple[Path, Path]]:
    image_files = list_images(images)
    if not image_files:
        raise DatasetError(f"no images (.png, .jpg, .tif, ...) in {images}")
    mask_files = {p.stem: p for p in list_images(masks)}
    missing = [p.name for p in image_files if p.stem not in mask_files]
    if missing:
        raise DatasetError(
            f"{len(missing)} image(s) in {images} have no mask in {masks}, e.g. {missing[:3]}; "
            "masks must be named like their images"
        )
    return [(p, mask_files[p.stem]) for p in image_files]


def _tile_image(image_path: Path, mask_path: Path, spec: DatasetSpec, settings: WeakSettings, train: Path):
    """Write the kept tiles of one image; yield (name, label or drop reason) per tile."""
    image, mask = read_rgb(image_path), read_mask(mask_path, spec)
    if image.shape[:2] != mask.shape:
        raise DatasetError(
            f"image {image_path} is {image.shape[1]}x{image.shape[0]} px but its mask {mask_path} is "
            f"{mask.shape[1]}x{mask.shape[0]}; masks must match their images"
        )
    image, mask = _pad(image, mask, settings.tile, spec.background_index)
    white = (image >= settings.white_level).all(axis=2)
    t = settings.tile
    for y in tile_starts(image.shape[0], t, settings.stride):
        for x in tile_starts(image.shape[1], t, settings.stride):
            crop = mask[y : y + t, x : x + t]
            label = tile_label(crop, white[y : y + t, x : x + t], spec, settings)
            if isinstance(label, str):
                yield None, label
                continue
            name = labelled_name(f"{image_path.stem}-y{y}-x{x}", label, "space")
            write_rgb(train / name, np.ascontiguousarray(image[y : y + t, x : x + t]))
            if settings.save_masks:
                write_mask(train.parent / "train_masks" / name, crop, spec.palette)
            yield name, label


def weak_dataset(
    images: str | os.PathLike,
    masks: str | os.PathLike,
    out: str | os.PathLike,
    settings: WeakSettings | None = None,
    spec: DatasetSpec | None = None,
    overwrite: bool = False,
) -> Job[dict[str, Any]]:
    """Tile annotated images into a weakly labelled training set (a generator job).

    Args:
        images: folder of RGB images.
        masks: folder of masks named like the images (palette/index PNG or RGB in the palette).
        out: output data set folder (generic layout); written atomically.
        settings: tiling settings (defaults: 224 px tiles every 56 px).
        spec: classes, palette and background of the masks; inferred from ``images`` when None
            (see :func:`infer_spec`).
        overwrite: replace ``out`` if it is a previous ``data weak`` output.

    Yields:
        One :class:`Progress` per image (stage ``"tile"``).

    Returns:
        A summary: ``tiles``, per-class tile counts (``class_counts``, ``single_class_counts``),
        ``dropped`` counts by reason, the output folder and the settings.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is false, or it is not a previous
            ``data weak`` output.
        OutputConflictError: ``out`` is, contains or lies inside ``images`` or ``masks``.
        DatasetError: inputs are missing, unpaired or mismatched.
    """
    settings = settings or WeakSettings()
    images, masks, out = Path(images), Path(masks), Path(out)
    inputs = {"images": images, "masks": masks}
    _atomic.check_output(out, OUTPUT_KIND, inputs, overwrite=overwrite)
    spec = spec or infer_spec(images)
    pairs = _pairs(images, masks)
    out_spec = DatasetSpec("generic", spec.classes, spec.palette, spec.background_index, "space")
    class_counts = dict.fromkeys(spec.classes, 0)
    single = dict.fromkeys(spec.classes, 0)
    dropped = {"background": 0, "unlabelled": 0}
    tiles = 0
    yield Progress("tile", 0, len(pairs), f"tiling {len(pairs)} images from {images}")
    with _atomic.atomic_dir(out, overwrite=overwrite, kind=OUTPUT_KIND, inputs=inputs) as tmp:
        (tmp / "train").mkdir()
        for step, (image_path, mask_path) in enumerate(pairs, start=1):
            kept = 0
            for name, label in _tile_image(image_path, mask_path, spec, settings, tmp / "train"):
                if name is None:
                    dropped[label] += 1
                    continue
                kept += 1
                for cls, on in zip(spec.classes, label, strict=True):
                    class_counts[cls] += on
                    single[cls] += int(on == 1 and sum(label) == 1)
            tiles += kept
            yield Progress(
                "tile", step, len(pairs), f"{image_path.name}: {kept} tiles", {"tiles": float(tiles)}
            )
        if tiles == 0:
            raise DatasetError(
                f"no tile of {images} passed the filters ({dropped}); lower tile or min_fraction, "
                "or raise max_background"
            )
        write_spec(tmp, out_spec, name=f"weak tiles of {images.name}")
        settings.save(tmp / "weak_settings.json")
        summary = {
            "out": str(out),
            "images": len(pairs),
            "tiles": tiles,
            "class_counts": class_counts,
            "single_class_counts": single,
            "dropped": dropped,
            "classes": list(spec.classes),
            "settings": settings.to_dict(),
        }
        _atomic.write_json(tmp / "summary.json", summary)
    return summary
