"""napari reader: whole-slide images as lazy multiscale RGB layers with their physical scale.

Slides open through :func:`napari_pbip.slides.open_slide` (OpenSlide, tifffile, OME-Zarr): every
pyramid level is a lazy dask array read tile by tile, so no level is loaded whole, and the layer's
scale is the scan's um/px. A ``.zarr`` folder holding a label image written by ``pbip segment``
(or the OME-Zarr writer) opens as a multiscale Labels layer with its class names and colours.

napari chooses among readers by file name alone (npe2 ``filename_patterns``; a folder matches every
reader that accepts folders) and asks this module's :func:`get_reader` only once the user has
chosen it, in the reader dialog or by remembering the choice. Its builtins claim ``*.tif``,
``*.svs`` and folders too, so napari asks; a TIFF it is then handed opens as what it is (slide,
label image or plain image) rather than being refused, which would only raise an error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".tif", ".tiff", ".vms", ".vmu", ".bif", ".zarr")
LABEL_TIFF_SUFFIXES = (".labels.tif", ".labels.tiff")
DASK_CACHE_BYTES = 256 * 1024**2  # napari's default (25% of RAM) is far too much for slide viewing
MIN_LEVEL_SIDE = 16  # levels smaller than this add nothing to the display
EDITABLE_PIXELS = 64 * 1024**2  # a one-level label image up to this size opens in memory, editable
NO_MPP_NOTE = (
    "slide records no um/px; shown in pixels (scale 1). Give its resolution where a tool asks for um/px."
)

LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: str | list[str]):
    """Return a reader function for what this plugin can show, else None (napari's plugin guide).

    OpenSlide formats open as slides. A TIFF is looked at first: 8-bit RGB opens as a slide, a
    single plane of integers named ``*.labels.tif`` (as ``pbip data synth`` writes ground truth) as
    Labels, anything else tifffile reads (greyscale, 16-bit, multi-channel) as a plain image, as
    napari's builtins show it (napari hands a ``.tif`` to this reader only when the user chose it,
    so declining would only raise an error). A ``.zarr`` folder opens when it is a label image or a
    slide pbip can read.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    name = p.name.lower().rstrip("/")
    if not name.endswith(SLIDE_SUFFIXES):
        return None
    if name.endswith(".zarr"):
        if not p.is_dir():
            return None
        if _is_label_image(p):
            return read_labels
        return read_slide if _opens_as_slide(p) else None
    if name.endswith((".tif", ".tiff")) and p.is_file():
        from ..slides import tiff_kind

        kind = tiff_kind(p)
        if kind == "rgb":
            return read_slide
        if kind == "labels" and name.endswith(LABEL_TIFF_SUFFIXES):
            return read_label_tiff
        return read_tiff_image if _tiff_parses(p) else None
    return read_slide


def _tiff_parses(path: Path) -> bool:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return bool(tif.series)
    except Exception:  # not a TIFF tifffile reads: napari's other readers may
        return False


def _opens_as_slide(path: Path) -> bool:
    from ..errors import SlideError
    from ..slides import open_slide

    try:
        open_slide(path, mpp=1.0)
    except SlideError:
        return False
    return True


def _is_label_image(path: Path) -> bool:
    """A bare NGFF label image (an earlier ``pbip segment`` output, or from elsewhere), or an output
    of ``pbip segment`` or the writers (an image with pbip's labels under ``labels/``)."""
    attrs = _zarr_attrs(path)
    if attrs is None:
        return False
    if "image-label" in attrs.get("ome", attrs) or "pbip_output" in attrs:
        return True
    names = (_zarr_attrs(path / "labels") or {}).get("ome", {}).get("labels", [])
    return any("pbip" in (_zarr_attrs(path / "labels" / str(name)) or {}) for name in names)


def _zarr_attrs(path: Path) -> dict[str, Any] | None:
    meta = path / "zarr.json"
    if not meta.is_file():
        meta = path / ".zattrs"
    try:
        attrs = json.loads(meta.read_text())
    except (OSError, ValueError):
        return None
    return attrs.get("attributes", attrs) if isinstance(attrs, dict) else None


def slide_layer_data(path: str | os.PathLike, mpp: float | None = None) -> LayerData:
    """The (data, kwargs, "image") layer tuple for a slide: lazy pyramid, um scale, metadata.

    The layer's metadata records ``pbip_slide`` (the file), ``pbip_backend`` and ``pbip_mpp``
    (level-0 um/px, None when the file has none), which the dock widgets use to read regions.
    """
    from ..errors import SlideError
    from ..slides import open_slide

    note = ""
    try:
        slide = open_slide(path, mpp=mpp)
    except SlideError as exc:
        if "resolution" not in str(exc):
            raise
        slide = open_slide(path, mpp=1.0)  # no um/px in the file: show it in pixels rather than refuse
        note = NO_MPP_NOTE
    levels = [
        lvl for lvl, (h, w) in zip(slide.levels, slide.shapes, strict=True) if min(h, w) >= MIN_LEVEL_SIDE
    ]
    levels = levels or slide.levels[:1]
    mpp0 = None if note else slide.mpp[0]
    metadata = {
        "pbip_slide": str(slide.path),
        "pbip_backend": slide.backend,
        "pbip_mpp": mpp0,
        "slide_metadata": {k: str(v) for k, v in slide.metadata.items()},
    }
    if note:
        metadata["pbip_note"] = note
    kwargs = {
        "name": slide.path.name,
        "rgb": True,
        "multiscale": len(levels) > 1,
        "scale": (mpp0 or 1.0, mpp0 or 1.0),
        "units": ("um", "um") if mpp0 else ("pixel", "pixel"),
        "metadata": metadata,
        "contrast_limits": (0, 255),
    }
    return (levels if len(levels) > 1 else levels[0]), kwargs, "image"


def labels_layer_data(path: str | os.PathLike) -> LayerData:
    """The (data, kwargs, "labels") tuple of an OME-Zarr label image: lazy pyramid, um scale, class colours.

    Values are napari's: 0 background, tissue classes from 1 (older outputs are converted as read).
    """
    import numpy as np

    from ..export import open_labels
    from ._labels import ClassMap, layer_kwargs

    img = open_labels(path)
    cm = ClassMap(img.classes, img.palette, img.background_index)
    slide_mpp = img.attrs.get("pbip", {}).get("slide_mpp")
    kwargs = layer_kwargs(cm, img.mpp[0], slide_mpp, Path(path).name)
    kwargs["multiscale"] = len(img.levels) > 1
    if len(img.levels) > 1:
        return img.levels, kwargs, "labels"
    level = img.levels[0]
    small = level.shape[0] * level.shape[1] <= EDITABLE_PIXELS
    return (np.asarray(level) if small else level), kwargs, "labels"  # in memory: napari paints into it


def read_slide(path: str | list[str]) -> list[LayerData]:
    """napari reader function: one lazy multiscale image layer per slide."""
    from napari.utils import resize_dask_cache

    resize_dask_cache(nbytes=DASK_CACHE_BYTES)
    if isinstance(path, list):
        path = path[0]
    return [slide_layer_data(path)]


def read_labels(path: str | list[str]) -> list[LayerData]:
    """napari reader function: an OME-Zarr label image as a (read-only, multiscale) Labels layer."""
    from napari.utils import resize_dask_cache

    resize_dask_cache(nbytes=DASK_CACHE_BYTES)
    if isinstance(path, list):
        path = path[0]
    return [labels_layer_data(path)]


def read_label_tiff(path: str | list[str]) -> list[LayerData]:
    """napari reader function: a one-plane integer TIFF (``*.labels.tif``) as a Labels layer, in um when
    the file records its resolution."""
    import tifffile

    from ..slides import tiff_mpp

    if isinstance(path, list):
        path = path[0]
    mpp = tiff_mpp(path)
    kwargs: dict[str, Any] = {"name": Path(path).name}
    if mpp:
        kwargs.update(scale=(mpp, mpp), units=("um", "um"))
    return [(tifffile.imread(path), kwargs, "labels")]


def read_tiff_image(path: str | list[str]) -> list[LayerData]:
    """napari reader function: a TIFF that is neither a slide nor a label image (greyscale, 16-bit,
    multi-channel) as one image layer of its first series, the data napari's builtins show, in um
    when the file records its resolution."""
    import tifffile

    from ..slides import tiff_mpp

    if isinstance(path, list):
        path = path[0]
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        data, axes = series.asarray(), series.axes
    kwargs: dict[str, Any] = {"name": Path(path).name}
    mpp = tiff_mpp(path)
    if mpp and axes.endswith("YX"):  # with samples last (YXS) napari may take them as RGB: left in pixels
        lead = len(axes) - 2
        kwargs.update(scale=(1.0,) * lead + (mpp, mpp), units=("pixel",) * lead + ("um", "um"))
    return [(data, kwargs, "image")]
