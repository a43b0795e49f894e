"""Model registries (encoders, backbones, segmenters) and the PBIP networks."""

from .registry import (
    create_backbone,
    create_encoder,
    list_backbones,
    list_encoders,
    register_backbone,
    register_encoder,
)

__all__ = [
    "create_backbone",
    "create_encoder",
    "list_backbones",
    "list_encoders",
    "register_backbone",
    "register_encoder",
]
