"""Label images to GeoJSON that QuPath imports: one annotation per connected region per class.

Each region becomes a Polygon (outer ring plus holes) in the slide's level-0 pixel coordinates,
simplified and with ``properties.objectType = "annotation"`` and
``properties.classification = {name, color: [r, g, b]}`` as QuPath writes them itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import _atomic
from ..data.layouts import mask_index_names
from ..errors import SlideError


def _drop_small(mask: np.ndarray, min_px: float) -> np.ndarray:
    from scipy import ndimage as ndi

    if min_px <= 1 or not mask.any():
        return mask
    labels, n = ndi.label(mask)
    keep = np.bincount(labels.ravel(), minlength=n + 1) >= min_px
    keep[0] = False
    return keep[labels]


def _region_polygon(region: np.ndarray):
    """The polygon (with holes) whose boundary follows the pixel edges of one connected region."""
    from shapely.geometry import Polygon
    from skimage.measure import find_contours

    contours = find_contours(np.pad(region, 1).astype(np.uint8), 0.5, fully_connected="high")
    # contour points sit on pixel edges: centre coordinates in the padded array - 1 + 0.5
    rings = [c[:, ::-1] - 0.5 for c in contours if len(c) >= 4]
    if not rings:
        return None
    polys = [Polygon(r) for r in rings]
    outer = max(range(len(polys)), key=lambda i: polys[i].area)
    holes = [rings[i] for i in range(len(rings)) if i != outer]
    return Polygon(rings[outer], holes)


def _clean(geom, tolerance: float):
    """Simplify and repair; returns a Polygon or MultiPolygon, or None when nothing is left."""
    from shapely.geometry import MultiPolygon, Polygon

    geom = geom.simplify(tolerance, preserve_topology=True) if tolerance > 0 else geom
    if not geom.is_valid:
        from shapely.validation import make_valid

        geom = make_valid(geom)
    parts = [g for g in getattr(geom, "geoms", [geom]) if isinstance(g, Polygon) and not g.is_empty]
    parts = [p for g in parts for p in getattr(g, "geoms", [g])]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def _round_coords(obj: Any, ndigits: int = 2) -> Any:
    if isinstance(obj, list | tuple):
        if obj and isinstance(obj[0], float | int):
            return [round(float(v), ndigits) for v in obj]
        return [_round_coords(v, ndigits) for v in obj]
    return obj


def labels_to_features(
    labels: np.ndarray,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    background_index: int | None = None,
    scale: float = 1.0,
    offset: tuple[float, float] = (0.0, 0.0),
    min_area_px: float = 16,
    simplify_px: float = 1.0,
) -> list[dict[str, Any]]:
    """GeoJSON Features, one per connected region of each tissue class in ``labels``.

    Args:
        labels: (y, x) mask indices.
        classes: tissue class names in mask-index order.
        palette: RGB per mask index.
        background_index: mask index of background (default ``len(classes)``); it gets no features.
        scale: output coordinate units per label pixel (slide level-0 pixels per label pixel).
        offset: (x, y) added after scaling.
        min_area_px: regions and holes smaller than this (label pixels) are dropped / filled.
        simplify_px: Douglas-Peucker tolerance in label pixels (topology preserved).
    """
    from scipy import ndimage as ndi
    from shapely import affinity
    from shapely.geometry import mapping

    bg = len(classes) if background_index is None else background_index
    names = mask_index_names(classes, bg)
    features = []
    for value, name in enumerate(names):
        if value == bg:
            continue
        mask = _drop_small(labels == value, min_area_px)
        mask = ~_drop_small(~mask, min_area_px)
        regions, n = ndi.label(mask, structure=np.ones((3, 3)))
        for i, box in enumerate(ndi.find_objects(regions), start=1):
            if box is None:
                continue
            poly = _region_polygon(regions[box] == i)
            if poly is None:
                continue
            poly = _clean(poly, simplify_px)
            if poly is None:
                continue
            poly = affinity.affine_transform(
                poly,
                [scale, 0, 0, scale, offset[0] + box[1].start * scale, offset[1] + box[0].start * scale],
            )
            features.append(
                {
                    "type": "Feature",
                    "geometry": _round_coords(mapping(poly)) | {"type": poly.geom_type},
                    "properties": {
                        "objectType": "annotation",
                        "classification": {"name": name, "color": [int(c) for c in palette[value][:3]]},
                    },
                }
            )
    return features


def write_geojson(
    labels: np.ndarray,
    path: str | os.PathLike,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    background_index: int | None = None,
    scale: float = 1.0,
    min_area_px: float = 16,
    simplify_px: float = 1.0,
    overwrite: bool = False,
) -> Path:
    """Write ``labels`` as a QuPath-readable GeoJSON FeatureCollection, atomically.

    ``scale`` maps label pixels to the slide's level-0 pixels (e.g. 4 for labels at a quarter of
    the scan resolution). Raises :class:`OutputExistsError` if ``path`` exists and not ``overwrite``.
    """
    path = _atomic.check_writable(path, overwrite)
    feats = labels_to_features(
        np.asarray(labels),
        classes,
        palette,
        background_index,
        scale,
        min_area_px=min_area_px,
        simplify_px=simplify_px,
    )
    _atomic.write_text(
        path, json.dumps({"type": "FeatureCollection", "features": feats}, separators=(",", ":"))
    )
    return path


def export_geojson(
    labels_path: str | os.PathLike,
    path: str | os.PathLike,
    resolution: float = 2.0,
    max_pixels: int = 64_000_000,
    min_area_um2: float = 200.0,
    overwrite: bool = False,
) -> Path:
    """Vectorise an OME-Zarr label image (``pbip segment`` output) into QuPath GeoJSON.

    Args:
        labels_path: the ``.zarr`` label image.
        path: GeoJSON file to write.
        resolution: vectorise the finest pyramid level at least this coarse (um/px); coarser
            when that level would exceed ``max_pixels``.
        max_pixels: memory bound on the level vectorised.
        min_area_um2: regions and holes smaller than this are dropped / filled.
        overwrite: replace an existing file.

    Coordinates are in the slide's level-0 pixels when the store records the slide's um/px
    (``pbip segment`` does), else in the label image's level-0 pixels.
    """
    from .labels_reader import open_labels

    path = _atomic.check_writable(path, overwrite, {"label image": labels_path})
    img = open_labels(labels_path)
    level = _pick_level(img.levels, img.mpp, resolution, max_pixels)
    ref_mpp = img.attrs.get("pbip", {}).get("slide_mpp") or img.mpp[0]
    labels = np.asarray(img.levels[level])
    pixel_area = img.mpp[level] ** 2
    return write_geojson(
        labels,
        path,
        img.classes,
        img.palette,
        img.background_index,
        scale=img.mpp[level] / ref_mpp,
        min_area_px=min_area_um2 / pixel_area,
        overwrite=True,
    )


def _pick_level(levels: list, mpp: list[float], resolution: float, max_pixels: int) -> int:
    ok = [i for i, m in enumerate(mpp) if m >= resolution * (1 - 1e-6)]
    level = ok[0] if ok else len(levels) - 1
    while level < len(levels) - 1 and levels[level].shape[0] * levels[level].shape[1] > max_pixels:
        level += 1
    if levels[level].shape[0] * levels[level].shape[1] > 4 * max_pixels:
        raise SlideError(f"coarsest level {levels[level].shape} exceeds max_pixels={max_pixels}; raise it")
    return level
