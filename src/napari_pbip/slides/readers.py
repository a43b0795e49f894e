"""Lazy whole-slide images as multiscale dask pyramids with a physical resolution per level.

``open_slide(path)`` picks a backend by format (tifffile, OpenSlide, OME-Zarr, plain image) and
returns a :class:`Slide`. A ``Slide`` pickles as its :class:`SlideSource` (path, backend, um/px
override), so dask tasks and worker processes reopen the file themselves; file handles never
travel.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SlideError, UnreadableRegionError
from . import _backends
from ._backends import SUPPORTED, get_reader, plausible_mpp


@dataclass(frozen=True)
class SlideSource:
    """What a worker needs to reopen a slide: the file, its backend and an optional um/px override."""

    path: str
    backend: str
    mpp: float | None = None

    def open(self) -> Slide:
        """Open (or reuse this process's handle on) the slide."""
        return Slide(self)


class _LazyLevel:
    """Array-like over one level for ``dask.array.from_array``; pickles as (source, level)."""

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, source: SlideSource, level: int, shape: tuple[int, int]):
        self.source, self.level = source, level
        self.shape = (shape[0], shape[1], 3)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        ys, xs = key[0].indices(self.shape[0]), key[1].indices(self.shape[1])
        block = get_reader(self.source.path, self.source.backend).read(self.level, ys[0], ys[1], xs[0], xs[1])
        return block[(slice(None), slice(None), *key[2:3])]


class Slide:
    """A whole-slide image: lazy levels, um/px per level, region reads at a physical resolution.

    Attributes:
        source: picklable description used to reopen the slide in other processes.
        path: the slide file (or zarr folder).
        backend: "tifffile", "openslide", "zarr" or "image".
        shapes: (height, width) of every level, finest first.
        mpp: um/px of every level, finest first.
        metadata: format details (vendor properties, compression, description).
    """

    def __init__(self, source: SlideSource):
        reader = get_reader(source.path, source.backend)
        self.source = source
        self.path = Path(source.path)
        self.backend = source.backend
        self.shapes: list[tuple[int, int]] = list(reader.shapes)
        self.metadata: dict[str, Any] = dict(reader.metadata)
        mpp0 = source.mpp or reader.mpp
        if mpp0 is None:
            raise SlideError(
                f"{self.path} does not record its resolution (um/px); give it with --slide-mpp on the command line "
                f"or mpp=... in Python (e.g. 0.5 for a 20x scan, 0.25 for 40x)"
            )
        h0, w0 = self.shapes[0]
        self.mpp: list[float] = [mpp0 * (h0 / h + w0 / w) / 2 for h, w in self.shapes]
        self.tile = int(reader.tile)

    def __reduce__(self):
        return (Slide, (self.source,))

    def __repr__(self) -> str:
        return f"Slide({str(self.path)!r}, backend={self.backend!r}, shape={self.shapes[0]}, mpp={self.mpp[0]:.4g})"

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of level 0 in pixels."""
        return self.shapes[0]

    @cached_property
    def levels(self) -> list[Any]:
        """One lazy ``dask.array`` (y, x, 3) uint8 per level, chunked on the format's tiles."""
        import dask.array as da
        from dask.base import tokenize

        chunk = self.tile * max(1, round(1024 / max(self.tile, 1)))
        token = tokenize(self.source, _backends.stamp(self.path))
        return [
            da.from_array(
                _LazyLevel(self.source, i, shape),
                chunks=(chunk, chunk, 3),
                name=f"pbip-slide-{token}-{i}",
                meta=np.empty((0, 0, 0), np.uint8),
                asarray=False,
                fancy=False,
                lock=False,
            )
            for i, shape in enumerate(self.shapes)
        ]

    def size_at(self, mpp: float) -> tuple[int, int]:
        """(height, width) of the whole slide resampled to ``mpp`` um/px."""
        h0, w0 = self.shapes[0]
        f = self.mpp[0] / mpp
        return max(1, round(h0 * f)), max(1, round(w0 * f))

    def level_for(self, mpp: float) -> int:
        """The coarsest level at least as fine as ``mpp`` (level 0 when ``mpp`` is finer than the scan)."""
        fine = [i for i, m in enumerate(self.mpp) if m <= mpp * (1 + 1e-3)]
        return fine[-1] if fine else 0

    def read_level(
        self,
        level: int,
        y0: int,
        y1: int,
        x0: int,
        x1: int,
        fill: int = 255,
        unreadable: list[tuple[int, int, int, int]] | None = None,
    ) -> np.ndarray:
        """Pixels ``[y0:y1, x0:x1]`` of ``level``; parts outside the slide are ``fill`` (white).

        Args:
            unreadable: None: a part that cannot be decoded raises. A list: such parts are read tile
                by tile, the tiles that fail are ``fill``, and their level-0 boxes
                ``(y0, x0, y1, x1)`` are appended to the list.

        Raises:
            UnreadableRegionError: (without ``unreadable``) a tile cannot be decoded; names the slide,
                level and tile.
        """
        h, w = self.shapes[level]
        out = np.full((y1 - y0, x1 - x0, 3), fill, np.uint8)
        cy0, cy1, cx0, cx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
        if cy0 < cy1 and cx0 < cx1:
            try:
                out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = self._decode(level, cy0, cy1, cx0, cx1)
            except UnreadableRegionError:
                if unreadable is None:
                    raise
                self._read_tiles(out, level, (y0, x0), (cy0, cy1, cx0, cx1), unreadable)
        return out

    def _decode(self, level: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        reader = get_reader(self.source.path, self.source.backend)
        try:
            return reader.read(level, y0, y1, x0, x1)
        except SlideError:
            raise
        except Exception as exc:  # codecs and OpenSlide raise their own types for damaged data
            _backends.reopen_readers()  # OpenSlide keeps failing after one error until reopened
            t = int(reader.tile)
            raise UnreadableRegionError(
                f"{self.path}: level {level}, pixels y {y0}-{y1}, x {x0}-{x1} (tile rows {y0 // t}-{(y1 - 1) // t}, "
                f"columns {x0 // t}-{(x1 - 1) // t} of {t} px) cannot be decoded ({type(exc).__name__}: {exc}); "
                "the file is damaged there: re-export or re-scan the slide"
            ) from exc

    def _read_tiles(self, out, level, origin, box, unreadable) -> None:
        """Fill ``out`` tile by tile; tiles that cannot be decoded stay as they are and are listed."""
        t = int(get_reader(self.source.path, self.source.backend).tile)
        (cy0, cy1, cx0, cx1), (y0, x0) = box, origin
        f = self.shapes[0][0] / self.shapes[level][0]
        for ty in range(cy0 // t * t, cy1, t):
            for tx in range(cx0 // t * t, cx1, t):
                a, b, c, d = max(ty, cy0), min(ty + t, cy1), max(tx, cx0), min(tx + t, cx1)
                try:
                    out[a - y0 : b - y0, c - x0 : d - x0] = self._decode(level, a, b, c, d)
                except UnreadableRegionError:
                    unreadable.append((round(a * f), round(c * f), round(b * f), round(d * f)))

    def read_region(
        self,
        y: int,
        x: int,
        height: int,
        width: int,
        mpp: float,
        fill: int = 255,
        unreadable: list[tuple[int, int, int, int]] | None = None,
    ) -> np.ndarray:
        """An RGB region at ``mpp`` um/px whose top-left pixel is (``y``, ``x``) in that resolution's grid.

        The region is read from the nearest level at least as fine as ``mpp`` and resampled
        (bilinear with antialiasing); areas outside the slide are ``fill``. ``unreadable``: see
        :meth:`read_level`.

        Returns:
            uint8 array (height, width, 3).
        """
        level = self.level_for(mpp)
        (h0, w0), (h, w) = self.shapes[0], self.shapes[level]
        fy = mpp / self.mpp[0] * h / h0  # level-`level` pixels per target pixel, per axis
        fx = mpp / self.mpp[0] * w / w0
        if abs(fy - 1) < 1e-6 and abs(fx - 1) < 1e-6:
            return self.read_level(level, y, y + height, x, x + width, fill, unreadable)
        sy0, sy1, sx0, sx1 = y * fy, (y + height) * fy, x * fx, (x + width) * fx
        margin = math.ceil(max(fy, fx)) + 2  # keep the filter's support inside what is read
        iy0, ix0 = math.floor(sy0) - margin, math.floor(sx0) - margin
        src = self.read_level(
            level, iy0, math.ceil(sy1) + margin, ix0, math.ceil(sx1) + margin, fill, unreadable
        )
        return _resize(src, (height, width), (sx0 - ix0, sy0 - iy0, sx1 - ix0, sy1 - iy0))

    def read_all(
        self, mpp: float, block: int = 2048, unreadable: list[tuple[int, int, int, int]] | None = None
    ) -> np.ndarray:
        """The whole slide at ``mpp`` um/px, read block by block so memory stays bounded by the output.

        ``unreadable``: see :meth:`read_level`."""
        H, W = self.size_at(mpp)
        level = self.level_for(mpp)
        scale = mpp / self.mpp[level]
        step = max(256, int(block / max(scale, 1.0)) // 64 * 64)  # at most ~block^2 source pixels per read
        out = np.empty((H, W, 3), np.uint8)
        for y in range(0, H, step):
            for x in range(0, W, step):
                hh, ww = min(step, H - y), min(step, W - x)
                out[y : y + hh, x : x + ww] = self.read_region(y, x, hh, ww, mpp, unreadable=unreadable)
        return out


def _resize(src: np.ndarray, size: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(src).resize((size[1], size[0]), Image.Resampling.BILINEAR, box=box)
    return np.asarray(img)


def open_slide(path: str | os.PathLike, mpp: float | None = None, backend: str | None = None) -> Slide:
    """Open a whole-slide image lazily.

    Args:
        path: SVS/NDPI/MRXS/SCN/... (OpenSlide), (OME-)TIFF (tifffile), an OME-Zarr folder, or PNG/JPEG.
        mpp: level-0 resolution in um/px; overrides the file's value and is required when it has none.
        backend: force "tifffile", "openslide", "zarr" or "image" instead of choosing by format.

    Raises:
        SlideError: missing, unsupported or corrupt file, or no um/px known.
    """
    path = Path(path)
    if not path.exists():
        raise SlideError(f"slide {path} does not exist; give the path of a slide file ({SUPPORTED})")
    if mpp is not None and plausible_mpp(mpp) is None:
        raise SlideError(f"mpp={mpp!r} is not a plausible resolution; expected um/px between 0.01 and 100")
    if backend is not None and backend not in _backends.BACKENDS:
        raise SlideError(f"backend={backend!r} is unknown; expected one of {_backends.BACKENDS}")
    names = [backend] if backend else _backends.candidates(path)
    errors = []
    for name in names:
        try:
            reader = get_reader(path, name)
        except SlideError as exc:
            errors.append(str(exc))
            continue
        if reader.dtype != np.uint8:  # refused now, not at the first read after a job made its outputs
            raise SlideError(f"{path} has pixel type {reader.dtype}; expected 8-bit RGB (brightfield) images")
        if mpp is None and reader.mpp is None:
            mpp = _mpp_from_others(path, names, name)
        return Slide(SlideSource(str(path), name, mpp))
    detail = "; ".join(errors)
    raise SlideError(f"{path} is not a readable slide: {detail}. Supported formats: {SUPPORTED}")


def _mpp_from_others(path: Path, names: list[str], used: str) -> float | None:
    """um/px as another backend reads it (OpenSlide knows vendor formats tifffile does not)."""
    for name in names:
        if name == used:
            continue
        try:
            other = get_reader(path, name).mpp
        except SlideError:
            continue
        if other is not None:
            return other
    return None


def tiff_kind(path: str | os.PathLike) -> str | None:
    """What a (OME-)TIFF holds, from its header: ``"rgb"`` (a brightfield slide or image: 8-bit, 3 or 4
    samples per pixel), ``"labels"`` (one plane of integers) or None (anything else: multi-channel,
    16-bit or float images, volumes, or not a readable TIFF)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, dtype, axes = tuple(series.shape), np.dtype(series.dtype), series.axes
    except Exception:  # not a TIFF tifffile can parse: leave it to other readers
        return None
    if dtype == np.uint8 and axes.endswith("S") and shape[-1] in (3, 4) and len(shape) == 3:
        return "rgb"
    if np.issubdtype(dtype, np.integer) and len(shape) == 2 and axes == "YX":
        return "labels"
    return None


def tiff_mpp(path: str | os.PathLike) -> float | None:
    """Level-0 um/px recorded in a TIFF (OME-XML, Aperio description or resolution tags); None when absent."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return plausible_mpp(_backends.tiff_mpp(tif))
