"""Seeded batch order and augmentation (flips and 90-degree rotations: the 8 symmetries of a square).

Every random choice is drawn from a generator keyed by ``(seed, epoch, batch)``, never from global
state, so a resumed run sees exactly the batches and augmentations of an uninterrupted one.
"""

from __future__ import annotations

import numpy as np


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of ``n`` training images used in ``epoch``."""
    return np.random.default_rng([seed, epoch, 0]).permutation(n)


def batch_indices(n: int, batch_size: int, seed: int, epoch: int, index: int) -> np.ndarray:
    """Indices of batch ``index`` of ``epoch`` (the last batch of an epoch may be smaller)."""
    order = epoch_order(n, seed, epoch)
    return order[index * batch_size : (index + 1) * batch_size]


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps in one pass over ``n`` images."""
    return -(-n // batch_size)


def dihedral(image: np.ndarray, code: int) -> np.ndarray:
    """Apply symmetry ``code`` in 0..7: ``code % 4`` quarter turns, then a left-right flip if ``code >= 4``."""
    out = np.rot90(image, k=code % 4, axes=(0, 1))
    if code >= 4:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def augment_batch(images: list[np.ndarray], seed: int, epoch: int, index: int) -> list[np.ndarray]:
    """A random symmetry per image of batch ``index`` of ``epoch`` (seeded, square images)."""
    codes = np.random.default_rng([seed, epoch, index, 1]).integers(0, 8, size=len(images))
    return [dihedral(img, int(c)) for img, c in zip(images, codes, strict=True)]
