"""Encoders and backbones from model-hub ids, timm ``hf-hub:`` names and local directories.

Supported (``create(kind, name)``):

* transformers SegFormer MiT (``nvidia/mit-b0`` .. ``nvidia/mit-b5``): backbone = the 4 stage maps
  (strides 4, 8, 16, 32); encoder = the last map, average pooled.
* CLIP-style vision towers (``vinid/plip``, ``openai/clip-vit-base-patch32``): encoder = projected
  ``image_embeds``.
* Swin (``microsoft/swin-tiny-patch4-window7-224``): encoder = pooled output; backbone = the 4 stage
  maps before each patch merging.
* DINOv2 (``facebook/dinov2-small`` ...): encoder = the CLS token after the final layer norm.
* timm ``hf-hub:org/name``: encoder = ``num_classes=0`` pooled features; backbone = ``features_only``.
* a local directory: transformers (``config.json`` with ``model_type`` + ``model.safetensors``) or
  timm (``config.json`` with ``architecture`` + ``model.safetensors``). Safetensors only.

Mean, std and input size come from the model's own config (``preprocessor_config.json``, timm's
``pretrained_cfg``), with per-family defaults; the normalisation runs inside the returned module, so
it takes RGB in [0, 1] like every registered model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .. import _atomic
from ..errors import ModelNotFoundError, SettingsError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# model_type -> family, and what each family can be built as.
_FAMILIES = {
    "segformer": "segformer",
    "clip": "clip",
    "clip_vision_model": "clip",
    "swin": "swin",
    "dinov2": "dinov2",
}
_KINDS = {
    "segformer": ("encoder", "backbone"),
    "clip": ("encoder",),
    "swin": ("encoder", "backbone"),
    "dinov2": ("encoder",),
    "timm": ("encoder", "backbone"),
}
HUB_EXAMPLES = {
    "segformer": "nvidia/mit-b0 .. nvidia/mit-b5 (encoder, backbone)",
    "clip": "vinid/plip, openai/clip-vit-base-patch32 (encoder)",
    "swin": "microsoft/swin-tiny-patch4-window7-224 (encoder, backbone)",
    "dinov2": "facebook/dinov2-small, facebook/dinov2-base (encoder)",
    "timm": "hf-hub:org/name (encoder, backbone)",
    "local": "a directory with config.json + model.safetensors (transformers or timm)",
}
# what a local model directory must hold, as error messages name it
TRANSFORMERS_FILES = "config.json (with model_type), model.safetensors, optionally preprocessor_config.json"
TIMM_FILES = 'config.json (with "architecture"), model.safetensors'


def looks_like_hub_name(name: str) -> bool:
    """True for ``org/name`` ids, ``hf-hub:`` names and existing directories."""
    return "/" in name or name.startswith("hf-hub:") or Path(name).expanduser().is_dir()


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` asks for cache-only loading (read at call time)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


# ---------------------------------------------------------------------------------------------
# Modules: normalisation inside, the contract's attributes on the wrapper.


def wrap(net, mean, std, *, feature_dim: int, input_size: int, weights_id: str):
    """Wrap a network returning ``(B, d)`` as an encoder normalising RGB in [0, 1] inside."""
    from .hub_nets import Normalized

    return Normalized(net, mean, std, feature_dim=feature_dim, input_size=input_size, weights_id=weights_id)


def wrap_features(net, mean, std, *, weights_id: str):
    """Wrap a timm ``features_only`` network as a backbone normalising RGB in [0, 1] inside."""
    from .hub_nets import Normalized

    info = net.feature_info
    return Normalized(
        net,
        mean,
        std,
        channels=tuple(info.channels()),
        strides=tuple(info.reduction()),
        weights_id=weights_id,
    )


# ---------------------------------------------------------------------------------------------
# Entry point


def create(kind: str, name: str, pretrained: bool = True, **kwargs: Any):
    """Build an encoder or backbone from a hub id, a timm ``hf-hub:`` name or a local directory.

    Args:
        kind: ``"encoder"`` or ``"backbone"``.
        name: e.g. ``"nvidia/mit-b1"``, ``"vinid/plip"``, ``"hf-hub:org/name"`` or a directory.
        pretrained: load the weights (False: random weights from the config, which must still be
            found locally or on the hub).
        **kwargs: timm only: passed to ``timm.create_model`` (e.g. ``out_indices``).

    Raises:
        ModelNotFoundError: the model is neither cached nor downloadable, the directory lacks the
            expected files, or the family cannot serve as ``kind``.
    """
    if kind not in ("encoder", "backbone"):
        raise ModelNotFoundError(f"hub models can be built as 'encoder' or 'backbone', not {kind!r}")
    if name.startswith("hf-hub:"):
        return _create_timm(kind, name, f"timm:{name}", pretrained, kwargs)
    path = Path(name).expanduser()
    if path.is_dir():
        return _create_local(kind, path.resolve(), pretrained, kwargs)
    if path.exists() or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(
            f"{kind} {name!r} is not a directory; a local model is a directory holding {TRANSFORMERS_FILES} "
            f"(transformers) or {TIMM_FILES} (timm)"
        )
    return _create_transformers(kind, name, pretrained, kwargs, weights_id=None)


def _create_local(kind: str, path: Path, pretrained: bool, kwargs: dict[str, Any]):
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ModelNotFoundError(
            f"{path} holds no config.json; a local model directory needs {TRANSFORMERS_FILES} (transformers, "
            f"as written by save_pretrained) or {TIMM_FILES} (timm, as written by timm's save_for_hf)"
        )
    weights = path / "model.safetensors"
    if not weights.is_file() and (path / "model.safetensors.index.json").is_file():
        weights = path / "model.safetensors.index.json"  # sharded: the index names every shard
    if pretrained and not weights.is_file():
        found = sorted(p.name for p in path.iterdir())
        raise ModelNotFoundError(
            f"{path} has no model.safetensors (found: {found}); only safetensors weights are loaded, never "
            "pickled ones: convert them with safetensors.torch.save_file, or save with safe_serialization"
        )
    weights_id = f"dir:{path}:" + (_weights_digest(weights)[:16] if pretrained else "random")
    cfg = json.loads(cfg_file.read_text())
    if "architecture" in cfg:
        return _create_timm(kind, f"local-dir:{path}", weights_id, pretrained, kwargs)
    if "model_type" in cfg:
        return _create_transformers(kind, str(path), pretrained, kwargs, weights_id=weights_id)
    raise ModelNotFoundError(
        f"{cfg_file} has neither 'model_type' (transformers) nor 'architecture' (timm); "
        f"expected {TRANSFORMERS_FILES} or {TIMM_FILES}"
    )


def _weights_digest(weights: Path) -> str:
    """sha256 of the weights; for a sharded checkpoint, of its shards' sha256s in index order."""
    if weights.name.endswith(".index.json"):
        shards = sorted(set(json.loads(weights.read_text())["weight_map"].values()))
        return _atomic.sha256_bytes("".join(_atomic.sha256_file(weights.parent / f) for f in shards).encode())
    return _atomic.sha256_file(weights)


def not_cached_error(kind: str, name: str, files: str, exc: BaseException) -> ModelNotFoundError:
    """The error for a hub model ``name`` that is neither cached nor downloadable (``exc`` says why).

    ``files`` names what a local directory would have to hold instead (:data:`TRANSFORMERS_FILES`,
    :data:`TIMM_FILES`).
    """
    home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    if hub_offline():
        why = "HF_HUB_OFFLINE=1 forbids downloading it"
    else:
        why = (
            "it could not be downloaded (no network here?; set HF_HUB_OFFLINE=1 to fail fast without retries)"
        )
    return ModelNotFoundError(
        f"{kind} {name!r} is not in the local model cache (HF_HOME={home}) and {why} "
        f"[{type(exc).__name__}]. Pass a local directory holding {files} instead, "
        f"or set HF_HOME to a cache that already holds {name!r}"
    )


def download_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the files could not be found or fetched", not a bug in the model."""
    from huggingface_hub import errors

    out: list[type[BaseException]] = [OSError, errors.HfHubHTTPError, errors.LocalEntryNotFoundError]
    for extra in (
        "OfflineModeIsEnabled",
        "EntryNotFoundError",
        "RepositoryNotFoundError",
        "HFValidationError",
    ):
        if hasattr(errors, extra):
            out.append(getattr(errors, extra))
    try:
        import httpx

        out.append(httpx.HTTPError)
    except ImportError:
        pass
    try:
        import requests

        out.append(requests.exceptions.RequestException)
    except ImportError:
        pass
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# timm


def _create_timm(kind: str, source: str, weights_id: str, pretrained: bool, kwargs: dict[str, Any]):
    import timm

    extra = {"num_classes": 0} if kind == "encoder" else {"features_only": True}
    try:
        net = timm.create_model(source, pretrained=pretrained, **extra, **kwargs)
    except download_errors() as exc:
        raise not_cached_error(kind, source, TIMM_FILES, exc) from exc
    except RuntimeError as exc:
        raise ModelNotFoundError(f"timm could not load {source!r}: {exc}") from exc
    cfg = net.pretrained_cfg
    mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    if not pretrained and not weights_id.endswith(":random"):
        weights_id = f"{weights_id}:random"
    if kind == "backbone":
        return wrap_features(net, mean, std, weights_id=weights_id)
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    dim = int(getattr(net, "head_hidden_size", None) or net.num_features)
    return wrap(net, mean, std, feature_dim=dim, input_size=size, weights_id=weights_id)


# ---------------------------------------------------------------------------------------------
# transformers


def _model_classes(family: str) -> Any:
    import transformers as tf

    return {
        "segformer": tf.SegformerModel,
        "clip": tf.CLIPVisionModelWithProjection,
        "swin": tf.SwinModel,
        "dinov2": tf.Dinov2Model,
    }[family]


def _create_transformers(
    kind: str, source: str, pretrained: bool, kwargs: dict[str, Any], weights_id: str | None
):
    import transformers

    if "output_stride" in kwargs:
        raise SettingsError(
            f"output_stride={kwargs['output_stride']}: {source!r} (transformers) cannot be dilated; train it with "
            "output_stride=None and levels whose stride is at most 16, e.g. (-4, -3, -2) for MiT's 4/8/16 (the paper's)"
        )
    if kwargs:
        raise SettingsError(f"transformers models take no extra arguments, got {sorted(kwargs)}; remove them")
    local_only = hub_offline()
    try:
        config = transformers.AutoConfig.from_pretrained(source, local_files_only=local_only)
    except download_errors() as exc:
        raise not_cached_error(kind, source, TRANSFORMERS_FILES, exc) from exc
    except ValueError as exc:  # unknown model_type
        raise ModelNotFoundError(f"{source!r} is not a model transformers can read: {exc}") from exc
    family = _FAMILIES.get(config.model_type)
    if family is None:
        raise ModelNotFoundError(
            f"{source!r} is a {config.model_type!r} model; supported families: {', '.join(sorted(_FAMILIES))} "
            f"(e.g. {'; '.join(HUB_EXAMPLES.values())})"
        )
    if kind not in _KINDS[family]:
        raise ModelNotFoundError(
            f"{source!r} is a {family} model, which serves only as {' or '.join(_KINDS[family])}, not as a {kind}; "
            "for a backbone use a hierarchical model (nvidia/mit-b1, a Swin, or a timm hf-hub: name)"
        )
    cls = _model_classes(family)
    if family == "clip" and config.model_type == "clip":
        config = _clip_vision_config(config)
    try:
        if pretrained:
            safe_only = Path(source).is_dir() or None  # a local directory: safetensors, never pickles
            net = cls.from_pretrained(
                source, config=config, local_files_only=local_only, use_safetensors=safe_only
            )
        else:
            net = cls(config)
    except download_errors() as exc:
        raise not_cached_error(kind, source, TRANSFORMERS_FILES, exc) from exc
    net.eval()
    if weights_id is None:
        commit = getattr(config, "_commit_hash", None) or getattr(net.config, "_commit_hash", None)
        weights_id = f"hf:{source}@{commit or 'unknown'}" if pretrained else f"hf:{source}:random"
    mean, std, size = _preprocessing(source, family, net.config, local_only)
    return _wrap_transformers(kind, family, net, mean, std, size, weights_id)


def _clip_vision_config(config):
    """A full CLIP config (``vinid/plip``) reduced to its vision tower plus the projection width."""
    vision = config.vision_config
    vision.projection_dim = config.projection_dim
    return vision


def _wrap_transformers(kind: str, family: str, net, mean, std, size: int, weights_id: str):
    from .hub_nets import HFBackbone, HFEncoder

    cfg = net.config
    if kind == "backbone":
        if family == "segformer":
            channels, strides, s = tuple(cfg.hidden_sizes), [], 1
            for step in cfg.strides:
                s *= step
                strides.append(s)
        else:  # swin
            n = len(cfg.depths)
            channels = tuple(int(cfg.embed_dim * 2**i) for i in range(n))
            strides = [cfg.patch_size * 2**i for i in range(n)]
        return HFBackbone(
            net,
            mean,
            std,
            family,
            min_side=_swin_min_side(cfg) if family == "swin" else 0,
            channels=channels,
            strides=tuple(strides),
            weights_id=weights_id,
        )
    output, dim = {
        "segformer": ("mean_last_map", lambda: cfg.hidden_sizes[-1]),
        "clip": ("image_embeds", lambda: cfg.projection_dim),
        "swin": ("pooler_output", lambda: int(cfg.embed_dim * 2 ** (len(cfg.depths) - 1))),
        "dinov2": ("pooler_output", lambda: cfg.hidden_size),
    }[family]
    return HFEncoder(
        net,
        mean,
        std,
        output,
        fixed_size=family in ("clip", "swin"),
        feature_dim=int(dim()),
        input_size=size,
        weights_id=weights_id,
    )


def _preprocessing(source: str, family: str, config, local_only: bool) -> tuple[tuple, tuple, int]:
    """``(mean, std, input_size)`` from ``preprocessor_config.json``, else the family's defaults."""
    mean, std = (CLIP_MEAN, CLIP_STD) if family == "clip" else (IMAGENET_MEAN, IMAGENET_STD)
    size = int(getattr(config, "image_size", 224)) if family in ("clip", "swin") else 224
    pre = _read_preprocessor_config(source, local_only)
    if pre:
        mean = tuple(pre.get("image_mean", mean))
        std = tuple(pre.get("image_std", std))
        size = (
            _side(pre.get("crop_size") if pre.get("do_center_crop") else None)
            or _side(pre.get("size"))
            or size
        )
    if family == "clip":
        size = int(config.image_size)  # its position embeddings fix the input size
    if family == "swin":
        size = max(size, _swin_min_side(config))
    return mean, std, size


def _swin_min_side(config) -> int:
    """Smallest input side whose last stage still holds a whole attention window."""
    return int(config.patch_size * 2 ** (len(config.depths) - 1) * config.window_size)


def _side(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        for key in ("shortest_edge", "height"):
            if key in value:
                return int(value[key])
    return None


def _read_preprocessor_config(source: str, local_only: bool) -> dict[str, Any] | None:
    path = Path(source) / "preprocessor_config.json"
    if not path.is_file():
        if Path(source).is_dir():
            return None
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(source, "preprocessor_config.json", local_files_only=local_only))
        except download_errors():
            return None
    return json.loads(path.read_text())


def catalog() -> dict[str, Any]:
    """Registered encoders, backbones and segmenters plus the hub families, as plain JSON-able data.

    Returns:
        ``{"encoders": [{"name", "description", "offline"}, ...], "backbones": [...],
        "segmenters": [...], "hub": {family: example ids}}``.
    """
    from .registry import list_backbones, list_encoders, list_segmenters

    def rows(table) -> list[dict[str, Any]]:
        return [{"name": e.name, "description": e.description, "offline": e.offline} for e in table.values()]

    return {
        "encoders": rows(list_encoders()),
        "backbones": rows(list_backbones()),
        "segmenters": rows(list_segmenters()),
        "hub": dict(HUB_EXAMPLES),
    }
