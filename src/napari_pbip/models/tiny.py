"""Tiny, randomly initialised encoder and backbone for fast tests of the other modules.

Both are built from a config dict and seeded, so every build gives the same weights; they meet
the same contracts as the real models (see :mod:`napari_pbip.models.registry`). Their features
are random projections of colour and texture, good enough to tell synthetic tissue classes apart
but not a substitute for pretrained weights.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .registry import register_backbone, register_encoder

TINY_ENCODER_CONFIG: dict[str, Any] = {
    "widths": (16, 32),  # hidden conv widths, each conv halves the resolution
    "feature_dim": 32,
    "input_size": 64,
    "seed": 0,
}

TINY_BACKBONE_CONFIG: dict[str, Any] = {
    "stem": 8,  # stride-2 stem width
    "channels": (16, 24, 32, 48),  # one level per halving after the stem: strides 4, 8, 16, 32
    "seed": 0,
}


def _config_id(prefix: str, config: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=list).encode()).hexdigest()[:12]
    return f"{prefix}:random-seed{config['seed']}:{digest}"


def _seeded(seed: int, build):
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_tiny_encoder(config: dict[str, Any] | None = None):
    """A tiny encoder from ``config`` (defaults: :data:`TINY_ENCODER_CONFIG`), seeded weights.

    Args:
        config: keys of :data:`TINY_ENCODER_CONFIG` to override.

    Returns:
        An encoder (``(B, 3, H, W)`` in [0, 1] -> ``(B, feature_dim)``).
    """
    cfg = {**TINY_ENCODER_CONFIG, **(config or {})}
    from .tiny_nets import TinyEncoder

    return _seeded(
        cfg["seed"],
        lambda: TinyEncoder(
            tuple(cfg["widths"]), cfg["feature_dim"], cfg["input_size"], _config_id("tiny-encoder", cfg)
        ),
    )


def build_tiny_backbone(config: dict[str, Any] | None = None, output_stride: int | None = None):
    """A tiny 4-level backbone from ``config`` (defaults: :data:`TINY_BACKBONE_CONFIG`), seeded weights.

    Args:
        config: keys of :data:`TINY_BACKBONE_CONFIG` to override.
        output_stride: dilate the levels that would be coarser than this (None: strides up to 32).

    Returns:
        A backbone returning maps at strides 4, 8, 16, 32 (for 4 levels), finest first.
    """
    cfg = {**TINY_BACKBONE_CONFIG, **(config or {})}
    from .tiny_nets import TinyBackbone

    return _seeded(
        cfg["seed"],
        lambda: TinyBackbone(
            cfg["stem"], tuple(cfg["channels"]), _config_id("tiny-backbone", cfg), output_stride
        ),
    )


@register_encoder("tiny-encoder", "tiny random conv encoder (d=32) for tests and demos", offline=True)
def tiny_encoder(pretrained: bool = True, **config: Any):
    """Registry factory; ``pretrained`` is ignored (the weights are always the seeded random ones)."""
    return build_tiny_encoder(config)


@register_backbone(
    "tiny-backbone", "tiny random 4-level conv backbone (strides 4-32) for tests and demos", offline=True
)
def tiny_backbone(pretrained: bool = True, output_stride: int | None = None, **config: Any):
    """Registry factory; ``pretrained`` is ignored (the weights are always the seeded random ones)."""
    return build_tiny_backbone(config, output_stride)
