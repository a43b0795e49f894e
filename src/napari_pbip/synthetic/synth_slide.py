"""A synthetic pyramidal whole-slide image with a ground-truth label image, written in bounded memory.

The slide is a tiled BigTIFF (JPEG or deflate tiles, one pyramid level per IFD, um/px in the
resolution tags) that OpenSlide opens as a generic tiled TIFF and tifffile as a pyramid. Tissue
covers an irregular central region; inside it, class regions hundreds of um wide follow a random
field sampled every 16 pixels and interpolated per tile, painted by :func:`.render.render_tissue`.
Level 0 is rendered one row of tiles at a time; each lower level is the 2x2 mean of the one above,
kept in a temporary file rather than in RAM.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _atomic
from ..events import Job, Progress, run
from ..settings import check
from . import texture as tx
from .render import DEFAULT_STYLES, check_styles, render_tissue

__all__ = ["SlideField", "SynthSlide", "synthetic_slide_job", "write_synthetic_slide"]

MIN_LEVEL_SIZE = 1000  # halve until the longer side drops below this
MIN_LEVELS = 3
_COARSE = 16  # the class/tissue field is sampled every _COARSE pixels and interpolated
_CHUNK = 2048  # level-0 pixels rendered per call along a row of tiles (bounds temporaries)
_JPEG_QUALITY = 90
SLIDE_STAGE, LABELS_STAGE = "slide", "labels"  # the Progress stages: the slide's tiles, then its labels


@dataclass(frozen=True)
class SynthSlide:
    """What :func:`write_synthetic_slide` wrote.

    Attributes:
        slide: the pyramidal RGB TIFF.
        labels: the uint8 label TIFF, same size as level 0 (``background_index`` off tissue).
        shape: (height, width) of level 0 in pixels.
        mpp: micrometres per pixel at level 0.
        classes: tissue class names in label order.
        palette: display colour per label index (background last).
        background_index: label of glass.
        levels: (height, width) of each pyramid level.
    """

    slide: Path
    labels: Path
    shape: tuple[int, int]
    mpp: float
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    background_index: int
    levels: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class SlideField:
    """The ground-truth label field of a synthetic slide, evaluable on any region.

    Tissue is where a smooth random field, damped towards the slide's edges, exceeds a threshold
    chosen so that about ``tissue_share`` of the slide is tissue; inside it, each pixel takes the
    class whose random score is highest. Class regions are ``region_um`` across on average.
    """

    seed: int
    size: int
    n_classes: int
    mpp: float = 0.5
    region_um: float = 500.0
    tissue_share: float = 0.6

    def _scores(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Tissue score then one score per class at the global grid ``ys`` x ``xs``."""
        y, x = ys.astype(np.float64)[:, None], xs.astype(np.float64)[None, :]
        centre, radius = self.size / 2.0, self.size / 2.0
        edge = ((y - centre) / radius) ** 2 + ((x - centre) / radius) ** 2
        tissue = _octaves(self.seed, 10, y, x, self.size * 0.3, 3, 0.45) - edge
        period = self.region_um / self.mpp
        scores = [tissue] + [_octaves(self.seed, 20 + c, y, x, period, 3, 0.3) for c in range(self.n_classes)]
        return np.stack([np.broadcast_to(s, (len(ys), len(xs))) for s in scores]).astype(np.float32)

    @property
    def threshold(self) -> float:
        """Tissue-score level above which there is tissue (from a coarse sample of the slide)."""
        grid = np.linspace(0, self.size - 1, 256)
        return float(np.quantile(self._scores(grid, grid)[0], 1.0 - self.tissue_share))

    def labels(
        self, origin: tuple[int, int], shape: tuple[int, int], threshold: float | None = None
    ) -> np.ndarray:
        """uint8 labels of the region at global ``origin`` with ``shape`` (background off the slide)."""
        threshold = self.threshold if threshold is None else threshold
        grids = self._scores(*tx.grid_points(origin, shape, _COARSE))
        fields = [tx.upsample(grid, origin, shape, _COARSE) for grid in grids]
        jitter = tx.value_noise(self.seed, 30, origin, shape, 40.0) - np.float32(0.5)
        out = np.zeros(shape, np.uint8)
        best = fields[1]
        for c, score in enumerate(fields[1:]):  # argmax, with class borders roughened per class
            score += np.float32(0.05 * ((-1) ** c) / (1 + c // 2)) * jitter
            if c:
                out[score > best] = c
                np.maximum(best, score, out=best)
        off = fields[0] + np.float32(0.03) * jitter < np.float32(threshold)
        _mark_outside(off, origin, self.size)
        out[off] = self.n_classes
        return out


def _mark_outside(off: np.ndarray, origin: tuple[int, int], size: int) -> None:
    """Set ``off`` where the region at ``origin`` extends past a ``size`` x ``size`` slide."""
    (y0, x0), (h, w) = origin, off.shape
    off[: max(0, min(h, -y0))] = True
    off[:, : max(0, min(w, -x0))] = True
    off[max(0, size - y0) :] = True
    off[:, max(0, size - x0) :] = True


def _octaves(
    seed: int, layer: int, y: np.ndarray, x: np.ndarray, period: float, octaves: int, decay: float
) -> np.ndarray:
    """Noise at points: octaves 2.5x finer and ``decay`` x weaker each, on differently rotated lattices."""
    total, weight = 0.0, 1.0
    for k in range(octaves):
        angle = 0.5 + 1.1 * k
        cos, sin = round(float(np.cos(angle)), 12), round(float(np.sin(angle)), 12)
        p = period / 2.5**k
        total = total + weight * tx.value_noise_at(
            seed, layer * 16 + k, y * cos - x * sin, x * cos + y * sin, p
        )
        weight *= decay
    return total


def pyramid_shapes(height: int, width: int) -> list[tuple[int, int]]:
    """Level shapes: halve until the longer side is below ``MIN_LEVEL_SIZE``, at least ``MIN_LEVELS``."""
    shapes = [(height, width)]
    while max(shapes[-1]) >= MIN_LEVEL_SIZE or len(shapes) < MIN_LEVELS:
        h, w = shapes[-1]
        if min(h, w) < 2:
            break
        shapes.append((h // 2, w // 2))
    return shapes


def _halve(strip: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """2x2 mean of the top-left ``2*rows`` x ``2*cols`` of an RGB strip."""
    s = strip[: 2 * rows, : 2 * cols].astype(np.uint16)
    return ((s[0::2, 0::2] + s[1::2, 0::2] + s[0::2, 1::2] + s[1::2, 1::2] + 2) >> 2).astype(np.uint8)


def _tiles(strip: np.ndarray, tile: int, width: int, fill: int) -> Iterator[np.ndarray]:
    """Full-size tiles of a strip of tile rows (padded with ``fill`` past the image)."""
    for x in range(0, width, tile):
        block = strip[:tile, x : x + tile]
        if block.shape[:2] != (tile, tile):
            padded = np.full((tile, tile, *strip.shape[2:]), fill, strip.dtype)
            padded[: block.shape[0], : block.shape[1]] = block
            block = padded
        yield block


def synthetic_slide_job(
    out: str | os.PathLike,
    size: int = 20000,
    seed: int = 0,
    mpp: float = 0.5,
    tile: int = 512,
    compression: str = "jpeg",
    overwrite: bool = False,
    labels_out: str | os.PathLike | None = None,
    classes: Sequence[str] = DEFAULT_STYLES,
) -> Job[SynthSlide]:
    """Generator version of :func:`write_synthetic_slide`, yielding progress per row of tiles."""
    classes = check_styles(classes)
    check(isinstance(size, int) and size >= 64, "size", size, "an integer >= 64 (pixels per side)")
    check(mpp > 0, "mpp", mpp, "micrometres per pixel > 0, e.g. 0.5 for 20x")
    check(isinstance(tile, int) and tile >= 16 and tile % 16 == 0, "tile", tile, "a multiple of 16, e.g. 512")
    check(compression in ("jpeg", "deflate"), "compression", compression, "'jpeg' or 'deflate'")
    out = Path(out)
    labels_path = Path(labels_out) if labels_out else out.with_name(f"{out.stem}.labels.tif")
    _atomic.check_writable(out, overwrite)
    _atomic.check_writable(labels_path, overwrite, {"slide (--out)": out})
    field = SlideField(seed, size, len(classes), mpp)
    threshold = field.threshold
    shapes = pyramid_shapes(size, size)
    palette = tuple(tuple(c) for c in _palette(classes))
    meta = {"classes": list(classes), "palette": palette, "background_index": len(classes), "mpp": mpp}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pbip-synth-slide-", dir=out.parent) as scratch:
        scratch = Path(scratch)
        with _RowFile(scratch / "labels.raw", (size, size)) as truth, _atomic.atomic_path(out) as tmp_slide:
            pyramid = _Pyramid(field, threshold, shapes, tile, classes, truth, scratch)
            yield from _in_thread(functools.partial(pyramid.write, tmp_slide, compression))
            with _atomic.atomic_path(labels_path) as tmp_labels:
                yield from _in_thread(functools.partial(_write_labels, tmp_labels, truth, tile, meta))
    return SynthSlide(
        out, labels_path, (size, size), float(mpp), classes, palette, len(classes), tuple(shapes)
    )


def _palette(classes: tuple[str, ...]) -> list[list[int]]:
    from .synth import palette_for

    return palette_for(classes)


def _tiff_options(tile: int, mpp: float, compression: str) -> dict:
    res = 1e4 / mpp  # pixels per centimetre
    options = {"tile": (tile, tile), "resolution": (res, res), "resolutionunit": "CENTIMETER"}
    if compression == "jpeg":
        options.update(compression="jpeg", compressionargs={"level": _JPEG_QUALITY})
    else:
        options.update(compression="zlib", compressionargs={"level": 6}, predictor=True)
    return options


class _RowFile:
    """A uint8 array on disk, written and read by whole rows with plain file I/O.

    Unlike a memory map, its pages do not count towards the process's resident memory, so the
    memory a slide needs does not grow with its size.
    """

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.shape = shape
        self._row = int(np.prod(shape[1:]))
        self._file = open(path, "w+b")  # noqa: SIM115 - closed by __exit__
        self._file.truncate(shape[0] * self._row)

    def write(self, y: int, rows: np.ndarray) -> None:
        """Store ``rows`` (uint8, full width) from row ``y`` on."""
        self._file.seek(y * self._row)
        self._file.write(np.ascontiguousarray(rows, np.uint8).tobytes())

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``y0`` to ``y1`` (clipped to the array)."""
        y1 = min(y1, self.shape[0])
        self._file.seek(y0 * self._row)
        data = self._file.read(max(0, y1 - y0) * self._row)
        return np.frombuffer(data, np.uint8).reshape(-1, *self.shape[1:])

    def __enter__(self) -> _RowFile:
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


@dataclass
class _Pyramid:
    """Writes the RGB pyramid: level 0 rendered per row of tiles, each lower level the 2x2 mean.

    Level 0's labels go into ``truth`` (for the label image); levels below 0 are gathered in
    row files under ``scratch`` while the level above is written.
    """

    field: SlideField
    threshold: float
    shapes: list[tuple[int, int]]
    tile: int
    classes: tuple[str, ...]
    truth: _RowFile
    scratch: Path

    def write(self, path: Path, compression: str, report: Callable[[Progress], None]) -> None:
        import tifffile

        options = _tiff_options(self.tile, self.field.mpp, compression)
        f = self.field
        description = f"napari-pbip synthetic H&E slide; seed={f.seed} size={f.size} mpp={f.mpp}"
        total = sum(-(-h // self.tile) for h, _ in self.shapes)
        done = iter(range(1, total + 1))

        def tick(level: int) -> None:
            report(Progress(SLIDE_STAGE, next(done), total, f"level {level}"))

        with contextlib.ExitStack() as stack:
            tif = stack.enter_context(tifffile.TiffWriter(path, bigtiff=True))
            below = [
                stack.enter_context(_RowFile(self.scratch / f"level{k}.raw", (*shape, 3)))
                for k, shape in enumerate(self.shapes[1:], 1)
            ] + [None]
            for k, shape in enumerate(self.shapes):
                tiles = (
                    self._level0(below[0], tick) if k == 0 else self._lower(below[k - 1], below[k], k, tick)
                )
                extra = {"description": description} if k == 0 else {"subfiletype": 1}
                tif.write(
                    tiles,
                    shape=(*shape, 3),
                    dtype=np.uint8,
                    photometric="rgb",
                    metadata=None,
                    **extra,
                    **options,
                )

    def _level0(self, below: _RowFile | None, tick: Callable[[int], None]) -> Iterator[np.ndarray]:
        size, tile = self.field.size, self.tile
        chunk = max(tile, _CHUNK // tile * tile)
        for y in range(0, size, tile):
            strip = np.empty((tile, -(-size // tile) * tile, 3), np.uint8)
            labels = np.empty(strip.shape[:2], np.uint8)
            for x in range(0, size, chunk):
                width = min(chunk, strip.shape[1] - x)
                labels[:, x : x + width] = self.field.labels((y, x), (tile, width), self.threshold)
                strip[:, x : x + width] = render_tissue(
                    labels[:, x : x + width], self.field.seed, (y, x), self.classes
                )
            self.truth.write(y, labels[: size - y, :size])
            # Before yielding: tifffile stops pulling after the last tile, so code after it may not run.
            if below is not None:
                _store_half(below, strip, y, size, size)
            tick(0)
            yield from _tiles(strip, tile, size, 255)

    def _lower(self, level: _RowFile, below: _RowFile | None, k: int, tick) -> Iterator[np.ndarray]:
        height, width = level.shape[:2]
        for y in range(0, height, self.tile):
            strip = level.read(y, y + self.tile)
            if below is not None:
                _store_half(below, strip, y, height, width)
            tick(k)
            yield from _tiles(_pad_rows(strip, self.tile), self.tile, width, 255)


def _store_half(below: _RowFile, strip: np.ndarray, y: int, height: int, width: int) -> None:
    """Write the 2x2 mean of the valid rows of ``strip`` (starting at row ``y``) into ``below``."""
    rows = min(strip.shape[0], height - y) // 2
    if rows > 0:
        below.write(y // 2, _halve(strip, rows, width // 2))


def _pad_rows(strip: np.ndarray, tile: int, fill: int = 255) -> np.ndarray:
    if strip.shape[0] == tile:
        return strip
    padded = np.full((tile, *strip.shape[1:]), fill, strip.dtype)
    padded[: strip.shape[0]] = strip
    return padded


def _write_labels(path: Path, truth: _RowFile, tile: int, meta: dict, report) -> None:
    """Write ``truth`` as deflated uint8 tiles; classes, palette and mpp go in the description."""
    import tifffile

    (height, width), rows = truth.shape, -(-truth.shape[0] // tile)
    fill = int(meta["background_index"])

    def tiles() -> Iterator[np.ndarray]:
        for r, y in enumerate(range(0, height, tile)):
            report(Progress(LABELS_STAGE, r + 1, rows))
            yield from _tiles(_pad_rows(truth.read(y, y + tile), tile, fill), tile, width, fill)

    res = 1e4 / meta["mpp"]
    options = {"compression": "zlib", "compressionargs": {"level": 6}, "metadata": None}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(
            tiles(),
            shape=truth.shape,
            dtype=np.uint8,
            tile=(tile, tile),
            photometric="minisblack",
            resolution=(res, res),
            resolutionunit="CENTIMETER",
            description=json.dumps(meta),
            **options,
        )


def _in_thread(work: Callable[[Callable[[Progress], None]], None]) -> Iterator[Progress]:
    """Run ``work(report)`` in a thread and yield the events it reports, then re-raise its errors.

    tifffile consumes tile iterators inside one ``write`` call; the thread lets the job still
    yield progress as tiles are made. Closing the generator early stops the work at the next event.
    """
    events: queue.Queue = queue.Queue(maxsize=64)
    stop = threading.Event()
    done = object()
    failure: list[BaseException] = []

    def report(event: Progress) -> None:
        if stop.is_set():
            raise _Cancelled
        events.put(event)

    def target() -> None:
        try:
            work(report)
        except _Cancelled:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer below
            failure.append(exc)
        finally:
            events.put(done)

    thread = threading.Thread(target=target, name="pbip-synth-slide", daemon=True)
    thread.start()
    try:
        while (event := events.get()) is not done:
            yield event
    finally:
        stop.set()
        while thread.is_alive():
            try:
                events.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()
    if failure:
        raise failure[0]


class _Cancelled(Exception):
    """The consumer of a slide job stopped early."""


def write_synthetic_slide(
    out: str | os.PathLike,
    size: int = 20000,
    seed: int = 0,
    mpp: float = 0.5,
    tile: int = 512,
    compression: str = "jpeg",
    overwrite: bool = False,
    labels_out: str | os.PathLike | None = None,
) -> SynthSlide:
    """Write a synthetic pyramidal H&E slide and its ground-truth label image.

    The slide (``size`` x ``size`` pixels at ``mpp`` um/px, pyramid halved until below 1000 px,
    at least 3 levels) opens in OpenSlide as a generic tiled TIFF and in tifffile as
    ``series[0].levels``. The labels (uint8, deflate, ``<stem>.labels.tif`` beside the slide unless
    ``labels_out`` is given) use 0..3 for tumor, stroma, lymphocyte, necrosis and 4 for glass;
    their TIFF description holds the classes, palette and mpp as JSON. Texture is drawn at the
    scale of a 20x (about 0.5 um/px) scan whatever ``mpp`` says; ``mpp`` sets the metadata and the
    physical size of class regions. Memory stays bounded: rows of tiles are rendered one at a time.

    Args:
        out: slide path (``.tif``); written atomically.
        size: side of level 0 in pixels.
        seed: random seed; the same arguments give the same pixels.
        mpp: micrometres per pixel at level 0.
        tile: TIFF tile side (multiple of 16).
        compression: ``"jpeg"`` (quality 90) or ``"deflate"`` for the slide tiles.
        overwrite: replace existing outputs.
        labels_out: where to write the label image instead of beside the slide.

    Returns:
        A :class:`SynthSlide` describing both files.

    Raises:
        OutputExistsError: an output exists and ``overwrite`` is false.
        SettingsError: an argument is out of range.
    """
    return run(synthetic_slide_job(out, size, seed, mpp, tile, compression, overwrite, labels_out))
