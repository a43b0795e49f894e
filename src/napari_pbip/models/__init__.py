"""Model registries (encoders, backbones, segmenters) and the PBIP networks."""

from .registry import (
    create_backbone,
    create_encoder,
    create_segmenter,
    list_backbones,
    list_encoders,
    list_segmenters,
    register_backbone,
    register_encoder,
    register_segmenter,
)

__all__ = [
    "create_backbone",
    "create_encoder",
    "list_backbones",
    "list_encoders",
    "list_segmenters",
    "register_backbone",
    "register_encoder",
    "register_segmenter",
    "create_segmenter",
]
