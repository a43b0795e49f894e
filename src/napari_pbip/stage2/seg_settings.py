"""Stage-2 training settings: a fully supervised segmenter on the pseudo-masks."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..settings import Settings, check

# Fields that may change when a run is resumed (they do not change what has been learnt).
RESUMABLE_FIELDS = ("device", "max_minutes", "num_workers", "amp", "channels_last")


@dataclasses.dataclass(frozen=True)
class SegSettings(Settings):
    """Everything that defines a stage-2 training run.

    Attributes:
        segmenter: registered segmenter name (``pbip models``): ``lite0-seg`` (offline default),
            ``deeplabv2`` (paper), ``segformer``.
        backbone: the segmenter's backbone (a registered backbone for ``lite0-seg``, a timm ResNet
            for ``deeplabv2``, an MiT id or folder for ``segformer``); None: the segmenter's default.
        weights: local ImageNet weights of the ``deeplabv2`` ResNet (``.safetensors`` or a folder).
        segmenter_config: further keyword arguments of the segmenter factory (e.g. ``{"width": 96}``).
        pretrained: start from pretrained backbone weights.
        epochs: passes over the training images. 20 by default: on a few hundred real H&E tiles
            20 epochs generalised better to unseen images than 10 (image cross-validation,
            docs/benchmarks.md); fewer suit data sets of thousands of tiles.
        batch_size: images per optimizer step.
        lr: AdamW learning rate of the backbone at step 0 (poly decay to 0). 1e-3 suits the
            EfficientNet-Lite0 default on a few hundred patches; use 1e-4 or less for DeepLab-v2 and
            SegFormer on a full data set.
        head_lr_mult: learning-rate multiple for the randomly initialised head.
        weight_decay: AdamW weight decay.
        poly_power: exponent of the poly schedule ``lr * (1 - step / total) ** power``.
        crop_size: training side in pixels; larger images are randomly cropped, smaller ones padded
            with ignored pixels.
        jitter: strength of the colour jitter (brightness, contrast and saturation factors in
            1 ± jitter); 0 turns it off. Flips and 90-degree rotations are always applied.
        stain_jitter: strength of the stain jitter: each of haematoxylin, eosin and DAB optical
            density scaled by 1 ± this and shifted by ± this (HED perturbation,
            :func:`~napari_pbip.stage2.seg_data.stain_jitter`); 0 turns it off.
        scale_jitter: each training image and its mask are resized by a factor drawn uniformly
            from ``1 ± scale_jitter`` before the crop (bilinear; nearest for the mask), so the
            segmenter sees each structure at more than one size; 0 turns it off.
        cutmix: probability that a training image gets a box cut from another image of its
            batch, with the box's mask (CutMix, Yun et al. 2019; box sides 30-70% of the crop);
            0 turns it off.
        class_balance: exponent ``p`` of the cross-entropy's class weights: each class weighs its
            share of the training masks' labelled pixels to the power ``-p`` (0: every pixel counts
            the same; 0.5: inverse square root; 1: inverse frequency), scaled so that a labelled
            pixel weighs 1 on average. Rare tissue (e.g. normal lung, 1-5% of the pseudo-mask
            pixels) otherwise hardly moves the loss.
        seed: seeds the head, batch order and augmentation (a resumed run repeats them exactly).
        device: ``auto`` (CUDA if present), ``cpu``, ``cuda``, ``cuda:1``, ...
        amp: bfloat16 autocast on CUDA (ignored on the CPU).
        channels_last: channels-last memory format on CUDA (ignored on the CPU).
        max_minutes: stop cleanly after this many minutes (resumable); None: no limit.
        num_workers: threads reading and augmenting the next batches.
        mpp: um/px of the training patches, recorded for slide inference; None: from
            ``dataset.json`` (``"mpp"``) when it says, else unknown.
    """

    segmenter: str = "lite0-seg"
    backbone: str | None = None
    weights: str | None = None
    segmenter_config: dict[str, Any] = dataclasses.field(default_factory=dict)
    pretrained: bool = True
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    head_lr_mult: float = 10.0
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    crop_size: int = 224
    jitter: float = 0.1
    stain_jitter: float = 0.0
    scale_jitter: float = 0.0
    cutmix: float = 0.0
    class_balance: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    max_minutes: float | None = None
    num_workers: int = 2
    mpp: float | None = None

    def __post_init__(self) -> None:
        check(
            isinstance(self.segmenter, str) and bool(self.segmenter),
            "segmenter",
            self.segmenter,
            "a segmenter name",
            "see `pbip models`",
        )
        check(
            self.backbone is None or (isinstance(self.backbone, str) and bool(self.backbone)),
            "backbone",
            self.backbone,
            "None or a backbone name",
        )
        check(
            isinstance(self.segmenter_config, dict),
            "segmenter_config",
            self.segmenter_config,
            "a dict of segmenter keyword arguments",
        )
        reserved = sorted({"backbone", "weights", "n_classes", "pretrained"} & set(self.segmenter_config))
        check(
            not reserved,
            "segmenter_config",
            self.segmenter_config,
            f"no keys {reserved}",
            "set them with the backbone, weights and pretrained fields",
        )
        check(
            _is_int(self.epochs) and 1 <= self.epochs <= 10_000, "epochs", self.epochs, "an integer 1-10000"
        )
        check(
            _is_int(self.batch_size) and 1 <= self.batch_size <= 4096,
            "batch_size",
            self.batch_size,
            "an integer 1-4096",
        )
        check(0 < self.lr <= 1, "lr", self.lr, "a learning rate in (0, 1]", "e.g. 1e-3 (lite0-seg) or 1e-4")
        check(0 < self.head_lr_mult <= 1000, "head_lr_mult", self.head_lr_mult, "a multiple in (0, 1000]")
        check(0 <= self.weight_decay < 1, "weight_decay", self.weight_decay, "a value in [0, 1)")
        check(0 <= self.poly_power <= 10, "poly_power", self.poly_power, "a value in [0, 10]")
        check(
            _is_int(self.crop_size) and 32 <= self.crop_size <= 4096 and self.crop_size % 8 == 0,
            "crop_size",
            self.crop_size,
            "a multiple of 8 in 32-4096",
            "e.g. 224",
        )
        check(0 <= self.jitter <= 0.5, "jitter", self.jitter, "a value in [0, 0.5]")
        check(
            0 <= self.stain_jitter <= 0.5,
            "stain_jitter",
            self.stain_jitter,
            "a value in [0, 0.5]",
            "e.g. 0.05",
        )
        check(
            0 <= self.scale_jitter <= 0.5,
            "scale_jitter",
            self.scale_jitter,
            "a value in [0, 0.5]",
            "e.g. 0.25 (factors 0.75 to 1.25)",
        )
        check(0 <= self.cutmix <= 1, "cutmix", self.cutmix, "a probability in [0, 1]", "e.g. 0.5; 0: off")
        check(
            0 <= self.class_balance <= 1,
            "class_balance",
            self.class_balance,
            "an exponent in [0, 1]",
            "e.g. 0.5 (inverse square root of each class's pixel share)",
        )
        check(_is_int(self.seed), "seed", self.seed, "an integer")
        check(
            isinstance(self.device, str) and bool(self.device), "device", self.device, "auto, cpu, cuda, ..."
        )
        check(
            self.max_minutes is None or self.max_minutes > 0,
            "max_minutes",
            self.max_minutes,
            "None or a positive number of minutes",
        )
        check(
            _is_int(self.num_workers) and 0 <= self.num_workers <= 64,
            "num_workers",
            self.num_workers,
            "an integer 0-64",
        )
        check(self.mpp is None or 0.05 <= self.mpp <= 50, "mpp", self.mpp, "None or 0.05-50 um/px")

    def factory_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``create_segmenter`` besides ``n_classes`` and ``pretrained``."""
        kwargs = dict(self.segmenter_config)
        if self.backbone is not None:
            kwargs["backbone"] = self.backbone
        if self.weights is not None:
            kwargs["weights"] = self.weights
        return kwargs


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
