"""Fixtures for the model tests: an isolated weights cache, no hub access, tiny saved hub models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _isolated_caches(tmp_path_factory):
    """Keep the mapped-weights cache in a temp dir and forbid hub downloads for the whole run."""
    saved = {k: os.environ.get(k) for k in ("PBIP_CACHE", "HF_HUB_OFFLINE")}
    os.environ["PBIP_CACHE"] = str(tmp_path_factory.mktemp("pbip-cache"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _save_transformers(root: Path) -> dict[str, Path]:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    dirs = {}
    mit = tf.SegformerConfig(
        depths=[1, 1, 1, 1],
        hidden_sizes=[8, 16, 24, 32],
        num_attention_heads=[1, 1, 2, 2],
        mlp_ratios=[2, 2, 2, 2],
        decoder_hidden_size=16,
    )
    dirs["segformer"] = root / "mit-tiny"
    tf.SegformerForImageClassification(mit).save_pretrained(dirs["segformer"])  # as nvidia/mit-b* ship
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    dirs["clip-vision"] = root / "clip-vision-tiny"
    tf.CLIPVisionModelWithProjection(
        tf.CLIPVisionConfig(**vision, image_size=32, patch_size=8, projection_dim=12)
    ).save_pretrained(dirs["clip-vision"])
    text = {**vision, "vocab_size": 64, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
    dirs["clip"] = root / "plip-tiny"  # a full CLIPModel, as vinid/plip ships
    tf.CLIPModel(
        tf.CLIPConfig(
            text_config=text, vision_config={**vision, "image_size": 32, "patch_size": 8}, projection_dim=10
        )
    ).save_pretrained(dirs["clip"])
    dirs["swin"] = root / "swin-tiny"
    swin = tf.SwinConfig(
        image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2]
    )
    tf.SwinForImageClassification(swin).save_pretrained(dirs["swin"])
    dirs["dinov2"] = root / "dinov2-tiny"
    dino = tf.Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    tf.Dinov2Model(dino).save_pretrained(dirs["dinov2"])
    # A preprocessor config, as hub models ship one: its mean/std/size must be the ones applied.
    (dirs["dinov2"] / "preprocessor_config.json").write_text(
        json.dumps(
            {"image_mean": [0.4, 0.5, 0.6], "image_std": [0.2, 0.25, 0.3], "size": {"shortest_edge": 96}}
        )
    )
    return dirs


def _save_timm(root: Path) -> Path:
    import timm
    import torch
    from timm.models import save_for_hf

    torch.manual_seed(0)
    out = root / "timm-tiny"
    save_for_hf(timm.create_model("test_efficientnet", pretrained=False), out, safe_serialization=True)
    return out


@pytest.fixture(scope="session")
def hub_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny random models of every supported hub family, saved the way each library saves them."""
    root = tmp_path_factory.mktemp("hub-models")
    return {**_save_transformers(root), "timm": _save_timm(root)}
