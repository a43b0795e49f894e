"""How napari-pbip label layers carry their classes: metadata, colours, and reading them back.

Label layers follow napari's convention: 0 is background (unlabelled, what the eraser paints) and
tissue class ``k`` is value ``k + 1``, as in the outputs of ``pbip segment``
(:mod:`napari_pbip.export.label_values`); pixels a running segmentation has not reached yet hold
:data:`UNFILLED`. A layer made by the plugin (ground truth, segmentation) records
``pbip_classes``, ``pbip_palette`` and ``pbip_background_index`` (0; a layer kept from an earlier
version may hold mask indices with background N) and ``pbip_slide_mpp``, the level-0 um/px of the
slide it belongs to, in its ``metadata`` so the writers know what the values mean.

Label layers from elsewhere are read by napari's convention: every value other than 0 is a class
of its own, named ``label <value>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.layouts import mask_index_names
from ..errors import SlideError
from ..export.label_values import BACKGROUND_VALUE, palette_by_value, to_values

UNFILLED = 255  # pixels a running segmentation has not written yet


@dataclass(frozen=True)
class ClassMap:
    """Tissue classes of a label image, their colours and the background index."""

    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    background_index: int

    @property
    def names(self) -> list[str]:
        """A name per mask index (tissue classes with "background" at its index)."""
        return list(mask_index_names(self.classes, self.background_index))

    def metadata(self, slide_mpp: float | None = None) -> dict[str, Any]:
        """The layer metadata that records this class map (see the module docstring)."""
        return {
            "pbip_classes": list(self.classes),
            "pbip_palette": [list(c) for c in self.palette],
            "pbip_background_index": self.background_index,
            "pbip_slide_mpp": slide_mpp,
        }


def colormap(cm: ClassMap, background_alpha: float = 0.0):
    """A napari label colormap painting each class in its palette colour.

    Background is drawn with ``background_alpha`` (0: the slide shows through) and
    :data:`UNFILLED` pixels are transparent. The colormap's background value is 0 when background
    is label value 0, so napari's eraser paints background.
    """
    from napari.utils.colormaps import DirectLabelColormap

    colors: dict[int | None, Any] = {None: np.zeros(4, np.float32), UNFILLED: np.zeros(4, np.float32)}
    for value, rgb in enumerate(cm.palette):
        alpha = background_alpha if value == cm.background_index else 1.0
        colors[value] = np.array([*(c / 255 for c in rgb[:3]), alpha], np.float32)
    background = BACKGROUND_VALUE if cm.background_index == BACKGROUND_VALUE else UNFILLED
    return DirectLabelColormap(color_dict=colors, background_value=background)


def as_label_values(cm: ClassMap, labels: np.ndarray) -> tuple[ClassMap, np.ndarray]:
    """A class map and labels in mask indices (a data set's, a synthetic slide's) as napari's label
    values: background 0, class ``k`` as ``k + 1``."""
    if cm.background_index == BACKGROUND_VALUE:
        return cm, labels
    n = len(cm.classes)
    values = to_values(labels, n, cm.background_index)
    return ClassMap(
        cm.classes, palette_by_value(cm.palette, n, cm.background_index), BACKGROUND_VALUE
    ), values


def layer_kwargs(
    cm: ClassMap, mpp: float | None, slide_mpp: float | None, name: str, in_slide_pixels: bool = False
) -> dict[str, Any]:
    """Keyword arguments of a label layer showing ``cm``'s classes at ``mpp`` um/px (pixels when None).

    With ``in_slide_pixels`` (the slide's layer is shown in pixels: its file records no um/px, and
    ``slide_mpp`` was given for it) the layer is scaled in the slide's level-0 pixels instead of um,
    so that it lies over the slide; :func:`layer_mpp` still reads its um/px.
    """
    kwargs: dict[str, Any] = {
        "name": name,
        "colormap": colormap(cm),
        "opacity": 0.5,
        "metadata": cm.metadata(slide_mpp),
        "features": {"index": list(range(len(cm.names))), "class": cm.names},
    }
    if mpp is not None and in_slide_pixels and slide_mpp:
        kwargs.update(scale=(mpp / slide_mpp,) * 2, units=("pixel", "pixel"))
    elif mpp is not None:
        kwargs.update(scale=(mpp, mpp), units=("um", "um"))
    return kwargs


def in_pixels(units: Any) -> bool:
    """Whether a layer's ``units`` say its world is in pixels rather than a physical length."""
    return units is not None and len(units) > 0 and str(units[-1]) in ("pixel", "px")


def layer_mpp(scale: Any, units: Any, metadata: dict[str, Any] | None) -> float:
    """um per pixel of a label layer: its scale when in um; over a slide shown in pixels (units
    ``pixel`` and the slide's ``pbip_slide_mpp`` recorded) its scale times the slide's um/px."""
    s = float(scale[-1]) if scale is not None and len(scale) else 1.0
    slide_mpp = (metadata or {}).get("pbip_slide_mpp")
    return s * float(slide_mpp) if in_pixels(units) and slide_mpp else s


def to_slide_pixels(layer: Any) -> None:
    """Rescale a label layer opened in um (a ``.zarr`` output) to the level-0 pixels of its slide,
    for a slide layer shown in pixels (no um/px in its file); no change without ``pbip_slide_mpp``."""
    slide_mpp = (layer.metadata or {}).get("pbip_slide_mpp")
    if slide_mpp and not in_pixels(layer.units):
        layer.scale = tuple(s / slide_mpp for s in layer.scale)
        layer.translate = tuple(t / slide_mpp for t in layer.translate)
        layer.units = ("pixel",) * len(layer.units)


def from_layer(
    data: Any, metadata: dict[str, Any], colormap_obj: Any = None, properties: Any = None
) -> tuple[ClassMap, np.ndarray]:
    """The class map of a label layer and its pixels as mask indices (2D ``uint8``).

    Layers made by the plugin are read through their metadata (:data:`UNFILLED` becomes
    background); other layers through napari's convention, with colours from their colormap and
    class names from their ``properties`` when these pair an ``index`` with a ``class`` (as
    napari-ome-zarr gives an NGFF label image's class table). A multiscale layer is written from
    its full-resolution level.

    Raises:
        SlideError: the layer is not 2D, or holds values its classes do not cover.
    """
    if isinstance(data, list | tuple):  # multiscale: the first level is the full resolution
        data = data[0]
    labels = np.asarray(data)
    if labels.ndim != 2:
        raise SlideError(
            f"the label layer has {labels.ndim} dimensions {labels.shape}; only 2D label images can be written"
        )
    if "pbip_classes" in metadata:
        cm = ClassMap(
            tuple(metadata["pbip_classes"]),
            tuple(tuple(int(v) for v in c[:3]) for c in metadata["pbip_palette"]),
            int(metadata["pbip_background_index"]),
        )
        out = labels.astype(np.uint8, copy=True)
        out[labels == UNFILLED] = cm.background_index
        bad = np.unique(out[out >= len(cm.palette)])
        if bad.size:
            raise SlideError(
                f"the label layer holds value(s) {bad.tolist()}, but its classes {cm.names} use 0..{len(cm.palette) - 1}; "
                "paint with those values only"
            )
        return cm, out
    return _napari_convention(labels, colormap_obj, _class_names(properties))


def _class_names(properties: Any) -> dict[int, str]:
    """``{value: class name}`` from a layer's ``index`` and ``class`` properties (else empty)."""
    if not properties or "index" not in properties or "class" not in properties:
        return {}
    return {int(i): str(c) for i, c in zip(properties["index"], properties["class"], strict=False)}


def _napari_convention(
    labels: np.ndarray, colormap_obj: Any, names: dict[int, str] | None = None
) -> tuple[ClassMap, np.ndarray]:
    if labels.size and (labels.min() < 0 or labels.max() > 254):
        raise SlideError(
            f"the label layer holds values {int(labels.min())}..{int(labels.max())}; the writers take 0..254 "
            "(0 = unlabelled)"
        )
    names = names or {}
    top = max([int(labels.max()) if labels.size else 0, *(v for v in names if v <= 254)])
    values = list(range(1, top + 1))
    classes = tuple(names.get(v, f"label {v}") for v in values)
    palette = [(255, 255, 255)] + [_colour(colormap_obj, v) for v in values]
    return ClassMap(classes, tuple(palette), BACKGROUND_VALUE), labels.astype(np.uint8)


def _colour(colormap_obj: Any, value: int) -> tuple[int, int, int]:
    if colormap_obj is not None and hasattr(colormap_obj, "map"):
        rgba = np.asarray(colormap_obj.map(np.array([value])), dtype=float).reshape(-1)[:3]
        return tuple(int(round(255 * c)) for c in rgba)
    return (128, 128, 128)
