"""ClassNet (PBIP eq. 2) and the plain-CAM baseline: per-level class activation maps and logits.

PBIP: a prototype-projection MLP per level maps the bank prototypes ``P`` (N x K x d) to the
level's width, ``P_i = MLP_i(P)``; the CAM of class n at pixel p is the scaled mean cosine between
the feature ``F_i(p)`` and class n's valid projected prototypes, and the image logit is its global
average. Since the cosine is linear in the normalised feature, the mean over the K prototypes
equals one dot product with the mean of the normalised prototypes, so each level costs one 1x1
convolution whatever K is.

Baseline (the paper's "without SIM" ablation): a 1x1 convolution per level, nothing else.

This module imports torch; the package imports it only when a network is built.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SettingsError

PROJ_HIDDEN = (
    256  # hidden width of the prototype-projection MLP (reference: Linear(d,256)-ReLU-Linear(256,C_i))
)


def resolve_levels(levels: tuple[int, ...], n_levels: int, backbone: str) -> tuple[int, ...]:
    """Turn possibly negative level indices into ``0..n_levels-1``, finest first.

    Raises:
        SettingsError: an index is out of range for the backbone, or two indices name one level.
    """
    out = []
    for lv in levels:
        if not -n_levels <= lv < n_levels:
            raise SettingsError(
                f"levels={levels} is invalid for backbone {backbone!r}, which has {n_levels} levels; "
                f"use indices in [-{n_levels}, {n_levels - 1}], e.g. (-3, -2, -1) for the last three"
            )
        out.append(lv % n_levels)
    if len(set(out)) != len(out) or out != sorted(out):
        raise SettingsError(
            f"levels={levels} resolve to {out} on backbone {backbone!r}; give distinct levels, finest first"
        )
    return tuple(out)


class PrototypeCAM(nn.Module):
    """One level of eq. 2: projected prototypes, scaled mean cosine, per class."""

    def __init__(self, proto_dim: int, channels: int, cam_scale: float, learn_scale: bool):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Linear(proto_dim, PROJ_HIDDEN), nn.ReLU(inplace=True), nn.Linear(PROJ_HIDDEN, channels)
        )
        scale = torch.tensor(float(cam_scale))
        if learn_scale:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)

    def forward(self, feat: torch.Tensor, prototypes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        proj = F.normalize(self.proj(prototypes), dim=-1, eps=1e-6)  # (N, K, C)
        weights = valid.to(proj.dtype)
        mean_proto = (proj * weights[..., None]).sum(1) / weights.sum(1).clamp_min(1)[:, None]  # (N, C)
        feat = F.normalize(feat, dim=1, eps=1e-6)
        cam = torch.einsum("bchw,nc->bnhw", feat, mean_proto.to(feat.dtype))
        return cam * self.scale


class ConvCAM(nn.Module):
    """Baseline level head: a 1x1 convolution to one map per class."""

    def __init__(self, channels: int, n_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, n_classes, 1)

    def forward(self, feat: torch.Tensor, prototypes: Any = None, valid: Any = None) -> torch.Tensor:
        return self.conv(feat)


class ClassNet(nn.Module):
    """Backbone plus one CAM head per selected level.

    ``forward(x)`` takes RGB ``(B, 3, H, W)`` in [0, 1] and returns a dict with ``cams`` (one
    ``(B, N, h_i, w_i)`` map per level, coarsest last) and ``logits`` (one ``(B, N)`` per level,
    the global average of the map).
    """

    def __init__(
        self,
        backbone: nn.Module,
        n_classes: int,
        levels: tuple[int, ...],
        prototypes: torch.Tensor | None,
        proto_valid: torch.Tensor | None,
        cam_scale: float = 1 / 0.07,
        learn_scale: bool = True,
    ):
        super().__init__()
        self.backbone = backbone
        self.n_classes = n_classes
        self.levels = tuple(levels)
        self.baseline = prototypes is None
        channels = [backbone.channels[i] for i in self.levels]
        if self.baseline:
            self.heads = nn.ModuleList(ConvCAM(c, n_classes) for c in channels)
        else:
            if prototypes.shape[0] != n_classes or proto_valid.shape != prototypes.shape[:2]:
                raise SettingsError(
                    f"prototypes of shape {tuple(prototypes.shape)} with validity {tuple(proto_valid.shape)} do "
                    f"not fit {n_classes} classes; expected (N={n_classes}, K, d) and (N, K)"
                )
            self.register_buffer("prototypes", prototypes.float().clone())
            self.register_buffer("proto_valid", proto_valid.bool().clone())
            d = prototypes.shape[-1]
            self.heads = nn.ModuleList(PrototypeCAM(d, c, cam_scale, learn_scale) for c in channels)

    def forward(self, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        maps = self.backbone(x)
        protos = None if self.baseline else self.prototypes
        valid = None if self.baseline else self.proto_valid
        cams = [head(maps[i], protos, valid) for head, i in zip(self.heads, self.levels, strict=True)]
        return {"cams": cams, "logits": [cam.float().mean(dim=(2, 3)) for cam in cams]}

    def param_groups(self, lr: float, head_lr_mult: float, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: the backbone at ``lr``, the new heads at ``lr * head_lr_mult``."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        heads = [p for p in self.heads.parameters() if p.requires_grad]
        return [
            {
                "params": backbone,
                "lr": lr,
                "base_lr": lr,
                "weight_decay": weight_decay,
                "name": "backbone",
            },
            {
                "params": heads,
                "lr": lr * head_lr_mult,
                "base_lr": lr * head_lr_mult,
                "weight_decay": weight_decay,
                "name": "heads",
            },
        ]


def build_classnet(
    settings,
    n_classes: int,
    prototypes=None,
    proto_valid=None,
    pretrained: bool | None = None,
):
    """Build a ClassNet (or the baseline when ``settings.baseline``) for ``n_classes`` classes.

    The heads are initialised from ``settings.seed`` so a run is reproducible.

    Args:
        settings: :class:`~napari_pbip.stage1.settings.TrainSettings`.
        n_classes: tissue classes N.
        prototypes: bank prototypes ``(N, K, d)`` (numpy or tensor); ignored for the baseline.
        proto_valid: ``(N, K)`` validity of each prototype slot; ignored for the baseline.
        pretrained: load the backbone's pretrained weights (default: ``settings.pretrained``;
            False when the weights will be loaded from a checkpoint).

    Returns:
        The ``ClassNet`` module (train mode, on the CPU).
    """
    from ..models import create_backbone

    pretrained = settings.pretrained if pretrained is None else pretrained
    stride = settings.output_stride
    extra = {} if stride is None else {"output_stride": stride}
    backbone = create_backbone(settings.backbone, pretrained=pretrained, **extra)
    levels = resolve_levels(settings.levels, len(backbone.channels), settings.backbone)
    coarsest = max(backbone.strides[i] for i in levels)
    if stride is not None and coarsest > stride:
        raise SettingsError(
            f"output_stride={stride}: backbone {settings.backbone!r} still gives stride {coarsest} at levels "
            f"{settings.levels} (its strides: {tuple(backbone.strides)}); it cannot be dilated: set "
            "output_stride=None and levels whose stride is at most 16, e.g. (-4, -3, -2)"
        )
    if settings.baseline:
        prototypes = proto_valid = None
    else:
        if prototypes is None:
            raise SettingsError(
                "a PBIP ClassNet needs the bank prototypes; pass a bank, or set baseline=True"
            )
        prototypes = torch.as_tensor(prototypes, dtype=torch.float32)
        proto_valid = torch.as_tensor(proto_valid, dtype=torch.bool)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        return ClassNet(
            backbone, n_classes, levels, prototypes, proto_valid, settings.cam_scale, settings.learn_scale
        )
