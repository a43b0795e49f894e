"""Dense predictors: the one interface slide inference, the CLI and the widgets use.

A trained model folder holds ``model.json`` whose ``"kind"`` names how to load it. Stage-1 runs
register ``"pbip-stage1"`` (CAM-based), stage-2 segmenters ``"pbip-segmenter"``. Loaders are
registered lazily by module path so that importing this module stays cheap.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..engine.model_meta import MODEL_FILE, model_json_path, read_model_json
from ..errors import CheckpointError


@runtime_checkable
class DensePredictor(Protocol):
    """Per-pixel class probabilities for batches of RGB tiles.

    Attributes:
        classes: tissue class names in class order; class ``k`` has the ``k``-th mask index other
            than ``background_index`` (:func:`~napari_pbip.data.layouts.tissue_mask_indices`).
        palette: RGB colour per mask index (background's at ``background_index``).
        background_index: mask index of background.
        mpp: resolution (um/px) the model was trained at, or None when unknown.
        tile: preferred tile side in pixels.
    """

    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    background_index: int
    mpp: float | None
    tile: int

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` uint8 (B, H, W, 3) -> float32 (B, C, H, W) probabilities, C = mask indices."""
        ...


# kind -> "module:function" (imported on first use) or a callable(path, device) -> DensePredictor
_LOADERS: dict[str, str | Callable[..., DensePredictor]] = {
    "pbip-stage1": "napari_pbip.stage1.predict:load_stage1_predictor",
    "pbip-segmenter": "napari_pbip.stage2.segmenter_predictor:load_segmenter_predictor",
}


WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")  # weight files a loader may read
SETTINGS_FILES = (MODEL_FILE, "presence.json")  # the model's description and its fitted thresholds


def model_hash(path: str | os.PathLike) -> str:
    """SHA-256 of what decides a model folder's predictions.

    That is ``model.json``, ``presence.json`` (a stage-1 run's presence thresholds) and the weight
    files at the top of the folder (``model.safetensors``, shards); not the training checkpoints in
    ``last/`` and ``best/`` or the log. A model retrained in the same folder gets another hash.

    Raises:
        CheckpointError: ``path`` has no ``model.json``.
    """
    from .._atomic import sha256_bytes, sha256_file

    path = Path(path)
    model_json_path(path)
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and (p.name in SETTINGS_FILES or p.name.endswith(WEIGHT_SUFFIXES))
    )
    return sha256_bytes("".join(f"{p.name}\0{sha256_file(p)}\n" for p in files).encode())


def register_predictor_kind(kind: str, loader: str | Callable[..., DensePredictor]) -> None:
    """Register ``loader(path, device) -> DensePredictor`` for folders whose model.json has ``kind``."""
    _LOADERS[kind] = loader


def model_kind(path: str | os.PathLike) -> str:
    """The ``"kind"`` in the ``model.json`` of a trained model folder, checked to be a known one.

    ``"pbip-stage1"`` for a ``pbip train`` run, ``"pbip-segmenter"`` for a ``pbip train-seg``
    folder, or a kind added with :func:`register_predictor_kind`.

    Raises:
        CheckpointError: ``path`` has no readable ``model.json`` or it names an unknown kind.
    """
    path = Path(path)
    meta_path = path / MODEL_FILE
    kind = read_model_json(path).get("kind")
    if not isinstance(kind, str) or kind not in _LOADERS:
        raise CheckpointError(
            f"{meta_path} has kind={kind!r}; expected one of {sorted(_LOADERS)}: give a stage-1 run folder "
            f"(pbip train --out) or a segmenter folder (pbip train-seg --out)"
        )
    return kind


def load_predictor(path: str | os.PathLike, device: str = "auto") -> DensePredictor:
    """Load the trained model folder at ``path`` as a :class:`DensePredictor`.

    Raises:
        CheckpointError: ``path`` has no ``model.json`` or names an unknown kind.
    """
    loader = _LOADERS[model_kind(path)]
    if isinstance(loader, str):
        module, func = loader.split(":")
        loader = getattr(importlib.import_module(module), func)
    return loader(Path(path), device=device)
