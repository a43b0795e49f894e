"""The live preview of stage-1 training over a region of any size: the part of a slide in view.

The training job asks its ``view`` for pixels at each preview (see :func:`.loop.train`); this
module cuts them into model-sized tiles, runs the model being trained on them, and stitches the
fused CAM of every class and the FG / BG weights of eq. 5 back to the region's size. Unlike the
training patches a region has no image labels: each tile's classes are those the classifier finds
present (the rule :func:`.predict.predict_folder` uses for unlabelled images, at the default
threshold).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_TILES = 6  # model-sized tiles per region preview: a few forward passes of the worker's time


@dataclass(frozen=True)
class RegionPixels:
    """Pixels to preview and where they came from.

    Attributes:
        image: RGB ``uint8 (H, W, 3)`` at the training um/px.
        where: what the caller needs to place the maps (e.g. the slide and the region's origin);
            stage 1 passes it back unchanged in the maps.
    """

    image: np.ndarray
    where: Any = None


def capped_box(height: int, width: int, tile: int, max_tiles: int = MAX_TILES) -> tuple[int, int, int, int]:
    """The central part of a ``height x width`` region that fits in ``max_tiles`` tiles of ``tile`` px.

    Returns:
        ``(dy, dx, h, w)``: the part's offset inside the region and its size (the region itself
        when it fits).
    """
    rows, cols = max(1, math.ceil(height / tile)), max(1, math.ceil(width / tile))
    while rows * cols > max_tiles:
        if rows >= cols:
            rows -= 1
        else:
            cols -= 1
    h, w = min(height, rows * tile), min(width, cols * tile)
    return (height - h) // 2, (width - w) // 2, h, w


def _tiles(image: np.ndarray, tile: int) -> tuple[np.ndarray, int, int]:
    """``image`` padded at its far edges to whole tiles and cut -> ``(rows * cols, tile, tile, 3)``, rows, cols."""
    h, w = image.shape[:2]
    rows, cols = math.ceil(h / tile), math.ceil(w / tile)
    padded = np.pad(image, ((0, rows * tile - h), (0, cols * tile - w), (0, 0)), mode="edge")
    cut = padded.reshape(rows, tile, cols, tile, 3).transpose(0, 2, 1, 3, 4)
    return cut.reshape(rows * cols, tile, tile, 3), rows, cols


def _stitch(maps: np.ndarray, rows: int, cols: int, h: int, w: int) -> np.ndarray:
    """Per-tile maps ``(rows * cols, N, S, S)`` -> ``(N, h, w)`` over the region."""
    n, s = maps.shape[1], maps.shape[2]
    whole = maps.reshape(rows, cols, n, s, s).transpose(2, 0, 3, 1, 4).reshape(n, rows * s, cols * s)
    return whole[:, :h, :w]


def region_maps(
    model, image: np.ndarray, settings, spec, device, step: int, mpp: float | None
) -> dict[str, Any]:
    """CAMs and FG/BG weights of a region with the model being trained (call with it in eval mode).

    Args:
        model: the ClassNet being trained.
        image: RGB ``uint8 (H, W, 3)`` at the model's input um/px; any size (cut into tiles of
            ``settings.image_size``, the far edges padded by repeating the last pixels).
        settings: the run's :class:`~.settings.TrainSettings`.
        spec: the data set's class spec (classes, palette).
        device: the torch device the model is on.
        step: the training step shown.
        mpp: um/px of ``image``, or None.

    Returns:
        ``{"step", "classes", "palette", "mpp", "image" uint8 (H, W, 3), "tiles" (rows, cols),
        "probs" float32 (rows, cols, N) classifier probabilities per tile, "present" bool
        (rows, cols, N) the classes found in each tile, "cams" float16 (N, H, W) fused CAMs scaled to
        [0, 1] per tile and class, zero where the class is not present, "fg" / "bg" float16
        (N, H, W) the eq. 5 weights ``b * M`` and ``(1 - b) * (1 - M)`` of each class}``.
    """
    import torch

    from .matching import fg_bg_images
    from .presence import DEFAULT_THRESHOLD
    from .pseudo import decide_presence, presence_probabilities

    image = np.ascontiguousarray(image, dtype=np.uint8)
    h, w = image.shape[:2]
    tile = settings.image_size
    tiles, rows, cols = _tiles(image, tile)
    x = torch.from_numpy(tiles).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    weights = settings.fusion_weights
    with torch.no_grad():
        out = model(x)
        probs = presence_probabilities(out["logits"], weights)
        gate = decide_presence(probs, DEFAULT_THRESHOLD)
        mb = fg_bg_images(
            x, out["cams"], gate, tile, settings.delta, settings.threshold_mode, settings.fg_bg_fill, weights
        )
    norm, b = mb.norm.float().cpu().numpy(), mb.mask.float().cpu().numpy()
    present = gate.cpu().numpy().astype(bool)
    n = norm.shape[1]
    return {
        "step": step,
        "classes": tuple(spec.classes),
        "palette": spec.palette,
        "mpp": mpp,
        "image": image,
        "tiles": (rows, cols),
        "probs": probs.float().cpu().numpy().reshape(rows, cols, n),
        "present": present.reshape(rows, cols, n),
        "cams": _stitch(norm * present[:, :, None, None], rows, cols, h, w).astype(np.float16),
        "fg": _stitch(b * norm, rows, cols, h, w).astype(np.float16),
        "bg": _stitch((1 - b) * (1 - norm), rows, cols, h, w).astype(np.float16),
    }
