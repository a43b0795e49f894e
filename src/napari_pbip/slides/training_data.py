"""Training data from slides: tiles under a pathologist's class regions, with weak labels and provenance.

Tiles of ``tile`` px at ``mpp`` um/px lie on a fixed grid anchored at the slide's origin, so the
same tile keeps its name from one run to the next. A tile is a candidate where a class region
touches it; it is labelled like :mod:`napari_pbip.data.weak` labels crops of a mask: with the
classes covering at least ``min_fraction`` of it, and dropped when *background* covers more than
``max_background``. Background is every pixel that is outside all class regions or is glass (the
slide's tissue detection), so an unannotated part of a tile never lends it a label. Where regions
overlap, the smaller one wins (a necrosis outline inside a tumour outline is necrosis). Labels come
from the geometry and the tissue mask alone, so pixels are read lazily, only for the tiles written.

Areas classified ``val`` (:data:`~napari_pbip.slides.annotations.VAL_CLASS`) are fully annotated:
their tiles become ``val/img`` images with ``val/mask`` masks (class inside each class region,
background elsewhere and on glass) and give no training tiles.

Output, the generic layout ``pbip data weak`` writes: ``dataset.json`` (classes, palette, um/px),
``train/<slide>-y<Y>-x<X>-[1 0 1].png`` with level-0 ``Y``/``X``, ``val/{img,mask}/``,
``tiles.csv`` (the provenance of every file), ``from_slides_settings.json`` and ``summary.json``.
Run again into the same folder after editing regions, it writes only the tiles whose label or mask
changed and deletes those no longer wanted, leaving every other file untouched.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import _atomic
from ..data.images import write_mask, write_rgb
from ..data.labels import labelled_name
from ..data.layouts import DatasetSpec, folder_spec, write_spec
from ..errors import DatasetError, OutputExistsError
from ..events import Job, Progress
from ..settings import Settings, check
from .annotations import ClassRegion, SlideRegions
from .tissue import TissueMask, TissueSettings, detect_tissue

OUTPUT_KIND = "data from-slides"
PROVENANCE = "tiles.csv"
SETTINGS_FILE = "from_slides_settings.json"
COLUMNS = ("split", "file", "slide", "x", "y", "size", "mpp", "labels", "mask_sha")


@dataclass(frozen=True)
class FromSlidesSettings(Settings):
    """How class regions on slides become tiles.

    Attributes:
        mpp: um/px the tiles are read at (1.0: the scale tissue types are told apart at).
        tile: tile side in pixels at ``mpp``.
        stride: step of the tile grid in pixels at ``mpp`` (None: ``tile``, tiles side by side).
        min_fraction: a class labels a tile when its tissue covers at least this share of the tile.
        max_background: tiles whose background share (outside every region, or glass) exceeds this are dropped.
        tissue_mpp: um/px of the tissue detection that tells tissue from glass.
        batch: tiles written between two progress events.
    """

    mpp: float = 1.0
    tile: int = 224
    stride: int | None = None
    min_fraction: float = 0.05
    max_background: float = 0.5
    tissue_mpp: float = 8.0
    batch: int = 32

    def __post_init__(self) -> None:
        check(0.05 <= self.mpp <= 50, "mpp", self.mpp, "0.05-50 um/px", "1.0 is typical for tissue types")
        check(isinstance(self.tile, int) and self.tile >= 8, "tile", self.tile, "an integer >= 8 (pixels)")
        check(
            self.stride is None or (isinstance(self.stride, int) and self.stride >= 1),
            "stride",
            self.stride,
            "None (the tile side) or an integer >= 1 (pixels)",
        )
        check(0 < self.min_fraction <= 1, "min_fraction", self.min_fraction, "a share in (0, 1], e.g. 0.05")
        check(
            0 <= self.max_background < 1, "max_background", self.max_background, "a share in [0, 1), e.g. 0.5"
        )
        check(0.1 <= self.tissue_mpp <= 100, "tissue_mpp", self.tissue_mpp, "0.1-100 um/px, e.g. 8")
        check(isinstance(self.batch, int) and self.batch >= 1, "batch", self.batch, "an integer >= 1")

    @property
    def step(self) -> int:
        """The grid step in pixels at ``mpp``."""
        return self.stride or self.tile


@dataclass(frozen=True)
class _Tile:
    split: str
    file: str
    y: int  # in the grid at mpp
    x: int
    label: tuple[int, ...]
    mask: np.ndarray | None  # val tiles only

    def row(self, item: SlideRegions, settings: FromSlidesSettings, spec: DatasetSpec) -> dict[str, str]:
        f = settings.mpp / item.slide.mpp[0]
        names = [c for c, on in zip(spec.classes, self.label, strict=True) if on]
        sha = _atomic.sha256_bytes(self.mask.tobytes()) if self.mask is not None else ""
        return {
            "split": self.split,
            "file": self.file,
            "slide": str(item.slide.path),
            "x": str(round(self.x * f)),
            "y": str(round(self.y * f)),
            "size": str(round(settings.tile * f)),
            "mpp": f"{settings.mpp:g}",
            "labels": ";".join(names),
            "mask_sha": sha[:16],
        }


def spec_for_classes(classes: Sequence[str]) -> DatasetSpec:
    """A generic-layout spec for a typed class list: distinct colours, white background last."""
    palette = folder_spec(tuple(classes)).palette
    return DatasetSpec("generic", tuple(classes), palette, len(classes), "space")


def check_regions(items: Sequence[SlideRegions], settings: FromSlidesSettings) -> None:
    """Refuse regions that cannot give tiles, before any work.

    Raises:
        DatasetError: two slides share a name; a region lies outside its slide; a class region
            (outside ``val`` areas) is smaller than one tile; a slide has no class region.
    """
    from shapely.geometry import box

    seen: dict[str, Path] = {}
    for item in items:
        if item.name in seen:
            raise DatasetError(
                f"slides {seen[item.name]} and {item.slide.path} have the same name {item.name!r}, which starts "
                "their tiles' names; rename one"
            )
        seen[item.name] = item.slide.path
        h, w = item.slide.shape
        side = settings.tile * settings.mpp / item.slide.mpp[0]
        val = [r.geometry for r in item.regions if r.is_val]
        if not any(not r.is_val for r in item.regions):
            raise DatasetError(
                f"{item.source} has no class region for {item.slide.path.name}; draw or import some"
            )
        for r in item.regions:
            x0, y0, x1, y1 = r.geometry.bounds
            if not r.geometry.intersects(box(0, 0, w, h)):
                raise DatasetError(
                    f"{r.source} ({r.name}) lies outside the slide {item.slide.path.name} ({w} x {h} px at level 0): "
                    f"its box is x {x0:.0f}-{x1:.0f}, y {y0:.0f}-{y1:.0f}; the annotations belong to another slide "
                    "or are not in level-0 pixels"
                )
            inside_val = any(v.buffer(1).contains(r.geometry) for v in val)
            if not r.is_val and not inside_val and min(x1 - x0, y1 - y0) < side:
                um = item.slide.mpp[0]
                raise DatasetError(
                    f"{r.source} ({r.name}) on {item.slide.path.name} is {(x1 - x0) * um:.0f} x {(y1 - y0) * um:.0f} um, "
                    f"smaller than one tile ({settings.tile} px at {settings.mpp:g} um/px = {side * um:.0f} um); draw it "
                    "larger, or lower --tile or --mpp"
                )


class _Painter:
    """Class index per pixel of a tile, from regions found with an R-tree; -1 outside every region.

    Larger regions are painted first, so nested smaller ones win. A tile that lies wholly inside a
    region is filled without drawing its outline.
    """

    def __init__(self, regions: Sequence[ClassRegion], index: dict[str, int], t: int, f: float):
        import shapely

        ordered = sorted(regions, key=lambda r: -r.geometry.area)
        self.geoms = [r.geometry for r in ordered]
        for g in self.geoms:
            shapely.prepare(g)
        self.values = [index[r.name] for r in ordered]
        self.tree = shapely.STRtree(self.geoms)
        self.t, self.f = t, f

    def paint(self, y: int, x: int) -> np.ndarray:
        """The ``t`` x ``t`` tile whose top-left is (y, x) in the grid at the tiles' um/px."""
        import shapely
        from PIL import Image, ImageDraw

        t, f = self.t, self.f
        window = _window(y, x, t, f)
        y0, x0 = y * f, x * f
        out = np.full((t, t), -1, np.int16)
        for i in sorted(self.tree.query(window, predicate="intersects")):
            geom = self.geoms[i]
            if shapely.contains_properly(geom, window):
                out[:] = self.values[i]
                continue
            canvas = Image.new("L", (t, t), 0)
            draw = ImageDraw.Draw(canvas)
            for poly in getattr(geom, "geoms", [geom]):
                if poly.geom_type != "Polygon":
                    continue
                draw.polygon([((px - x0) / f, (py - y0) / f) for px, py in poly.exterior.coords], fill=1)
                for hole in poly.interiors:
                    draw.polygon([((px - x0) / f, (py - y0) / f) for px, py in hole.coords], fill=0)
            out[np.asarray(canvas, bool)] = self.values[i]
        return out


def _tissue_tile(tissue: TissueMask, y: int, x: int, t: int, mpp: float) -> np.ndarray:
    """Tissue (bool ``t`` x ``t``) of the tile at (y, x) in the grid at ``mpp``, from the coarse mask."""
    h, w = tissue.mask.shape
    scale = mpp / tissue.mpp
    rows = np.floor((y + np.arange(t) + 0.5) * scale).astype(int) - tissue.origin[0]
    cols = np.floor((x + np.arange(t) + 0.5) * scale).astype(int) - tissue.origin[1]
    inside = (rows[:, None] >= 0) & (rows[:, None] < h) & (cols[None, :] >= 0) & (cols[None, :] < w)
    return tissue.mask[np.clip(rows, 0, h - 1)[:, None], np.clip(cols, 0, w - 1)[None, :]] & inside


def _grid(geom, f: float, step: int, t: int, size: tuple[int, int]) -> Iterator[tuple[int, int]]:
    """Grid origins (y, x at mpp) of the tiles that touch ``geom``'s box and start on the slide."""
    x0, y0, x1, y1 = (v / f for v in geom.bounds)
    H, W = size
    for gy in range(max(0, math.floor((y0 - t) / step) + 1), math.ceil(y1 / step)):
        for gx in range(max(0, math.floor((x0 - t) / step) + 1), math.ceil(x1 / step)):
            if gy * step < H and gx * step < W:
                yield gy * step, gx * step


def _plan_slide(
    item: SlideRegions, tissue: TissueMask, spec: DatasetSpec, settings: FromSlidesSettings, dropped: dict
) -> Job[list[_Tile]]:
    """Every tile of one slide with its label (train) or mask (val), decided without reading pixels;
    yields progress every few batches of tiles looked at."""
    from shapely.ops import unary_union

    t, mpp, step = settings.tile, settings.mpp, settings.step
    f = mpp / item.slide.mpp[0]
    size = item.slide.size_at(mpp)
    classes = _Painter(
        [r for r in item.regions if not r.is_val], {c: k for k, c in enumerate(spec.classes)}, t, f
    )
    vals = [r for r in item.regions if r.is_val]
    val_area = (
        _Painter([ClassRegion("in", unary_union([r.geometry for r in vals]), "")], {"in": 0}, t, f)
        if vals
        else None
    )
    where: dict[tuple[int, int], str] = {}
    for r in sorted(item.regions, key=lambda r: not r.is_val):  # val areas first: their tissue never trains
        for yx in _grid(r.geometry, f, step, t, size):
            where.setdefault(yx, "val" if r.is_val else "train")
    tiles: list[_Tile] = []
    lut = np.asarray(spec.tissue_indices, np.uint8)
    every = settings.batch * 8
    for n, ((y, x), split) in enumerate(where.items(), start=1):
        if n % every == 0:
            yield Progress("plan", n, len(where), f"{item.slide.path.name}: {n}/{len(where)} tiles looked at")
        if (
            split == "train"
            and val_area is not None
            and val_area.tree.query(_window(y, x, t, f), "intersects").size
        ):
            continue  # a tile touching a val area would leak validation tissue into training
        painted = classes.paint(y, x)
        tissue_px = _tissue_tile(tissue, y, x, t, mpp)
        stem = f"{item.name}-y{round(y * f)}-x{round(x * f)}"
        if split == "val":
            keep = (val_area.paint(y, x) == 0) & (painted >= 0) & tissue_px
            if keep.any():
                mask = np.full((t, t), spec.background_index, np.uint8)
                mask[keep] = lut[painted[keep]]
                label = tuple(int((mask == i).any()) for i in spec.tissue_indices)
                tiles.append(_Tile("val", f"{stem}.png", y, x, label, mask))
            continue
        if ((painted < 0) | ~tissue_px).mean() > settings.max_background:
            dropped["background"] += 1
            continue
        counts = np.bincount(painted[tissue_px & (painted >= 0)], minlength=spec.n_classes) / (t * t)
        label = tuple(int(c >= settings.min_fraction) for c in counts)
        if not any(label):
            dropped["unlabelled"] += 1
            continue
        tiles.append(_Tile("train", labelled_name(stem, label, "space"), y, x, label, None))
    yield Progress(
        "plan", len(where), len(where), f"{item.slide.path.name}: {len(tiles)} of {len(where)} tiles kept"
    )
    return tiles


def _window(y: int, x: int, t: int, f: float):
    from shapely.geometry import box

    return box(x * f, y * f, (x + t) * f, (y + t) * f)


def read_provenance(root: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a data set's ``tiles.csv`` (empty when there is none)."""
    path = Path(root) / PROVENANCE
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_provenance(root: Path, rows: list[dict[str, str]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: (r["split"], r["file"])))
    _atomic.write_text(root / PROVENANCE, buf.getvalue())


def _key(row: dict[str, str]) -> tuple[str, ...]:
    return tuple(row.get(k, "") for k in ("split", "file", "size", "mpp", "mask_sha"))


def _path(root: Path, row: dict[str, str]) -> list[Path]:
    if row["split"] == "val":
        return [root / "val" / "img" / row["file"], root / "val" / "mask" / row["file"]]
    return [root / "train" / row["file"]]


def _prepare(out: Path, inputs: dict[str, Any], overwrite: bool):
    """How to write ``out``: ``("update", None)`` into a previous output of this command, else a fresh
    atomic folder."""
    _atomic.check_output(out, OUTPUT_KIND, inputs, resume=True)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        if _atomic.output_kind(out) != OUTPUT_KIND:
            raise OutputExistsError(
                f"{out} already exists and was not written by `pbip data from-slides`; choose another --out "
                "(a previous from-slides output is updated in place)"
            )
        return contextlib.nullcontext(out), True
    return _atomic.atomic_dir(out, overwrite=overwrite, kind=OUTPUT_KIND, inputs=inputs), False


def training_data_from_slides(
    items: Sequence[SlideRegions],
    out: str | os.PathLike,
    spec: DatasetSpec,
    settings: FromSlidesSettings | None = None,
    overwrite: bool = False,
) -> Job[dict[str, Any]]:
    """Build (or update) a weakly labelled data set from class regions on slides (a generator job).

    Args:
        items: slides with their regions (:class:`SlideRegions`).
        out: the data set folder. A previous output of this command is updated in place: only
            tiles that changed are written or deleted. Any other existing folder is refused.
        spec: classes and palette (background index included) of the data set.
        settings: tiling settings (default 224 px at 1 um/px).
        overwrite: rebuild a previous output from scratch instead of updating it.

    Yields:
        :class:`Progress` per slide before its tissue detection (stage ``"tissue"``), every few
        batches of tiles looked at (``"plan"``) and per batch of tiles written (``"tiles"``).

    Returns:
        A summary: ``tiles`` (train), ``val_images``, ``class_counts``, ``added``, ``removed``,
        ``unchanged``, ``dropped``, the output folder and the settings.

    Raises:
        DatasetError: regions that cannot give tiles (see :func:`check_regions`), or no tile passes.
        OutputExistsError, OutputConflictError: see :func:`napari_pbip._atomic.check_output`.
    """
    settings = settings or FromSlidesSettings()
    out = Path(out)
    check_regions(items, settings)
    one = len(items) == 1
    inputs = {"slide" if one else f"slide {n}": i.slide.path for n, i in enumerate(items, start=1)}
    inputs |= {
        "annotations" if one else f"annotations {n}": i.annotations for n, i in enumerate(items, start=1)
    }
    target, update = _prepare(out, inputs, overwrite)
    old = {r["file"]: r for r in read_provenance(out)} if update else {}
    dropped = {"background": 0, "unlabelled": 0}
    planned: list[tuple[SlideRegions, _Tile]] = []
    for n, item in enumerate(items, start=1):
        yield Progress("tissue", n - 1, len(items), f"finding tissue on {item.slide.path.name}")
        tissue = detect_tissue(item.slide, TissueSettings(mpp=settings.tissue_mpp))
        planned += [(item, t) for t in (yield from _plan_slide(item, tissue, spec, settings, dropped))]
    rows = {t.file: t.row(item, settings, spec) for item, t in planned}
    if not any(t.split == "train" for _, t in planned):
        raise DatasetError(
            f"no tile under the regions passed the filters ({dropped}); draw larger regions over tissue, or lower "
            "--tile or --min-fraction, or raise --max-background"
        )
    with target as root:
        root = Path(root)
        todo = [(i, t) for i, t in planned if _key(old.get(t.file, {})) != _key(rows[t.file])
                or not all(p.is_file() for p in _path(root, rows[t.file]))]  # fmt: skip
        stale = [f for f in old if f not in rows]
        for folder in ("train", "val/img", "val/mask"):
            (root / folder).mkdir(parents=True, exist_ok=True)
            for p in (root / folder).iterdir():  # tiles no longer wanted, or left by an interrupted run
                if p.is_file() and p.name not in rows:
                    p.unlink()
        yield Progress(
            "tiles", 0, len(todo), f"writing {len(todo)} tiles ({len(planned) - len(todo)} unchanged)"
        )
        for start in range(0, len(todo), settings.batch):
            for item, tile in todo[start : start + settings.batch]:
                _write_tile(root, item, tile, settings, spec)
            done = min(start + settings.batch, len(todo))
            yield Progress(
                "tiles", done, len(todo), f"{done}/{len(todo)} tiles written", {"tiles": float(done)}
            )
        _write_provenance(root, list(rows.values()))
        write_spec(root, spec, name=f"tiles of {len(items)} slide(s)", mpp=settings.mpp)
        settings.save(root / SETTINGS_FILE)
        summary = _summary(out, planned, spec, settings, dropped, len(todo), len(stale), update)
        _atomic.write_json(root / "summary.json", summary)
        if update:
            _atomic.mark_output(root, OUTPUT_KIND)
    return summary


def _write_tile(
    root: Path, item: SlideRegions, tile: _Tile, settings: FromSlidesSettings, spec: DatasetSpec
) -> None:
    t = settings.tile
    rgb = item.slide.read_region(tile.y, tile.x, t, t, settings.mpp)
    if tile.split == "val":
        write_rgb(root / "val" / "img" / tile.file, rgb)
        write_mask(root / "val" / "mask" / tile.file, tile.mask, spec.palette)
    else:
        write_rgb(root / "train" / tile.file, rgb)


def _summary(out, planned, spec, settings, dropped, written, removed, update) -> dict[str, Any]:
    train = [t for _, t in planned if t.split == "train"]
    counts = {c: sum(t.label[k] for t in train) for k, c in enumerate(spec.classes)}
    single = {c: sum(t.label[k] and sum(t.label) == 1 for t in train) for k, c in enumerate(spec.classes)}
    return {
        "out": str(out),
        "tiles": len(train),
        "val_images": len(planned) - len(train),
        "class_counts": counts,
        "single_class_counts": single,
        "added": written,
        "removed": removed,
        "unchanged": len(planned) - written,
        "updated": update,
        "dropped": dropped,
        "classes": list(spec.classes),
        "settings": settings.to_dict(),
    }
