"""Position-consistent random primitives for synthetic tissue: hashes, value noise, ellipse splats.

Every random quantity here is a pure function of ``(seed, layer, global position)``: a value at
pixel ``(y, x)`` does not depend on which region is being rendered, so a slide rendered tile by
tile equals the same slide rendered at once, bit for bit. Random numbers come from a vectorised
SplitMix64 hash instead of a stateful generator for that reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
# Splat weights are rounded to multiples of 1/_QUANT so that float sums are exact whatever the order.
_QUANT = 1024.0


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
            the lattice's axis-aligned look when the noise is thresholded into shapes.

    Returns:
        float32 array of ``shape``.
    """
    if angle:
        return _rotated_noise(seed, layer, origin, shape, period, angle)
    (y0, x0), (h, w) = origin, shape
    ly = (y0 + np.arange(h, dtype=np.float64)) / period
    lx = (x0 + np.arange(w, dtype=np.float64)) / period
    iy, ix = np.floor(ly).astype(np.int64), np.floor(lx).astype(np.int64)
    wy = _smooth(ly - iy).astype(np.float32)[:, None]
    wx = _smooth(lx - ix).astype(np.float32)[None, :]
    ry = np.arange(iy[0], iy[-1] + 2) if h else np.zeros(0, np.int64)
    rx = np.arange(ix[0], ix[-1] + 2) if w else np.zeros(0, np.int64)
    lattice = uniform(seed, layer, ry[:, None], rx[None, :]).astype(np.float32)
    jx = ix - (rx[0] if w else 0)
    rows = lattice[:, jx] * (1.0 - wx) + lattice[:, jx + 1] * wx
    jy = iy - (ry[0] if h else 0)
    return rows[jy] * (1.0 - wy) + rows[jy + 1] * wy


def _rotated_noise(
    seed: int, layer: int, origin: tuple[int, int], shape: tuple[int, int], period: float, angle: float
) -> np.ndarray:
    (y0, x0), (h, w) = origin, shape
    if h == 0 or w == 0:
        return np.zeros(shape, np.float32)
    # Rounded so that the same angle always gives the same products, whatever numpy's trig path.
    cos, sin = round(float(np.cos(angle)), 12), round(float(np.sin(angle)), 12)
    y = (y0 + np.arange(h, dtype=np.float64))[:, None]
    x = (x0 + np.arange(w, dtype=np.float64))[None, :]
    lu = (x * cos + y * sin) / period
    lv = (y * cos - x * sin) / period
    iu, iv = np.floor(lu).astype(np.int64), np.floor(lv).astype(np.int64)
    wu = _smooth(lu - iu).astype(np.float32)
    wv = _smooth(lv - iv).astype(np.float32)
    u0, v0 = int(iu.min()), int(iv.min())
    ru, rv = np.arange(u0, int(iu.max()) + 2), np.arange(v0, int(iv.max()) + 2)
    lattice = uniform(seed, layer, rv[:, None], ru[None, :]).astype(np.float32)
    iu -= u0
    iv -= v0
    top = lattice[iv, iu] * (1.0 - wu) + lattice[iv, iu + 1] * wu
    bottom = lattice[iv + 1, iu] * (1.0 - wu) + lattice[iv + 1, iu + 1] * wu
    return top * (1.0 - wv) + bottom * wv


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
    """Independent per-pixel uniform noise in [-0.5, 0.5) (float32), a function of global position."""
    (y0, x0), (h, w) = origin, shape
    ys = np.arange(y0, y0 + h, dtype=np.int64)[:, None]
    xs = np.arange(x0, x0 + w, dtype=np.int64)[None, :]
    bits = hash_u64(seed, layer, ys * np.int64(0x1F1F1F1F) + xs) >> np.uint64(40)
    return bits.astype(np.float32) * np.float32(1.0 / (1 << 24)) - np.float32(0.5)


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

    Each cell of ``cell`` x ``cell`` pixels holds ``slots`` candidate points at hashed positions;
    callers thin them with the returned uniforms to reach the density they want.

    Returns:
        (cy, cx, keys): centres (float64) and a uint64 key per point for drawing its attributes.
    """
    (y0, x0), (h, w) = origin, shape
    cy0, cy1 = (y0 - margin) // cell, (y0 + h + margin) // cell
    cx0, cx1 = (x0 - margin) // cell, (x0 + w + margin) // cell
    gy, gx, k = np.meshgrid(
        np.arange(cy0, cy1 + 1), np.arange(cx0, cx1 + 1), np.arange(slots), indexing="ij", sparse=False
    )
    keys = hash_u64(seed, layer, gy.ravel(), gx.ravel(), k.ravel())
    cy = gy.ravel() * cell + _unit(keys, 1) * cell
    cx = gx.ravel() * cell + _unit(keys, 2) * cell
    near = (cy > y0 - margin) & (cy < y0 + h + margin) & (cx > x0 - margin) & (cx < x0 + w + margin)
    return cy[near], cx[near], keys[near]


def _unit(keys: np.ndarray, draw: int) -> np.ndarray:
    return (hash_u64(keys, draw) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def draw(keys: np.ndarray, index: int, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """The ``index``-th uniform draw in [low, high) attached to each point key."""
    return low + (high - low) * _unit(keys, 16 + index)


def unit_vectors(keys: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    """A random direction (dy, dx) per point key, normalised without trigonometry."""
    vy, vx = draw(keys, index, -1.0, 1.0), draw(keys, index + 1, -1.0, 1.0)
    norm = np.sqrt(vy * vy + vx * vx) + 1e-9
    return vy / norm, vx / norm


def splat(
    ellipses: Ellipses,
    origin: tuple[int, int],
    shape: tuple[int, int],
    edge: float = 1.0,
    roughness: np.ndarray | None = None,
    batch: int = 4096,
) -> np.ndarray:
    """Sum of antialiased filled ellipses over a region (float32, overlapping ones add up).

    Args:
        ellipses: what to draw.
        origin: global (y, x) of the region.
        shape: (height, width) of the region.
        edge: width in pixels of the soft edge.
        roughness: optional field of ``shape`` added to the normalised radius (bumpy outlines).
        batch: ellipses drawn per vectorised step (bounds memory).
    """
    (y0, x0), (h, w) = origin, shape
    out = np.zeros(h * w, np.float64)
    if len(ellipses.cy) == 0:
        return out.reshape(shape).astype(np.float32)
    reach = int(np.ceil(float(ellipses.a.max()) + edge + 1.0))
    off = np.arange(-reach, reach + 1)
    for start in range(0, len(ellipses.cy), batch):
        e = ellipses.subset(slice(start, start + batch))
        iy = np.floor(e.cy).astype(np.int64)[:, None, None] + off[None, :, None]
        ix = np.floor(e.cx).astype(np.int64)[:, None, None] + off[None, None, :]
        dy = (iy - e.cy[:, None, None]).astype(np.float32)
        dx = (ix - e.cx[:, None, None]).astype(np.float32)
        cos = e.dx.astype(np.float32)[:, None, None]
        sin = e.dy.astype(np.float32)[:, None, None]
        a = e.a.astype(np.float32)[:, None, None]
        b = e.b.astype(np.float32)[:, None, None]
        r = np.sqrt(((dx * cos + dy * sin) / a) ** 2 + ((dy * cos - dx * sin) / b) ** 2)
        inside = (iy >= y0) & (iy < y0 + h) & (ix >= x0) & (ix < x0 + w)
        ry, rx = np.clip(iy - y0, 0, h - 1), np.clip(ix - x0, 0, w - 1)
        if roughness is not None:
            r = r + roughness[ry, rx]
        cover = np.clip((1.0 - r) * b / edge + 0.5, 0.0, 1.0) * e.weight.astype(np.float32)[:, None, None]
        cover = np.round(cover * _QUANT) / _QUANT
        sel = inside & (cover > 0)
        flat = np.broadcast_to(ry * w + rx, sel.shape)[sel]
        out += np.bincount(flat, cover[sel].astype(np.float64), minlength=h * w)
    return out.reshape(shape).astype(np.float32)
