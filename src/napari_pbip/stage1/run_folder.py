"""A stage-1 run folder as a trained model: its ``model.json`` and its ClassNet.

The folder's layout and its checkpoints (``last/``, ``best/``) are described in
:mod:`napari_pbip.engine.checkpoint`; this module reads what inference needs from it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..engine.checkpoint import load_tensors
from ..engine.model_meta import MODEL_FILE, check_common, invalid_field, read_model_json
from ..errors import CheckpointError, SettingsError
from .settings import TrainSettings

MODEL_KIND = "pbip-stage1"
FORMAT_VERSION = 1


def check_stage1(meta: dict[str, Any], path: Path, fix: str):
    """A stage-1 run's fields; returns its :class:`~napari_pbip.stage1.settings.TrainSettings`."""
    check_common(meta, path, fix)
    raw = meta.get("settings")
    if not isinstance(raw, dict):
        raise invalid_field(path, "settings", raw, "an object of TrainSettings fields", fix)
    try:
        return TrainSettings.from_dict(raw)
    except (SettingsError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its settings are invalid ({exc}); {fix}") from None


def read_model_meta(run: str | os.PathLike) -> dict[str, Any]:
    """``model.json`` of a stage-1 run.

    Raises:
        CheckpointError: missing, or not a stage-1 run.
    """
    meta = read_model_json(
        run,
        what="a trained stage-1 run",
        missing_fix="train one with `pbip train`",
        fix="give an intact `pbip train` run folder",
        required=("kind", "classes", "palette", "background_index", "settings"),
        kind=MODEL_KIND,
        made_by="a `pbip train` run",
    )
    path = Path(run) / MODEL_FILE
    check_stage1(meta, path, "give an intact `pbip train` run folder")
    return meta


def load_classnet(run: str | os.PathLike, device: str = "auto"):
    """The trained ClassNet of a run (eval mode, on ``device``) and its ``model.json``.

    The backbone is built without downloading pretrained weights; every weight, the bank prototypes
    included, comes from ``RUN/model.safetensors``.
    """
    import torch

    from .._device import resolve_device
    from ..stage1.settings import TrainSettings
    from .classnet import build_classnet

    run = Path(run)
    meta = read_model_meta(run)
    settings = TrainSettings.from_dict(
        meta["settings"]
    )  # checked by read_model_meta; older runs: LEGACY_DEFAULTS
    tensors = load_tensors(run / "model.safetensors")
    n = len(meta["classes"])
    protos = valid = None
    if not settings.baseline:
        if "prototypes" not in tensors:
            raise CheckpointError(
                f"{run}/model.safetensors lacks the bank prototypes; the file is incomplete"
            )
        protos = torch.zeros_like(tensors["prototypes"])
        valid = torch.ones_like(tensors["proto_valid"])
    model = build_classnet(settings, n, protos, valid, pretrained=False)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{run}/model.safetensors does not fit the model described by model.json: {exc}"
        ) from exc
    dev = resolve_device(device)
    return model.to(dev).eval(), meta
