"""Stage-2 segmenters: the output contract for every registered one, configs that rebuild them offline,
DeepLab-v2's stride and ASPP, and where pretrained weights come from (never from a pickle)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from napari_pbip.errors import ModelNotFoundError
from napari_pbip.models import create_backbone, create_segmenter, list_segmenters

N_CLASSES = 5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mit_dir(tmp_path_factory):
    """A tiny random MiT saved as nvidia/mit-b* ship (an image classifier, safetensors)."""
    import transformers

    torch.manual_seed(0)
    config = transformers.SegformerConfig(
        depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32], num_attention_heads=[1, 1, 2, 2],
        mlp_ratios=[2, 2, 2, 2], decoder_hidden_size=16,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("mit") / "mit-tiny"
    transformers.SegformerForImageClassification(config).save_pretrained(out)
    return out


@pytest.fixture
def tiny_kwargs(request):
    """A fast configuration of every registered segmenter (random or tiny local weights)."""
    return {
        "lite0-seg": lambda: {"backbone": "tiny-backbone"},
        "deeplabv2": lambda: {"backbone": "test_resnet", "pretrained": False},
        "segformer": lambda: {"backbone": str(request.getfixturevalue("mit_dir"))},
    }


def _build(name, kwargs):
    kwargs = dict(kwargs)
    return create_segmenter(name, N_CLASSES, pretrained=kwargs.pop("pretrained", True), **kwargs)


@pytest.mark.parametrize("name", sorted(list_segmenters()))
def test_every_segmenter_gives_logits_at_input_resolution(name, tiny_kwargs):
    assert name in tiny_kwargs, f"add a tiny configuration of {name!r} to this test"
    model = _build(name, tiny_kwargs[name]()).eval()
    for h, w in ((64, 64), (40, 72), (97, 33)):  # square, wide, odd sizes
        with torch.no_grad():
            out = model(torch.rand(2, 3, h, w))
        assert out.shape == (2, N_CLASSES, h, w) and out.dtype == torch.float32
        assert torch.isfinite(out).all()
    assert isinstance(model.weights_id, str) and model.weights_id
    json.dumps(model.config)  # must go into model.json
    encoder = [n for n, _ in model.named_parameters() if n.startswith(model.encoder_prefix)]
    head = [n for n, _ in model.named_parameters() if not n.startswith(model.encoder_prefix)]
    assert encoder and head  # the trainer gives them different learning rates


@pytest.mark.parametrize("name", sorted(list_segmenters()))
def test_config_rebuilds_the_network_without_its_weights_source(name, tiny_kwargs, tmp_path):
    model = _build(name, tiny_kwargs[name]()).eval()
    config = json.loads(json.dumps(model.config))  # as read back from model.json
    if name == "segformer":  # the MiT folder is gone: loading must not need it
        moved = tmp_path / "gone"
        config["backbone"] = str(moved)
    again = create_segmenter(name, N_CLASSES, pretrained=False, **config).eval()
    again.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


def test_deeplabv2_is_dilated_to_stride_8_with_a_summed_4_rate_aspp():
    model = create_segmenter("deeplabv2", N_CLASSES, pretrained=False, backbone="test_resnet").eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        features = model.body.forward_features((x - model.mean) / model.std)
        assert features.shape[-2:] == (8, 12)
        assert [conv.dilation for conv in model.aspp] == [(6, 6), (12, 12), (18, 18), (24, 24)]
        summed = sum(conv(features) for conv in model.aspp)
        expected = torch.nn.functional.interpolate(
            summed, size=(64, 96), mode="bilinear", align_corners=False
        )
        assert torch.allclose(model(x), expected, atol=1e-6)
    assert model.config == {"backbone": "test_resnet", "rates": [6, 12, 18, 24]}


def test_deeplabv2_without_offline_weights_says_how_to_supply_them():
    with pytest.raises(ModelNotFoundError, match=r"weights=PATH.*safetensors.*pretrained=False"):
        create_segmenter("deeplabv2", N_CLASSES, backbone="test_resnet")


def test_deeplabv2_loads_imagenet_weights_from_a_local_safetensors_folder(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = timm.create_model("test_resnet", pretrained=False)  # with its classifier, as shipped
    (tmp_path / "w").mkdir()
    save_file(source.state_dict(), str(tmp_path / "w" / "model.safetensors"))
    model = create_segmenter("deeplabv2", N_CLASSES, backbone="test_resnet", weights=str(tmp_path / "w"))
    body = model.body.state_dict()
    assert all(torch.equal(body[k], v) for k, v in source.state_dict().items() if k in body)
    assert model.weights_id.startswith("file:model.safetensors:")
    torch.save(source.state_dict(), tmp_path / "w.pth")
    with pytest.raises(ModelNotFoundError, match="never loaded"):
        create_segmenter("deeplabv2", N_CLASSES, backbone="test_resnet", weights=str(tmp_path / "w.pth"))


def test_segformer_takes_the_mit_encoder_weights_from_a_local_folder(mit_dir, tmp_path):
    import transformers

    mit = transformers.SegformerForImageClassification.from_pretrained(mit_dir)
    model = create_segmenter("segformer", N_CLASSES, backbone=str(mit_dir))
    ours = model.net.segformer.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in mit.segformer.state_dict().items())
    assert model.net.decode_head.classifier.out_channels == N_CLASSES
    pickled = tmp_path / "pickled"
    shutil.copytree(mit_dir, pickled)
    (pickled / "model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="model.safetensors"):
        create_segmenter("segformer", N_CLASSES, backbone=str(pickled))


def test_segformer_hub_id_not_cached_offline_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match=r"nvidia/mit-b1.*local directory"):
        create_segmenter("segformer", N_CLASSES, backbone="nvidia/mit-b1")


def test_unknown_segmenter_lists_the_registered_ones():
    with pytest.raises(ModelNotFoundError, match="deeplabv2.*lite0-seg.*segformer"):
        create_segmenter("unet", N_CLASSES)


def test_default_segmenter_starts_from_the_offline_imagenet_backbone():
    model = create_segmenter("lite0-seg", N_CLASSES)
    reference = create_backbone("efficientnet_lite0").state_dict()
    ours = model.backbone.state_dict()
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k]) for k in reference)
    assert model.weights_id.startswith("lite0-seg:efficientnet_lite0:") and "random" not in model.weights_id
