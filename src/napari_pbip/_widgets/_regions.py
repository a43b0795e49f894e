"""Pixels for the bank from the viewer: the region under a drawn rectangle, or the current patch.

On a slide layer (opened by the napari-pbip reader), the rectangle is mapped to the slide's level-0
pixels through the layers' world coordinates and read with :meth:`Slide.read_region` at the
asked resolution, so the bank gets the tissue at a known um/px whatever pyramid level is on screen.
On an ordinary image layer, the rectangle is cut from the plane on display.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BankError


@dataclass
class Region:
    """Pixels to add to the bank, read on demand (in a worker thread for slides)."""

    read: Callable[[], np.ndarray]
    source: dict[str, Any]
    description: str


def _box(image_layer: Any, shapes_layer: Any, point: tuple[float, ...]) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) of the selected (else the last) shape's bounding box, in the image's data pixels."""
    chosen = sorted(shapes_layer.selected_data) or [len(shapes_layer.data) - 1]
    vertices = np.asarray(shapes_layer.data[chosen[-1]], dtype=float)
    corners = []
    for v in vertices:
        world = np.array(point, dtype=float)  # other axes (e.g. a stack's) at the current position
        world[-2:] = np.asarray(shapes_layer.data_to_world(v), dtype=float)[-2:]
        corners.append(np.asarray(image_layer.world_to_data(world), dtype=float)[-2:])
    data = np.array(corners)
    (y0, x0), (y1, x1) = np.floor(data.min(axis=0)), np.ceil(data.max(axis=0))
    if y1 - y0 < 1 or x1 - x0 < 1:
        raise BankError("the rectangle is empty; draw one that covers some tissue")
    return int(y0), int(x0), int(y1), int(x1)


def _plane(image_layer: Any, point: tuple[float, ...]) -> tuple[np.ndarray, int | None]:
    """The 2D (RGB) plane of ``image_layer`` on display at world ``point``, and its stack index."""
    data = image_layer.data[0] if image_layer.multiscale else image_layer.data
    spatial = 3 if image_layer.rgb else 2
    if data.ndim == spatial:
        return np.asarray(data), None
    coords = image_layer.world_to_data(point)
    index = tuple(
        int(np.clip(round(c), 0, n - 1))
        for c, n in zip(coords[: data.ndim - spatial], data.shape, strict=False)
    )
    return np.asarray(data[index]), index[0] if len(index) == 1 else None


def _rgb(plane: np.ndarray) -> np.ndarray:
    if plane.ndim == 2:
        plane = np.repeat(plane[:, :, None], 3, axis=2)
    if plane.dtype != np.uint8:
        raise BankError(f"the image layer holds {plane.dtype} pixels; the bank takes 8-bit RGB images")
    return plane[:, :, :3]


def region_for_bank(
    image_layer: Any, shapes_layer: Any | None, point: tuple[float, ...], mpp: float | None
) -> Region:
    """The region to add from ``image_layer``: under the rectangle of ``shapes_layer``, else the current patch.

    Args:
        image_layer: a slide layer (metadata ``pbip_slide``) or an RGB image / stack of patches.
        shapes_layer: the Shapes layer with the rectangle, or None for the whole current patch.
        point: the viewer's current world point (picks the patch of a stack).
        mpp: um/px to read a slide region at (None: the slide's level-0 resolution).

    Raises:
        BankError: no rectangle on a slide, an empty rectangle, or non-RGB pixels.
    """
    meta = image_layer.metadata or {}
    if meta.get("pbip_slide"):
        return _slide_region(image_layer, shapes_layer, point, mpp)
    plane, index = _plane(image_layer, point)
    plane = _rgb(plane)
    source: dict[str, Any] = {"layer": image_layer.name}
    if index is not None:
        source["index"] = index
    if shapes_layer is None or len(shapes_layer.data) == 0:
        return Region(
            lambda: plane.copy(), source, f"patch {index if index is not None else ''} of {image_layer.name}"
        )
    y0, x0, y1, x1 = _box(image_layer, shapes_layer, point)
    h, w = plane.shape[:2]
    y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, h), min(x1, w)
    if y1 <= y0 or x1 <= x0:
        raise BankError("the rectangle lies outside the image; draw it over the tissue")
    crop = plane[y0:y1, x0:x1].copy()
    source.update(y=y0, x=x0, height=y1 - y0, width=x1 - x0)
    return Region(lambda: crop, source, f"{x1 - x0}x{y1 - y0} px of {image_layer.name}")


def _slide_region(
    image_layer: Any, shapes_layer: Any | None, point: tuple[float, ...], mpp: float | None
) -> Region:
    from ..slides import open_slide

    meta = image_layer.metadata
    if shapes_layer is None or len(shapes_layer.data) == 0:
        raise BankError(
            f"{image_layer.name} is a whole slide: draw a rectangle over the tissue in a Shapes layer and choose it"
        )
    y0, x0, y1, x1 = _box(image_layer, shapes_layer, point)
    slide = open_slide(meta["pbip_slide"], mpp=meta.get("pbip_mpp") or 1.0)
    mpp = float(mpp or slide.mpp[0])
    f = slide.mpp[0] / mpp
    y, x = round(y0 * f), round(x0 * f)
    h, w = max(1, round((y1 - y0) * f)), max(1, round((x1 - x0) * f))
    source = {"slide": str(slide.path), "y": y, "x": x, "height": h, "width": w, "mpp": mpp}
    return Region(
        lambda: slide.read_region(y, x, h, w, mpp),
        source,
        f"{w}x{h} px at {mpp:g} um/px of {slide.path.name}",
    )
