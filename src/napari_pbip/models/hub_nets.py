"""The torch wrappers around hub models: normalisation inside, the encoder and backbone contracts.

Built by :mod:`.hub` (``wrap``, ``wrap_features``, transformers models), which imports this module
when a model is built so that listing or naming models does not import torch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Normalized(nn.Module):
    """Normalise RGB in [0, 1] with ``mean``/``std``, then run ``net``; lists stay lists."""

    def __init__(self, net: nn.Module, mean, std, **attrs: Any):
        super().__init__()
        self.net = net
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        for key, value in attrs.items():
            setattr(self, key, value)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor):
        out = self.net(self.normalize(x))
        return list(out) if isinstance(out, (list, tuple)) else out


class HFEncoder(Normalized):
    """A transformers vision model reduced to one vector per image."""

    def __init__(self, net, mean, std, output: str, fixed_size: bool, **attrs: Any):
        super().__init__(net, mean, std, **attrs)
        self.output, self.fixed_size = output, fixed_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_size and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False
            )
        x = self.normalize(x)
        if self.output == "mean_last_map":  # SegFormer: (B, C, h, w)
            return self.net(pixel_values=x).last_hidden_state.mean(dim=(2, 3))
        return getattr(self.net(pixel_values=x), self.output)


class HFBackbone(Normalized):
    """A hierarchical transformers model returning its stage maps, finest first.

    Swin (transformers) breaks when a stage is smaller than its attention window, so inputs
    smaller than ``min_side`` are zero-padded (after normalisation) at the bottom/right and the
    maps cropped back to ``ceil(H / stride) x ceil(W / stride)``.
    """

    def __init__(self, net, mean, std, family: str, min_side: int = 0, **attrs: Any):
        super().__init__(net, mean, std, **attrs)
        self.family, self.min_side = family, min_side

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.normalize(x)
        if self.family == "segformer":
            return list(self.net(pixel_values=x, output_hidden_states=True).hidden_states)
        h, w = x.shape[-2:]
        x = F.pad(x, (0, max(0, self.min_side - w), 0, max(0, self.min_side - h)))
        emb, dims = self.net.embeddings(x)[:2]  # swin: maps before each patch merging, stem dropped
        out = self.net.encoder(
            emb, dims, output_hidden_states=True, output_hidden_states_before_downsampling=True
        )
        maps = out.reshaped_hidden_states[1:]
        return [m[..., : -(-h // s), : -(-w // s)] for m, s in zip(maps, self.strides, strict=True)]
