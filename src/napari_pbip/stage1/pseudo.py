"""CAMs -> per-class scores -> label maps (pseudo-masks and predictions).

Per level: upsample to the image, ReLU, min-max per class; multiply by the class presence (the
image label for pseudo-masks of labelled training images, the classifier's decision for unlabelled
images: never a ground-truth mask); fuse the levels with the fusion weights; then add a background
channel (white-region prior and/or ``(1 - max)^alpha``) and take the argmax over mask indices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ..data.images import IGNORE
from ..settings import Settings, check
from .background import power_background, white_mask

BACKGROUND_MODES = ("white", "power", "white+power", "none")
_TIE = 1e-4


@dataclasses.dataclass(frozen=True)
class CamSettings(Settings):
    """How CAMs become masks.

    Attributes:
        background: ``"white"`` (grey-level prior), ``"power"`` (``(1 - max)^bg_power`` channel),
            ``"white+power"`` (either) or ``"none"`` (every pixel gets a tissue class).
        white_level: grey level (0..255) above which a pixel may be background.
        white_max_saturation: a white pixel's max minus min of R, G, B stays below this (0..255).
        min_white_size: white regions smaller than this (pixels) stay tissue.
        bg_power: exponent alpha of the ``(1 - max)^alpha`` background channel.
        presence_threshold: a class is present in an unlabelled image when the classifier's
            probability (mean over levels, fusion-weighted) reaches this; the most probable class
            is always kept. None: the per-class thresholds fitted on the run's training labels
            (``RUN/presence.json``, see :mod:`.calibrate`), or 0.5 for runs without them.
        fusion_weights: per-level weights; None uses the run's ``fusion_weights``.
        tta: average the channel scores over the 8 symmetries of the square (dihedral test-time
            augmentation, :mod:`napari_pbip.engine.tta`; 8 forward passes per image). None: on,
            for unlabelled image folders (``pbip predict``) and for pseudo-masks (``pbip pseudo``;
            the stage-2 segmenter trained on them generalises better, docs/benchmarks.md). Slides
            do not read it.
        ignore_margin: pseudo-masks only: a pixel whose two highest channel scores differ by less
            than this is written as 255, which stage 2 ignores, instead of a guess between two
            classes; 0 labels every pixel.
    """

    background: str = "white"
    white_level: float = 200.0
    white_max_saturation: float = 30.0
    min_white_size: int = 64
    bg_power: float = 1.0
    presence_threshold: float | None = None
    fusion_weights: tuple[float, ...] | None = None
    tta: bool | None = None
    ignore_margin: float = 0.0

    def __post_init__(self) -> None:
        check(
            self.background in BACKGROUND_MODES, "background", self.background, f"one of {BACKGROUND_MODES}"
        )
        check(
            0 <= self.white_level <= 255, "white_level", self.white_level, "a grey level in 0..255 (e.g. 200)"
        )
        check(
            0 <= self.white_max_saturation <= 255,
            "white_max_saturation",
            self.white_max_saturation,
            "a value in 0..255 (255: no limit)",
        )
        check(self.min_white_size >= 0, "min_white_size", self.min_white_size, "a pixel count >= 0")
        check(self.bg_power > 0, "bg_power", self.bg_power, "a positive exponent")
        check(
            self.presence_threshold is None or 0 < self.presence_threshold < 1,
            "presence_threshold",
            self.presence_threshold,
            "None (the run's calibrated thresholds) or a probability in (0, 1), e.g. 0.5",
        )
        check(
            self.fusion_weights is None or (len(self.fusion_weights) > 0 and min(self.fusion_weights) >= 0),
            "fusion_weights",
            self.fusion_weights,
            "None (the run's) or one non-negative weight per level",
        )
        check(self.tta in (None, True, False), "tta", self.tta, "None (by use), true or false")
        check(
            0 <= self.ignore_margin < 1,
            "ignore_margin",
            self.ignore_margin,
            "a score difference in [0, 1), e.g. 0.1 (0: label every pixel)",
        )


def fuse_levels(
    cams: Sequence,
    size: tuple[int, int],
    weights: Sequence[float],
    crop: tuple[int, int] | None = None,
):
    """The fused CAM, one definition for training (eq. 3-5) and for masks.

    Per level: bilinear upsampling to ``size``, ReLU, min-max per class; then the levels'
    weighted mean. Differentiable.

    Args:
        cams: per-level CAM tensors ``(B, N, h_i, w_i)``.
        size: ``(H, W)`` the CAMs are upsampled to.
        weights: one fusion weight per level.
        crop: keep the top-left ``(h, w)`` of ``size`` (the image before padding); None keeps all.

    Returns:
        ``(B, N, H, W)`` float tensor in [0, 1] (``crop``-sized when given).

    Raises:
        SettingsError: not one weight per level.
    """
    import torch.nn.functional as F

    if len(weights) != len(cams):
        from ..errors import SettingsError

        raise SettingsError(
            f"fusion_weights={tuple(weights)} has {len(weights)} weights for {len(cams)} CAM levels"
        )
    total = float(sum(weights)) or 1.0
    fused = 0.0
    for cam, w in zip(cams, weights, strict=True):
        up = F.relu(F.interpolate(cam.float(), size=size, mode="bilinear", align_corners=False))
        if crop is not None:
            up = up[..., : crop[0], : crop[1]]
        lo = up.amin(dim=(2, 3), keepdim=True)
        hi = up.amax(dim=(2, 3), keepdim=True)
        fused = fused + (w / total) * (up - lo) / (hi - lo).clamp_min(1e-6)
    return fused


def class_scores(
    cams: Sequence,
    size: tuple[int, int],
    presence,
    weights: Sequence[float],
    crop: tuple[int, int] | None = None,
):
    """Fused (:func:`fuse_levels`), gated class scores in [0, 1].

    Args:
        cams: per-level CAM tensors ``(B, N, h_i, w_i)``.
        size: ``(H, W)`` the CAMs are upsampled to (the network's input size).
        presence: ``(B, N)`` tensor in [0, 1] multiplying each class (labels or classifier decisions).
        weights: one fusion weight per level.
        crop: keep the top-left ``(h, w)`` of ``size`` (the image before padding); None keeps all.

    Returns:
        ``(B, N, H, W)`` float tensor (``crop``-sized when given).
    """
    fused = fuse_levels(cams, size, weights, crop)
    gate = presence.float()[:, :, None, None]
    return (fused + _TIE) * gate / (1 + _TIE)  # _TIE: a present class beats an absent one where all are 0


def presence_probabilities(logits: Sequence, weights: Sequence[float]):
    """Classifier probability per class: fusion-weighted mean over levels of sigmoid(logit) -> ``(B, N)``."""
    import torch

    total = float(sum(weights)) or 1.0
    return sum((w / total) * torch.sigmoid(lg.float()) for lg, w in zip(logits, weights, strict=True))


def decide_presence(probs, threshold):
    """Classes with probability >= ``threshold`` (one value, or one per class), always including each
    image's most probable one -> ``(B, N)``."""
    import torch

    present = (probs >= torch.as_tensor(threshold, dtype=probs.dtype, device=probs.device)).float()
    top = torch.nn.functional.one_hot(probs.argmax(dim=1), probs.shape[1]).float()
    return torch.maximum(present, top)


def mask_channels(
    scores: np.ndarray, image: np.ndarray, n_channels: int, background_index: int, settings: CamSettings
) -> np.ndarray:
    """Scores per mask index for one image: each tissue class at its mask index, and background.

    Args:
        scores: ``(N, H, W)`` class scores in [0, 1] (from :func:`class_scores`).
        image: the RGB ``uint8 (H, W, 3)`` image (for the white-region prior).
        n_channels: number of mask indices (the palette's length, ``N + 1``).
        background_index: mask index of background; tissue class ``k`` goes to the ``k``-th
            other index (:func:`~napari_pbip.data.layouts.tissue_mask_indices`).
        settings: background options.

    Returns:
        ``float32 (n_channels, H, W)``; its argmax is the label map.

    Raises:
        DatasetError: ``n_channels`` is too small for the classes and the background index.
    """
    from ..data.layouts import tissue_mask_indices
    from ..errors import DatasetError

    n = scores.shape[0]
    tissue = list(tissue_mask_indices(n, background_index))
    if n_channels <= max([*tissue, background_index]):
        raise DatasetError(
            f"n_channels={n_channels} is too small for {n} classes with background_index={background_index}; "
            f"expected the palette's length ({max([*tissue, background_index]) + 1})"
        )
    out = np.zeros((n_channels, *scores.shape[1:]), dtype=np.float32)
    out[tissue] = scores
    bg = np.zeros(scores.shape[1:], dtype=np.float32)
    if settings.background in ("power", "white+power"):
        bg = power_background(scores, settings.bg_power).astype(np.float32)
    if settings.background in ("white", "white+power"):
        white = white_mask(
            image, settings.white_level, settings.white_max_saturation, settings.min_white_size
        )
        out[:, white] = 0.0
        bg = np.where(white, 1.0, bg).astype(np.float32)
    out[background_index] = bg
    return out


def label_map(channels: np.ndarray, ignore_margin: float = 0.0) -> np.ndarray:
    """Argmax over mask indices -> ``uint8 (H, W)``; pixels whose two highest scores differ by less
    than ``ignore_margin`` become :data:`~napari_pbip.data.images.IGNORE`."""
    labels = channels.argmax(axis=0).astype(np.uint8)
    if ignore_margin > 0 and len(channels) > 1:
        top2 = np.partition(channels, -2, axis=0)[-2:]
        labels[top2[1] - top2[0] < ignore_margin] = IGNORE
    return labels


def probabilities(channels: np.ndarray) -> np.ndarray:
    """Channel scores normalised to sum to 1 per pixel (same argmax) -> ``float32``."""
    c = channels.astype(np.float32) + 1e-6
    return c / c.sum(axis=0, keepdims=True)
