"""Pictures a bank keeps for people: member thumbnails and the pixels of members added as arrays.

Both are content-addressed (``thumbs/<hash>.png``, ``images/<hash>.png``), so versions share them
and writing one twice is harmless.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .manifest import check_hash

THUMBS = "thumbs"
IMAGES = "images"


def thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """A ``size`` x ``size`` RGB thumbnail: the whole image scaled to fit, padded with white."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = size / max(h, w)
    small = Image.fromarray(np.ascontiguousarray(image[:, :, :3])).resize(
        (max(1, round(w * scale)), max(1, round(h * scale))),
        Image.Resampling.BOX if scale < 1 else Image.BILINEAR,
    )
    out = np.full((size, size, 3), 255, np.uint8)
    top, left = (size - small.height) // 2, (size - small.width) // 2
    out[top : top + small.height, left : left + small.width] = np.asarray(small)
    return out


def thumb_path(root: Path, image_hash: str) -> Path:
    """Where the thumbnail of the image with ``image_hash`` lives in the bank at ``root``.

    Raises:
        BankError: ``image_hash`` is not a hex SHA-256, so it could name a file outside the bank.
    """
    return root / THUMBS / f"{check_hash(image_hash)}.png"


def write_thumbnail(root: Path, image_hash: str, image: np.ndarray, size: int) -> Path:
    """Write the thumbnail of ``image`` unless it exists; return its path."""
    from ..data.images import write_rgb

    path = thumb_path(root, image_hash)
    if not path.exists():
        write_rgb(path, thumbnail(image, size))
    return path


def store_image(root: Path, image_hash: str, image: np.ndarray) -> str:
    """Keep the pixels of an array member in the bank; return its path relative to ``root``."""
    from ..data.images import write_rgb

    rel = f"{IMAGES}/{check_hash(image_hash)}.png"
    if not (root / rel).exists():
        write_rgb(root / rel, image)
    return rel
