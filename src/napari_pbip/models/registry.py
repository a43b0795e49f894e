"""One registry per kind of model, each with one factory.

Contracts (tested for every registered entry in ``tests/models/test_contracts.py``):

* **Encoder** (frozen image encoder, stage 0 and ImgMatchNet): an ``nn.Module`` whose
  ``forward(x)`` takes RGB float tensors ``(B, 3, H, W)`` scaled to ``[0, 1]`` (it normalises
  inside) and returns pooled features ``(B, d)``. Attributes: ``feature_dim`` (d),
  ``input_size`` (the side it was trained at), ``weights_id`` (a string naming the weights,
  hashed into the bank so a mismatch can be detected).
* **Backbone** (ClassNet and stage-2): ``forward(x)`` with the same input returns a list of
  feature maps, finest first. Attributes: ``channels`` (tuple of C_i), ``strides`` (tuple of
  output strides), ``weights_id``.

Names: a registered name (``list_encoders()``), a timm ``hf-hub:org/name`` id, a model-hub id
such as ``nvidia/mit-b1`` or ``vinid/plip``, or a local directory holding a saved model.
Hub ids and ``hf-hub:`` names are resolved by :mod:`napari_pbip.models.hub`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ModelNotFoundError


@dataclass(frozen=True)
class Entry:
    """A registered model factory."""

    name: str
    factory: Callable[..., Any]
    description: str
    offline: bool  # True when its weights ship with the installed packages


_ENCODERS: dict[str, Entry] = {}
_BACKBONES: dict[str, Entry] = {}
_SEGMENTERS: dict[str, Entry] = {}


def _register(table: dict[str, Entry], kind: str, name: str, description: str, offline: bool):
    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in table:
            raise ValueError(f"{kind} {name!r} is registered twice")
        table[name] = Entry(name, factory, description, offline)
        return factory

    return deco


def register_encoder(name: str, description: str = "", offline: bool = False):
    """Decorator registering ``factory(pretrained: bool = True, **kw) -> encoder``."""
    return _register(_ENCODERS, "encoder", name, description, offline)


def register_backbone(name: str, description: str = "", offline: bool = False):
    """Decorator registering ``factory(pretrained: bool = True, **kw) -> backbone``."""
    return _register(_BACKBONES, "backbone", name, description, offline)


def register_segmenter(name: str, description: str = "", offline: bool = False):
    """Decorator registering ``factory(n_classes: int, pretrained: bool = True, **kw) -> segmenter``.

    A segmenter maps (B, 3, H, W) in [0, 1] to logits (B, n_classes, H, W) at input resolution.
    """
    return _register(_SEGMENTERS, "segmenter", name, description, offline)


def _load_builtins() -> None:
    # Importing these modules runs their @register_* decorators; torch stays unimported
    # until a factory is called.
    from . import efficientnet_lite, hub, tiny  # noqa: F401


def list_encoders() -> dict[str, Entry]:
    """Registered encoders by name."""
    _load_builtins()
    return dict(_ENCODERS)


def list_backbones() -> dict[str, Entry]:
    """Registered backbones by name."""
    _load_builtins()
    return dict(_BACKBONES)


def _create(table: dict[str, Entry], kind: str, name: str, pretrained: bool, kwargs: dict[str, Any]):
    _load_builtins()
    if name in table:
        return table[name].factory(pretrained=pretrained, **kwargs)
    from . import hub

    if hub.looks_like_hub_name(name):
        return hub.create(kind, name, pretrained=pretrained, **kwargs)
    valid = ", ".join(sorted(table))
    raise ModelNotFoundError(
        f"unknown {kind} {name!r}; registered {kind}s: {valid}; or give a model-hub id "
        f"(e.g. 'nvidia/mit-b1', 'vinid/plip', 'hf-hub:org/name') or a local directory holding saved weights"
    )


def create_encoder(name: str, pretrained: bool = True, **kwargs: Any):
    """Build a frozen encoder (eval mode, no gradients) by name."""
    model = _create(_ENCODERS, "encoder", name, pretrained, kwargs)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def create_backbone(name: str, pretrained: bool = True, **kwargs: Any):
    """Build a multi-scale backbone by name."""
    return _create(_BACKBONES, "backbone", name, pretrained, kwargs)


def _load_segmenters() -> None:
    from . import segmenters  # noqa: F401


def list_segmenters() -> dict[str, Entry]:
    """Registered stage-2 segmenters by name."""
    _load_segmenters()
    return dict(_SEGMENTERS)


def create_segmenter(name: str, n_classes: int, pretrained: bool = True, **kwargs: Any):
    """Build a stage-2 segmenter by name."""
    _load_segmenters()
    if name not in _SEGMENTERS:
        raise ModelNotFoundError(
            f"unknown segmenter {name!r}; registered segmenters: {', '.join(sorted(_SEGMENTERS))}"
        )
    return _SEGMENTERS[name].factory(n_classes=n_classes, pretrained=pretrained, **kwargs)
