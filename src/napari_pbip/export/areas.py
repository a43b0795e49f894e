"""Per-class area tables: pixels, square micrometres and share of the tissue, as CSV."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _atomic
from ..data.layouts import mask_index_names

COLUMNS = ("class", "pixels", "area_um2", "percent_of_tissue")


@dataclass(frozen=True)
class AreaRow:
    """One class's area; ``percent_of_tissue`` is None for background."""

    name: str
    pixels: int
    area_um2: float
    percent_of_tissue: float | None


def area_rows(class_pixels: Mapping[str, int], mpp: float, background: str = "background") -> list[AreaRow]:
    """Rows per class from pixel counts at ``mpp`` um/px, background last; percentages are of all
    non-background pixels."""
    tissue = sum(v for k, v in class_pixels.items() if k != background)
    rows = []
    order = [k for k in class_pixels if k != background] + [k for k in class_pixels if k == background]
    for name in order:
        px = class_pixels[name]
        pct = None if name == background else (100.0 * px / tissue if tissue else 0.0)
        rows.append(AreaRow(name, int(px), float(px) * mpp * mpp, pct))
    return rows


def write_area_table(
    path: str | os.PathLike,
    class_pixels: Mapping[str, int],
    mpp: float,
    background: str = "background",
    overwrite: bool = False,
) -> Path:
    """Write the area table as CSV (columns: class, pixels, area_um2, percent_of_tissue), atomically."""
    path = _atomic.check_writable(path, overwrite)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in area_rows(class_pixels, mpp, background):
        pct = "" if r.percent_of_tissue is None else f"{r.percent_of_tissue:.3f}"
        writer.writerow([r.name, r.pixels, f"{r.area_um2:.2f}", pct])
    _atomic.write_text(path, buf.getvalue())
    return path


def count_classes(labels, names: list[str], block: int = 4096) -> dict[str, int]:
    """Pixels per mask index of a (possibly lazy) label array, counted block by block."""
    counts = np.zeros(len(names), np.int64)
    for y in range(0, labels.shape[0], block):
        for x in range(0, labels.shape[1], block):
            part = np.asarray(labels[y : y + block, x : x + block]).ravel()
            counts += np.bincount(part, minlength=len(names))[: len(names)]
    return {n: int(c) for n, c in zip(names, counts, strict=True)}


def export_areas(labels_path: str | os.PathLike, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Area table of an OME-Zarr label image (counts recorded by ``pbip segment``, else counted)."""
    from .labels_reader import open_labels

    path = _atomic.check_writable(path, overwrite, {"label image": labels_path})
    img = open_labels(labels_path)
    names = list(mask_index_names(img.classes, img.background_index))
    counts = img.attrs.get("pbip", {}).get("class_pixels") or count_classes(img.levels[0], names)
    return write_area_table(path, counts, img.mpp[0], overwrite=True)
