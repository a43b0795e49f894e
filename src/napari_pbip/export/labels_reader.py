"""Reading segmentation outputs back: the label image of an output store, in label values.

Three kinds of store open the same way (:func:`open_labels`):

- an output of this version (:mod:`.ome_zarr`): an NGFF image whose ``labels`` attribute names
  its label image (``labels/tissue``), label values with 0 for background and a class table;
- an output of an earlier version: a bare label image at the root, the model's mask indices as
  values with background named ``"background"`` (N for our layouts); its values are converted on
  read, lazily, so 0 is background and the classes count from 1 here too;
- an NGFF label image from elsewhere (napari-ome-zarr, ...): 0 is background, as NGFF and napari
  have it; class names come from ``image-label.properties`` when they are there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SlideError
from .label_values import BACKGROUND_NAME, BACKGROUND_VALUE, old_values_lut


@dataclass
class LabelsImage:
    """A label image opened lazily, in label values (0 background, class ``k`` is ``k + 1``).

    Attributes:
        path: the store that was opened.
        levels: dask arrays (y, x) uint8, finest first.
        mpp: um/px per level.
        classes: tissue class names (label values 1, 2, ...).
        palette: RGB per label value, background first.
        background_index: the label value of background: 0.
        attrs: ``{"ome": ..., "pbip": ...}``: the label image's NGFF metadata and pbip's run
            metadata (empty for a store pbip did not write).
        label_path: the label image group (``labels/tissue`` in an output of this version).
        label_format: 2 for this version's outputs, 1 for converted older ones, 0 from elsewhere.
        image: the levels of the NGFF image the labels belong to ((c, y, x) dask arrays), if any.
    """

    path: Path
    levels: list[Any]
    mpp: list[float]
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    background_index: int
    attrs: dict[str, Any]
    label_path: Path | None = None
    label_format: int = 2
    image: list[Any] = field(default_factory=list)


def _ome(attrs: dict[str, Any]) -> dict[str, Any]:
    return attrs.get("ome", attrs)


def find_label_group(path: str | os.PathLike):
    """The (root group, label image group) of an output store, an NGFF image with labels, or a bare
    label image.

    Raises:
        SlideError: ``path`` is not a zarr group, or holds no NGFF label image.
    """
    import zarr

    path = Path(path)
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise SlideError(f"{path} is not a zarr group ({exc}); expected an OME-Zarr label image") from exc
    ome = _ome(root.attrs.asdict())
    if "image-label" in ome:
        return root, root
    names = []
    if "labels" in root:
        names = _ome(root["labels"].attrs.asdict()).get("labels", [])
    for name in names:
        try:
            group = root[f"labels/{name}"]
        except KeyError:
            continue
        if "image-label" in _ome(group.attrs.asdict()):
            return root, group
    raise SlideError(
        f"{path} has no NGFF label image (no 'image-label' at its root nor under 'labels/'); expected "
        "the output of pbip segment or another OME-Zarr label image"
    )


def open_labels(path: str | os.PathLike) -> LabelsImage:
    """Open the label image of an output store (NGFF 0.4 or 0.5) with its class names and colours.

    Raises:
        SlideError: ``path`` holds no OME-Zarr label image.
    """
    import dask.array as da

    root, group = find_label_group(path)
    path = Path(path)
    attrs = group.attrs.asdict()
    ome = _ome(attrs)
    pbip = dict(attrs.get("pbip") or {})
    datasets = ome["multiscales"][0]["datasets"]
    levels = [da.from_zarr(group[d["path"]]) for d in datasets]
    mpp = [float(d["coordinateTransformations"][0]["scale"][-1]) for d in datasets]
    props = {
        p["label-value"]: p.get("class", str(p["label-value"]))
        for p in ome["image-label"].get("properties", [])
    }
    colors = {c["label-value"]: tuple(c["rgba"][:3]) for c in ome["image-label"].get("colors", [])}
    table = pbip.get("classes")
    if table:  # this version's outputs: the class table says it all
        values = [c["label-value"] for c in table]
        names = {c["label-value"]: c["name"] for c in table}
        colors |= {c["label-value"]: tuple(c["color"]) for c in table}
        fmt = int(pbip.get("label_format", 2))
    else:
        values = sorted(set(props) | set(colors) | {BACKGROUND_VALUE})
        names = {v: props.get(v, f"label {v}") for v in values}
        background = next((v for v in values if names[v] == BACKGROUND_NAME), BACKGROUND_VALUE)
        fmt = 0 if background == BACKGROUND_VALUE else 1
        if background != BACKGROUND_VALUE:  # an older pbip output: background N, classes from 0
            lut = old_values_lut(values, background)
            levels = [lvl.map_blocks(_lookup, lut, dtype=np.uint8) for lvl in levels]
            names = {int(lut[v]): names[v] for v in values}
            colors = {int(lut[v]): colors[v] for v in values if v in colors}
            values = sorted(names)
        if not values or values != list(range(len(values))):
            values = list(range(max(values) + 1))
    classes = tuple(names.get(v, f"label {v}") for v in values if v != BACKGROUND_VALUE)
    palette = tuple(tuple(int(c) for c in colors.get(v, (128, 128, 128))) for v in values)
    image = []
    if group is not root and "multiscales" in _ome(root.attrs.asdict()):
        image = [
            da.from_zarr(root[d["path"]]) for d in _ome(root.attrs.asdict())["multiscales"][0]["datasets"]
        ]
    if group is root and not table:  # older output: run metadata at the root
        pbip = dict(root.attrs.asdict().get("pbip") or {})
    label_path = path / group.path if group.path else path
    return LabelsImage(
        path,
        levels,
        mpp,
        classes,
        palette,
        BACKGROUND_VALUE,
        {"ome": ome, "pbip": pbip},
        label_path,
        fmt,
        image,
    )


def _lookup(block: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return lut[block]
