"""Class regions drawn in napari, as the plain GeoJSON features the training-data job takes.

A Shapes layer gives one feature per shape, its class from the layer's ``class`` feature (or
property); a painted Labels layer gives one feature per connected region of each value, value
``k`` being the ``k``-th class. Vertices and pixels are mapped through world coordinates onto
the slide layer's data grid, which for a slide opened by the pbip reader is level 0, so regions
drawn at any zoom, and Labels painted at a coarser scale, land where they were drawn.

The layers are read in the GUI thread (:func:`regions_input`); turning painted labels into
polygons and opening the slide happen in the worker (:func:`slide_regions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError

CLASS_COLUMN = "class"
AREA_SHAPES = ("polygon", "rectangle", "ellipse")


@dataclass
class RegionsInput:
    """What the worker needs for one slide: the file, its um/px when the file has none, and the regions
    as GeoJSON features (shapes, a GeoJSON file) or as a painted label image on the level-0 grid."""

    slide: Path
    slide_mpp: float | None
    source: str
    features: list[dict[str, Any]] = field(default_factory=list)
    labels: np.ndarray | None = None
    labels_scale: float = 1.0  # level-0 px per label pixel
    labels_offset: tuple[float, float] = (0.0, 0.0)  # level-0 (x, y) of the label image's corner
    annotations: Path | None = None  # the GeoJSON file read, an input never to be written over


def _to_slide(slide_layer: Any, layer: Any, yx: np.ndarray) -> np.ndarray:
    """Data coordinates (rows of y, x) of ``layer`` -> level-0 pixel coordinates of ``slide_layer``'s slide.

    napari centres pixel ``i`` on data coordinate ``i``; GeoJSON (QuPath) puts its corner there, hence the
    half pixel."""
    out = []
    for v in yx:
        world = np.asarray(layer.data_to_world(v), dtype=float)[-2:]
        out.append(np.asarray(slide_layer.world_to_data(world), dtype=float)[-2:] + 0.5)
    return np.array(out)


def _classes_of(shapes: Any) -> list[Any]:
    features = getattr(shapes, "features", None)
    if features is not None and CLASS_COLUMN in getattr(features, "columns", ()):
        return list(features[CLASS_COLUMN])
    props = getattr(shapes, "properties", {}) or {}
    if CLASS_COLUMN in props:
        return list(props[CLASS_COLUMN])
    raise DatasetError(
        f"the shapes of {shapes.name!r} carry no {CLASS_COLUMN!r}: draw in a layer made with 'New regions layer', "
        f"or give the layer a {CLASS_COLUMN!r} feature naming each shape's class"
    )


def _ellipse(corners: np.ndarray, n: int = 64) -> np.ndarray:
    """Outline (y, x) of the ellipse napari stores as the four corners of its (rotated) bounding box."""
    centre = corners.mean(axis=0)
    a, b = (corners[1] - corners[0]) / 2, (corners[3] - corners[0]) / 2
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)[:, None]
    return centre + np.cos(t) * a + np.sin(t) * b


def shapes_features(slide_layer: Any, shapes: Any) -> list[dict[str, Any]]:
    """One GeoJSON feature per shape of ``shapes``, in the slide's level-0 pixels.

    Raises:
        DatasetError: the layer has no class per shape, or a shape is a line or path (no area).
    """
    classes = _classes_of(shapes)
    features = []
    for i, (data, kind) in enumerate(zip(shapes.data, shapes.shape_type, strict=True)):
        if kind not in AREA_SHAPES:
            raise DatasetError(
                f"shape {i + 1} of {shapes.name!r} is a {kind}, which has no area; draw polygons, rectangles or "
                "ellipses, or delete it"
            )
        yx = np.asarray(data, dtype=float)[:, -2:]
        yx = _to_slide(slide_layer, shapes, _ellipse(yx) if kind == "ellipse" else yx)
        ring = [[float(x), float(y)] for y, x in yx] + [[float(yx[0, 1]), float(yx[0, 0])]]
        name = classes[i]
        props: dict[str, Any] = {"objectType": "annotation"}
        if name is not None and str(name) not in ("", "nan"):
            props["classification"] = {"name": str(name)}
        features.append(
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": props}
        )
    return features


def labels_placement(slide_layer: Any, labels: Any) -> tuple[float, tuple[float, float]]:
    """(level-0 px per label pixel, level-0 (x, y) of the label image's top-left corner)."""
    corner = _to_slide(slide_layer, labels, np.array([[-0.5, -0.5], [0.5, 0.5]]))
    scale = float(corner[1, 0] - corner[0, 0])
    return scale, (float(corner[0, 1]), float(corner[0, 0]))


def regions_input(
    slide_layer: Any, regions: Any, slide_mpp: float | None = None, geojson: Path | None = None
) -> RegionsInput:
    """Read a slide layer's regions, from a Shapes or Labels layer or a GeoJSON file, in the GUI thread."""
    from napari.layers import Labels, Shapes

    from ..slides.annotations import read_geojson

    meta = slide_layer.metadata or {}
    if not meta.get("pbip_slide"):
        raise DatasetError(
            f"{slide_layer.name} is not a slide opened by the napari-pbip reader; open the slide file"
        )
    slide = Path(meta["pbip_slide"])
    mpp = None if meta.get("pbip_mpp") else slide_mpp
    if geojson is not None:
        return RegionsInput(
            slide, mpp, geojson.name, features=read_geojson(geojson), annotations=Path(geojson)
        )
    if isinstance(regions, Shapes):
        return RegionsInput(slide, mpp, regions.name, features=shapes_features(slide_layer, regions))
    if isinstance(regions, Labels):
        if regions.multiscale:
            raise DatasetError(
                f"{regions.name} is a multiscale Labels layer; paint the regions in a single-scale one"
            )
        scale, offset = labels_placement(slide_layer, regions)
        return RegionsInput(slide, mpp, regions.name, labels=np.asarray(regions.data).copy(),
                            labels_scale=scale, labels_offset=offset)  # fmt: skip
    raise DatasetError(f"choose a Shapes or Labels layer or a GeoJSON file for {slide_layer.name}")


def slide_regions(given: RegionsInput, classes: Sequence[str]):
    """The :class:`~napari_pbip.slides.annotations.SlideRegions` of one slide (run in the worker)."""
    from ..export.geojson import labels_to_features
    from ..slides import open_slide
    from ..slides.annotations import SlideRegions, regions_from_features

    features = given.features
    if given.labels is not None:
        top = int(given.labels.max(initial=0))
        if top > len(classes):
            raise DatasetError(
                f"{given.source} holds label {top}, but there are {len(classes)} classes {list(classes)}: value k is "
                "the k-th class; add the class or repaint"
            )
        palette = [(0, 0, 0)] * (len(classes) + 1)
        features = labels_to_features(
            given.labels,
            classes,
            palette,
            0,
            scale=given.labels_scale,
            offset=given.labels_offset,
            simplify_px=0.5,
        )
    regions, _ = regions_from_features(features, classes, given.source)
    slide = open_slide(given.slide, mpp=given.slide_mpp)
    return SlideRegions(slide, tuple(regions), given.source, given.annotations)


def build_job(inputs: Sequence[RegionsInput], out: Path, spec, settings, overwrite: bool):
    """The training-data job for the widget: the regions are made in the worker, then the tiles."""
    from ..slides.training_data import training_data_from_slides

    items = [slide_regions(given, spec.classes) for given in inputs]
    return (yield from training_data_from_slides(items, out, spec, settings, overwrite=overwrite))
