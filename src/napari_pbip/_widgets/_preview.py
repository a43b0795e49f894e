"""Layers showing the training preview: the fixed preview patches, one CAM layer per class, FG and BG.

The patches are laid out as one mosaic. Each class's CAM (gated by the patch's image labels, as
the losses use them) is drawn over it in the class colour, transparent where the CAM is low. The
FG and BG layers show what ImgMatchNet feeds the frozen encoder (eq. 5), ``X * b * M`` and
``X * (1 - b) * (1 - M)``, for the strongest labelled class at each pixel (or one chosen class),
as mosaics beside the patches.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np

from ..events import Job, Preview
from ._quiet_add import add_in_steps

T = TypeVar("T")

GAP = 4  # pixels between patches in a mosaic
PATCHES = "PBIP preview patches"
FG = "PBIP FG  X*b*M"
BG = "PBIP BG  X*(1-b)*(1-M)"


def cam_layer_name(class_name: str) -> str:
    """Name of the CAM layer of ``class_name``."""
    return f"PBIP CAM {class_name}"


def mosaic(stack: np.ndarray, fill: float = 0) -> np.ndarray:
    """Patches ``(P, S, S, ...)`` laid out in a near-square grid with :data:`GAP` px between them."""
    p, s = stack.shape[0], stack.shape[1]
    cols = math.ceil(math.sqrt(p))
    rows = math.ceil(p / cols)
    out = np.full((rows * (s + GAP) - GAP, cols * (s + GAP) - GAP, *stack.shape[3:]), fill, stack.dtype)
    for i in range(p):
        r, c = divmod(i, cols)
        out[r * (s + GAP) : r * (s + GAP) + s, c * (s + GAP) : c * (s + GAP) + s] = stack[i]
    return out


def cam_bytes(cams: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """CAMs in [0, 1] gated by the image labels, as uint8 0-255 (a quarter of the float texture to upload)."""
    return np.rint(np.asarray(cams, dtype=np.float32) * labels * 255).astype(np.uint8)


def _class_weights(payload: dict[str, Any], fgbg_class: int | None) -> tuple[np.ndarray, np.ndarray]:
    """FG and BG weights (P, S, S) of the strongest labelled class per pixel, or of class ``fgbg_class``."""
    labels = np.asarray(payload["labels"], dtype=np.float32)[:, :, None, None]
    cams = np.asarray(payload["cams"], dtype=np.float32) * labels
    fg, bg = np.asarray(payload["fg"], np.float32), np.asarray(payload["bg"], np.float32)
    if fgbg_class is None:
        pick = np.where(labels > 0, cams, -1.0).argmax(axis=1)[:, None]
    else:
        pick = np.full((cams.shape[0], 1, *cams.shape[2:]), fgbg_class)
    return np.take_along_axis(fg, pick, 1)[:, 0], np.take_along_axis(bg, pick, 1)[:, 0]


def preview_layers(
    payload: dict[str, Any], fgbg_class: int | None = None
) -> list[tuple[str, np.ndarray, dict]]:
    """(name, data, layer kwargs) of each preview layer, from a training preview payload."""
    from napari.utils.colormaps import Colormap

    images = np.asarray(payload["images"])
    mpp = payload.get("mpp")
    # in um when the patches' um/px is known: beside a slide in um, napari keeps the scale bar's
    # unit only while every layer has the same units
    physical = {"scale": (mpp, mpp), "units": ("um", "um")} if mpp else {}
    width = (mosaic(images).shape[1] + 4 * GAP) * (mpp or 1)
    labels = np.asarray(payload["labels"], dtype=np.float32)[:, :, None, None]
    cams = cam_bytes(payload["cams"], labels)
    out = [(PATCHES, mosaic(images, 255), {"rgb": True, **physical})]
    for n, name in enumerate(payload["classes"]):
        r, g, b = (c / 255 for c in payload["palette"][n][:3])
        cmap = Colormap([[r, g, b, 0.0], [r, g, b, 1.0]], name=f"pbip-cam-{name}")
        out.append(
            (
                cam_layer_name(name),
                mosaic(cams[:, n]),
                {"colormap": cmap, "contrast_limits": (0, 255), "opacity": 0.6, **physical},
            )
        )
    fg, bg = _class_weights(payload, fgbg_class)
    for i, (name, weight) in enumerate(((FG, fg), (BG, bg)), start=1):
        rgb = (images.astype(np.float32) * weight[..., None]).astype(np.uint8)
        out.append((name, mosaic(rgb, 255), {"rgb": True, "translate": (0, i * width), **physical}))
    return out


def all_layers(maps: dict[str, Any], fgbg_class: int | None = None) -> list[tuple[str, np.ndarray, dict]]:
    """The preview's patch layers, then its slide layers when it has a ``"region"`` (see ``_slide_cams``)."""
    from ._slide_cams import slide_layers

    layers = preview_layers(maps, fgbg_class)
    if maps.get("region") is not None:
        layers += slide_layers(maps["region"], fgbg_class)
    return layers


def with_layers(job: Job[T], fgbg_class: Callable[[], int | None]) -> Job[T]:
    """Pass a training job's events on, each :class:`~napari_pbip.events.Preview` with its ``layers`` made.

    Runs in the worker thread, so the mosaics, colour maps and slide-preview images of a preview
    (30-55 ms of numpy for the patches in the GUI thread while training ran on the development
    machine) are made there. ``fgbg_class()`` is the class the user picked for the FG/BG layers
    when the preview is made (see :func:`all_layers`); the job is closed in the thread that closes
    this generator, as the library's jobs expect.
    """
    try:
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                return stop.value
            payload = event.payload
            if isinstance(payload, Preview):
                chosen = fgbg_class()
                try:
                    layers = all_layers(payload.maps, chosen)
                except Exception:  # a view must not stop training: the GUI makes them (and reports)
                    layers = None
                if layers is not None:
                    event = replace(event, payload=replace(payload, layers=(chosen, layers)))
            yield event
    finally:
        job.close()


class PreviewLayers:
    """Shows preview payloads in a viewer one layer per event-loop turn.

    Each layer change costs napari a refresh and the canvas a redraw (under software OpenGL about
    25 ms per visible layer, several times that while training keeps the CPUs busy; creating a
    layer costs more, most for the first of its kind). Applying them one per turn lets the GUI
    handle input between them. A new layer is added hidden and finished on the following turns
    (:func:`~._quiet_add.add_in_steps`), so napari's set-up of the layer and the canvas's first
    draw of it (texture upload) fall in different turns. A new preview replaces the changes still
    waiting, except the steps finishing layers already added.
    """

    def __init__(self, viewer: Any):
        from qtpy.QtCore import QTimer

        self.viewer = viewer
        # layer changes (name, data, layer kwargs), or steps finishing a layer already added
        self.pending: list[tuple[str, np.ndarray, dict] | Callable[[], None]] = []
        self.timer = QTimer()
        self.timer.setInterval(0)
        self.timer.timeout.connect(self._apply_next)

    def show(
        self, preview: Preview, fgbg_class: int | None = None, patches: bool = True, slide: bool = True
    ) -> None:
        """Queue the layers of ``preview`` (replacing any still waiting) and start applying them.

        Layers made beforehand for the same FG/BG class (:func:`with_layers`) are used as they are.
        ``patches`` / ``slide``: show the training patches' layers / the slide-preview layers.
        """
        from ._slide_cams import is_slide_layer

        made = preview.layers
        layers = (
            made[1] if made is not None and made[0] == fgbg_class else all_layers(preview.maps, fgbg_class)
        )
        layers = [change for change in layers if (slide if is_slide_layer(change[0]) else patches)]
        finishing = [change for change in self.pending if callable(change)]
        self.pending = finishing + layers
        self.timer.start()

    @property
    def busy(self) -> bool:
        """True while layer changes wait to be applied."""
        return bool(self.pending)

    def _apply_next(self) -> None:
        if not self.pending:
            self.timer.stop()
            return
        change = self.pending.pop(0)
        if callable(change):  # a step finishing a layer added on an earlier turn
            change()
            return
        name, data, kwargs = change
        layers = self.viewer.layers
        if name in layers:
            _replace_in_place(layers[name], data, kwargs)
            return
        kwargs = dict(kwargs)
        shown = kwargs.pop("visible", True)
        _, steps = add_in_steps(self.viewer, "image", data, name=name, **kwargs)
        self.pending[:0] = steps if shown else steps[:-1]  # on the next turns (the last one shows it)


def _replace_in_place(layer: Any, data: np.ndarray, kwargs: dict) -> None:
    """New pixels (and place) for an existing preview layer: the same layer object, whatever changed."""
    moved = False
    for key in ("scale", "translate"):
        if key in kwargs and not np.allclose(getattr(layer, key), kwargs[key]):
            setattr(layer, key, kwargs[key])
            moved = True
    if layer.data.shape == data.shape and layer.data.dtype == data.dtype:
        layer.data[...] = data  # same array, new pixels: no new texture, no extent change
        layer.refresh(extent=moved)
    else:
        layer.data = data  # another size (the view changed): the same layer, a new array
