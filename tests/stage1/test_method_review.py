"""The stage-1 method faults found in review (issue 12), each pinned by a test that failed before its fix.

- FG/BG images reach the encoder at the size the prototypes were encoded at;
- the CAM levels' coarsest stride is 16 (the paper's levels are at 4/8/16);
- the FG and BG similarity losses do not move when every similarity moves by the same amount;
- training's foreground map is the pseudo-masks' fused CAM (ReLU before the min-max);
- training gets the encoder through the bank, which refuses other weights.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_pbip.errors import BankError, SettingsError  # noqa: E402
from napari_pbip.events import run  # noqa: E402
from napari_pbip.stage1 import TrainSettings, train  # noqa: E402
from napari_pbip.stage1 import losses as losses_mod  # noqa: E402

CLASSES = ("tumor", "stroma", "lymphocyte", "necrosis")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from napari_pbip.synthetic.synth import write_synthetic_dataset

    return write_synthetic_dataset(
        tmp_path_factory.mktemp("d") / "synth", n_train=8, n_val=0, n_test=0, size=64
    )


class _Recorder:
    """Forward pre-hook that keeps the input shape of every encoder call."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, module, args) -> None:
        self.shapes.append(tuple(args[0].shape))


def _bank_with_encoder(input_size: int, d: int = 32):
    """A Bank stand-in whose encoder (tiny, ``input_size``) records the images it is given."""
    from napari_pbip.models.tiny import build_tiny_encoder

    enc = build_tiny_encoder({"input_size": input_size, "feature_dim": d}).eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    enc.recorder = _Recorder()
    enc.register_forward_pre_hook(enc.recorder)
    rng = np.random.default_rng(0)
    protos = rng.normal(size=(len(CLASSES), 2, d)).astype(np.float32)
    return SimpleNamespace(
        classes=CLASSES,
        encoder_name="tiny-encoder",
        content_hash="fake",
        version=1,
        prototype_tensor=lambda: (protos, np.ones((len(CLASSES), 2), bool)),
        encoder=lambda device="auto", encoder=None: enc,
    ), enc


def _tiny(**kw) -> TrainSettings:
    base = dict(
        backbone="tiny-backbone",
        pretrained=False,
        image_size=64,
        batch_size=4,
        epochs=1,
        preview_every=0,
        device="cpu",
    )
    return TrainSettings(**{**base, **kw})


def test_fg_bg_images_reach_the_encoder_at_the_size_the_prototypes_were_encoded_at(dataset, tmp_path):
    assert TrainSettings().match_size is None  # default: the bank encoder's input size
    bank, enc = _bank_with_encoder(input_size=96)
    run(train(_tiny(), dataset, bank, tmp_path / "run"))
    sides = {shape[-2:] for shape in enc.recorder.shapes}
    assert sides == {(96, 96)}  # the training images are 64 px: they are resized up to the bank's 96
    enc.recorder.shapes.clear()
    run(train(_tiny(match_size=32), dataset, bank, tmp_path / "cheap"))  # the explicit cheaper option
    assert {shape[-2:] for shape in enc.recorder.shapes} == {(32, 32)}


def test_cam_levels_are_at_most_stride_16_by_default():
    from napari_pbip.stage1.classnet import build_classnet

    for backbone in ("tiny-backbone", "efficientnet_lite0"):
        model = build_classnet(TrainSettings(backbone=backbone, baseline=True, pretrained=False), 3)
        strides = [model.backbone.strides[i] for i in model.levels]
        assert strides == [8, 16, 16], backbone
        out = model(torch.rand(1, 3, 224, 224))
        assert [tuple(c.shape[-2:]) for c in out["cams"]] == [(28, 28), (14, 14), (14, 14)]
    native = build_classnet(TrainSettings(baseline=True, pretrained=False, output_stride=None), 3)
    assert [native.backbone.strides[i] for i in native.levels] == [8, 16, 32]


def test_the_dilated_backbone_keeps_the_pretrained_weights():
    from napari_pbip.models import create_backbone

    plain = create_backbone("efficientnet_lite0", pretrained=True)
    dilated = create_backbone("efficientnet_lite0", pretrained=True, output_stride=16)
    a, b = plain.state_dict(), dilated.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_backbone_that_cannot_be_dilated_is_refused_with_the_fix(monkeypatch):
    import napari_pbip.models as models
    from napari_pbip.models.tiny import build_tiny_backbone
    from napari_pbip.stage1.classnet import build_classnet

    # a backbone factory that takes output_stride but keeps its native strides 4-32
    monkeypatch.setattr(models, "create_backbone", lambda name, pretrained=True, **kw: build_tiny_backbone())
    with pytest.raises(SettingsError, match=r"still gives stride 32.*output_stride=None and levels"):
        build_classnet(TrainSettings(backbone="tiny-backbone", baseline=True, pretrained=False), 3)
    s = TrainSettings(backbone="tiny-backbone", baseline=True, output_stride=None, levels=(-4, -3, -2))
    model = build_classnet(s, 3)
    assert [model.backbone.strides[i] for i in model.levels] == [4, 8, 16]  # the paper's levels for MiT


def test_old_runs_without_output_stride_load_with_native_strides():
    saved = TrainSettings(output_stride=None).to_dict()
    del saved["output_stride"]  # a run saved before the field existed
    assert TrainSettings.from_dict(saved).output_stride is None


def test_similarity_losses_do_not_move_when_every_similarity_moves(monkeypatch):
    # 2 classes; class 0 has 1 valid slot, class 1 has 3: unequal numbers of own and other slots
    valid = torch.tensor([[True, False, False], [True, True, True]])
    protos = torch.zeros(2, 3, 4)
    sims = torch.tensor([[[0.6, 0.0, 0.0], [0.2, 0.3, 0.1]]])  # one (image, class 0) pair
    feat = torch.zeros(1, 4)

    def losses(shift: float):
        monkeypatch.setattr(losses_mod, "prototype_similarities", lambda f, p, v: (sims + shift) * v)
        return [
            float(v) for v in losses_mod.similarity_losses(feat, feat, torch.tensor([0]), protos, valid, 1.0)
        ]

    base, lowered = losses(0.0), losses(-0.2)
    assert base == pytest.approx(lowered, abs=1e-6)  # lowering all similarities is not rewarded
    assert base[0] == pytest.approx(float(torch.nn.functional.softplus(torch.tensor(0.2 - 0.6))), abs=1e-6)


def test_training_foreground_is_the_pseudo_masks_fused_cam():
    from napari_pbip.stage1.matching import fg_bg_images
    from napari_pbip.stage1.pseudo import class_scores

    cam = torch.tensor([-4.0, -2.0, 0.0, 4.0]).reshape(1, 1, 1, 4).expand(1, 1, 4, 4).clone()
    cams = [torch.cat([cam, torch.zeros_like(cam)], dim=1)]  # class 0 present, class 1 absent
    labels = torch.tensor([[1.0, 0.0]])
    mb = fg_bg_images(torch.full((1, 3, 4, 4), 0.5), cams, labels, size=4, delta=0.15)
    scores = class_scores(cams, (4, 4), labels, (1.0,))
    # negative evidence is cut (ReLU) before the min-max, as in pseudo-masks: only the last column is foreground
    assert mb.mask[0, 0, 0].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert torch.allclose(mb.norm[0, 0], scores[0, 0], atol=1e-3)


def test_training_refuses_an_encoder_whose_weights_differ_from_the_banks(tmp_path, monkeypatch):
    from napari_pbip.bank import BankSettings, build_bank
    from napari_pbip.bank import encode as encode_mod
    from napari_pbip.models.tiny import build_tiny_encoder
    from napari_pbip.synthetic.synth import write_synthetic_dataset

    ds = write_synthetic_dataset(tmp_path / "ds", n_train=12, n_val=0, n_test=0, size=64)
    bank = tmp_path / "bank"
    run(
        build_bank(
            BankSettings(encoder="tiny-encoder", k=1, per_cluster=2, min_tissue=0.0), ds, bank, device="cpu"
        )
    )
    other = build_tiny_encoder({"seed": 1}).eval()  # same name, other weights (an edited local folder)
    monkeypatch.setattr(encode_mod, "load_encoder", lambda name, device="auto": other)
    with pytest.raises(BankError, match="differs from the one this bank was built with"):
        run(train(_tiny(), ds, bank, tmp_path / "run"))
