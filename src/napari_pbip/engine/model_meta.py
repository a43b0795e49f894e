"""What a trained model folder's ``model.json`` must hold, checked before anything is built from it.

``model.json`` is a file users can open and edit; a field of the wrong type would otherwise fail deep
inside torch or numpy. :func:`check_common` checks what every model kind shares (classes, palette,
background index, um/px), each kind's reader adds its own fields; every problem is one
:class:`~napari_pbip.errors.CheckpointError` line naming the file, the field, its value and the fix.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import CheckpointError


def invalid_field(path: Path, field: str, value: Any, expected: str, fix: str) -> CheckpointError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return CheckpointError(f"{path}: {field}={shown} is invalid: expected {expected}; {fix}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_common(meta: dict[str, Any], path: Path, fix: str) -> None:
    """Classes, palette, background index and um/px of any model kind.

    Raises:
        CheckpointError: a field is missing its expected type or range (named in the message).
    """
    classes = meta.get("classes")
    if not (
        isinstance(classes, list)
        and classes
        and all(isinstance(c, str) and c for c in classes)
        and len(set(classes)) == len(classes)
    ):
        raise invalid_field(path, "classes", classes, "a non-empty list of distinct class names", fix)
    n = len(classes)
    bg = meta.get("background_index")
    if not (_is_int(bg) and 0 <= bg <= n):
        raise invalid_field(path, "background_index", bg, f"an integer mask index in 0..{n}", fix)
    palette = meta.get("palette")
    if not (
        isinstance(palette, list)
        and len(palette) == n + 1
        and all(
            isinstance(rgb, list) and len(rgb) == 3 and all(_is_int(v) and 0 <= v <= 255 for v in rgb)
            for rgb in palette
        )
    ):
        raise invalid_field(
            path, "palette", palette, f"{n + 1} colours [r, g, b] in 0..255 (classes and background)", fix
        )
    mpp = meta.get("mpp")
    if mpp is not None and not (
        isinstance(mpp, (int, float)) and not isinstance(mpp, bool) and math.isfinite(mpp) and mpp > 0
    ):
        raise invalid_field(path, "mpp", mpp, "null or a positive number of um/px", fix)


def check_segmenter(meta: dict[str, Any], path: Path, fix: str) -> None:
    """A stage-2 segmenter folder's fields."""
    check_common(meta, path, fix)
    if not (isinstance(meta.get("segmenter"), str) and meta["segmenter"]):
        raise invalid_field(
            path, "segmenter", meta.get("segmenter"), "a segmenter name (see `pbip models`)", fix
        )
    config = meta.get("config")
    if not (isinstance(config, dict) and all(isinstance(k, str) for k in config)):
        raise invalid_field(path, "config", config, "an object of segmenter arguments", fix)
    tile = meta.get("tile")
    if tile is not None and not (_is_int(tile) and tile >= 8):
        raise invalid_field(
            path, "tile", tile, "null or the training tile side in pixels (an integer >= 8)", fix
        )
