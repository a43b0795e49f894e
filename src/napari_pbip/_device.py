"""Device selection: ``auto`` picks CUDA when present; ``PBIP_DEVICE`` overrides for tests."""

from __future__ import annotations

import os


def resolve_device(device: str = "auto"):
    """Return a ``torch.device`` for ``device`` ("auto", "cpu", "cuda", "cuda:1", "mps")."""
    import torch

    if device == "auto":
        device = os.environ.get("PBIP_DEVICE", "auto")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from .errors import SettingsError

        raise SettingsError(
            f"device={device!r} asked for CUDA but no CUDA device is available; use --device cpu"
        )
    return dev
