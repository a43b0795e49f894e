"""The tiny test networks as torch modules.

Built, seeded, by the factories in :mod:`.tiny`, which import this module when first called so that
listing the registered models does not import torch.
"""

from __future__ import annotations

import torch
from torch import nn

# Normalisation applied inside the tiny models (roughly centres H&E-like RGB in [0, 1]).
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def conv(c_in: int, c_out: int, stride: int, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation)


class TinyEncoder(nn.Module):
    """Strided convs, then global average pooling to ``feature_dim`` features."""

    def __init__(self, widths: tuple[int, ...], feature_dim: int, input_size: int, weights_id: str):
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
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
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
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
