"""A few pseudo-masks over their training images, shown before the segmenter trains on them.

:func:`mask_preview` reads them (in the worker thread) into a :class:`~napari_pbip.events.Preview`
payload; :func:`show_mask_preview` lays them out as two mosaics in the viewer: an Image layer of
the images and, over it, a Labels layer of the masks in the class colours, the labels following
napari's convention (0 background; ignored pixels transparent).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..events import Preview
from . import _labels
from ._preview import mosaic
from ._quiet_add import keep_selection

MASK_IMAGES = "PBIP pseudo-mask images"
MASKS = "PBIP pseudo-masks"
N_PREVIEW = 9
IGNORED = 255  # a pseudo-mask's unlabelled pixels (stage2.seg_data.IGNORE)


def mask_preview(dataset: str | os.PathLike, masks: str | os.PathLike, n: int = N_PREVIEW) -> Preview:
    """``n`` training images of ``dataset`` and their masks in ``masks``, spread evenly over the
    training set and cropped to one square side.

    Raises:
        DatasetError: ``masks`` lacks the mask of a training image, or a mask does not fit its image.
    """
    from ..data.layouts import dataset_mpp, open_dataset
    from ..stage2.seg_data import load_pair, pair_masks

    ds = open_dataset(dataset)
    pairs = pair_masks(ds, masks)
    picked = np.unique(np.linspace(0, len(pairs) - 1, min(n, len(pairs))).round().astype(int))
    loaded = [load_pair(pairs[i], ds.spec) for i in picked]
    side = min(min(image.shape[:2]) for image, _ in loaded)
    maps: dict[str, Any] = {
        "images": np.stack([image[:side, :side] for image, _ in loaded]),
        "masks": np.stack([mask[:side, :side] for _, mask in loaded]),
        "names": [pairs[i].image.name for i in picked],
        "classes": list(ds.spec.classes),
        "palette": [list(c) for c in ds.spec.palette],
        "background_index": ds.spec.background_index,
        "mpp": dataset_mpp(ds.root),
    }
    return Preview(0, maps)


def mask_layers(maps: dict[str, Any]) -> list[tuple[str, str, np.ndarray, dict[str, Any]]]:
    """(kind, name, data, layer kwargs) of the two preview layers."""
    cm = _labels.ClassMap(
        tuple(maps["classes"]),
        tuple(tuple(int(v) for v in c[:3]) for c in maps["palette"]),
        int(maps["background_index"]),
    )
    masks = np.asarray(maps["masks"])
    ignored = masks == IGNORED
    cm_values, values = _labels.as_label_values(cm, np.where(ignored, cm.background_index, masks))
    values = np.where(ignored, _labels.UNFILLED, values).astype(np.uint8)
    mpp = maps.get("mpp")
    labels_kwargs = _labels.layer_kwargs(cm_values, mpp, None, MASKS)
    labels_kwargs["opacity"] = 0.6
    image_kwargs: dict[str, Any] = {"name": MASK_IMAGES, "rgb": True}
    if mpp:
        image_kwargs.update(scale=(mpp, mpp), units=("um", "um"))
    return [
        ("image", MASK_IMAGES, mosaic(np.asarray(maps["images"]), 255), image_kwargs),
        ("labels", MASKS, mosaic(values, _labels.UNFILLED), labels_kwargs),
    ]


def show_mask_preview(viewer: Any, preview: Preview) -> list[Any]:
    """Show (or replace) the two preview layers without taking the layer selection; returns them."""
    shown = []
    with keep_selection(viewer):
        for kind, name, data, kwargs in mask_layers(preview.maps):
            if name in viewer.layers:
                viewer.layers.remove(name)
            shown.append(getattr(viewer, f"add_{kind}")(data, **kwargs))
    return shown
