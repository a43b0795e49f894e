"""Which images may enter a bank: one class, enough tissue, a readable image of a sensible size.

Tissue is defined as every pixel that is not near-white: a pixel whose three channels are all at
least ``white_level`` (220 by default, the rule the weak tiling uses) is glass/background. The
tissue fraction of a patch is the share of its pixels that are tissue.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DatasetError

# Reasons an image is skipped (keys of the build report's ``skipped_counts``).
UNREADABLE = "unreadable"
TOO_SMALL = "too small"
OTHER_SIZE = "other size"
LOW_TISSUE = "mostly background"
DUPLICATE = "duplicate"


def tissue_mask(image: np.ndarray, white_level: int = 220) -> np.ndarray:
    """``(H, W)`` bool: True where a pixel is tissue (not all three channels >= ``white_level``)."""
    return ~(np.asarray(image)[..., :3] >= white_level).all(axis=-1)


def tissue_fraction(image: np.ndarray, white_level: int = 220) -> float:
    """Share of an RGB image's pixels that are tissue (see :func:`tissue_mask`); 0 for an empty image."""
    mask = tissue_mask(image, white_level)
    return float(mask.mean()) if mask.size else 0.0


def is_single_class(labels: Sequence[int] | None) -> bool:
    """True when an image-level label names exactly one class."""
    return labels is not None and sum(1 for v in labels if v) == 1


def image_side(path: str | os.PathLike) -> int | None:
    """The longer side of an image file from its header, or None when the header is unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(max(im.size))
    except Exception:  # any header problem: the full read reports it properly
        return None


def patch_size(sides: Sequence[int | None]) -> int | None:
    """The bank's reference patch side: the median of the known sides (None when none is known)."""
    known = [s for s in sides if s]
    return int(np.median(known)) if known else None


def size_problem(
    shape: tuple[int, ...], reference: int | None, tolerance: float, min_side: int
) -> str | None:
    """Why an image of ``shape`` cannot join a bank of ``reference``-px patches, or None.

    Returns:
        A reason starting with :data:`TOO_SMALL` or :data:`OTHER_SIZE` and saying what to do.
    """
    h, w = int(shape[0]), int(shape[1])
    if min(h, w) < min_side:
        return f"{TOO_SMALL}: {w}x{h} px, below min_side={min_side}; use larger patches"
    side = max(h, w)
    if reference and not reference / tolerance <= side <= reference * tolerance:
        return (
            f"{OTHER_SIZE}: {w}x{h} px while the bank's patches are about {reference} px (tolerance x{tolerance:g}); "
            f"cut it into {reference} px tiles first, so its magnification matches the bank"
        )
    return None


def as_rgb(item: np.ndarray | str | os.PathLike) -> tuple[np.ndarray | None, str | None]:
    """Read a file or check an array; return ``(image, None)`` or ``(None, reason)``.

    Arrays must be ``uint8 (H, W, 3)`` or ``(H, W, 4)`` (alpha is dropped).
    """
    if isinstance(item, (str, os.PathLike)):
        from ..data.images import read_rgb

        try:
            return read_rgb(Path(item)), None
        except DatasetError as exc:
            return None, f"{UNREADABLE}: {exc}"
    array = np.asarray(item)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
        return None, (
            f"{UNREADABLE}: array of shape {array.shape} and dtype {array.dtype}; expected uint8 (H, W, 3) RGB"
        )
    return np.ascontiguousarray(array[:, :, :3]), None
