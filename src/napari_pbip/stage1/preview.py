"""The live preview of stage-1 training: CAMs and FG/BG maps of a fixed set of training images.

The training job yields one every ``preview_every`` steps (and at its last step) as the payload
of its event; the "Train PBIP" widget shows it as layers (``_widgets/_preview.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def preview_payload(
    model, x, images: np.ndarray, labels: np.ndarray, settings, spec, step: int, mpp: float | None
) -> dict[str, Any]:
    """CAMs and FG/BG maps of the preview images (call with the model in eval mode).

    Args:
        model: the ClassNet being trained.
        x: ``images`` as the model's input tensor.
        images: RGB ``uint8 (P, S, S, 3)``.
        labels: their image labels ``(P, N)``.
        settings: the run's :class:`~.settings.TrainSettings`.
        spec: the data set's class spec (classes, palette, background index).
        step: the training step shown.
        mpp: um/px of the images as shown (:func:`shown_mpp`), or None.

    Returns:
        The maps of a :class:`~napari_pbip.events.Preview`: ``{"step", "classes", "palette",
        "background_index", "images" uint8 (P, S, S, 3), "labels" (P, N), "cams" float16 (P, N, S, S) (fused, scaled to
        [0, 1] per class), "fg" / "bg" float16 (P, N, S, S) (eq. 5 weights ``b * M`` and
        ``(1 - b) * (1 - M)``), "probs" (P, N) classifier probabilities, "masks" uint8 (P, S, S)
        label-gated pseudo-masks, "mpp" um/px of the images as shown, or None when unknown}``.
    """
    import torch

    from .matching import fg_bg_images
    from .pseudo import CamSettings, class_scores, label_map, mask_channels, presence_probabilities

    gate = torch.as_tensor(labels, dtype=torch.float32, device=x.device)
    with torch.no_grad():
        out = model(x)
        mb = fg_bg_images(
            x,
            out["cams"],
            gate,
            settings.image_size,
            settings.delta,
            settings.threshold_mode,
            settings.fg_bg_fill,
            settings.fusion_weights,
        )
        weights = settings.fusion_weights
        scores = class_scores(out["cams"], x.shape[-2:], gate, weights).cpu().numpy()
        probs = presence_probabilities(out["logits"], weights).cpu().numpy()
    n = len(spec.palette)
    masks = np.stack(
        [
            label_map(mask_channels(sc, im, n, spec.background_index, CamSettings()))
            for sc, im in zip(scores, images, strict=True)
        ]
    )
    norm, b = mb.norm.cpu(), mb.mask.cpu()
    return {
        "step": step,
        "classes": tuple(spec.classes),
        "palette": spec.palette,
        "background_index": spec.background_index,
        "images": images,
        "labels": np.asarray(labels).astype(np.uint8),
        "cams": norm.numpy().astype(np.float16),
        "fg": (b * norm).numpy().astype(np.float16),
        "bg": ((1 - b) * (1 - norm)).numpy().astype(np.float16),
        "probs": probs,
        "masks": masks,
        "mpp": mpp,
    }


def shown_mpp(mpp: float | None, paths: list[Path], size: int) -> float | None:
    """um/px of images resized to ``size``, when the data set records ``mpp`` and they share one square size."""
    from PIL import Image

    if mpp is None:
        return None
    sizes = set()
    for path in paths:
        with Image.open(path) as im:
            sizes.add(im.size)
    if len(sizes) != 1:
        return None
    ((width, height),) = sizes
    return mpp * width / size if width == height else None
