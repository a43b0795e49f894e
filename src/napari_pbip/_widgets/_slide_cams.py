"""Training previews over the slide in view: which part is in view, its pixels, its layers in register.

The GUI thread notes the part of a slide layer (opened by the napari-pbip reader) in view as an
immutable :class:`SlideView` each time the camera, the canvas or the layers change. The training
job, in the worker thread, calls a :class:`ViewReader` at each preview: it takes the latest view,
reads those pixels from the slide at the training um/px (at most
:data:`~napari_pbip.stage1.region_preview.MAX_TILES` tiles, the centre of a larger view) and says
where they lie (:class:`Placement`). :func:`slide_layers` turns the stage's maps into layers with
the slide's physical scale and the region's translation, so they lie exactly over the tissue.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..stage1.region_preview import MAX_TILES, RegionPixels, capped_box

SLIDE_FG = "PBIP slide FG  X*b*M"
SLIDE_BG = "PBIP slide BG  X*(1-b)*(1-M)"


def slide_cam_layer_name(class_name: str) -> str:
    """Name of the slide-preview CAM layer of ``class_name``."""
    return f"PBIP slide CAM {class_name}"


def is_slide_layer(name: str) -> bool:
    """True for the name of a slide-preview layer (CAM, FG or BG)."""
    return name.startswith("PBIP slide ")


@dataclass(frozen=True)
class SlideView:
    """The part of a slide layer in view, noted in the GUI thread for the worker.

    Attributes:
        layer: the slide layer's name.
        path, backend: the slide file and its reader backend (the layer's metadata).
        mpp: the slide's level-0 um/px.
        box: ``(y0, x0, y1, x1)`` in level-0 pixels, clipped to the slide.
        scale, translate, units: the slide layer's, for placing the preview layers over it.
    """

    layer: str
    path: str
    backend: str
    mpp: float
    box: tuple[float, float, float, float]
    scale: tuple[float, float]
    translate: tuple[float, float]
    units: tuple[str, str]


@dataclass(frozen=True)
class Placement:
    """Where a region preview lies: the slide layer, the scale and translation of its layers.

    Attributes:
        layer: the slide layer's name.
        scale, translate, units: of the preview layers (world units per region pixel; the world
            position of the region's first pixel centre).
        shape: the region's (height, width) in pixels at ``mpp``.
        mpp: um/px of the region.
        cut: True when the view was larger than the cap and only its centre is previewed.
    """

    layer: str
    scale: tuple[float, float]
    translate: tuple[float, float]
    units: tuple[str, str]
    shape: tuple[int, int]
    mpp: float
    cut: bool


def camera(viewer: Any) -> Any:
    """The viewer's camera (napari 0.9 moved it to ``viewer.scene.camera``)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def slide_layer(viewer: Any) -> Any | None:
    """The slide to preview: the selected layer if it is a slide with um/px, else the top visible one."""

    def usable(layer: Any) -> bool:
        meta = layer.metadata or {}
        return bool(meta.get("pbip_slide")) and bool(meta.get("pbip_mpp")) and layer.ndim == 2

    active = viewer.layers.selection.active
    if active is not None and usable(active):
        return active
    for layer in reversed(list(viewer.layers)):
        if layer.visible and usable(layer):
            return layer
    return None


def view_of(viewer: Any) -> SlideView | None:
    """The part of :func:`slide_layer` in the canvas (2D view), or None (no slide, or none in view)."""
    layer = slide_layer(viewer)
    if layer is None or viewer.dims.ndisplay != 2:
        return None
    h, w = viewer.canvas.size
    zoom = camera(viewer).zoom
    cy, cx = camera(viewer).center[-2:]
    corners = []
    for y in (cy - h / 2 / zoom, cy + h / 2 / zoom):
        for x in (cx - w / 2 / zoom, cx + w / 2 / zoom):
            point = np.array(viewer.dims.point, dtype=float)
            point[-2:] = (y, x)
            corners.append(np.asarray(layer.world_to_data(point), dtype=float)[-2:])
    lo, hi = np.min(corners, axis=0) + 0.5, np.max(corners, axis=0) + 0.5  # pixel edges, not centres
    shape = np.asarray(layer.level_shapes[0][:2] if layer.multiscale else layer.data.shape[:2], dtype=float)
    lo, hi = np.clip(lo, 0, shape), np.clip(hi, 0, shape)
    if np.any(hi - lo < 1):
        return None
    meta = layer.metadata
    return SlideView(
        layer=layer.name,
        path=str(meta["pbip_slide"]),
        backend=str(meta.get("pbip_backend") or ""),
        mpp=float(meta["pbip_mpp"]),
        box=(float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])),
        scale=tuple(float(s) for s in layer.scale[-2:]),
        translate=tuple(float(t) for t in layer.translate[-2:]),
        units=tuple(str(u) for u in layer.units[-2:]),
    )


class ViewReader:
    """``reader(mpp, tile)``: the pixels of the latest view for the training job (its ``view``).

    Called in the worker thread; ``current()`` returns the :class:`SlideView` the GUI thread noted
    last (one immutable object, replaced whole, so it is read without a lock). Slides are opened
    here, in the worker, and kept open for the run.
    """

    def __init__(self, current: Callable[[], SlideView | None], max_tiles: int = MAX_TILES):
        self.current = current
        self.max_tiles = max_tiles
        self._slides: dict[tuple[str, float], Any] = {}

    def __call__(self, mpp: float, tile: int) -> RegionPixels | None:
        view = self.current()
        if view is None:
            return None
        from ..slides import open_slide

        key = (view.path, view.mpp)
        if key not in self._slides:
            self._slides[key] = open_slide(view.path, mpp=view.mpp)
        slide = self._slides[key]
        f = view.mpp / mpp  # region pixels per level-0 pixel
        y0, x0 = math.floor(view.box[0] * f), math.floor(view.box[1] * f)
        y1, x1 = math.ceil(view.box[2] * f), math.ceil(view.box[3] * f)
        dy, dx, h, w = capped_box(y1 - y0, x1 - x0, tile, self.max_tiles)
        y, x = y0 + dy, x0 + dx
        image = slide.read_region(y, x, h, w, mpp)
        step = 1 / f  # level-0 pixels per region pixel
        # region pixel j spans level-0 edges [j * step, (j + 1) * step): its centre is at level-0
        # pixel (j + 0.5) * step - 0.5, in the slide layer's pixel-centre coordinates
        translate = tuple(
            t + s * (o * step + 0.5 * step - 0.5)
            for t, s, o in zip(view.translate, view.scale, (y, x), strict=True)
        )
        place = Placement(
            layer=view.layer,
            scale=tuple(s * step for s in view.scale),
            translate=translate,
            units=view.units,
            shape=(h, w),
            mpp=mpp,
            cut=(h, w) != (y1 - y0, x1 - x0),
        )
        return RegionPixels(image, place)


def _fgbg_weights(region: dict[str, Any], fgbg_class: int | None) -> tuple[np.ndarray, np.ndarray]:
    """FG and BG weights (H, W) of the strongest present class at each pixel, or of class ``fgbg_class``."""
    cams = np.asarray(region["cams"], dtype=np.float32)  # zero where a class is not present
    pick = cams.argmax(axis=0)[None] if fgbg_class is None else np.full((1, *cams.shape[1:]), fgbg_class)
    fg = np.take_along_axis(np.asarray(region["fg"], np.float32), pick, 0)[0]
    bg = np.take_along_axis(np.asarray(region["bg"], np.float32), pick, 0)[0]
    return fg, bg


def slide_layers(region: dict[str, Any], fgbg_class: int | None = None) -> list[tuple[str, np.ndarray, dict]]:
    """(name, data, layer kwargs) of the slide-preview layers, from a preview's ``"region"`` maps.

    FG and BG come first (added hidden: over the slide they would hide it; tick them to look),
    then one CAM colour map per class over them, all uint8, placed by the region's
    :class:`Placement`.
    """
    from napari.utils.colormaps import Colormap

    place: Placement = region["where"]
    at = {"scale": place.scale, "translate": place.translate, "units": place.units}
    image = np.asarray(region["image"], dtype=np.float32)
    fg, bg = _fgbg_weights(region, fgbg_class)
    out = [
        (name, (image * weight[..., None]).astype(np.uint8), {"rgb": True, "visible": False, **at})
        for name, weight in ((SLIDE_FG, fg), (SLIDE_BG, bg))
    ]
    cams = np.rint(np.asarray(region["cams"], dtype=np.float32) * 255).astype(np.uint8)
    for n, name in enumerate(region["classes"]):
        r, g, b = (c / 255 for c in region["palette"][n][:3])
        cmap = Colormap([[r, g, b, 0.0], [r, g, b, 1.0]], name=f"pbip-slide-cam-{name}")
        out.append(
            (
                slide_cam_layer_name(name),
                cams[n],
                {"colormap": cmap, "contrast_limits": (0, 255), "opacity": 0.6, **at},
            )
        )
    return out


def describe(region: dict[str, Any] | None, note: str | None) -> str:
    """One line on the last slide preview for the widget: what was read, or why nothing was."""
    if note:
        return note
    if region is None:
        return "slide preview: no slide layer in view (open a slide with the napari-pbip reader)"
    place: Placement = region["where"]
    h, w = place.shape
    text = f"slide preview: {w} x {h} px at {place.mpp:g} um/px of {place.layer}"
    if place.cut:
        text += f" (the centre of the view: at most {MAX_TILES} tiles)"
    return text
