"""Procedural H&E-like tissue: per-class texture rendered through a Beer-Lambert stain model.

Each tissue style returns haematoxylin and eosin concentration fields for a region; the renderer
mixes them with the stain's optical-density vectors and converts to RGB through a lookup table.
Everything is a function of ``(seed, global position)`` (see :mod:`.texture`), so any region of
a virtual slide renders identically whether it is drawn alone or as part of a larger one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..settings import check
from . import texture as tx

#: Tissue styles in their default class order, and their display colours (masks, overlays).
STYLE_COLORS: dict[str, tuple[int, int, int]] = {
    "tumor": (205, 51, 51),
    "stroma": (0, 170, 60),
    "lymphocyte": (65, 105, 225),
    "necrosis": (255, 165, 0),
}
DEFAULT_STYLES: tuple[str, ...] = tuple(STYLE_COLORS)
BACKGROUND_COLOR = (255, 255, 255)

# Ruifrok & Johnston optical-density vectors (R, G, B) of haematoxylin and eosin.
_H = np.array([0.650, 0.704, 0.286])
_E = np.array([0.072, 0.990, 0.105])
_OD_STEPS = 256  # optical density resolution of the RGB lookup table
_BLOCK = 512  # classes are drawn over their bounding box within blocks of this size
_LUT = np.round(255.0 * np.exp(-np.arange(6 * _OD_STEPS) / _OD_STEPS)).astype(np.uint8)


@dataclass(frozen=True)
class Region:
    """Where a style draws: the seed, the global top-left pixel and the shape."""

    seed: int
    origin: tuple[int, int]
    shape: tuple[int, int]

    def noise(self, layer: int, period: float, octaves: int = 1) -> np.ndarray:
        """Smooth noise in [0, 1] over the region."""
        return tx.fbm(self.seed, layer, self.origin, self.shape, period, octaves)

    def blobs(self, layer: int, period: float) -> np.ndarray:
        """Rounded noise for thresholding into shapes (see :func:`.texture.blobs`)."""
        return tx.blobs(self.seed, layer, self.origin, self.shape, period)

    def at(self, layer: int, ys: np.ndarray, xs: np.ndarray, period: float) -> np.ndarray:
        """The same smooth noise (one octave) at global points."""
        return tx.value_noise_at(self.seed, layer * 16, ys, xs, period)

    def scatter(self, layer: int, cell: int, slots: int, margin: int):
        """Candidate points near the region (see :func:`.texture.scatter`)."""
        return tx.scatter(self.seed, layer, self.origin, self.shape, cell, slots, margin)

    def splat(
        self, ellipses: tx.Ellipses, roughness: np.ndarray | None = None, bound: float = 0.0
    ) -> np.ndarray:
        """Coverage of ``ellipses`` over the region; ``roughness`` within +-``bound`` bumps outlines."""
        return tx.splat(ellipses, self.origin, self.shape, roughness=roughness, rough_bound=bound)


Style = Callable[[Region], tuple[np.ndarray, np.ndarray]]


def _nuclei(
    r: Region, layer: int, cell: int, slots: int, keep: Callable | float, size: tuple[float, float], **kw
) -> tx.Ellipses:
    """Random nuclei near the region.

    Each ``cell`` x ``cell`` block has ``slots`` candidates, each kept with probability ``keep``
    (a number or a function of the centre); ``size`` is the range of the long semi-axis and the
    keywords ``aspect``, ``darkness`` (ranges) and ``direction`` (a function) shape the rest.
    """
    cy, cx, keys = r.scatter(layer, cell, slots, margin=int(size[1]) + 3)
    u = tx.draws(keys, 6)
    kept = u[0] < (keep(cy, cx) if callable(keep) else keep)
    cy, cx, u = cy[kept], cx[kept], u[:, kept]

    def spread(values: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
        return bounds[0] + (bounds[1] - bounds[0]) * values

    a = spread(u[1], size)
    b = a * spread(u[2], kw.get("aspect", (0.7, 1.0)))
    dy, dx = kw["direction"](cy, cx) if "direction" in kw else tx.unit_vector(u[3], u[4])
    weight = spread(u[5], kw.get("darkness", (1.0, 1.5)))
    return tx.Ellipses(cy, cx, a, b, dy, dx, weight)


def _tumor(r: Region) -> tuple[np.ndarray, np.ndarray]:
    """Dense sheets of large pleomorphic nuclei with vesicular chromatin, purple cytoplasm, lumens."""
    nests = lambda y, x: 0.3 + 0.7 * r.at(101, y, x, 70.0)  # noqa: E731
    ell = _nuclei(r, 102, 26, 4, nests, (5.5, 10.0), aspect=(0.6, 0.95), darkness=(0.55, 1.1))
    rough = 0.35 * (r.noise(103, 3.0) - 0.5)
    cover = np.minimum(r.splat(ell, rough, 0.175), 1.4)
    chromatin = 0.45 + 0.9 * r.noise(104, 2.2)
    h = 0.16 + 0.10 * r.noise(105, 14.0) + cover * chromatin
    e = (0.30 + 0.22 * r.noise(106, 9.0)) * (1.0 - 0.4 * np.minimum(cover, 1.0))
    lumen = np.clip((r.blobs(107, 40.0) - 0.7) * 8.0, 0.0, 0.9)
    return h * (1.0 - lumen), e * (1.0 - lumen)


def _stroma(r: Region) -> tuple[np.ndarray, np.ndarray]:
    """Wavy pink collagen fibres with pale gaps and sparse spindle nuclei aligned with them."""
    pitch, amp, period = 8.0, 16.0, 150.0
    ang = tx.uniform(r.seed, 301) * np.pi
    gy, gx = np.sin(ang) / pitch, np.cos(ang) / pitch  # gradient of the straight part of the phase
    y = np.arange(r.origin[0], r.origin[0] + r.shape[0], dtype=np.float64)[:, None]
    x = np.arange(r.origin[1], r.origin[1] + r.shape[1], dtype=np.float64)[None, :]
    phase = y * gy + x * gx + amp * (r.noise(302, period) + r.noise(303, period * 0.71))
    phase = phase + 0.6 * r.noise(309, 12.0)
    wave = np.abs(2.0 * (phase - np.floor(phase)) - 1.0).astype(np.float32)
    fibre = wave * wave * (3.0 - 2.0 * wave)
    strength = np.clip(r.noise(304, 18.0, 2) * 1.6 - 0.3, 0.0, 1.0)
    loose = np.clip((r.blobs(305, 60.0) - 0.65) * 4.0, 0.0, 0.7)
    e = (0.28 + 0.45 * fibre * strength + 0.1 * r.noise(310, 4.0)) * (1.0 - loose)
    h = 0.06 + 0.05 * r.noise(306, 25.0)

    def along_fibres(cy: np.ndarray, cx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        def ph(yy, xx):
            return amp * (r.at(302, yy, xx, period) + r.at(303, yy, xx, period * 0.71))

        dpy = gy + (ph(cy + 1.0, cx) - ph(cy - 1.0, cx)) / 2.0
        dpx = gx + (ph(cy, cx + 1.0) - ph(cy, cx - 1.0)) / 2.0
        norm = np.sqrt(dpy * dpy + dpx * dpx) + 1e-9
        return dpx / norm, -dpy / norm

    ell = _nuclei(
        r, 307, 40, 2, 0.35, (6.0, 11.0), aspect=(0.18, 0.3), darkness=(0.9, 1.4), direction=along_fibres
    )
    cover = np.minimum(r.splat(ell), 1.4)
    return h + cover * (0.8 + 0.4 * r.noise(308, 2.5)), e * (1.0 - 0.3 * np.minimum(cover, 1.0))


def _lymphocyte(r: Region) -> tuple[np.ndarray, np.ndarray]:
    """Crowded small round dark-blue nuclei with little pale cytoplasm between them."""
    crowd = lambda y, x: 0.5 + 0.5 * r.at(201, y, x, 90.0)  # noqa: E731
    ell = _nuclei(r, 202, 16, 5, crowd, (3.0, 4.4), aspect=(0.8, 1.0), darkness=(1.4, 2.0))
    cover = np.minimum(r.splat(ell, 0.12 * (r.noise(203, 2.5) - 0.5), 0.06), 2.0)
    h = 0.12 + 0.08 * r.noise(204, 12.0) + cover * (0.85 + 0.3 * r.noise(205, 2.0))
    e = (0.22 + 0.12 * r.noise(206, 10.0, 2)) * (1.0 - 0.5 * np.minimum(cover, 1.0))
    return h, e


def _necrosis(r: Region) -> tuple[np.ndarray, np.ndarray]:
    """Pale pink-purple granular debris with karyorrhectic fragments and faint ghost nuclei."""
    dust = _nuclei(r, 402, 14, 4, 0.45, (0.8, 2.2), aspect=(0.5, 1.0), darkness=(0.5, 1.4))
    ghosts = _nuclei(r, 403, 32, 2, 0.5, (4.0, 7.0), aspect=(0.6, 1.0), darkness=(0.12, 0.3))
    frag = np.minimum(r.splat(dust), 1.4) + r.splat(ghosts)
    grain = r.noise(404, 2.0)
    pale = np.clip((r.blobs(405, 70.0) - 0.6) * 3.0, 0.0, 0.55)
    h = 0.16 + 0.14 * r.noise(406, 25.0, 2) + frag + 0.08 * grain
    e = 0.32 + 0.2 * r.noise(407, 8.0, 3) + 0.12 * grain
    return h * (1.0 - pale), e * (1.0 - pale)


STYLES: dict[str, Style] = {
    "tumor": _tumor,
    "stroma": _stroma,
    "lymphocyte": _lymphocyte,
    "necrosis": _necrosis,
}


def check_styles(styles: Sequence[str]) -> tuple[str, ...]:
    """Validate tissue style names (class names of synthetic data) and return them as a tuple."""
    styles = tuple(styles)
    unknown = [s for s in styles if s not in STYLES]
    check(
        not unknown, "classes", styles, f"names among {sorted(STYLES)}", "synthetic data can only draw these"
    )
    check(len(set(styles)) == len(styles) and len(styles) > 0, "classes", styles, "distinct, at least one")
    return styles


def _stain(seed: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per-seed stain: jittered H and E density vectors and overall strengths."""
    u = tx.uniform(seed, 900, np.arange(8))
    h_vec = _H + 0.08 * (u[0:3] - 0.5)
    e_vec = _E + 0.08 * (u[3:6] - 0.5)
    h_vec = np.clip(h_vec, 0.02, None) / np.linalg.norm(h_vec)
    e_vec = np.clip(e_vec, 0.02, None) / np.linalg.norm(e_vec)
    return h_vec, e_vec, 0.85 + 0.3 * float(u[6]), 0.85 + 0.3 * float(u[7])


def _paint_block(
    labels: np.ndarray, seed: int, origin: tuple[int, int], styles: tuple[str, ...], fields: list[np.ndarray]
) -> None:
    """Fill the stain fields of one block, each class computed over its bounding box only."""
    n = len(styles)
    for index in np.flatnonzero(np.bincount(labels.ravel(), minlength=n + 1)):
        hit = labels == index
        rows, cols = np.flatnonzero(hit.any(axis=1)), np.flatnonzero(hit.any(axis=0))
        ys, xs = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
        region = Region(
            seed, (origin[0] + ys.start, origin[1] + xs.start), (ys.stop - ys.start, xs.stop - xs.start)
        )
        if index == n:
            parts = (0.0, 0.0, 0.03 + 0.025 * region.noise(950, 40.0))
        else:
            h, e = STYLES[styles[index]](region)
            parts = (h, e, 0.04)
        for field, part in zip(fields, parts, strict=True):
            np.copyto(field[ys, xs], part, where=hit[ys, xs])


def render_tissue(
    labels: np.ndarray,
    seed: int,
    origin: tuple[int, int] = (0, 0),
    styles: Sequence[str] = DEFAULT_STYLES,
) -> np.ndarray:
    """Paint H&E-like tissue for a label map.

    Args:
        labels: (H, W) integer label map: ``i`` draws ``styles[i]``, ``len(styles)`` draws white
            background (glass).
        seed: random seed; the stain colours and all texture follow from it.
        origin: global (y, x) of ``labels[0, 0]``; rendering neighbouring or overlapping regions
            with the same seed gives identical pixels where they overlap.
        styles: tissue style per class index (see :data:`STYLES`).

    Returns:
        (H, W, 3) uint8 RGB image.

    Raises:
        SettingsError: labels outside ``0..len(styles)`` or an unknown style name.
    """
    styles = check_styles(styles)
    labels = np.asarray(labels)
    check(labels.ndim == 2, "labels.shape", labels.shape, "a 2-D (H, W) label map")
    check(np.issubdtype(labels.dtype, np.integer), "labels.dtype", str(labels.dtype), "integer class indices")
    n = len(styles)
    if labels.size:
        lo, hi = int(labels.min()), int(labels.max())
        check(lo >= 0 and hi <= n, "labels range", (lo, hi), f"indices 0..{n} ({n} = background)")
    h_vec, e_vec, h_gain, e_gain = _stain(seed)
    fields = [np.zeros(labels.shape, np.float32) for _ in range(3)]  # haematoxylin, eosin, neutral
    for by in range(0, labels.shape[0], _BLOCK):
        for bx in range(0, labels.shape[1], _BLOCK):
            block = (slice(by, by + _BLOCK), slice(bx, bx + _BLOCK))
            _paint_block(
                labels[block], seed, (origin[0] + by, origin[1] + bx), styles, [f[block] for f in fields]
            )
    if fields[0].size:
        fields[0] *= h_gain * (0.85 + 0.3 * tx.value_noise(seed, 951 * 16, origin, labels.shape, 300.0))
        fields[1] *= e_gain * (0.85 + 0.3 * tx.value_noise(seed, 952 * 16, origin, labels.shape, 300.0))
    noise = 0.035 * tx.pixel_noise(seed, 953, origin, labels.shape)
    rgb = np.empty((*labels.shape, 3), np.uint8)
    for channel in range(3):
        od = fields[2] + noise
        od += fields[0] * np.float32(h_vec[channel])
        od += fields[1] * np.float32(e_vec[channel])
        steps = np.clip(od * np.float32(_OD_STEPS) + np.float32(0.5), 0, len(_LUT) - 1).astype(np.intp)
        rgb[..., channel] = _LUT[steps]
    return rgb
