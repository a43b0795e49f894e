"""napari reader: whole-slide images as lazy multiscale RGB layers with their physical scale."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".tif", ".tiff", ".vms", ".vmu", ".bif", ".zarr")
DASK_CACHE_BYTES = 256 * 1024**2  # napari's default (25% of RAM) is far too much for slide viewing


def get_reader(path: str | list[str]):
    """Return :func:`read_slide` when ``path`` looks like a slide napari-pbip can open, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    name = p.name.lower().rstrip("/")
    if not name.endswith(SLIDE_SUFFIXES) and not name.endswith((".ome.tif", ".ome.tiff", ".ome.zarr")):
        return None
    if name.endswith(".zarr") and not p.is_dir():
        return None
    return read_slide


def slide_layer_data(path: str | os.PathLike, mpp: float | None = None) -> tuple[list[Any], dict[str, Any], str]:
    """The (data, kwargs, "image") layer tuple for a slide: lazy pyramid, um scale, metadata."""
    from ..errors import SlideError
    from ..slide import open_slide

    note = ""
    try:
        slide = open_slide(path, mpp=mpp)
    except SlideError as exc:
        if "resolution" not in str(exc):
            raise
        # No um/px in the file: show it in pixels rather than refusing to open it.
        slide = open_slide(path, mpp=1.0)
        note = "slide records no um/px; shown in pixels (scale 1). Give the resolution in 'Segment slide'."
    levels = [lvl for lvl, (h, w) in zip(slide.levels, slide.shapes, strict=True) if min(h, w) >= 16]
    scale = (slide.mpp[0], slide.mpp[0]) if not note else (1.0, 1.0)
    meta = {
        "pbip_slide": str(slide.path),
        "pbip_backend": slide.backend,
        "pbip_mpp": None if note else slide.mpp[0],
        "slide_metadata": {k: str(v) for k, v in slide.metadata.items()},
    }
    kwargs = {
        "name": slide.path.name,
        "rgb": True,
        "multiscale": len(levels) > 1,
        "scale": scale,
        "units": ("um", "um") if not note else ("pixel", "pixel"),
        "metadata": meta,
        "contrast_limits": (0, 255),
    }
    if note:
        kwargs["metadata"]["pbip_note"] = note
    return (levels if len(levels) > 1 else levels[0]), kwargs, "image"


def read_slide(path: str | list[str]) -> list[tuple[Any, dict[str, Any], str]]:
    """napari reader function: one lazy multiscale image layer per slide."""
    from napari.utils import resize_dask_cache

    resize_dask_cache(nbytes=DASK_CACHE_BYTES)
    if isinstance(path, list):
        path = path[0]
    return [slide_layer_data(path)]
