"""Stage-1 run folders: safetensors weights, JSON metadata, resumable checkpoints. Nothing is pickled.

Layout of a run folder ``RUN``::

    RUN/model.json            kind "pbip-stage1", classes, palette, backbone, encoder, bank hash, settings
    RUN/model.safetensors     weights for inference (best by val mIoU, else last), bank prototypes included
    RUN/settings.json         the resolved TrainSettings
    RUN/log.jsonl             one JSON line per step and per validation
    RUN/last/                 model.safetensors, optimizer.safetensors, state.json (resume from here)
    RUN/best/                 model.safetensors, state.json (best val mIoU; only with val masks)

The optimizer state lives only in ``last/``: resuming always continues from the last step, and
``best/`` is for inference.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .. import _atomic
from ..errors import CheckpointError
from .model_meta import check_stage1

MODEL_KIND = "pbip-stage1"
FORMAT_VERSION = 1


def _cpu_tensors(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_tensors(
    path: str | os.PathLike, tensors: dict[str, Any], metadata: dict[str, str] | None = None
) -> None:
    """Write ``tensors`` as safetensors atomically."""
    from safetensors.torch import save_file

    with _atomic.atomic_path(path) as tmp:
        save_file(_cpu_tensors(tensors), str(tmp), metadata=metadata or {})


def load_tensors(path: str | os.PathLike) -> dict[str, Any]:
    """Read a safetensors file (CPU tensors).

    Raises:
        CheckpointError: the file is missing or not safetensors.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing; was the run folder copied whole?")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({exc}); delete it and retrain"
        ) from exc


def load_weights(model, path: str | os.PathLike) -> None:
    """Load a ``model.safetensors`` into ``model``, naming the mismatch on failure."""
    tensors = load_tensors(path)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise CheckpointError(
            f"weights in {path} do not fit this model ({' '.join(first)}); the checkpoint was made with another "
            "backbone, level set, class count or bank; train a new run or use the matching settings"
        ) from exc


def optimizer_state(optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split an optimizer's state into tensors (for safetensors) and JSON (hyperparameters)."""
    import torch

    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, slot in sd["state"].items():
        for key, value in slot.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    """Inverse of :func:`optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta.get("scalars", {}).items()):
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"optimizer state does not fit this model ({exc}); start a new run") from exc


def save_checkpoint(folder: str | os.PathLike, model, state: dict[str, Any], optimizer=None) -> None:
    """Write ``folder`` (``last`` or ``best``) atomically: weights, optimizer state, ``state.json``."""
    with _atomic.atomic_dir(folder, overwrite=True) as tmp:
        save_tensors(tmp / "model.safetensors", model.state_dict(), {"kind": MODEL_KIND})
        meta = dict(state)
        if optimizer is not None:
            tensors, opt_meta = optimizer_state(optimizer)
            save_tensors(tmp / "optimizer.safetensors", tensors)
            meta["optimizer"] = opt_meta
        _atomic.write_json(tmp / "state.json", meta)


def read_state(folder: str | os.PathLike) -> dict[str, Any]:
    """``state.json`` of a checkpoint folder.

    Raises:
        CheckpointError: the folder has no ``state.json``.
    """
    path = Path(folder) / "state.json"
    if not path.is_file():
        raise CheckpointError(
            f"{folder} holds no checkpoint (no state.json); the run stopped before its first checkpoint, "
            "start it again without --resume (with --overwrite)"
        )
    return _atomic.read_json_object(
        path, CheckpointError, "the checkpoint is damaged: start the run again (with --overwrite)"
    )


def check_classes(state: dict[str, Any], classes: tuple[str, ...], where: str) -> None:
    """Raise :class:`CheckpointError` when a checkpoint was trained on another class list."""
    saved = tuple(state.get("classes", ()))
    if saved != tuple(classes):
        raise CheckpointError(
            f"checkpoint {where} was trained on classes {list(saved)} but the data set has classes "
            f"{list(classes)}; use a run trained on this data set or start a new run"
        )


def load_checkpoint(folder: str | os.PathLike, model, optimizer, classes: tuple[str, ...]) -> dict[str, Any]:
    """Restore ``model`` and ``optimizer`` from ``folder``; return its state (step, epoch, ...)."""
    folder = Path(folder)
    state = read_state(folder)
    check_classes(state, classes, str(folder))
    load_weights(model, folder / "model.safetensors")
    if optimizer is not None:
        restore_optimizer(optimizer, load_tensors(folder / "optimizer.safetensors"), state["optimizer"])
    return state


def read_model_meta(run: str | os.PathLike) -> dict[str, Any]:
    """``model.json`` of a stage-1 run.

    Raises:
        CheckpointError: missing, or not a stage-1 run.
    """
    path = Path(run) / "model.json"
    if not path.is_file():
        raise CheckpointError(
            f"{run} is not a trained stage-1 run (no model.json); train one with `pbip train`"
        )
    keys = ("kind", "classes", "palette", "background_index", "settings")
    meta = _atomic.read_json_object(path, CheckpointError, "give an intact `pbip train` run folder", keys)
    if meta.get("kind") != MODEL_KIND:
        raise CheckpointError(
            f"{path} has kind={meta.get('kind')!r}; expected {MODEL_KIND!r} (a `pbip train` run)"
        )
    check_stage1(meta, path, "give an intact `pbip train` run folder")
    return meta


def load_classnet(run: str | os.PathLike, device: str = "auto"):
    """The trained ClassNet of a run (eval mode, on ``device``) and its ``model.json``.

    The backbone is built without downloading pretrained weights; every weight, the bank prototypes
    included, comes from ``RUN/model.safetensors``.
    """
    import torch

    from .._device import resolve_device
    from .classnet import build_classnet
    from .settings import TrainSettings

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
