"""A trained model folder's ``model.json``: the one reader of it, and what it must hold.

Every model kind (a stage-1 run, a stage-2 segmenter, a registered kind) describes itself in
``FOLDER/model.json``; :func:`read_model_json` is how any part of the package reads it. It is a
file users can open and edit; a field of the wrong type would otherwise fail deep inside torch or
numpy. :func:`check_common` checks what every model kind shares (classes, palette, background
index, um/px), each kind's reader adds its own fields; every problem is one
:class:`~napari_pbip.errors.CheckpointError` line naming the file, the field, its value and the fix.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import _atomic
from ..errors import CheckpointError

MODEL_FILE = "model.json"
ANY_MODEL = "a trained model folder"
GIVE_ANY_MODEL = "give a stage-1 run folder (pbip train --out) or a segmenter folder (pbip train-seg --out)"
INTACT_ANY_MODEL = (
    "give an intact stage-1 run folder (pbip train --out) or segmenter folder (pbip train-seg --out)"
)


def model_json_path(
    folder: str | os.PathLike, what: str = ANY_MODEL, missing_fix: str = GIVE_ANY_MODEL
) -> Path:
    """``folder/model.json``, which must exist.

    Raises:
        CheckpointError: it does not: ``folder`` "is not ``what``", and ``missing_fix``.
    """
    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} is not {what} (no {MODEL_FILE}); {missing_fix}")
    return path


def read_model_json(
    folder: str | os.PathLike,
    *,
    what: str = ANY_MODEL,
    missing_fix: str = GIVE_ANY_MODEL,
    fix: str = INTACT_ANY_MODEL,
    required: Iterable[str] = (),
    kind: str | None = None,
    made_by: str = "",
) -> dict[str, Any]:
    """The ``model.json`` of a trained model folder, as a dict.

    Args:
        folder: the model folder.
        what: what ``folder`` should be, for the message when it has no ``model.json``.
        missing_fix: what to do then.
        fix: what to do when the file is not a JSON object or lacks a ``required`` key.
        required: keys it must have.
        kind: the ``"kind"`` it must name (None: any).
        made_by: what writes that kind (``"a `pbip train` run"``), for the message when it does not.

    Raises:
        CheckpointError: missing, unreadable, not an object, a required key missing, another kind.
    """
    path = model_json_path(folder, what, missing_fix)
    meta = _atomic.read_json_object(path, CheckpointError, fix, required)
    if kind is not None and meta.get("kind") != kind:
        raise CheckpointError(f"{path} has kind={meta.get('kind')!r}; expected {kind!r} ({made_by})")
    return meta


def invalid_field(path: Path, field: str, value: Any, expected: str, fix: str) -> CheckpointError:
    """The error for ``field`` of ``path`` holding ``value`` where ``expected`` was due."""
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
