"""Seamless tiled prediction of one block of a slide.

Tiles lie on one **global** grid (origin ``-overlap``, stride ``tile - overlap``) shared by all
blocks, and each tile's probabilities are weighted by a separable window that is flat in the
middle, fades with a raised cosine inside the ``overlap`` pixels at each side and ignores the
outermost quarter of the overlap, where the model sees the least context. Neighbouring windows
sum to one, so every pixel gets the same blend whichever block computes it: block borders leave no
trace, and tile borders only differ from a single-pass prediction where the model itself sees
different context.

Blocks are accumulated in a band of one tile row, so memory is O(tile x block width) whatever the
block height.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .predictor import DensePredictor


class Cancelled(Exception):
    """Raised inside a block when its job was cancelled."""


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """1-D weights (tile,): 1 in the middle, a raised-cosine ramp inside the ``overlap`` px at both ends.

    The outer quarter of the overlap gets weight 0 (a model sees least context there), the ramp
    rises over its middle half, and a ramp plus the mirrored ramp of the next tile
    (``tile - overlap`` further on) add up to exactly 1.
    """
    w = np.ones(tile, np.float32)
    if overlap > 0:
        dead = overlap // 4
        t = np.clip((np.arange(overlap, dtype=np.float64) + 0.5 - dead) / (overlap - 2 * dead), 0, 1)
        ramp = (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)
        w[:overlap] = ramp
        w[tile - overlap :] = ramp[::-1]
    return w


def tile_starts(lo: int, hi: int, tile: int, overlap: int, extent: int) -> np.ndarray:
    """Starts of the global-grid tiles that overlap [lo, hi) along an axis of length ``extent``.

    The grid starts at ``-overlap`` (so the first pixel sits in a tile's flat part) and ends with
    the first tile whose flat part reaches ``extent``.
    """
    stride = tile - overlap
    last = max(0, math.ceil((extent - tile + 2 * overlap) / stride))
    g0 = max(0, math.floor((lo - tile + overlap) / stride))
    g1 = min(last, math.ceil((hi + overlap) / stride))
    starts = -overlap + stride * np.arange(g0, g1 + 1)
    return starts[(starts < hi) & (starts + tile > lo)]


@dataclass
class BlockPrediction:
    """Labels (and optionally uint8 probabilities) of one block's core, with counters."""

    labels: np.ndarray
    probs: np.ndarray | None
    tiles_run: int = 0
    tiles_skipped: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


class _Band:
    """Weighted sums for the rows of one tile row; finished rows are argmax-ed into the outputs."""

    def __init__(self, n_ch, tile, region, core, window, keep_probs):
        (self.ry0, self.rx0, _, rx1), (self.cy0, self.cx0, self.cy1, self.cx1) = region, core
        self.tile, self.window = tile, window
        self.acc = np.zeros((n_ch, tile, rx1 - self.rx0), np.float32)
        self.wsum = np.zeros((tile, rx1 - self.rx0), np.float32)
        self.top = self.ry0
        h, w = self.cy1 - self.cy0, self.cx1 - self.cx0
        self.labels = np.empty((h, w), np.uint8)
        self.probs = np.empty((n_ch, h, w), np.uint8) if keep_probs else None

    def add(self, y: int, x: int, probs: np.ndarray) -> None:
        if y != self.top:
            self.flush(y)
        xs = slice(x - self.rx0, x - self.rx0 + self.tile)
        self.acc[:, :, xs] += probs * self.window
        self.wsum[:, xs] += self.window

    def add_constant(self, y: int, x: int, channel: int) -> None:
        if y != self.top:
            self.flush(y)
        xs = slice(x - self.rx0, x - self.rx0 + self.tile)
        self.acc[channel, :, xs] += self.window
        self.wsum[:, xs] += self.window

    def flush(self, until: int) -> None:
        """Finish rows [top, until): no tile still to come covers them."""
        n = min(until - self.top, self.tile)
        a, b = max(self.top, self.cy0), min(self.top + n, self.cy1)
        if a < b:
            rows = slice(a - self.top, b - self.top)
            cols = slice(self.cx0 - self.rx0, self.cx1 - self.rx0)
            p = self.acc[:, rows, cols] / np.maximum(self.wsum[rows, cols], 1e-12)
            self.labels[a - self.cy0 : b - self.cy0] = p.argmax(axis=0)
            if self.probs is not None:
                self.probs[:, a - self.cy0 : b - self.cy0] = np.clip(np.rint(p * 255), 0, 255)
        self.acc[:, : self.tile - n] = self.acc[:, n:].copy()
        self.acc[:, self.tile - n :] = 0
        self.wsum[: self.tile - n] = self.wsum[n:].copy()
        self.wsum[self.tile - n :] = 0
        self.top += n


def predict_block(
    predictor: DensePredictor,
    read: callable,
    core: tuple[int, int, int, int],
    extent: tuple[int, int],
    tile: int,
    overlap: int,
    batch: int,
    has_tissue: callable | None = None,
    probabilities: bool = False,
    cancel: threading.Event | None = None,
) -> BlockPrediction:
    """Predict the core box ``(y0, x0, y1, x1)`` of an image of size ``extent`` tile by tile.

    Args:
        predictor: the model; called with batches of at most ``batch`` tiles.
        read: ``read(y, x, height, width) -> uint8 (h, w, 3)`` at the prediction resolution
            (areas outside the image filled white).
        core: the box to produce, in pixels of the prediction grid.
        extent: (height, width) of the whole image, which fixes the global tile grid.
        tile, overlap: tile side and overlap in pixels.
        has_tissue: ``has_tissue(y0, x0, y1, x1) -> bool``; tiles without tissue are not run and
            count as background.
        probabilities: also return uint8 probabilities (c, h, w).
        cancel: stop between batches (raising :class:`Cancelled`) once set.
    """
    y0, x0, y1, x1 = core
    ys = tile_starts(y0, y1, tile, overlap, extent[0])
    xs = tile_starts(x0, x1, tile, overlap, extent[1])
    region = (int(ys[0]), int(xs[0]), int(ys[-1]) + tile, int(xs[-1]) + tile)
    seconds = {"read": 0.0, "model": 0.0, "blend": 0.0}
    t = time.perf_counter()
    image = read(region[0], region[1], region[2] - region[0], region[3] - region[1])
    seconds["read"] = time.perf_counter() - t
    n_ch = len(predictor.palette)
    w1 = blend_window(tile, overlap)
    band = _Band(n_ch, tile, region, core, w1[:, None] * w1[None, :], probabilities)
    bg = predictor.background_index
    out = BlockPrediction(band.labels, band.probs, seconds=seconds)
    pending: list[tuple[int, int, bool]] = []
    crops: list[np.ndarray] = []

    def run_pending() -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        t0 = time.perf_counter()
        probs = predictor.predict(np.stack(crops)) if crops else None
        if probs is not None and probs.shape[1] != n_ch:
            raise ValueError(f"model returned {probs.shape[1]} channels; its palette has {n_ch}")
        t1 = time.perf_counter()
        i = 0
        for y, x, run in pending:
            if run:
                band.add(y, x, probs[i])
                i += 1
            else:
                band.add_constant(y, x, bg)
        seconds["model"] += t1 - t0
        seconds["blend"] += time.perf_counter() - t1
        pending.clear()
        crops.clear()

    for y in ys:
        for x in xs:
            run = has_tissue is None or has_tissue(int(y), int(x), int(y) + tile, int(x) + tile)
            pending.append((int(y), int(x), run))
            if run:
                oy, ox = int(y) - region[0], int(x) - region[1]
                crops.append(image[oy : oy + tile, ox : ox + tile])
                out.tiles_run += 1
            else:
                out.tiles_skipped += 1
            if len(crops) == batch:
                run_pending()
    run_pending()
    t = time.perf_counter()
    band.flush(region[2])
    seconds["blend"] += time.perf_counter() - t
    return out
