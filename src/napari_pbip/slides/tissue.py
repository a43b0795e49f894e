"""Tissue detection on a low-resolution view of a slide, used to skip glass everywhere.

Tissue is stained, glass is not: a pixel is tissue when its saturation exceeds an Otsu threshold
(clamped to a sane range so an all-tissue or all-glass slide still works) and it is darker than
``max_grey``. Morphology then closes gaps, removes specks and fills holes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..settings import Settings, check
from .readers import Slide


@dataclass(frozen=True)
class TissueSettings(Settings):
    """How tissue is found.

    Attributes:
        mpp: resolution (um/px) the detection runs at; coarse is enough (8-16).
        max_grey: pixels with mean RGB at or above this are glass.
        min_threshold: lower clamp of the saturation threshold (0-1).
        max_threshold: upper clamp of the saturation threshold, so pale tissue on an all-tissue slide counts.
        closing_um: radius of the closing that joins nearby tissue fragments.
        min_area_um2: tissue pieces and holes smaller than this are dropped / filled.
    """

    mpp: float = 8.0
    max_grey: int = 220
    min_threshold: float = 0.04
    max_threshold: float = 0.15
    closing_um: float = 24.0
    min_area_um2: float = 20_000.0

    def __post_init__(self) -> None:
        check(
            0.1 <= self.mpp <= 100, "mpp", self.mpp, "0.1-100 um/px", "8-16 is typical for tissue detection"
        )
        check(0 < self.max_grey <= 255, "max_grey", self.max_grey, "1-255")
        check(
            0 <= self.min_threshold <= self.max_threshold <= 1,
            "min_threshold/max_threshold",
            (self.min_threshold, self.max_threshold),
            "0 <= min_threshold <= max_threshold <= 1",
        )
        check(self.closing_um >= 0, "closing_um", self.closing_um, ">= 0")
        check(self.min_area_um2 >= 0, "min_area_um2", self.min_area_um2, ">= 0")


@dataclass
class TissueMask:
    """A boolean tissue mask at ``mpp`` um/px; ``origin`` is its top-left pixel in the slide's grid at ``mpp``."""

    mask: np.ndarray
    mpp: float
    origin: tuple[int, int] = (0, 0)

    @property
    def fraction(self) -> float:
        """Share of the mask that is tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def _bounds(self, y0: float, x0: float, y1: float, x1: float, mpp: float, margin_um: float):
        f, m = mpp / self.mpp, margin_um / self.mpp
        oy, ox = self.origin
        return (
            math.floor(y0 * f - m) - oy,
            math.floor(x0 * f - m) - ox,
            math.ceil(y1 * f + m) - oy,
            math.ceil(x1 * f + m) - ox,
        )

    def any(self, y0: float, x0: float, y1: float, x1: float, mpp: float, margin_um: float = 0.0) -> bool:
        """Whether the box [y0, y1) x [x0, x1), in pixels at ``mpp`` and grown by ``margin_um``, touches tissue."""
        a, b, c, d = self._bounds(y0, x0, y1, x1, mpp, margin_um)
        h, w = self.mask.shape
        return bool(self.mask[max(a, 0) : min(c, h), max(b, 0) : min(d, w)].any())

    def crop(
        self, y0: float, x0: float, y1: float, x1: float, mpp: float, margin_um: float = 0.0
    ) -> TissueMask:
        """The part of the mask covering a box (pixels at ``mpp``), keeping global coordinates."""
        a, b, c, d = self._bounds(y0, x0, y1, x1, mpp, margin_um)
        h, w = self.mask.shape
        a, b, c, d = max(a, 0), max(b, 0), min(max(c, 0), h), min(max(d, 0), w)
        oy, ox = self.origin
        return TissueMask(self.mask[a : max(a, c), b : max(b, d)].copy(), self.mpp, (oy + a, ox + b))


def tissue_from_rgb(rgb: np.ndarray, mpp: float, settings: TissueSettings | None = None) -> TissueMask:
    """Detect tissue in an RGB image (uint8 (h, w, 3)) taken at ``mpp`` um/px."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    s = settings or TissueSettings()
    rgb = rgb.astype(np.float32)
    hi, lo = rgb.max(axis=2), rgb.min(axis=2)
    sat = (hi - lo) / np.maximum(hi, 1.0)
    dark = rgb.mean(axis=2) < s.max_grey
    candidates = sat[dark]
    t = threshold_otsu(candidates) if candidates.size > 16 and np.ptp(candidates) > 0 else s.min_threshold
    mask = dark & (sat > float(np.clip(t, s.min_threshold, s.max_threshold)))

    radius = s.closing_um / mpp
    if radius >= 1:
        pad = math.ceil(radius) + 1
        disk = _disk(radius)
        padded = np.pad(mask, pad)
        padded = ndi.binary_closing(padded, disk)
        mask = ndi.binary_opening(padded, _disk(max(1.0, radius / 2)))[pad:-pad, pad:-pad]
    min_px = s.min_area_um2 / (mpp * mpp)
    mask = _drop_small(mask, min_px)
    mask = ~_drop_small(~mask, min_px)  # fill small holes; large ones (lumen, fat) stay
    return TissueMask(mask, mpp)


def detect_tissue(
    slide: Slide, settings: TissueSettings | None = None, unreadable: list | None = None
) -> TissueMask:
    """Tissue mask of ``slide`` at ``settings.mpp`` (or the slide's coarsest-needed resolution).

    The slide is read block by block at that resolution from the nearest finer level;
    ``unreadable``: see :meth:`~napari_pbip.slides.Slide.read_level` (damaged tiles read as glass).
    """
    s = settings or TissueSettings()
    mpp = max(s.mpp, slide.mpp[0])
    return tissue_from_rgb(slide.read_all(mpp, unreadable=unreadable), mpp, s)


def _disk(radius: float) -> np.ndarray:
    r = int(math.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy * yy + xx * xx) <= radius * radius


def _drop_small(mask: np.ndarray, min_px: float) -> np.ndarray:
    from scipy import ndimage as ndi

    if min_px <= 1 or not mask.any():
        return mask
    labels, n = ndi.label(mask)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]
