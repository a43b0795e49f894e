"""Label values of segmentation outputs: 0 is background, tissue classes count from 1.

Models and data sets work in *mask indices* (``0..N-1`` for the tissue classes and a
``background_index``, N for our own layouts; :mod:`napari_pbip.data.layouts`). What napari edits
and what ``pbip segment`` and the napari writers store follows napari's and NGFF's convention
instead: label value 0 is background ("no label", what napari's eraser paints) and tissue class
``k`` is value ``k + 1``. Outputs record :data:`LABEL_FORMAT` and a class table (value, name,
colour); outputs written before (format 1, no table) used the mask indices themselves and are
converted when read (:func:`old_values_lut`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data.layouts import tissue_mask_indices

LABEL_FORMAT = 2  # 1: mask indices (background N); 2: 0 = background, class k = k + 1
BACKGROUND_VALUE = 0
BACKGROUND_NAME = "background"


def values_lut(n_classes: int, background_index: int) -> np.ndarray:
    """A uint8 lookup table from mask index to label value (background -> 0, class k -> k + 1).

    Example: 3 classes with background 3 -> ``[1, 2, 3, 0]``; with background 0 -> ``[0, 1, 2, 3]``.
    """
    lut = np.zeros(n_classes + 1, np.uint8)
    for k, index in enumerate(tissue_mask_indices(n_classes, background_index)):
        lut[index] = k + 1
    return lut


def mask_lut(n_classes: int, background_index: int) -> np.ndarray:
    """The inverse of :func:`values_lut`: label value -> mask index."""
    lut = values_lut(n_classes, background_index)
    inverse = np.zeros_like(lut)
    inverse[lut] = np.arange(len(lut), dtype=np.uint8)
    return inverse


def to_values(labels: np.ndarray, n_classes: int, background_index: int) -> np.ndarray:
    """Mask indices -> label values (a copy; returns ``labels`` as uint8 when nothing changes).

    Raises:
        ValueError: ``labels`` holds a value that is not a mask index of ``n_classes`` classes.
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > n_classes):
        raise ValueError(
            f"labels hold {int(labels.min())}..{int(labels.max())}; expected mask indices 0..{n_classes} "
            f"({n_classes} classes and background at {background_index})"
        )
    if background_index == BACKGROUND_VALUE:
        return labels.astype(np.uint8, copy=False)
    return values_lut(n_classes, background_index)[labels]


def palette_by_value(
    palette: Sequence[Sequence[int]], n_classes: int, background_index: int
) -> tuple[tuple[int, int, int], ...]:
    """A palette in mask-index order, reordered by label value (background's colour first)."""
    out: list[tuple[int, int, int]] = [(0, 0, 0)] * (n_classes + 1)
    for index, value in enumerate(values_lut(n_classes, background_index)):
        out[int(value)] = tuple(int(c) for c in palette[index][:3])
    return tuple(out)


def class_table(classes: Sequence[str], palette: Sequence[Sequence[int]]) -> list[dict[str, Any]]:
    """pbip's class table of an output: one entry per label value (``palette`` by label value)."""
    names = [BACKGROUND_NAME, *classes]
    return [
        {"label-value": v, "name": name, "color": [int(c) for c in rgb[:3]]}
        for v, (name, rgb) in enumerate(zip(names, palette, strict=True))
    ]


def old_values_lut(values: Sequence[int], background: int) -> np.ndarray:
    """Lookup table from a format-1 output's values (background ``background``) to label values."""
    lut = np.zeros(max(max(values), 255) + 1, np.uint8)
    rank = 1
    for v in sorted(values):
        if v != background:
            lut[v] = rank
            rank += 1
    return lut
