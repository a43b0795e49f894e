"""OME-Zarr (NGFF 0.5) outputs: an RGB image of the slide with the segmentation under ``labels/``.

We write **NGFF 0.5**: zarr format 3 (what zarr-python 3 writes by default) with the OME metadata
under the ``"ome"`` attribute key, laid out as ome-zarr-py, napari-ome-zarr and QuPath expect an
image with labels. Layout of ``OUT.zarr``::

    zarr.json             ome.multiscales: the image (axes c, y, x in micrometer) + ome.omero (RGB)
    0, 1, ...             uint8 (3, y, x) image of the slide at a low resolution
    labels/zarr.json      ome.labels = ["tissue"]
    labels/tissue/        the label image: ome.multiscales (axes y, x), ome.image-label (colours per
                          label value, class names, source ../../), pbip (class table, run metadata)
        0, 1, 2, ...      uint8 label values, level l downsampled 2**l by mode of 2x2 blocks
    probabilities/        optional uint8 (c, y, x) multiscale, channel c = label value c, 255 = 1
    pbip/                 our bookkeeping, as zarr nodes (so zarr warns about no stray file)

Label values: 0 is background, tissue class ``k`` is ``k + 1`` (:mod:`.label_values`). The
pyramid is built block by block: a block whose origin and size are multiples of ``2**(n-1)``
writes all ``n`` levels itself, so tiled jobs write disjoint zarr chunks at every level.
Reading (also older outputs, a bare label image at the root) is :mod:`.labels_reader`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import _atomic
from ..errors import SlideError
from .label_values import (
    BACKGROUND_NAME,
    BACKGROUND_VALUE,
    LABEL_FORMAT,
    class_table,
    mask_lut,
    palette_by_value,
    to_values,
)

NGFF_VERSION = "0.5"
STORE_CHUNK = 1024
MIN_SIDE = 512  # the coarsest label level is at most about this large
IMAGE_CHUNK = 512
LABELS_NAME = "tissue"  # the label image: labels/tissue


def n_levels_for(shape: tuple[int, int], block: int) -> int:
    """Pyramid depth: halve until the longer side is <= MIN_SIDE, while ``block`` stays divisible."""
    n, side = 1, max(shape)
    while side > MIN_SIDE and block % (2**n) == 0:
        side = math.ceil(side / 2)
        n += 1
    return n


def level_shape(shape: tuple[int, int], level: int) -> tuple[int, int]:
    """Shape of ``level`` (each level halves, rounding up)."""
    f = 2**level
    return math.ceil(shape[0] / f), math.ceil(shape[1] / f)


def store_chunk(block: int, level: int) -> int:
    """Zarr chunk side at ``level``: divides the block there, at most STORE_CHUNK."""
    return math.gcd(max(block >> level, 1), STORE_CHUNK)


def downsample_mode(labels: np.ndarray) -> np.ndarray:
    """Halve a label image: each output pixel is the most frequent of its 2x2 block (ties: top-left)."""
    h, w = labels.shape
    if h % 2 or w % 2:
        labels = np.pad(labels, ((0, h % 2), (0, w % 2)), mode="edge")
    a, b, c, d = labels[0::2, 0::2], labels[0::2, 1::2], labels[1::2, 0::2], labels[1::2, 1::2]
    best = a.copy()
    best_score = np.zeros(a.shape, np.uint8)
    for k in np.unique(labels):
        score = 2 * ((a == k).astype(np.uint8) + (b == k) + (c == k) + (d == k)) + (a == k)
        better = score > best_score
        best[better] = k
        best_score[better] = score[better]
    return best


def downsample_mean(probs: np.ndarray) -> np.ndarray:
    """Halve (c, h, w) uint8 probabilities by averaging 2x2 blocks."""
    _, h, w = probs.shape
    if h % 2 or w % 2:
        probs = np.pad(probs, ((0, 0), (0, h % 2), (0, w % 2)), mode="edge")
    p = probs.astype(np.uint16)
    s = p[:, 0::2, 0::2] + p[:, 0::2, 1::2] + p[:, 1::2, 0::2] + p[:, 1::2, 1::2]
    return ((s + 2) // 4).astype(np.uint8)


def _multiscales(name: str, mpp: float, n: int, channel: bool) -> list[dict[str, Any]]:
    axes = [
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    if channel:
        axes.insert(0, {"name": "c", "type": "channel"})
    datasets = []
    for level in range(n):
        scale = [mpp * 2**level] * 2
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [{"type": "scale", "scale": [1.0] * channel + scale}],
            }
        )
    return [{"name": name, "axes": axes, "datasets": datasets, "type": "mean" if channel else "mode"}]


def labels_attrs(
    mpp: float, n_levels: int, classes: Sequence[str], palette: Sequence[Sequence[int]]
) -> dict[str, Any]:
    """The ``ome`` attributes of the label image (``palette`` by label value; background transparent)."""
    names = [BACKGROUND_NAME, *classes]
    colors, props = [], []
    for value, (name, rgb) in enumerate(zip(names, palette, strict=True)):
        alpha = 0 if value == BACKGROUND_VALUE else 255
        colors.append({"label-value": value, "rgba": [int(c) for c in rgb[:3]] + [alpha]})
        props.append({"label-value": value, "class": name})
    return {
        "version": NGFF_VERSION,
        "multiscales": _multiscales("tissue classes", mpp, n_levels, channel=False),
        "image-label": {"colors": colors, "properties": props, "source": {"image": "../../"}},
    }


def label_group_path(root: str | os.PathLike) -> Path:
    """Where the label image of an output store lies (``labels/tissue``)."""
    return Path(root) / "labels" / LABELS_NAME


@dataclass
class LabelsStore:
    """An output store on disk: where it is and how its label pyramid is laid out.

    ``classes`` and ``palette`` are by label value (background, value 0, first in ``palette``).
    """

    path: Path
    shape: tuple[int, int]
    mpp: float
    n_levels: int
    block: int
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    probabilities: bool = False

    @property
    def label_path(self) -> Path:
        """The label image group inside the store."""
        return label_group_path(self.path)

    def write_block(self, y0: int, x0: int, labels: np.ndarray, probs: np.ndarray | None = None) -> None:
        """Write a level-0 block of label values at (y0, x0) and its downsampled copies into every level.

        ``probs`` (c, h, w) has one channel per label value.
        """
        import zarr

        f = 2 ** (self.n_levels - 1)
        if y0 % f or x0 % f:
            raise ValueError(
                f"block origin {(y0, x0)} is not a multiple of {f}; the pyramid needs aligned blocks"
            )
        for level in range(self.n_levels):
            if level:
                labels = downsample_mode(labels)
                probs = None if probs is None else downsample_mean(probs)
            ly, lx = y0 >> level, x0 >> level
            arr = zarr.open_array(store=str(self.label_path), path=str(level), mode="r+")
            arr[ly : ly + labels.shape[0], lx : lx + labels.shape[1]] = labels
            if probs is not None and self.probabilities:
                parr = zarr.open_array(store=str(self.path), path=f"probabilities/{level}", mode="r+")
                parr[:, ly : ly + probs.shape[1], lx : lx + probs.shape[2]] = probs


def _codec():
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")]


def create_labels_store(
    path: str | os.PathLike,
    shape: tuple[int, int],
    mpp: float,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    block: int = 4096,
    probabilities: bool = False,
    pbip_attrs: dict[str, Any] | None = None,
    image: np.ndarray | None = None,
    image_mpp: float | None = None,
) -> LabelsStore:
    """Create an empty output store (every label pixel background) for :meth:`LabelsStore.write_block`.

    Args:
        path: the ``.zarr`` folder.
        shape: (height, width) of the label image at ``mpp`` um/px.
        mpp: um/px of the label image.
        classes: tissue class names (label values 1, 2, ...).
        palette: RGB per label value, background (0) first.
        block: pixels per written block (the pyramid depth keeps it divisible).
        probabilities: also create the ``probabilities`` image.
        pbip_attrs: kept under the label image's ``pbip`` attribute, beside the class table.
        image: (y, x, 3) uint8 image of the slide for the root; None leaves it to
            :func:`write_image` (an NGFF image needs one before readers open it).
        image_mpp: um/px of ``image``.
    """
    import zarr

    if len(palette) != len(classes) + 1:
        raise SlideError(
            f"palette has {len(palette)} colours for {len(classes)} classes; expected one per label value "
            "(background first)"
        )
    path = Path(path)
    palette = tuple(tuple(int(v) for v in c[:3]) for c in palette)
    n = n_levels_for(shape, block)
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    labels_root = root.create_group("labels")
    labels_root.attrs["ome"] = {"version": NGFF_VERSION, "labels": [LABELS_NAME]}
    group = labels_root.create_group(LABELS_NAME)
    group.attrs.update(
        {
            "ome": labels_attrs(mpp, n, classes, palette),
            "pbip": {
                "label_format": LABEL_FORMAT,
                "classes": class_table(classes, palette),
                **(pbip_attrs or {}),
            },
        }
    )
    for level in range(n):
        c = store_chunk(block, level)
        group.create_array(
            str(level),
            shape=level_shape(shape, level),
            chunks=(c, c),
            dtype="uint8",
            fill_value=BACKGROUND_VALUE,
            compressors=_codec(),
            dimension_names=("y", "x"),
        )
    if probabilities:
        _create_probabilities(root, shape, mpp, n, block, classes, palette)
    if image is not None:
        write_image(path, image, image_mpp or mpp, n)
    return LabelsStore(path, tuple(shape), float(mpp), n, block, tuple(classes), palette, probabilities)


def write_image(path: str | os.PathLike, rgb: np.ndarray, mpp: float, n_levels: int) -> None:
    """Write the store's root image: ``rgb`` (y, x, 3) uint8 at ``mpp`` um/px, halved ``n_levels - 1`` times.

    NGFF validators want as many image levels as label levels; the image is small (the slide at
    a coarse resolution), so its levels cost little.
    """
    import zarr

    root = zarr.open_group(str(path), mode="r+")
    levels = [np.ascontiguousarray(np.moveaxis(np.asarray(rgb, np.uint8)[..., :3], -1, 0))]
    while len(levels) < n_levels:
        levels.append(downsample_mean(levels[-1]))
    for level, data in enumerate(levels):
        c = min(IMAGE_CHUNK, max(data.shape[1:]))
        arr = root.create_array(
            str(level),
            shape=data.shape,
            chunks=(3, c, c),
            dtype="uint8",
            fill_value=255,
            compressors=_codec(),
            dimension_names=("c", "y", "x"),
            overwrite=True,
        )
        arr[:] = data
    channels = [
        {
            "label": name,
            "color": color,
            "window": {"start": 0, "end": 255, "min": 0, "max": 255},
            "active": True,
        }
        for name, color in (("red", "FF0000"), ("green", "00FF00"), ("blue", "0000FF"))
    ]
    root.attrs["ome"] = {
        "version": NGFF_VERSION,
        "multiscales": _multiscales("slide", mpp, len(levels), channel=True),
        "omero": {"channels": channels, "rdefs": {"model": "color"}},
    }


def _create_probabilities(root, shape, mpp, n, block, classes, palette) -> None:
    names = [BACKGROUND_NAME, *classes]
    group = root.create_group("probabilities")
    channels = [
        {
            "label": name,
            "color": "".join(f"{int(v):02X}" for v in rgb[:3]),
            "window": {"start": 0, "end": 255, "min": 0, "max": 255},
            "active": True,
        }
        for name, rgb in zip(names, palette, strict=True)
    ]
    group.attrs.update(
        {
            "ome": {
                "version": NGFF_VERSION,
                "multiscales": _multiscales("class probabilities", mpp, n, channel=True),
                "omero": {"channels": channels, "rdefs": {"model": "color"}},
            }
        }
    )
    for level in range(n):
        c = store_chunk(block, level)
        group.create_array(
            str(level),
            shape=(len(names), *level_shape(shape, level)),
            chunks=(1, c, c),
            dtype="uint8",
            fill_value=0,
            compressors=_codec(),
            dimension_names=("c", "y", "x"),
        )


def write_labels_ome_zarr(
    labels: Any,
    path: str | os.PathLike,
    mpp: float,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    background_index: int | None = None,
    probabilities: Any = None,
    overwrite: bool = False,
    block: int = 4096,
    image: np.ndarray | None = None,
    image_mpp: float | None = None,
) -> Path:
    """Write a label image (numpy or dask, (y, x) mask indices) as an OME-Zarr output, atomically.

    The store holds label values (0 background, class ``k`` as ``k + 1``; see the module docstring)
    under ``labels/tissue``, and ``image`` (or, without one, the labels in their class colours) as
    the NGFF image they belong to.

    Args:
        labels: mask indices; values outside ``0..len(palette)-1`` are rejected.
        path: output folder (``.zarr``).
        mpp: um/px of ``labels``.
        classes: tissue class names in mask-index order (without background).
        palette: RGB per mask index (tissue classes and background).
        background_index: mask index of background (default: ``len(classes)``).
        probabilities: optional (c, y, x) uint8 (0-255) or float (0-1) probabilities per mask index.
        overwrite: replace an existing output.
        block: pixels per written block (bounds memory for dask inputs).
        image: (y, x, 3) uint8 image of the slide at ``image_mpp`` um/px (default ``mpp``).
        image_mpp: um/px of ``image``.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
    """
    bg = len(classes) if background_index is None else background_index
    n = len(classes)
    if len(palette) != n + 1:
        raise SlideError(
            f"palette has {len(palette)} colours for {n} classes; expected one per class + background"
        )
    by_value = palette_by_value(palette, n, bg)
    channels = mask_lut(n, bg)  # probabilities channel per label value
    shape = (int(labels.shape[0]), int(labels.shape[1]))
    with _atomic.atomic_dir(path, overwrite=overwrite) as tmp:
        store = create_labels_store(tmp, shape, mpp, classes, by_value, block, probabilities is not None)
        for y0 in range(0, shape[0], block):
            for x0 in range(0, shape[1], block):
                lab = np.asarray(labels[y0 : y0 + block, x0 : x0 + block])
                try:
                    values = to_values(lab, n, bg)
                except ValueError:
                    raise SlideError(
                        f"labels contain {int(lab.max())}; expected mask indices 0..{len(palette) - 1}"
                    ) from None
                prob = None
                if probabilities is not None:
                    prob = np.asarray(probabilities[:, y0 : y0 + block, x0 : x0 + block])[channels]
                    if prob.dtype != np.uint8:
                        prob = np.clip(np.rint(prob * 255), 0, 255).astype(np.uint8)
                store.write_block(y0, x0, values, prob)
        if image is None:  # no slide at hand: the image is the labels in their class colours
            image, image_mpp = render_labels(store)
        write_image(tmp, image, image_mpp or mpp, store.n_levels)
    return Path(path)


def render_labels(store: LabelsStore) -> tuple[np.ndarray, float]:
    """The coarsest label level in class colours, and its um/px (the image of a store without a slide)."""
    import zarr

    level = store.n_levels - 1
    values = zarr.open_array(store=str(store.label_path), path=str(level), mode="r")[:]
    return np.asarray(store.palette, np.uint8)[values], store.mpp * 2**level
