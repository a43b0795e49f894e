"""The stage-2 segmenters as torch modules: FPN and DeepLab v2 heads on a backbone, SegFormer.

Built by the registered factories in :mod:`.segmenters`, which import this module when a model is
built so that listing the registered segmenters does not import torch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .hub import IMAGENET_MEAN, IMAGENET_STD


class FPNHead(nn.Module):
    """Lateral 1x1 convs, a top-down pathway, then all levels summed at the finest stride."""

    def __init__(self, channels: tuple[int, ...], width: int, n_classes: int, dropout: float):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.smooth = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
            for _ in channels
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(width, n_classes, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        lat = [conv(m) for conv, m in zip(self.lateral, maps, strict=True)]
        for i in range(len(lat) - 2, -1, -1):  # top-down: coarse into fine
            lat[i] = lat[i] + F.interpolate(lat[i + 1], size=lat[i].shape[-2:], mode="nearest")
        size = lat[0].shape[-2:]
        fused = sum(
            F.interpolate(s(x), size=size, mode="bilinear", align_corners=False) if i else s(x)
            for i, (s, x) in enumerate(zip(self.smooth, lat, strict=True))
        )
        return self.classifier(self.dropout(fused))


class BackboneFPN(nn.Module):
    """A registered multi-scale backbone with :class:`FPNHead`; logits at input resolution."""

    encoder_prefix = "backbone."

    def __init__(self, backbone: nn.Module, head: nn.Module, weights_id: str, config: dict[str, Any]):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.weights_id, self.config = weights_id, config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.backbone(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class DeepLabV2(nn.Module):
    """Dilated ResNet (output stride 8) + ASPP (rates 6/12/18/24, branch outputs summed)."""

    encoder_prefix = "body."

    def __init__(self, body: nn.Module, n_classes: int, rates: tuple[int, ...], weights_id: str, config):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.body = body
        c = body.num_features
        self.aspp = nn.ModuleList(nn.Conv2d(c, n_classes, 3, padding=r, dilation=r) for r in rates)
        for conv in self.aspp:  # as in DeepLab-v2: classifier weights ~ N(0, 0.01)
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        self.weights_id, self.config = weights_id, config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body.forward_features((x - self.mean) / self.std)
        logits = sum(branch(f) for branch in self.aspp)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class SegFormer(nn.Module):
    """transformers SegFormer with normalisation inside and logits upsampled to the input."""

    encoder_prefix = "net.segformer."

    def __init__(self, net: nn.Module, weights_id: str, config: dict[str, Any]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.net = net
        self.weights_id, self.config = weights_id, config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(pixel_values=(x - self.mean) / self.std).logits
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
