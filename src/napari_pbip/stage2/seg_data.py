"""Stage-2 training data: training images paired with pseudo-masks, seeded crops and augmentation.

Pseudo-masks are palette (or grey) PNGs named exactly like the training images, holding mask
indices of the data set's palette (background = ``spec.background_index``) and :data:`IGNORE`
for unlabelled pixels, which the loss skips. RGB masks are mapped to the nearest palette colour.

Every random choice (scale, crop, symmetry, colour jitter) is drawn from a generator keyed by
``(seed, epoch, batch, image)``, and the CutMix boxes from one keyed by ``(seed, epoch, batch)``,
so a resumed run sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.images import IGNORE
from ..engine import augment
from ..errors import DatasetError

if TYPE_CHECKING:
    from ..data.layouts import Dataset, DatasetSpec

PAD_RGB = 255  # padding of images smaller than the crop: white glass, ignored by the loss


@dataclass(frozen=True)
class Pair:
    """A training image and its pseudo-mask."""

    image: Path
    mask: Path


def pair_masks(ds: Dataset, masks: str | os.PathLike) -> list[Pair]:
    """The training images of ``ds`` with their masks ``masks/<image file name>``.

    Raises:
        DatasetError: ``masks`` is not a folder, the train split is empty, or an image has no mask.
    """
    masks = Path(masks)
    if not masks.is_dir():
        raise DatasetError(
            f"pseudo-mask folder {masks} does not exist; make it with `pbip pseudo` (one PNG per training image)"
        )
    samples = ds.samples("train")
    if not samples:
        raise DatasetError(
            f"the train split of {ds.root} has no images; give a data set with training patches"
        )
    missing = [s.image.name for s in samples if not (masks / s.image.name).is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(samples)} training image(s) have no mask in {masks}, e.g. {missing[0]!r} "
            f"(from {samples[0].image.parent}); masks must have the image's exact file name; "
            "regenerate them with `pbip pseudo` for this data set"
        )
    return [Pair(s.image, masks / s.image.name) for s in samples]


def read_pseudo_mask(path: str | os.PathLike, spec: DatasetSpec) -> np.ndarray:
    """A pseudo-mask as ``uint8 (H, W)``: mask indices of ``spec.palette`` or :data:`IGNORE`.

    Raises:
        DatasetError: unreadable, or holding a value that is neither a palette index nor 255.
    """
    from PIL import Image, UnidentifiedImageError

    from ..data.images import nearest_palette_indices

    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("P", "L"):
                mask = np.array(image, dtype=np.uint8)
            else:
                return nearest_palette_indices(np.asarray(image.convert("RGB")), spec.palette)
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"cannot read pseudo-mask {path} ({exc}); expected a palette PNG") from exc
    n = len(spec.palette)
    if int(mask.max(initial=0)) >= n:
        bad = [int(v) for v in np.unique(mask) if n <= v != IGNORE]
        if bad:
            raise DatasetError(
                f"pseudo-mask {path} holds values {bad[:8]}; expected mask indices 0..{n - 1} (classes "
                f"{list(spec.classes)}, background {spec.background_index}) or {IGNORE} (ignored); "
                "check that the masks were made for this data set"
            )
    return mask


def load_pair(pair: Pair, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    """Image ``uint8 (H, W, 3)`` and mask ``uint8 (H, W)`` of ``pair``, checked to match in size."""
    from ..data.images import read_rgb

    image, mask = read_rgb(pair.image), read_pseudo_mask(pair.mask, spec)
    if image.shape[:2] != mask.shape:
        raise DatasetError(
            f"pseudo-mask {pair.mask} is {mask.shape[1]}x{mask.shape[0]} px but its image {pair.image} is "
            f"{image.shape[1]}x{image.shape[0]}; expected the same size"
        )
    return image, mask


def class_pixel_shares(pairs: list[Pair], spec: DatasetSpec) -> np.ndarray:
    """Each mask index's share of the labelled (not :data:`IGNORE`) pixels of ``pairs``' masks."""
    counts = np.zeros(len(spec.palette), np.int64)
    for pair in pairs:
        mask = read_pseudo_mask(pair.mask, spec)
        counts += np.bincount(mask[mask != IGNORE].ravel(), minlength=len(counts))[: len(counts)]
    return counts / max(int(counts.sum()), 1)


def class_weights(shares: np.ndarray, power: float) -> np.ndarray:
    """Loss weights ``share ** -power`` for the classes present (0 for absent ones), scaled so
    that the mean weight of a labelled pixel is 1."""
    shares = np.asarray(shares, np.float64)
    present = shares > 0
    weights = np.zeros_like(shares)
    weights[present] = shares[present] ** -power
    return weights / max(float((weights * shares).sum()), 1e-12)


def random_scale(
    image: np.ndarray, mask: np.ndarray, strength: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Image and mask resized by one factor drawn from ``1 ± strength`` (bilinear / nearest)."""
    if strength <= 0:
        return image, mask
    from PIL import Image

    factor = float(rng.uniform(1 - strength, 1 + strength))
    h, w = mask.shape
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    return image, np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))


def crop_or_pad(
    image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random ``size`` x ``size`` window; sides shorter than ``size`` are padded (mask: ignored)."""
    h, w = mask.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)), constant_values=PAD_RGB)
        mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=IGNORE)
        h, w = mask.shape
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return image[y : y + size, x : x + size], mask[y : y + size, x : x + size]


def colour_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast and saturation, each a factor in ``1 ± strength``."""
    if strength <= 0:
        return image
    b, c, s = rng.uniform(1 - strength, 1 + strength, size=3)
    x = image.astype(np.float32) * b
    x = (x - x.mean()) * c + x.mean()
    grey = x.mean(axis=2, keepdims=True)
    x = (x - grey) * s + grey
    return np.clip(x, 0, 255).round().astype(np.uint8)


def stain_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Random haematoxylin, eosin and DAB amounts (the HED perturbation of Tellez et al. 2018).

    Each pixel's optical density ``-ln(rgb / 255)`` is split into the three stains by scikit-image's
    Ruifrok-Johnston matrix; each stain's density ``s`` becomes ``s * a + b`` with ``a`` in
    ``1 ± strength`` and ``b`` in ``± strength``, and the densities are mixed back. Unlike
    ``skimage.color.rgb2hed``, nothing is clipped between the two, so ``a = 1, b = 0`` returns the
    image unchanged (up to rounding).
    """
    if strength <= 0:
        return image
    from skimage.color import hed_from_rgb, rgb_from_hed

    a = rng.uniform(1 - strength, 1 + strength, size=3)
    b = rng.uniform(-strength, strength, size=3)
    density = -np.log(np.maximum(image.astype(np.float32), 1.0) / 255.0)
    stains = density @ hed_from_rgb.astype(np.float32)
    density = (stains * a + b).astype(np.float32) @ rgb_from_hed.astype(np.float32)
    return np.clip(255.0 * np.exp(-density), 0, 255).round().astype(np.uint8)


def cutmix(
    images: np.ndarray, masks: np.ndarray, probability: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """CutMix (Yun et al. 2019) within a batch: with ``probability`` each image gets a box of
    another image of the batch (sides 30-70% of the crop, at the same place), its mask with it.

    ``images`` ``(B, S, S, 3)`` and ``masks`` ``(B, S, S)`` are not modified; new arrays are returned.
    """
    if probability <= 0 or len(images) < 2:
        return images, masks
    mixed_images, mixed_masks = images.copy(), masks.copy()
    n, h, w = masks.shape
    donors = rng.permutation(n)
    for i, donor in enumerate(donors):
        if donor == i or rng.random() >= probability:
            continue
        bh, bw = int(h * rng.uniform(0.3, 0.7)), int(w * rng.uniform(0.3, 0.7))
        y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        mixed_images[i, y : y + bh, x : x + bw] = images[donor, y : y + bh, x : x + bw]
        mixed_masks[i, y : y + bh, x : x + bw] = masks[donor, y : y + bh, x : x + bw]
    return mixed_images, mixed_masks


def make_batch(
    pairs: list[Pair],
    spec: DatasetSpec,
    size: int,
    jitter: float,
    seed: int,
    epoch: int,
    index: int,
    stain: float = 0.0,
    scale: float = 0.0,
    mix: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Augmented batch ``index`` of ``epoch``: images ``uint8 (B, S, S, 3)`` and masks ``uint8 (B, S, S)``.

    Each image is scaled, cropped, turned, colour- and stain-jittered on its own, then the batch is
    CutMixed with probability ``mix`` (:func:`cutmix`).
    """
    images, masks = [], []
    for slot, pair in enumerate(pairs):
        rng = np.random.default_rng([seed, epoch, index, slot, 2])
        image, mask = crop_or_pad(*random_scale(*load_pair(pair, spec), scale, rng), size, rng)
        code = int(rng.integers(0, 8))
        image = colour_jitter(augment.dihedral(image, code), jitter, rng)
        images.append(stain_jitter(image, stain, rng))
        masks.append(augment.dihedral(mask, code))
    return cutmix(np.stack(images), np.stack(masks), mix, np.random.default_rng([seed, epoch, index, 3]))


class BatchLoader:
    """Loads the batches of a run ahead of the training loop in ``workers`` threads.

    Args:
        pairs: all training pairs.
        spec: the data set's spec (palette size for mask checks).
        batch_size, size, jitter, seed: as in :class:`~napari_pbip.stage2.seg_settings.SegSettings`.
        workers: threads; 0 loads in the caller's thread.
        stain: ``SegSettings.stain_jitter``.
        scale: ``SegSettings.scale_jitter``.
        mix: ``SegSettings.cutmix``.
    """

    def __init__(
        self,
        pairs: list[Pair],
        spec: DatasetSpec,
        batch_size: int,
        size: int,
        jitter: float,
        seed: int,
        workers: int,
        stain: float = 0.0,
        scale: float = 0.0,
        mix: float = 0.0,
    ):
        self.pairs, self.spec, self.stain, self.scale, self.mix = pairs, spec, stain, scale, mix
        self.batch_size, self.size, self.jitter, self.seed = batch_size, size, jitter, seed
        self.steps_per_epoch = augment.steps_per_epoch(len(pairs), batch_size)
        self.workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="pbip-seg-data") if workers else None
        self._ahead: dict[int, Future] = {}

    def _load(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        epoch, index = divmod(step, self.steps_per_epoch)
        idx = augment.batch_indices(len(self.pairs), self.batch_size, self.seed, epoch, index)
        chosen = [self.pairs[i] for i in idx]
        return make_batch(
            chosen,
            self.spec,
            self.size,
            self.jitter,
            self.seed,
            epoch,
            index,
            self.stain,
            self.scale,
            self.mix,
        )

    def get(self, step: int, last: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch of global ``step``; queues the following ones up to ``last`` (exclusive)."""
        if self._pool is None:
            return self._load(step)
        for s in range(step, min(last, step + self.workers + 1)):
            if s not in self._ahead:
                self._ahead[s] = self._pool.submit(self._load, s)
        for s in [s for s in self._ahead if s < step]:
            self._ahead.pop(s).cancel()
        return self._ahead.pop(step).result()

    def close(self) -> None:
        """Stop the threads (queued batches are dropped)."""
        if self._pool is not None:
            for future in self._ahead.values():
                future.cancel()
            self._ahead.clear()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
