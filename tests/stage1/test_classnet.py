"""ClassNet: eq. 2 by direct computation, the CAM contract on every backbone, where gradients go."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_pbip.errors import SettingsError  # noqa: E402
from napari_pbip.models import create_encoder, list_backbones  # noqa: E402
from napari_pbip.stage1.classnet import build_classnet, resolve_levels  # noqa: E402
from napari_pbip.stage1.losses import pbip_loss  # noqa: E402
from napari_pbip.stage1.matching import encode_pairs, fg_bg_images  # noqa: E402
from napari_pbip.stage1.settings import TrainSettings  # noqa: E402

N, K, D = 3, 2, 32


def _bank(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(N, K, D)).astype(np.float32)
    valid = np.ones((N, K), bool)
    valid[2, 1] = False  # class 2 has a single prototype
    return protos, valid


def _settings(**kw) -> TrainSettings:
    return TrainSettings(backbone="tiny-backbone", pretrained=False, **kw)


@pytest.mark.parametrize("name", sorted(list_backbones()))
@pytest.mark.parametrize("baseline", [False, True])
def test_cam_shape_contract_on_every_registered_backbone(name, baseline):
    protos, valid = _bank()
    model = build_classnet(
        TrainSettings(backbone=name, pretrained=False, baseline=baseline), N, protos, valid
    )
    x = torch.rand(2, 3, 64, 96)
    out = model(x)
    strides = [model.backbone.strides[i] for i in model.levels]
    assert model.levels == tuple(range(len(model.backbone.channels)))[-3:]
    assert [tuple(c.shape) for c in out["cams"]] == [(2, N, 64 // s, 96 // s) for s in strides]
    assert [tuple(lg.shape) for lg in out["logits"]] == [(2, N)] * 3
    for cam, lg in zip(out["cams"], out["logits"], strict=True):
        assert torch.allclose(lg, cam.mean(dim=(2, 3)), atol=1e-6)  # logits are the GAP of the CAM


def test_cam_is_scaled_mean_cosine_to_valid_projected_prototypes():
    protos, valid = _bank()
    model = build_classnet(_settings(), N, protos, valid).eval()
    head, level = model.heads[-1], model.levels[-1]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        feat = model.backbone(x)[level]
        cam = model(x)["cams"][-1]
        proj = head.proj(torch.from_numpy(protos))  # (N, K, C)
        f = feat[0].flatten(1).T  # (HW, C)
        for n in range(N):
            cos = [
                torch.nn.functional.cosine_similarity(f, proj[n, k][None], dim=1)
                for k in range(K)
                if valid[n, k]
            ]
            expected = head.scale * torch.stack(cos).mean(0)
            assert torch.allclose(cam[0, n].flatten(), expected, atol=1e-5)


def test_levels_resolve_and_reject_out_of_range():
    assert resolve_levels((-3, -2, -1), 4, "b") == (1, 2, 3)
    assert resolve_levels((0, 1, 2, 3), 4, "b") == (0, 1, 2, 3)
    with pytest.raises(SettingsError, match="has 4 levels"):
        resolve_levels((-5, -1), 4, "b")


def test_encoder_frozen_but_gradient_reaches_backbone_through_fg_bg_masks():
    protos, valid = _bank()
    s = _settings(alpha=0.0)  # similarity losses only: any backbone gradient must come through the masks
    model = build_classnet(s, N, protos, valid)
    encoder = create_encoder("tiny-encoder")
    assert encoder.feature_dim == D  # the prototypes live in the encoder's feature space
    x = torch.rand(2, 3, 64, 64)
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out = model(x)
    mb = fg_bg_images(x, out["cams"], y, encoder.input_size, s.delta)
    fg, bg = encode_pairs(encoder, mb)
    parts = pbip_loss(out["logits"], y, s, fg, bg, mb.class_index, model)
    parts["loss"].backward()
    assert all(p.grad is None for p in encoder.parameters())
    assert all(not p.requires_grad for p in encoder.parameters())
    backbone_grad = sum(float(p.grad.abs().sum()) for p in model.backbone.parameters() if p.grad is not None)
    mlp_grad = sum(float(p.grad.abs().sum()) for p in model.heads.parameters() if p.grad is not None)
    assert backbone_grad > 0 and mlp_grad > 0
