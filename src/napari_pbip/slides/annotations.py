"""Class regions on a slide: QuPath GeoJSON annotations (or shapes drawn in napari) as level-0 polygons.

A :class:`ClassRegion` is a class name and a shapely (Multi)Polygon in the slide's level-0
pixel coordinates, holes included. QuPath writes its annotations that way (``objectType``
``"annotation"``, ``classification.name``); the napari widget converts Shapes and painted Labels
layers into the same features, so the tiling code takes plain data and never a napari object.

A region classified :data:`VAL_CLASS` (``"val"``, any case) is not a tissue class: it marks an
area as **fully annotated**. Every class region inside it is taken as the complete truth there,
and the area is cut into validation images with masks instead of training tiles.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DatasetError

if TYPE_CHECKING:
    from .readers import Slide

VAL_CLASS = "val"  # the classification that marks a fully annotated area (validation images + masks)
AREA_TYPES = ("Polygon", "MultiPolygon")
# QuPath 0.2 named the object type in the feature's "id" instead of properties.objectType
_OLD_QUPATH_KINDS = {
    "PathAnnotationObject": "annotation",
    "PathDetectionObject": "detection",
    "PathCellObject": "cell",
}


@dataclass(frozen=True)
class ClassRegion:
    """One annotated area of a slide.

    Attributes:
        name: the tissue class, or :data:`VAL_CLASS` for a fully annotated area.
        geometry: shapely Polygon or MultiPolygon (holes allowed) in level-0 pixels (x, y).
        source: where it came from, for messages (``"A.geojson, annotation 3"``).
    """

    name: str
    geometry: Any
    source: str

    @property
    def is_val(self) -> bool:
        """Whether this region marks a fully annotated (validation) area rather than a class."""
        return self.name.lower() == VAL_CLASS


@dataclass(frozen=True)
class SlideRegions:
    """One slide and its class regions (level-0 pixels), as the job takes them.

    Attributes:
        slide: the opened slide.
        regions: class regions and ``val`` areas.
        source: where the regions came from (a GeoJSON file, a napari layer), for messages.
        annotations: the GeoJSON file they were read from, if any: an input the job must never
            write over or delete.
    """

    slide: Slide
    regions: tuple[ClassRegion, ...]
    source: str = "annotations"
    annotations: Path | None = None

    @property
    def name(self) -> str:
        """The slide's file name without its suffix (``.svs``, ``.ome.tif``), which starts its tiles' names."""
        name = self.slide.path.name
        for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr"):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return self.slide.path.stem


def read_geojson(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The features of a GeoJSON file: a FeatureCollection, a list of features or one Feature.

    Raises:
        DatasetError: the file is missing, not JSON, or holds no features.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(
            f"annotation file {path} does not exist; export the annotations as GeoJSON"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(
            f"{path} is not readable GeoJSON ({exc}); export the annotations from QuPath as GeoJSON"
        ) from None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        data = data.get("features")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        data = [data]
    if not isinstance(data, list) or not all(isinstance(f, dict) for f in data):
        raise DatasetError(
            f"{path} is not a GeoJSON FeatureCollection or list of features; export the annotations from QuPath "
            "(File > Export objects as GeoJSON)"
        )
    return data


def _class_name(properties: dict[str, Any]) -> str | None:
    cls = properties.get("classification")
    if isinstance(cls, dict):
        name = cls.get("name")
        if name is None and isinstance(cls.get("names"), list):  # QuPath's derived classes: "A: B"
            name = ": ".join(str(n) for n in cls["names"])
        return str(name) if name is not None else None
    return str(cls) if isinstance(cls, str) else None


def _polygon(geometry: dict[str, Any], where: str):
    from shapely.geometry import shape
    from shapely.validation import make_valid

    try:
        geom = shape(geometry)
    except Exception as exc:  # shapely raises several types for malformed coordinates
        raise DatasetError(
            f"{where}: its geometry cannot be read ({exc}); fix or delete the annotation"
        ) from None
    if not geom.is_valid:  # free-hand outlines cross themselves
        geom = make_valid(geom)
        parts = [g for g in getattr(geom, "geoms", [geom]) if g.geom_type in AREA_TYPES]
        from shapely.ops import unary_union

        geom = unary_union(parts) if parts else geom
    return geom


def regions_from_features(
    features: Sequence[dict[str, Any]], classes: Sequence[str], source: str = "annotations"
) -> tuple[list[ClassRegion], int]:
    """Class regions from GeoJSON features.

    Only ``objectType`` ``"annotation"`` features count (QuPath detections and cells are skipped), and
    of those only areas (Polygon, MultiPolygon); points and lines are skipped too.

    Args:
        features: GeoJSON Feature dicts (coordinates in level-0 pixels).
        classes: the data set's tissue classes; every classification must be one of them or ``val``.
        source: names the file in messages.

    Returns:
        The regions, and how many features were skipped (not annotations, or not areas).

    Raises:
        DatasetError: an annotation has no classification, an unknown one (the message lists the
            known classes), or an unreadable geometry.
    """
    known = {c.lower(): c for c in classes}
    regions, skipped = [], 0
    for i, feature in enumerate(features, start=1):
        props = feature.get("properties") or {}
        where = f"{source}, annotation {i}"
        kind = props.get("objectType") or _OLD_QUPATH_KINDS.get(str(feature.get("id")), "annotation")
        if kind != "annotation":
            skipped += 1
            continue
        geometry = feature.get("geometry") or {}
        if geometry.get("type") not in AREA_TYPES:
            skipped += 1
            continue
        name = _class_name(props)
        if name is None:
            raise DatasetError(
                f"{where} has no classification; give it one of the classes {list(classes)} (or {VAL_CLASS!r} "
                "for a fully annotated area), or delete it"
            )
        if name.lower() != VAL_CLASS and name.lower() not in known:
            raise DatasetError(
                f"{where} is classified {name!r}, which is not a class of this data set; known classes: "
                f"{list(classes)} (and {VAL_CLASS!r} for a fully annotated area): rename the class or pass "
                "--classes / a dataset.json that has it"
            )
        cls = VAL_CLASS if name.lower() == VAL_CLASS else known[name.lower()]
        geom = _polygon(geometry, where)
        if geom.is_empty or geom.area <= 0:
            skipped += 1
            continue
        regions.append(ClassRegion(cls, geom, where))
    return regions, skipped


def pair_annotations(
    slides: Sequence[str | os.PathLike], annotations: Sequence[str | os.PathLike] | None = None
) -> list[tuple[Path, Path]]:
    """(slide, GeoJSON) pairs: given one by one, or the ``<stem>.geojson`` beside each slide.

    ``slides`` may name folders; every file in one that is a slide format is taken, and its
    GeoJSON must lie beside it (a slide without one is skipped when it came from a folder).

    Raises:
        DatasetError: the counts differ, a named slide has no GeoJSON beside it, or nothing is found.
    """
    from .cohort import SLIDE_SUFFIXES

    files: list[tuple[Path, bool]] = []
    for given in map(Path, slides):
        if given.is_dir() and not given.name.lower().endswith(".zarr"):
            found = sorted(
                p
                for p in given.iterdir()
                if p.suffix.lower() in SLIDE_SUFFIXES and not p.name.startswith(".")
            )
            files += [(p, True) for p in found if not p.name.lower().endswith(".labels.tif")]
        else:
            files.append((given, False))
    if annotations:
        if len(annotations) != len(files):
            raise DatasetError(
                f"{len(files)} slide(s) but {len(annotations)} annotation file(s); give one GeoJSON per slide, in "
                "the same order, or none to use the <slide>.geojson beside each slide"
            )
        return [(s, Path(a)) for (s, _), a in zip(files, annotations, strict=True)]
    pairs = []
    for slide, from_folder in files:
        geojson = slide.with_name(slide.name.split(".")[0] + ".geojson")
        if geojson.is_file():
            pairs.append((slide, geojson))
        elif not from_folder:
            raise DatasetError(
                f"no annotations for {slide}: {geojson.name} is not beside it; pass --annotations FILE.geojson"
            )
    if not pairs:
        raise DatasetError(
            f"no slide in {[str(s) for s in slides]} has a same-named .geojson beside it; export the annotations "
            "from QuPath next to the slides, or pass --annotations"
        )
    return pairs


def load_regions(
    slide: str | os.PathLike,
    geojson: str | os.PathLike,
    classes: Sequence[str],
    slide_mpp: float | None = None,
) -> SlideRegions:
    """Open ``slide`` and read the class regions of its QuPath GeoJSON export."""
    from .readers import open_slide

    regions, _ = regions_from_features(read_geojson(geojson), classes, source=Path(geojson).name)
    return SlideRegions(open_slide(slide, mpp=slide_mpp), tuple(regions), Path(geojson).name, Path(geojson))
