"""Checkpoints of a training run (both stages): safetensors weights, JSON state. Nothing is pickled.

Layout of a run folder ``RUN`` (a stage-1 run; a stage-2 segmenter folder has the same parts)::

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


def save_checkpoint(
    folder: str | os.PathLike, model, state: dict[str, Any], optimizer=None, *, kind: str
) -> None:
    """Write ``folder`` (``last`` or ``best``) atomically: weights, optimizer state, ``state.json``.

    ``kind`` (the run's model kind, as in its ``model.json``) is stamped in the weights' metadata.
    """
    with _atomic.atomic_dir(folder, overwrite=True) as tmp:
        save_tensors(tmp / "model.safetensors", model.state_dict(), {"kind": kind})
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
