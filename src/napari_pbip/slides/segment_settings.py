"""Settings of whole-slide segmentation (:class:`SegmentSettings`) and the default model-call size."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import SettingsError
from ..settings import Settings, check

if TYPE_CHECKING:
    from ..predict.predictor import DensePredictor

DEFAULT_OVERLAP = 32  # px; see SegmentSettings.overlap

CPU_PIXELS_PER_CALL = 448 * 448  # default model-call size on a CPU; see SegmentSettings.batch

GPU_BATCH = 16  # default tiles per model call on a GPU

_SCHEDULER = re.compile(r"^(threads|sync|(tcp|tls|inproc|ucx|ws|wss)://.+)$")


@dataclass(frozen=True)
class SegmentSettings(Settings):
    """How a slide is segmented.

    Attributes:
        mpp: inference resolution in um/px; None uses the model's training resolution.
        tile: tile side in pixels; None uses the model's preferred tile (a stage-2 segmenter: twice
            its training tile; a stage-1 run: its training size).
        overlap: pixels shared by neighbouring tiles and blended; None is 32 px (at most a quarter
            tile): on the synthetic slide a lite0-seg output then differs from one pass over the
            whole region on 0.2% of tissue pixels, as with 56 px, for 26% fewer tiles at 224 px.
        batch: tiles per model call; None: about :data:`CPU_PIXELS_PER_CALL` pixels per call on a
            CPU (4 tiles of 224 px, 1 of 448 px), :data:`GPU_BATCH` tiles on a GPU, for the device
            the model is loaded on here (set it when a cluster's workers have other devices). On
            the 2-core development CPU, slides ran 1.15x slower with 16 tiles of 224 px per call
            than with 4, and the bare model did 20-25 224-px tiles/s with 16 tiles of 448 px per
            call, 32-42 with 1 to 4 (cache-bound convolutions).
        chunk: side of one dask task's block in pixels (a multiple of 256).
        device: torch device ("auto", "cpu", "cuda", ...).
        probabilities: also store per-class uint8 probabilities.
        scheduler: "threads", "sync" (one thread, for debugging) or a dask.distributed address
            such as "tcp://10.0.0.5:8786".
        num_workers: concurrent chunks with the threads scheduler.
        skip_background: skip chunks and tiles without tissue (they become background).
        tissue_mpp: resolution of tissue detection in um/px.
        compile: run a stage-2 segmenter through ``torch.compile`` (once per process, before the
            first chunk). On the 2-core development CPU: 55 s the first time (14 s with inductor's
            cache warm), then the model's share of the work 1.21x faster; it pays off from about
            13,000 tissue tiles (3,000 with a warm cache). Needs a C++ compiler on CPU.
    """

    mpp: float | None = None
    tile: int | None = None
    overlap: int | None = None
    batch: int | None = None
    chunk: int = 4096
    device: str = "auto"
    probabilities: bool = False
    scheduler: str = "threads"
    num_workers: int = 1
    skip_background: bool = True
    tissue_mpp: float = 8.0
    compile: bool = False

    def __post_init__(self) -> None:
        check(self.mpp is None or 0.05 <= self.mpp <= 50, "mpp", self.mpp, "None or 0.05-50 um/px")
        check(self.tile is None or 32 <= self.tile <= 4096, "tile", self.tile, "None or 32-4096 px")
        tile = self.tile or 32
        check(
            self.overlap is None or 0 <= self.overlap <= tile // 2,
            "overlap",
            self.overlap,
            f"0..tile/2 ({tile // 2}) px",
            "use a larger tile or a smaller overlap",
        )
        check(self.batch is None or self.batch >= 1, "batch", self.batch, "None (by device) or >= 1")
        check(
            self.chunk >= 256 and self.chunk % 256 == 0, "chunk", self.chunk, "a multiple of 256 (e.g. 4096)"
        )
        check(self.tile is None or self.chunk >= self.tile, "chunk", self.chunk, f">= tile ({self.tile})")
        check(
            bool(_SCHEDULER.match(self.scheduler)),
            "scheduler",
            self.scheduler,
            "'threads', 'sync' or tcp://host:port",
        )
        check(self.num_workers >= 1, "num_workers", self.num_workers, ">= 1")
        check(0.5 <= self.tissue_mpp <= 100, "tissue_mpp", self.tissue_mpp, "0.5-100 um/px")

    @property
    def distributed(self) -> bool:
        """True when chunks run on a dask.distributed cluster."""
        return "://" in self.scheduler

    def resolve(self, predictor: DensePredictor) -> SegmentSettings:
        """Fill ``mpp``, ``tile``, ``overlap`` and ``batch`` from the model where they are None."""
        mpp = self.mpp if self.mpp is not None else predictor.mpp
        if mpp is None:
            raise SettingsError("mpp=None and the model records no training resolution; pass --mpp (um/px)")
        tile = self.tile or int(predictor.tile)
        overlap = self.overlap if self.overlap is not None else min(DEFAULT_OVERLAP, tile // 4)
        batch = self.batch or default_batch(tile, getattr(predictor, "device", None))
        return self.replace(mpp=float(mpp), tile=tile, overlap=overlap, batch=batch)


def default_batch(tile: int, device) -> int:
    """Tiles per model call when none is given: by pixels on a CPU, :data:`GPU_BATCH` elsewhere."""
    kind = getattr(device, "type", str(device or "cpu"))
    return max(1, CPU_PIXELS_PER_CALL // (tile * tile)) if kind == "cpu" else GPU_BATCH
