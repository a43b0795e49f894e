"""The encoder and backbone contracts, checked for every registered model and every hub family.

A new ``@register_encoder`` / ``@register_backbone`` entry is covered here without any edit.
"""

from __future__ import annotations

import math

import pytest

from napari_pbip.models import create_backbone, create_encoder, list_backbones, list_encoders

SIZES = [(224, 224), (160, 224)]  # square and non-square
HUB_ENCODERS = ["segformer", "clip-vision", "clip", "swin", "dinov2", "timm"]
HUB_BACKBONES = ["segformer", "swin", "timm"]


def _pretrained(entry) -> bool:
    return entry.offline  # weights that are not shipped cannot be loaded offline: use random ones


def _image(shape, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g)


@pytest.fixture(scope="module")
def encoders(hub_dirs):
    """Every registered encoder plus one per hub family, each built once."""
    built = {name: create_encoder(name, pretrained=_pretrained(e)) for name, e in list_encoders().items()}
    built.update({f"hub:{fam}": create_encoder(str(hub_dirs[fam])) for fam in HUB_ENCODERS})
    return built


@pytest.fixture(scope="module")
def backbones(hub_dirs):
    """Every registered backbone plus one per hierarchical hub family, each built once."""
    built = {name: create_backbone(name, pretrained=_pretrained(e)) for name, e in list_backbones().items()}
    built.update({f"hub:{fam}": create_backbone(str(hub_dirs[fam])) for fam in HUB_BACKBONES})
    return built


ENCODER_IDS = sorted(list_encoders()) + [f"hub:{f}" for f in HUB_ENCODERS]
BACKBONE_IDS = sorted(list_backbones()) + [f"hub:{f}" for f in HUB_BACKBONES]


@pytest.mark.parametrize("name", ENCODER_IDS)
def test_encoder_contract(encoders, name):
    """(B, 3, H, W) in [0, 1] -> finite float32 (B, feature_dim), frozen, same output twice."""
    import torch

    enc = encoders[name]
    assert isinstance(enc.feature_dim, int) and enc.feature_dim > 0
    assert isinstance(enc.input_size, int) and enc.input_size > 0
    assert isinstance(enc.weights_id, str) and enc.weights_id
    assert not any(p.requires_grad for p in enc.parameters()), "create_encoder must freeze the encoder"
    assert not enc.training
    for h, w in SIZES:
        x = _image((2, 3, h, w))
        out = enc(x)
        assert out.shape == (2, enc.feature_dim) and out.dtype == torch.float32
        assert torch.isfinite(out).all()
        torch.testing.assert_close(enc(x), out, rtol=0, atol=0)
        # Each image is encoded on its own: batch composition does not change a row.
        torch.testing.assert_close(enc(x[:1]), out[:1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", BACKBONE_IDS)
def test_backbone_contract(backbones, name):
    """Maps finest first, with the declared channels, and sizes ceil(H / stride) x ceil(W / stride)."""
    import torch

    net = backbones[name].eval()
    assert isinstance(net.weights_id, str) and net.weights_id
    assert len(net.channels) == len(net.strides) >= 1
    assert list(net.strides) == sorted(set(net.strides)), f"strides {net.strides} are not finest first"
    for h, w in SIZES:
        maps = net(_image((1, 3, h, w)))
        assert isinstance(maps, list) and len(maps) == len(net.channels)
        for fmap, c, s in zip(maps, net.channels, net.strides, strict=True):
            assert fmap.dtype == torch.float32
            assert tuple(fmap.shape) == (1, c, math.ceil(h / s), math.ceil(w / s)), (name, h, w, s)
        torch.testing.assert_close(net(_image((1, 3, h, w))), maps, rtol=0, atol=0)


@pytest.mark.parametrize("name", BACKBONE_IDS)
def test_backbone_is_trainable(backbones, name):
    """ClassNet fine-tunes the backbone: every level passes gradients back to the first layer."""
    net = backbones[name].train()
    try:
        maps = net(_image((2, 3, 64, 64)))
        sum(m.float().mean() for m in maps).backward()
        grads = [p.grad for p in net.parameters() if p.requires_grad]
        assert grads and grads[0] is not None and grads[0].abs().sum() > 0
    finally:
        net.zero_grad(set_to_none=True)
        net.eval()


def test_registered_offline_models_build_twice_identically():
    """Seeded or shipped weights: two builds of the same name encode an image identically."""
    import torch

    x = _image((1, 3, 64, 64), seed=3)
    for name, entry in list_encoders().items():
        if entry.offline:
            a, b = create_encoder(name), create_encoder(name)
            assert a.weights_id == b.weights_id
            torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
