"""OME-Zarr (NGFF) label images: class names and colours, a mode-downsampled pyramid, probabilities.

We write **NGFF 0.5**: zarr format 3 (what zarr-python 3 writes by default) with the OME metadata
under the ``"ome"`` attribute key. ome-zarr-py (>= 0.10) and napari-ome-zarr read it; our own
reader (:func:`open_labels`) also reads 0.4 files. Layout of ``OUT.zarr``::

    zarr.json          ome.multiscales (axes y, x in micrometer) + ome.image-label (colours, class names)
    0, 1, 2, ...       uint8 labels per level, level l downsampled 2**l by mode of 2x2 blocks
    probabilities/     optional uint8 (c, y, x) multiscale, 255 = probability 1, mean-downsampled
    pbip/              our bookkeeping group (settings, per-chunk done markers)

The pyramid is built block by block: a block whose origin and size are multiples of ``2**(n-1)``
writes all ``n`` levels itself, so tiled jobs write disjoint zarr chunks at every level.
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
from ..data.layouts import mask_index_names
from ..errors import SlideError

NGFF_VERSION = "0.5"
STORE_CHUNK = 1024
MIN_SIDE = 512  # the coarsest level is at most about this large


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
    mpp: float,
    n_levels: int,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    background_index: int,
) -> dict[str, Any]:
    """The ``ome`` attributes of a label image (background drawn transparent over the slide)."""
    names = mask_index_names(classes, background_index)
    colors, props = [], []
    for value, (name, rgb) in enumerate(zip(names, palette, strict=True)):
        alpha = 0 if value == background_index else 255
        colors.append({"label-value": value, "rgba": [int(c) for c in rgb[:3]] + [alpha]})
        props.append({"label-value": value, "class": name})
    return {
        "version": NGFF_VERSION,
        "multiscales": _multiscales("tissue classes", mpp, n_levels, channel=False),
        "image-label": {"colors": colors, "properties": props},
    }


@dataclass
class LabelsStore:
    """An OME-Zarr label image on disk: where it is and how its pyramid is laid out."""

    path: Path
    shape: tuple[int, int]
    mpp: float
    n_levels: int
    block: int
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    background_index: int
    probabilities: bool = False

    def write_block(self, y0: int, x0: int, labels: np.ndarray, probs: np.ndarray | None = None) -> None:
        """Write a level-0 block at (y0, x0) and its downsampled copies into every level."""
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
            arr = zarr.open_array(store=str(self.path), path=str(level), mode="r+")
            arr[ly : ly + labels.shape[0], lx : lx + labels.shape[1]] = labels
            if probs is not None and self.probabilities:
                parr = zarr.open_array(store=str(self.path), path=f"probabilities/{level}", mode="r+")
                parr[:, ly : ly + probs.shape[1], lx : lx + probs.shape[2]] = probs


def create_labels_store(
    path: str | os.PathLike,
    shape: tuple[int, int],
    mpp: float,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    background_index: int,
    block: int = 4096,
    probabilities: bool = False,
    extra_attrs: dict[str, Any] | None = None,
) -> LabelsStore:
    """Create an empty OME-Zarr label image (every pixel background) ready for :meth:`LabelsStore.write_block`."""
    import zarr
    from zarr.codecs import BloscCodec

    path = Path(path)
    n = n_levels_for(shape, block)
    codec = [BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle")]
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.attrs.update(
        {"ome": labels_attrs(mpp, n, classes, palette, background_index), **(extra_attrs or {})}
    )
    for level in range(n):
        c = store_chunk(block, level)
        root.create_array(
            str(level),
            shape=level_shape(shape, level),
            chunks=(c, c),
            dtype="uint8",
            fill_value=background_index,
            compressors=codec,
            dimension_names=("y", "x"),
        )
    if probabilities:
        _create_probabilities(root, shape, mpp, n, block, classes, palette, background_index, codec)
    return LabelsStore(
        path,
        tuple(shape),
        float(mpp),
        n,
        block,
        tuple(classes),
        tuple(tuple(int(v) for v in c[:3]) for c in palette),
        background_index,
        probabilities,
    )


def _create_probabilities(root, shape, mpp, n, block, classes, palette, background_index, codec) -> None:
    names = mask_index_names(classes, background_index)
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
            compressors=codec,
            dimension_names=("c", "y", "x"),
        )


@dataclass
class LabelsImage:
    """An OME-Zarr label image opened lazily (as written by :func:`write_labels_ome_zarr` or ``pbip segment``)."""

    path: Path
    levels: list[Any]  # dask arrays (y, x) uint8, finest first
    mpp: list[float]
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    background_index: int
    attrs: dict[str, Any]


def open_labels(path: str | os.PathLike) -> LabelsImage:
    """Open an OME-Zarr label image (NGFF 0.4 or 0.5) with its class names and colours.

    Raises:
        SlideError: ``path`` is not an OME-Zarr label image.
    """
    import dask.array as da
    import zarr

    path = Path(path)
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise SlideError(f"{path} is not a zarr group ({exc}); expected an OME-Zarr label image") from exc
    attrs = root.attrs.asdict()
    ome = attrs.get("ome", attrs)
    if "image-label" not in ome or "multiscales" not in ome:
        raise SlideError(f"{path} has no NGFF 'image-label' metadata; expected output of pbip segment")
    datasets = ome["multiscales"][0]["datasets"]
    levels = [da.from_zarr(root[d["path"]]) for d in datasets]
    mpp = [float(d["coordinateTransformations"][0]["scale"][-1]) for d in datasets]
    props = {
        p["label-value"]: p.get("class", str(p["label-value"]))
        for p in ome["image-label"].get("properties", [])
    }
    colors = {c["label-value"]: tuple(c["rgba"][:3]) for c in ome["image-label"].get("colors", [])}
    values = sorted(set(props) | set(colors))
    background = next((v for v in values if props.get(v) == "background"), values[-1])
    classes = tuple(props.get(v, str(v)) for v in values if v != background)
    palette = tuple(colors.get(v, (128, 128, 128)) for v in values)
    return LabelsImage(path, levels, mpp, classes, palette, background, attrs)


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
) -> Path:
    """Write a label image (numpy or dask, (y, x) integers) as an OME-Zarr label pyramid, atomically.

    Args:
        labels: mask indices; values outside ``0..len(palette)-1`` are rejected.
        path: output folder (``.zarr``).
        mpp: um/px of ``labels``.
        classes: tissue class names in mask-index order (without background).
        palette: RGB per mask index (tissue classes and background).
        background_index: mask index of background (default: ``len(classes)``).
        probabilities: optional (c, y, x) uint8 (0-255) or float (0-1) class probabilities.
        overwrite: replace an existing output.
        block: pixels per written block (bounds memory for dask inputs).

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
    """
    bg = len(classes) if background_index is None else background_index
    if len(palette) != len(classes) + 1:
        raise SlideError(
            f"palette has {len(palette)} colours for {len(classes)} classes; expected one per class + background"
        )
    shape = (int(labels.shape[0]), int(labels.shape[1]))
    with _atomic.atomic_dir(path, overwrite=overwrite) as tmp:
        store = create_labels_store(tmp, shape, mpp, classes, palette, bg, block, probabilities is not None)
        for y0 in range(0, shape[0], block):
            for x0 in range(0, shape[1], block):
                lab = np.asarray(labels[y0 : y0 + block, x0 : x0 + block])
                if lab.size and (lab.min() < 0 or lab.max() >= len(palette)):
                    raise SlideError(
                        f"labels contain {int(lab.max())}; expected mask indices 0..{len(palette) - 1}"
                    )
                prob = None
                if probabilities is not None:
                    prob = np.asarray(probabilities[:, y0 : y0 + block, x0 : x0 + block])
                    if prob.dtype != np.uint8:
                        prob = np.clip(np.rint(prob * 255), 0, 255).astype(np.uint8)
                store.write_block(y0, x0, lab.astype(np.uint8), prob)
    return Path(path)
