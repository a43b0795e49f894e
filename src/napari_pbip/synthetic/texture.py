"""Position-consistent random primitives for synthetic tissue: hashes, value noise, ellipse splats.

Every random quantity here is a pure function of ``(seed, layer, global position)``: a value at
pixel ``(y, x)`` does not depend on which region is being rendered, so a slide rendered tile by
tile equals the same slide rendered at once, bit for bit. Random numbers come from a vectorised
SplitMix64 hash instead of a stateful generator for that reason.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
# Splat weights are rounded to multiples of 1/_QUANT so that float sums are exact whatever the order.
_QUANT = 1024.0
# Fine noise (periods below _FINE pixels) takes lattice values from a periodic table of _TABLE
# cells instead of hashing every lattice point; the repeat (hundreds of pixels) is invisible.
_FINE = 6.0
_TABLE = 251


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wraps modulo 2**64)."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


def _as_u64(key) -> np.ndarray:
    return np.asarray(key).astype(np.int64).astype(np.uint64)


def hash_u64(*keys) -> np.ndarray:
    """Hash integer keys (broadcast against each other) to uniformly distributed uint64 values."""
    with np.errstate(over="ignore"):
        h = _mix(_as_u64(keys[0]))
        for key in keys[1:]:
            h = _mix(h ^ _as_u64(key))
    return h


def uniform(*keys) -> np.ndarray:
    """Uniform floats in [0, 1) (float64) that depend only on the integer ``keys``."""
    return (hash_u64(*keys) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _smooth(f: np.ndarray) -> np.ndarray:
    return f * f * (3.0 - 2.0 * f)


def _axis(start: int, n: int, spacing: float, smooth: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Lattice cell index and interpolation weight of ``n`` pixels from global ``start``."""
    pos = (start + np.arange(n, dtype=np.float64)) / spacing
    index = np.floor(pos).astype(np.int64)
    frac = pos - index
    return index, (_smooth(frac) if smooth else frac).astype(np.float32)


def _separable(lattice_fn, iy: np.ndarray, wy: np.ndarray, ix: np.ndarray, wx: np.ndarray) -> np.ndarray:
    """Interpolate lattice values (``lattice_fn(rows, cols)``) separably onto the pixel grid.

    Pixel rows between the same two lattice rows are filled with one broadcast operation each,
    which avoids gathering full-size arrays.
    """
    ry = np.arange(iy[0], iy[-1] + 2)
    rx = np.arange(ix[0], ix[-1] + 2)
    lattice = lattice_fn(ry, rx)
    jx = ix - rx[0]
    rows = lattice[:, jx]
    rows += (lattice[:, jx + 1] - rows) * wx
    step = rows[1:] - rows[:-1]
    bounds = np.flatnonzero(np.diff(iy)) + 1
    jy = iy - ry[0]
    if len(bounds) > len(iy) // 8:  # fine noise: a gather beats a Python loop over short runs
        out = rows[jy]
        out += step[jy] * wy[:, None]
        return out
    out = np.empty((len(iy), len(ix)), np.float32)
    for r0, r1 in zip(np.r_[0, bounds], np.r_[bounds, len(iy)], strict=True):
        j = jy[r0]
        np.multiply(wy[r0:r1, None], step[j], out=out[r0:r1])
        out[r0:r1] += rows[j]
    return out


@functools.lru_cache(maxsize=64)
def _table(seed: int, layer: int, size: int = _TABLE) -> np.ndarray:
    """A periodic table of uniform values (cached: a pure function of its arguments, read only)."""
    table = uniform(seed, layer, np.arange(size)[:, None], np.arange(size)[None, :]).astype(np.float32)
    table.setflags(write=False)
    return table


def value_noise(
    seed: int, layer: int, origin: tuple[int, int], shape: tuple[int, int], period: float, angle: float = 0.0
) -> np.ndarray:
    """Smooth value noise in [0, 1] on the pixel grid of a region.

    Args:
        seed: random seed.
        layer: independent noise layer (each texture component uses its own).
        origin: global (y, x) of the region's top-left pixel.
        shape: (height, width) of the region.
        period: lattice spacing in pixels (the size of the blobs).
        angle: rotation of the lattice in radians; 0 is separable and fastest, other angles hide
            the lattice's axis-aligned look when the noise is thresholded into shapes. Rotated
            noise is evaluated every 4 pixels (on the global grid) and interpolated linearly, so
            keep its period well above 4.

    Returns:
        float32 array of ``shape``.
    """
    (y0, x0), (h, w) = origin, shape
    if h == 0 or w == 0:
        return np.zeros(shape, np.float32)
    if angle:
        step = 4
        iy, wy = _axis(y0, h, step, smooth=False)
        ix, wx = _axis(x0, w, step, smooth=False)
        return _separable(
            lambda ry, rx: _rotated_points(seed, layer, ry * step, rx * step, period, angle), iy, wy, ix, wx
        )
    iy, wy = _axis(y0, h, period)
    ix, wx = _axis(x0, w, period)
    return _separable(
        lambda ry, rx: uniform(seed, layer, ry[:, None], rx[None, :]).astype(np.float32), iy, wy, ix, wx
    )


def _rotated_points(
    seed: int, layer: int, ys: np.ndarray, xs: np.ndarray, period: float, angle: float
) -> np.ndarray:
    """Value noise on a rotated lattice at the grid of global points ``ys`` x ``xs``."""
    # Rounded so that the same angle always gives the same products, whatever numpy's trig path.
    cos, sin = round(float(np.cos(angle)), 12), round(float(np.sin(angle)), 12)
    y = ys.astype(np.float64)[:, None]
    x = xs.astype(np.float64)[None, :]
    return value_noise_at(seed, layer, (y * cos - x * sin), (x * cos + y * sin), period).astype(np.float32)


def grid_points(origin: tuple[int, int], shape: tuple[int, int], step: int) -> tuple[np.ndarray, np.ndarray]:
    """Global rows and columns, multiples of ``step``, of a coarse grid covering a region."""
    (y0, x0), (h, w) = origin, shape
    return (
        np.arange(y0 // step, (y0 + h - 1) // step + 2) * step,
        np.arange(x0 // step, (x0 + w - 1) // step + 2) * step,
    )


def upsample(grid: np.ndarray, origin: tuple[int, int], shape: tuple[int, int], step: int) -> np.ndarray:
    """Linear interpolation onto a region of values sampled at :func:`grid_points` (float32)."""
    iy, wy = _axis(origin[0], shape[0], step, smooth=False)
    ix, wx = _axis(origin[1], shape[1], step, smooth=False)
    return _separable(lambda ry, rx: grid.astype(np.float32, copy=False), iy, wy, ix, wx)


def blobs(
    seed: int, layer: int, origin: tuple[int, int], shape: tuple[int, int], period: float
) -> np.ndarray:
    """Rounder noise for thresholding into shapes: two lattices at different angles and periods.

    Centred on 0.5 with about the spread of :func:`value_noise` (values may leave [0, 1] slightly).
    """
    a = value_noise(seed, layer * 16, origin, shape, period)
    b = value_noise(seed, layer * 16 + 1, origin, shape, period * 0.83, angle=0.61)
    return np.float32(0.5) + (a + b - np.float32(1.0)) * np.float32(0.7071)


def value_noise_at(seed: int, layer: int, ys: np.ndarray, xs: np.ndarray, period: float) -> np.ndarray:
    """:func:`value_noise` evaluated at arbitrary (possibly fractional) global points."""
    ly = np.asarray(ys, dtype=np.float64) / period
    lx = np.asarray(xs, dtype=np.float64) / period
    iy, ix = np.floor(ly).astype(np.int64), np.floor(lx).astype(np.int64)
    wy, wx = _smooth(ly - iy), _smooth(lx - ix)
    v00, v01 = uniform(seed, layer, iy, ix), uniform(seed, layer, iy, ix + 1)
    v10, v11 = uniform(seed, layer, iy + 1, ix), uniform(seed, layer, iy + 1, ix + 1)
    top = v00 * (1.0 - wx) + v01 * wx
    bottom = v10 * (1.0 - wx) + v11 * wx
    return top * (1.0 - wy) + bottom * wy


def fbm(
    seed: int, layer: int, origin: tuple[int, int], shape: tuple[int, int], period: float, octaves: int = 2
) -> np.ndarray:
    """Sum of ``octaves`` value-noise layers, each half the period and weight of the last; in [0, 1]."""
    total = np.zeros(shape, np.float32)
    weight, norm = 1.0, 0.0
    for k in range(octaves):
        total += weight * value_noise(seed, layer * 16 + k, origin, shape, period / 2**k)
        norm += weight
        weight *= 0.5
    return total / norm


def pixel_noise(seed: int, layer: int, origin: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Per-pixel noise in [-0.5, 0.5) (float32, triangular), a function of global position.

    Drawn from two periodic tables (256 and 241 pixels) rather than a hash per pixel, which is
    much faster; at the amplitude of sensor noise the long joint period is invisible.
    """
    (y0, x0), (h, w) = origin, shape
    out = np.zeros(shape, np.float32)
    for k, size in enumerate((256, 241)):  # two tables with coprime periods hide the repetition
        table = np.roll(_table(seed, layer * 2 + k, size), -(x0 % size), axis=1)
        rows = table[np.arange(y0, y0 + h) % size]
        out += np.tile(rows, (1, -(-w // size)))[:, :w]
    return (out - np.float32(1.0)) * np.float32(0.5)


@dataclass(frozen=True)
class Ellipses:
    """Random ellipses (nuclei, fragments) scattered on a global grid of cells.

    Orientation is a unit vector rather than an angle: trigonometric functions may differ in the
    last bit between numpy's vectorised and scalar paths, which would break tile consistency.

    Attributes:
        cy, cx: centres in global pixels (float64).
        a, b: semi-axes in pixels (a along the direction ``(dy, dx)``).
        dy, dx: unit vector of the long axis.
        weight: stain amount each ellipse deposits.
    """

    cy: np.ndarray
    cx: np.ndarray
    a: np.ndarray
    b: np.ndarray
    dy: np.ndarray
    dx: np.ndarray
    weight: np.ndarray

    def subset(self, keep: np.ndarray | slice) -> Ellipses:
        """The ellipses selected by ``keep``."""
        return Ellipses(*(getattr(self, f)[keep] for f in ("cy", "cx", "a", "b", "dy", "dx", "weight")))


def scatter(
    seed: int,
    layer: int,
    origin: tuple[int, int],
    shape: tuple[int, int],
    cell: int,
    slots: int,
    margin: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate points of the cells whose points can reach a region (within ``margin`` pixels).

    Each cell of ``cell`` x ``cell`` pixels holds ``slots`` candidate points at hashed positions
    (row-major by cell); callers thin them with :func:`draws` on the returned keys.

    Returns:
        (cy, cx, keys): centres (float64) and a uint64 key per point for drawing its attributes.
    """
    (y0, x0), (h, w) = origin, shape
    gy = np.arange((y0 - margin) // cell, (y0 + h + margin) // cell + 1)
    gx = np.arange((x0 - margin) // cell, (x0 + w + margin) // cell + 1)
    keys = hash_u64(seed, layer, gy[:, None, None], gx[None, :, None], np.arange(slots)[None, None, :])
    keys = keys.ravel()
    cy = np.repeat(gy * cell, len(gx) * slots) + _field(keys, 0) * cell
    cx = np.tile(np.repeat(gx * cell, slots), len(gy)) + _field(keys, 1) * cell
    near = (cy > y0 - margin) & (cy < y0 + h + margin) & (cx > x0 - margin) & (cx < x0 + w + margin)
    return cy[near], cx[near], keys[near]


def _field(bits: np.ndarray, index: int) -> np.ndarray:
    """The ``index``-th 16-bit field of 64-bit hashes as a uniform float in (0, 1)."""
    word = (bits >> np.uint64(16 * index)) & np.uint64(0xFFFF)
    return (word.astype(np.float64) + 0.5) * (1.0 / 65536)


def draws(keys: np.ndarray, count: int) -> np.ndarray:
    """``count`` independent uniforms in (0, 1) per point key, shape (count, len(keys)).

    Four 16-bit draws come from each hash, so attributes cost one hash per four.
    """
    out = np.empty((count, len(keys)))
    for group in range(-(-count // 4)):
        with np.errstate(over="ignore"):
            bits = _mix(keys ^ np.uint64(0x5851F42D4C957F2D * (group + 1) % (1 << 64)))
        for i in range(4 * group, min(count, 4 * group + 4)):
            out[i] = _field(bits, i % 4)
    return out


def unit_vector(uy: np.ndarray, ux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A direction (dy, dx) from two uniforms in (0, 1), normalised without trigonometry."""
    vy, vx = 2.0 * uy - 1.0, 2.0 * ux - 1.0
    norm = np.sqrt(vy * vy + vx * vx) + 1e-9
    return vy / norm, vx / norm


def splat(
    ellipses: Ellipses,
    origin: tuple[int, int],
    shape: tuple[int, int],
    edge: float = 1.0,
    roughness: np.ndarray | None = None,
    rough_bound: float = 0.25,
    batch: int = 1024,
) -> np.ndarray:
    """Sum of antialiased filled ellipses over a region (float32, overlapping ones add up).

    Each ellipse is drawn on a square stamp sized from its own axes, so what it adds to a pixel
    does not depend on the region or on the other ellipses; weights are rounded to 1/1024 so sums
    are exact in any order.

    Args:
        ellipses: what to draw, ideally ordered by row (as :func:`scatter` gives them).
        origin: global (y, x) of the region.
        shape: (height, width) of the region.
        edge: width in pixels of the soft edge.
        roughness: optional field of ``shape`` added to the normalised radius (bumpy outlines).
        rough_bound: roughness below ``-rough_bound`` is clipped (bounds how far outlines reach).
        batch: ellipses drawn per vectorised step (bounds memory).
    """
    h, w = shape
    out = np.zeros(h * w, np.float64)
    if len(ellipses.cy) == 0 or h == 0 or w == 0:
        return out.reshape(shape).astype(np.float32)
    slack = rough_bound if roughness is not None else 0.0
    reach = np.ceil(ellipses.a * (1.0 + slack + 0.5 * edge / ellipses.b) + 1.0).astype(np.int64)
    for size in np.unique(reach):
        group = ellipses.subset(np.flatnonzero(reach == size))
        for start in range(0, len(group.cy), batch):
            _splat_batch(
                out,
                group.subset(slice(start, start + batch)),
                origin,
                shape,
                int(size),
                edge,
                roughness,
                slack,
            )
    return out.reshape(shape).astype(np.float32)


def _splat_batch(
    out: np.ndarray,
    e: Ellipses,
    origin: tuple[int, int],
    shape: tuple[int, int],
    reach: int,
    edge: float,
    roughness: np.ndarray | None,
    slack: float,
) -> None:
    (y0, x0), (h, w) = origin, shape
    off = np.arange(-reach, reach + 1)
    ry = (np.floor(e.cy).astype(np.int64) - y0)[:, None] + off  # region rows of each stamp
    rx = (np.floor(e.cx).astype(np.int64) - x0)[:, None] + off
    dy = (ry + y0 - e.cy[:, None]).astype(np.float32)[:, :, None]
    dx = (rx + x0 - e.cx[:, None]).astype(np.float32)[:, None, :]
    cos, sin = e.dx.astype(np.float32)[:, None, None], e.dy.astype(np.float32)[:, None, None]
    along = (dx * cos + dy * sin) * (1.0 / e.a).astype(np.float32)[:, None, None]
    across = (dy * cos - dx * sin) * (1.0 / e.b).astype(np.float32)[:, None, None]
    r2 = along * along + across * across
    limit = ((1.0 + 0.5 * edge / e.b + slack) ** 2).astype(np.float32)[:, None, None]
    inside = ((ry >= 0) & (ry < h))[:, :, None] & ((rx >= 0) & (rx < w))[:, None, :]
    sel = inside & (r2 < limit)
    flat = ((ry * w)[:, :, None] + rx[:, None, :])[sel]
    if flat.size == 0:
        return
    r = np.sqrt(r2[sel])
    if roughness is not None:
        r += np.maximum(roughness.ravel()[flat], np.float32(-slack))
    b = np.broadcast_to(e.b.astype(np.float32)[:, None, None], sel.shape)[sel]
    weight = np.broadcast_to(e.weight.astype(np.float32)[:, None, None], sel.shape)[sel]
    cover = np.clip((1.0 - r) * b * np.float32(1.0 / edge) + np.float32(0.5), 0.0, 1.0) * weight
    cover = np.round(cover * np.float32(_QUANT)) * np.float32(1.0 / _QUANT)
    lo = int(flat.min())
    counts = np.bincount(flat - lo, cover.astype(np.float64))
    out[lo : lo + counts.size] += counts
