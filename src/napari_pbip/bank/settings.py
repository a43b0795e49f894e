"""Settings of the image bank: how it is built (:class:`BankSettings`) and checked (:class:`EvalSettings`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings, check


@dataclass(frozen=True)
class BankSettings(Settings):
    """How a prototype image bank is built and curated.

    Attributes:
        encoder: registered encoder name (see ``models.list_encoders()``) or model-hub id.
        k: sub-clusters (prototypes) per class; paper default 3.
        per_cluster: images kept nearest each sub-cluster centre (N_K); paper default 100.
        min_tissue: patches whose tissue fraction is below this are not eligible. Tissue is every
            pixel that is not near-white (see ``white_level``).
        white_level: a pixel whose three channels are all at least this counts as background
            (glass); the same rule the weak tiling uses.
        split: data set split the bank is built from (the weakly labelled training patches).
        size_tolerance: images whose sides differ from the bank's patch size (the median side of
            the eligible patches) by more than this factor are skipped and listed; smaller
            differences are absorbed by resizing to the encoder's input size.
        min_side: images with a side below this many pixels are skipped and listed.
        batch_size: images per encoder batch.
        seed: seed of the K-Means initialisation (builds are deterministic given the seed).
        n_init: K-Means restarts; the run with the lowest cosine distortion wins.
        max_iter: K-Means iterations per restart.
        thumb_size: side of the member thumbnails (PNG) written for the GUI.
    """

    encoder: str = "efficientnet_lite0"
    k: int = 3
    per_cluster: int = 100
    min_tissue: float = 0.5
    white_level: int = 220
    split: str = "train"
    size_tolerance: float = 2.0
    min_side: int = 16
    batch_size: int = 32
    seed: int = 0
    n_init: int = 3
    max_iter: int = 100
    thumb_size: int = 64

    def __post_init__(self) -> None:
        check(
            isinstance(self.encoder, str) and bool(self.encoder), "encoder", self.encoder, "an encoder name"
        )
        check(
            _int(self.k) and self.k >= 1, "k", self.k, "an integer >= 1 (sub-clusters per class)", "paper: 3"
        )
        check(
            _int(self.per_cluster) and self.per_cluster >= 1,
            "per_cluster",
            self.per_cluster,
            "an integer >= 1 (images per sub-cluster)",
            "paper: 100",
        )
        check(0 <= self.min_tissue <= 1, "min_tissue", self.min_tissue, "a share in [0, 1], e.g. 0.5")
        check(
            _int(self.white_level) and 0 <= self.white_level <= 255, "white_level", self.white_level, "0..255"
        )
        check(
            isinstance(self.split, str) and bool(self.split),
            "split",
            self.split,
            "a split name, e.g. 'train'",
        )
        check(self.size_tolerance >= 1, "size_tolerance", self.size_tolerance, "a factor >= 1, e.g. 2.0")
        check(
            _int(self.min_side) and self.min_side >= 1, "min_side", self.min_side, "an integer >= 1 (pixels)"
        )
        check(
            _int(self.batch_size) and self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1"
        )
        check(_int(self.seed), "seed", self.seed, "an integer")
        check(_int(self.n_init) and self.n_init >= 1, "n_init", self.n_init, "an integer >= 1")
        check(_int(self.max_iter) and self.max_iter >= 1, "max_iter", self.max_iter, "an integer >= 1")
        check(
            _int(self.thumb_size) and 8 <= self.thumb_size <= 512, "thumb_size", self.thumb_size, "8..512 px"
        )


@dataclass(frozen=True)
class EvalSettings(Settings):
    """How ``bank eval`` cuts single-class patches out of masked images.

    A patch is *single-class* when its tissue (mask pixels that are neither the background index
    nor near-white) covers at least ``min_tissue`` of it and one class holds at least ``purity``
    of those tissue pixels; that class is its true label.

    Attributes:
        tile: patch side in pixels (images smaller than a tile are used whole).
        stride: step between patch origins in pixels.
        purity: share of the tissue pixels the majority class must hold.
        min_tissue: share of the patch that must be tissue.
        white_level: near-white threshold, as in :class:`BankSettings`.
        batch_size: patches per encoder batch.
    """

    tile: int = 224
    stride: int = 112
    purity: float = 0.9
    min_tissue: float = 0.5
    white_level: int = 220
    batch_size: int = 32

    def __post_init__(self) -> None:
        check(_int(self.tile) and self.tile >= 8, "tile", self.tile, "an integer >= 8 (pixels)")
        check(_int(self.stride) and self.stride >= 1, "stride", self.stride, "an integer >= 1 (pixels)")
        check(0.5 < self.purity <= 1, "purity", self.purity, "a share in (0.5, 1], e.g. 0.9")
        check(0 <= self.min_tissue <= 1, "min_tissue", self.min_tissue, "a share in [0, 1], e.g. 0.5")
        check(
            _int(self.white_level) and 0 <= self.white_level <= 255, "white_level", self.white_level, "0..255"
        )
        check(
            _int(self.batch_size) and self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1"
        )


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
