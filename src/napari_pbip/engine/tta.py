"""Test-time augmentation: a predictor's maps averaged over the 8 symmetries of the square, and a
segmenter's also over a few image scales.

Tissue has no up, down, left or right, so a model should give the same mask for an image turned
or mirrored; averaging its maps over the four quarter turns, each with and without a mirror,
removes part of what it gets wrong by chance. On the WSSS4LUAD cross-validation
(``benchmarks/compare_real.py``, 3 folds x 2 seeds x 2 methods) it raised the held-out stage-2
mIoU by 0.8 points on average (9 of 12 runs up, 2 down by at most 0.6) and stage 1 by 1.5 (see
docs/benchmarks.md); it costs 8 forward passes per image, which is why image folders
(``pbip predict``) use it by default and whole slides (``pbip segment``) and the demo do not.

A segmenter trained on tiles of a few images has seen each structure at few sizes; averaging its
probabilities over the image shrunk and enlarged (:class:`ScaleTTA`, :data:`SCALES`) evens out what
it gets right only at one size: on the same cross-validation, 0.75, 1 and 1.25 raised PBIP's
held-out stage-2 mIoU by 2.1 points on average (10 of 12 segmenters up), mostly on the rare class.
It applies to segmenters only: a stage-1 run's presence decisions and background rule are made at
the scale the run was trained at.
"""

from __future__ import annotations

import numpy as np

SYMMETRIES = 8  # quarter turns 0-3, then the same with a left-right mirror
# Image scales a segmenter's probabilities are averaged over by default in `pbip predict`. Measured
# by image cross-validation on real H&E (see docs/benchmarks.md, "Kept: segmenter masks averaged
# over three scales").
SCALES = (0.75, 1.0, 1.25)


def view(batch: np.ndarray, code: int) -> np.ndarray:
    """Symmetry ``code`` (0..7) of an image batch ``(B, H, W, 3)``: ``code % 4`` quarter turns, then a
    mirror if ``code >= 4`` (as :func:`napari_pbip.engine.augment.dihedral` does to one image)."""
    out = np.rot90(batch, k=code % 4, axes=(1, 2))
    if code >= 4:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def undo(maps: np.ndarray, code: int) -> np.ndarray:
    """Map ``(B, C, H', W')`` predicted for ``view(batch, code)`` back onto the batch's pixels."""
    if code >= 4:
        maps = maps[..., ::-1]
    return np.rot90(maps, k=-(code % 4), axes=(-2, -1))


def averaged(predict, batch: np.ndarray, *args) -> np.ndarray:
    """Mean of ``predict(view, *args)`` over the 8 symmetries, each mapped back: ``float32 (B, C, H, W)``."""
    total = None
    for code in range(SYMMETRIES):
        maps = undo(np.asarray(predict(view(batch, code), *args), dtype=np.float32), code)
        total = maps.copy() if total is None else total + maps
    return total / SYMMETRIES


class DihedralTTA:
    """Any :class:`~napari_pbip.predict.predictor.DensePredictor` with its maps averaged over the
    8 symmetries (8 forward passes per batch).

    Same attributes as the wrapped predictor (``classes``, ``palette``, ``background_index``,
    ``mpp``, ``tile``...); ``inner`` is the wrapped one. A stage-1 predictor's label maps average its
    channel scores, with the image labels when given (pseudo-masks); a segmenter's average its
    softmax probabilities.
    """

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):  # only reached for names this class does not define
        if name == "inner":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """``uint8 (B, H, W, 3)`` -> probabilities ``float32 (B, C, H, W)``, averaged over the symmetries."""
        return averaged(self.inner.predict, np.asarray(batch))

    def predict_masks(self, batch: np.ndarray, presence: np.ndarray | None = None) -> np.ndarray:
        """Label maps ``uint8 (B, H, W)``; ``presence`` (a stage-1 predictor only) gates with image labels."""
        batch = np.asarray(batch)
        if hasattr(self.inner, "channels"):
            maps = averaged(self.inner.channels, batch, presence)
        elif presence is None:
            maps = averaged(self.inner.predict, batch)
        else:
            raise TypeError(f"{type(self.inner).__name__} takes no image labels")
        return maps.argmax(axis=1).astype(np.uint8)


class ScaleTTA:
    """A segmenter's probabilities averaged over image scales: the batch resized by each factor,
    predicted, and the maps resized back onto its pixels (bilinear; antialiased when shrinking).

    Same attributes as the wrapped predictor, plus ``scales``; ``inner`` is the wrapped one. Not for
    stage-1 predictors (``channels`` is not passed on), whose CAMs are gated at their own scale.
    """

    def __init__(self, inner, scales: tuple[float, ...] = SCALES):
        if hasattr(inner, "channels"):
            raise TypeError(
                f"{type(inner).__name__} is a stage-1 predictor; scale averaging is for segmenters"
            )
        self.inner, self.scales = inner, tuple(float(s) for s in scales)

    def __getattr__(self, name):  # only reached for names this class does not define
        if name in ("inner", "scales", "channels"):  # not set yet (copy, pickle), or not passed on
            raise AttributeError(name)
        return getattr(self.inner, name)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """``uint8 (B, H, W, 3)`` -> probabilities ``float32 (B, C, H, W)``, averaged over the scales."""
        import torch
        import torch.nn.functional as F

        batch = np.ascontiguousarray(batch)
        h, w = batch.shape[1:3]
        total = None
        for scale in self.scales:
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            if size == (h, w):
                maps = np.asarray(self.inner.predict(batch), dtype=np.float32)
            else:
                x = torch.from_numpy(batch.copy()).permute(0, 3, 1, 2).float()
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
                x = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
                small = torch.from_numpy(np.asarray(self.inner.predict(x), dtype=np.float32))
                maps = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).numpy()
            total = maps.copy() if total is None else total + maps
        return total / len(self.scales)

    def predict_masks(self, batch: np.ndarray) -> np.ndarray:
        """Label maps ``uint8 (B, H, W)``: the argmax of :meth:`predict`."""
        return self.predict(batch).argmax(axis=1).astype(np.uint8)


def channel_scores(predictor, batch: np.ndarray, presence: np.ndarray | None = None) -> np.ndarray:
    """A stage-1 predictor's channel scores ``float32 (B, C, H, W)``, averaged over the symmetries
    when it is wrapped in :class:`DihedralTTA` (the maps its ``predict_masks`` takes the argmax of)."""
    batch = np.asarray(batch)
    if isinstance(predictor, DihedralTTA):
        return averaged(predictor.inner.channels, batch, presence)
    return np.asarray(predictor.channels(batch, presence), dtype=np.float32)


def with_tta(predictor, tta: bool):
    """``predictor`` wrapped in :class:`DihedralTTA` when ``tta`` is true (never wrapped twice)."""
    if not tta or isinstance(predictor, DihedralTTA):
        return predictor
    return DihedralTTA(predictor)
