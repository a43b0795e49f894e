"""Tiny, randomly initialised encoder and backbone for fast tests of the other modules.

Both are built from a config dict and seeded, so every build gives the same weights; they meet
the same contracts as the real models (see :mod:`napari_pbip.models.registry`). Their features
are random projections of colour and texture, good enough to tell synthetic tissue classes apart
but not a substitute for pretrained weights.
"""

from __future__ import annotations

import functools
import hashlib
import json
from types import SimpleNamespace
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

# Normalisation applied inside the tiny models (roughly centres H&E-like RGB in [0, 1]).
_MEAN = (0.5, 0.5, 0.5)
_STD = (0.25, 0.25, 0.25)


def _config_id(prefix: str, config: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=list).encode()).hexdigest()[:12]
    return f"{prefix}:random-seed{config['seed']}:{digest}"


@functools.cache
def _modules() -> SimpleNamespace:
    import torch
    from torch import nn

    def conv(c_in: int, c_out: int, stride: int, dilation: int = 1) -> nn.Conv2d:
        return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation)

    class TinyEncoder(nn.Module):
        """Strided convs, then global average pooling to ``feature_dim`` features."""

        def __init__(self, widths: tuple[int, ...], feature_dim: int, input_size: int, weights_id: str):
            super().__init__()
            self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
            layers: list[nn.Module] = []
            c_in = 3
            for width in widths:
                layers += [conv(c_in, width, 2), nn.ReLU()]
                c_in = width
            layers.append(conv(c_in, feature_dim, 2))  # no ReLU: signed features for cosine similarity
            self.body = nn.Sequential(*layers)
            self.feature_dim = feature_dim
            self.input_size = input_size
            self.weights_id = weights_id

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body((x - self.mean) / self.std).mean(dim=(2, 3))

    class TinyBackbone(nn.Module):
        """A stride-2 stem and four stride-2 levels (output strides 4, 8, 16, 32).

        With ``output_stride``, levels that would be coarser keep the resolution and dilate their
        convolutions instead (as timm's ``output_stride`` does for CNNs).
        """

        def __init__(
            self, stem: int, channels: tuple[int, ...], weights_id: str, output_stride: int | None = None
        ):
            super().__init__()
            self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
            self.stem = nn.Sequential(conv(3, stem, 2), nn.ReLU())
            levels, strides = [], []
            c_in, stride, dilation = stem, 2, 1
            for c_out in channels:
                step = 2
                if output_stride is not None and stride * 2 > output_stride:
                    step, dilation = 1, dilation * 2
                stride *= step
                levels.append(
                    nn.Sequential(
                        conv(c_in, c_out, step, 1 if step == 2 else dilation),
                        nn.ReLU(),
                        conv(c_out, c_out, 1, dilation),
                        nn.ReLU(),
                    )
                )
                strides.append(stride)
                c_in = c_out
            self.levels = nn.ModuleList(levels)
            self.channels = tuple(channels)
            self.strides = tuple(strides)
            self.weights_id = weights_id

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            x = self.stem((x - self.mean) / self.std)
            maps = []
            for level in self.levels:
                x = level(x)
                maps.append(x)
            return maps

    return SimpleNamespace(TinyEncoder=TinyEncoder, TinyBackbone=TinyBackbone)


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
    cls = _modules().TinyEncoder
    return _seeded(
        cfg["seed"],
        lambda: cls(
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
    cls = _modules().TinyBackbone
    return _seeded(
        cfg["seed"],
        lambda: cls(cfg["stem"], tuple(cfg["channels"]), _config_id("tiny-backbone", cfg), output_stride),
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
