"""The frozen encoder of a bank: loading, a hash of its weights, and batched feature extraction."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import BankError

ENCODE_STAGE = "encode"  # the Progress stage of encoding images (building a bank, adding to one)


def load_encoder(name: str, device: str = "auto") -> Any:
    """The frozen encoder ``name`` (see ``models.create_encoder``) on ``device``."""
    from .._device import resolve_device
    from ..models import create_encoder

    return create_encoder(name, pretrained=True).to(resolve_device(device))


def weights_hash(encoder: Any) -> str:
    """Hex SHA-256 over the encoder's state dict (names, shapes, dtypes and values), sorted by name."""
    import torch

    h = hashlib.sha256()
    for key, tensor in sorted(encoder.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{key}:{tuple(tensor.shape)}:{t.dtype}:".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def encoder_info(encoder: Any, name: str) -> dict[str, Any]:
    """What the bank records about its encoder, to detect a different one later."""
    return {
        "name": name,
        "weights_id": str(getattr(encoder, "weights_id", "")),
        "weights_hash": weights_hash(encoder),
        "feature_dim": int(encoder.feature_dim),
        "input_size": int(encoder.input_size),
    }


def check_encoder(recorded: dict[str, Any], encoder: Any, name: str) -> None:
    """Raise unless ``encoder`` has the weights the bank was built with.

    Raises:
        BankError: names both encoders and weight hashes and what to do.
    """
    now = weights_hash(encoder)
    if now != recorded["weights_hash"]:
        raise BankError(
            f"encoder {name!r} (weights {getattr(encoder, 'weights_id', '?')}, hash {now[:12]}) differs from the "
            f"one this bank was built with ({recorded['name']!r}, weights {recorded['weights_id']}, hash "
            f"{recorded['weights_hash'][:12]}); features from different encoders cannot be mixed: use the bank's "
            f"encoder, or build a new bank with `pbip bank build --encoder {name}`"
        )


def to_batch(images: Sequence[np.ndarray], size: int, device: Any) -> Any:
    """RGB uint8 images of any sizes -> float tensor ``(B, 3, size, size)`` in [0, 1] on ``device``."""
    import torch
    import torch.nn.functional as F

    def resize(t: torch.Tensor) -> torch.Tensor:
        if t.shape[-2:] == (size, size):
            return t
        return F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)

    shapes = {im.shape for im in images}
    if len(shapes) == 1:
        t = torch.from_numpy(np.ascontiguousarray(np.stack(images))).to(device)
        return resize(t.permute(0, 3, 1, 2).float().div_(255.0))
    parts = [
        resize(
            torch.from_numpy(np.array(im, dtype=np.uint8))
            .to(device)
            .permute(2, 0, 1)[None]
            .float()
            .div_(255.0)
        )
        for im in images
    ]
    return torch.cat(parts)


def encode(encoder: Any, images: Sequence[np.ndarray], device: Any = None) -> np.ndarray:
    """Features ``(len(images), d)`` float32 of one batch of RGB uint8 images."""
    import torch

    if not len(images):
        return np.zeros((0, int(encoder.feature_dim)), np.float32)
    if device is None:
        device = next(iter(encoder.parameters())).device
    with torch.inference_mode():
        out = encoder(to_batch(images, int(encoder.input_size), device))
    features = out.float().cpu().numpy()
    if features.shape != (len(images), int(encoder.feature_dim)):
        raise BankError(
            f"encoder returned features of shape {features.shape}; expected ({len(images)}, {encoder.feature_dim})"
        )
    return features
