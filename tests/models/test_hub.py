"""Hub loading, offline: tiny random models saved the way each library saves them, loaded back
through the same ``create_encoder`` / ``create_backbone`` path users take with hub ids."""

from __future__ import annotations

import pytest

from napari_pbip.errors import ModelNotFoundError
from napari_pbip.models import create_backbone, create_encoder
from napari_pbip.models.hub import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, looks_like_hub_name


def _x(h=64, w=64, seed=0):
    import torch

    return torch.rand((2, 3, h, w), generator=torch.Generator().manual_seed(seed))


def _norm(x, mean, std):
    import torch

    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _resize(x, size):
    import torch.nn.functional as F

    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def test_looks_like_hub_name(tmp_path):
    assert looks_like_hub_name("nvidia/mit-b1")
    assert looks_like_hub_name("hf-hub:timm/resnet50.a1_in1k")
    assert looks_like_hub_name(str(tmp_path))
    assert not looks_like_hub_name("efficientnet_lite0")
    assert not looks_like_hub_name("no-such-model")


def test_segformer_dir_loads_saved_weights(hub_dirs):
    """MiT saved as nvidia/mit-b* ship (with a classifier head): the encoder pools the last stage."""
    import torch
    import transformers

    ref = transformers.SegformerModel.from_pretrained(hub_dirs["segformer"]).eval()
    enc = create_encoder(str(hub_dirs["segformer"]))
    x = _x()
    want = ref(pixel_values=_norm(x, IMAGENET_MEAN, IMAGENET_STD)).last_hidden_state.mean(dim=(2, 3))
    torch.testing.assert_close(enc(x), want)
    maps = create_backbone(str(hub_dirs["segformer"]))(x)
    hidden = ref(pixel_values=_norm(x, IMAGENET_MEAN, IMAGENET_STD), output_hidden_states=True).hidden_states
    for got, ref_map in zip(maps, hidden, strict=True):
        torch.testing.assert_close(got, ref_map)


@pytest.mark.parametrize("family", ["clip-vision", "clip"])
def test_clip_dirs_give_projected_image_embeddings(hub_dirs, family):
    """A vision tower with projection, or a full CLIP model as vinid/plip ships: image_embeds, CLIP stats."""
    import torch
    import transformers

    enc = create_encoder(str(hub_dirs[family]))
    if family == "clip":
        ref = transformers.CLIPModel.from_pretrained(hub_dirs[family]).eval()
        embed = lambda px: ref.get_image_features(pixel_values=px)  # noqa: E731
    else:
        ref = transformers.CLIPVisionModelWithProjection.from_pretrained(hub_dirs[family]).eval()
        embed = lambda px: ref(pixel_values=px).image_embeds  # noqa: E731
    x = _x(48, 40)  # not the model's 32 px: resized inside, as CLIP's processor does
    want = embed(_norm(_resize(x, 32), CLIP_MEAN, CLIP_STD))
    want = getattr(want, "pooler_output", want)
    assert enc.input_size == 32 and enc.feature_dim == want.shape[1]
    torch.testing.assert_close(enc(x), want)


def test_swin_dir_encoder_and_backbone(hub_dirs):
    """Swin saved as an image classifier: pooled output as encoder, stage maps before merging as backbone."""
    import torch
    import transformers

    ref = transformers.SwinModel.from_pretrained(hub_dirs["swin"]).eval()
    enc = create_encoder(str(hub_dirs["swin"]))
    x = _resize(_x(), enc.input_size)
    torch.testing.assert_close(enc(x), ref(pixel_values=_norm(x, IMAGENET_MEAN, IMAGENET_STD)).pooler_output)
    bb = create_backbone(str(hub_dirs["swin"]))
    assert bb.channels == (8, 16, 32, 64) and bb.strides == (4, 8, 16, 32)
    last = bb(x)[-1]  # the last stage has no patch merging: its map is the final hidden state before the norm
    hidden = ref(pixel_values=_norm(x, IMAGENET_MEAN, IMAGENET_STD), output_hidden_states=True).hidden_states[
        -1
    ]
    torch.testing.assert_close(last.flatten(2).transpose(1, 2), hidden)


def test_dinov2_dir_uses_its_preprocessor_config(hub_dirs):
    """preprocessor_config.json's mean, std and size are the ones applied; the encoder is the CLS token."""
    import torch
    import transformers

    enc = create_encoder(str(hub_dirs["dinov2"]))
    assert enc.input_size == 96
    ref = transformers.Dinov2Model.from_pretrained(hub_dirs["dinov2"]).eval()
    x = _x()
    want = ref(pixel_values=_norm(x, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))).pooler_output
    torch.testing.assert_close(enc(x), want)


def test_timm_dir_encoder_and_backbone(hub_dirs):
    """A timm model saved with save_for_hf (config.json + model.safetensors) loads with its weights."""
    import timm
    import torch
    from safetensors.torch import load_file

    ref = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    ref.load_state_dict(load_file(hub_dirs["timm"] / "model.safetensors"), strict=False)
    ref.eval()
    enc = create_encoder(str(hub_dirs["timm"]))
    x = _x()
    torch.testing.assert_close(enc(x), ref(_norm(x, IMAGENET_MEAN, IMAGENET_STD)))
    bb = create_backbone(str(hub_dirs["timm"]), out_indices=(1, 2, 3, 4))
    assert bb.strides == (4, 8, 16, 32)
    assert [m.shape[1] for m in bb(x)] == list(bb.channels)


def test_weights_id_tells_saved_weights_apart(hub_dirs, tmp_path):
    """A bank built with one set of weights must be able to detect another: ids differ by content."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "copy"
    shutil.copytree(hub_dirs["timm"], copy)
    assert (
        create_encoder(str(copy)).weights_id.split(":")[-1]
        == create_encoder(str(hub_dirs["timm"])).weights_id.split(":")[-1]
    )
    state = load_file(copy / "model.safetensors")
    state["conv_stem.weight"] = state["conv_stem.weight"] + torch.randn_like(state["conv_stem.weight"])
    save_file(state, copy / "model.safetensors")
    assert create_encoder(str(copy)).weights_id != create_encoder(str(hub_dirs["timm"])).weights_id


def test_pickled_weights_are_refused(hub_dirs, tmp_path):
    import shutil

    bad = tmp_path / "pickled"
    shutil.copytree(hub_dirs["timm"], bad)
    (bad / "model.safetensors").rename(bad / "pytorch_model.bin")
    with pytest.raises(ModelNotFoundError, match="model.safetensors.*never"):
        create_encoder(str(bad))


def test_directory_without_config_lists_expected_files(tmp_path):
    with pytest.raises(ModelNotFoundError, match="config.json") as err:
        create_encoder(str(tmp_path))
    assert "model.safetensors" in str(err.value) and str(tmp_path) in str(err.value)


@pytest.mark.parametrize("name", ["nvidia/mit-b1", "vinid/plip", "hf-hub:timm/resnet18.a1_in1k"])
def test_missing_hub_model_says_what_to_do(name):
    """No network here: the message names the model, the cache, and the local-directory way out."""
    with pytest.raises(ModelNotFoundError) as err:
        create_encoder(name)
    msg = str(err.value)
    assert name in msg and "local model cache" in msg and "HF_HOME" in msg
    assert "local directory" in msg and "model.safetensors" in msg


def test_encoder_only_family_refused_as_backbone(hub_dirs):
    with pytest.raises(ModelNotFoundError, match="only as encoder"):
        create_backbone(str(hub_dirs["dinov2"]))


def test_unknown_name_lists_registered_models():
    with pytest.raises(ModelNotFoundError) as err:
        create_encoder("efficientnet-lite0")  # dash instead of underscore
    msg = str(err.value)
    assert "'efficientnet-lite0'" in msg and "efficientnet_lite0" in msg and "tiny-encoder" in msg
    with pytest.raises(ModelNotFoundError, match="tiny-backbone"):
        create_backbone("resnet")


def test_pbip_models_json_lists_offline_models(capsys):
    """`pbip models --json` tells a user which names work without a download."""
    import json

    from napari_pbip.cli.main import main

    assert main(["models", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    encoders = {r["name"]: r for r in out["encoders"]}
    assert encoders["efficientnet_lite0"]["offline"] is True and encoders["tiny-encoder"]["offline"] is True
    assert {r["name"] for r in out["backbones"]} >= {"efficientnet_lite0", "tiny-backbone"}
    assert "segmenters" in out and "nvidia/mit-b0" in out["hub"]["segformer"]


def test_sharded_checkpoint_directory_loads(tmp_path):
    """Large models are saved in shards (model.safetensors.index.json): they load from a directory too."""
    import torch
    import transformers

    ref = transformers.Dinov2Model(
        transformers.Dinov2Config(
            hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
        )
    ).eval()
    ref.save_pretrained(tmp_path, max_shard_size="10KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    enc = create_encoder(str(tmp_path))
    x = _x()
    torch.testing.assert_close(enc(x), ref(pixel_values=_norm(x, IMAGENET_MEAN, IMAGENET_STD)).pooler_output)
