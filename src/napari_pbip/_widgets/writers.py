"""napari writers: a Labels layer as an OME-Zarr label image, or as GeoJSON polygons for QuPath.

Both read the layer's classes as :mod:`._labels` describes and its physical size from the layer's
scale (um per pixel; over a slide shown in pixels, the scale times the slide's um/px). They call the same export functions as ``pbip segment --geojson``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MIN_AREA_UM2 = 200.0  # regions and holes smaller than this are dropped, as `pbip segment --geojson` does


def _mpp(attributes: dict[str, Any]) -> float:
    from ._labels import layer_mpp

    return layer_mpp(attributes.get("scale"), attributes.get("units"), attributes.get("metadata"))


def _zarr_target(path: Path) -> None:
    """Refuse to replace an existing folder that is not a zarr store (napari asked about the name only)."""
    from ..errors import OutputExistsError

    if path.exists() and not ((path / "zarr.json").exists() or (path / ".zgroup").exists()):
        raise OutputExistsError(f"{path} exists and is not a zarr store; choose a new name ending in .zarr")


def write_labels_zarr(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """napari writer: the layer as an NGFF label pyramid with class names and colours."""
    from ..export import write_labels_ome_zarr
    from ._labels import from_layer

    metadata = attributes.get("metadata") or {}
    cm, labels = from_layer(data, metadata, attributes.get("colormap"), attributes.get("properties"))
    out = Path(path)
    _zarr_target(out)
    write_labels_ome_zarr(
        labels, out, _mpp(attributes), cm.classes, cm.palette, cm.background_index, overwrite=True
    )
    return [os.fspath(out)]


def write_labels_geojson(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """napari writer: one QuPath annotation per connected region of each class.

    Coordinates are level-0 pixels of the slide the layer belongs to when its metadata records
    the slide's um/px (``pbip_slide_mpp``), else the layer's own pixels; the layer's translation
    is honoured.
    """
    from .. import _atomic
    from ..export import labels_to_features
    from ._labels import from_layer

    metadata = attributes.get("metadata") or {}
    cm, labels = from_layer(data, metadata, attributes.get("colormap"), attributes.get("properties"))
    mpp = _mpp(attributes)
    slide_mpp = metadata.get("pbip_slide_mpp") or mpp
    scale = attributes.get("scale")
    unit_um = mpp / (float(scale[-1]) if scale is not None and len(scale) else 1.0)  # um per world unit
    translate = attributes.get("translate")
    ty, tx = (
        (float(translate[-2]), float(translate[-1]))
        if translate is not None and len(translate) >= 2
        else (0, 0)
    )
    features = labels_to_features(
        labels,
        cm.classes,
        cm.palette,
        cm.background_index,
        scale=mpp / slide_mpp,
        offset=(tx * unit_um / slide_mpp, ty * unit_um / slide_mpp),
        min_area_px=MIN_AREA_UM2 / (mpp * mpp),
    )
    out = Path(path)
    _atomic.write_text(
        out, json.dumps({"type": "FeatureCollection", "features": features}, separators=(",", ":"))
    )
    return [os.fspath(out)]
