"""A cohort: several slides segmented with one model into one output folder, one slide at a time.

The folder ``out_dir`` holds, per slide, ``<name>.zarr`` (the segmentation, as
:func:`~.segment.segment_slide` writes it), ``<name>.csv`` (its area table) and ``<name>.geojson``
(its QuPath polygons); ``<name>`` is the slide's file name without its suffix, made distinct
where two slides share it (:func:`output_names`). Beside them, ``cohort.csv`` (slide, class,
area_mm2, percent_of_tissue; one row per finished slide and class) and ``cohort.json`` (each
slide's name, status and, for a failed one, its one-line error) are rewritten after every slide.
The folder carries the :data:`~napari_pbip._atomic.MARKER` of :data:`OUTPUT_KIND`; a folder
without it is never written into.

A slide that fails (unreadable, no um/px, ...) is recorded and the next one runs. A rerun of the
same cohort skips finished slides (nothing of theirs is rewritten), resumes a partly segmented
one from its finished chunks and retries the failed ones.
"""

from __future__ import annotations

import csv
import glob
import io
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import _atomic
from ..errors import OutputExistsError, SlideError, one_line
from ..events import Job, Progress
from ..export.areas import area_rows, export_areas
from ..export.geojson import export_geojson
from ..predict.predictor import DensePredictor
from . import _backends
from .readers import tiff_kind
from .segment import SegmentResult, segment_slide
from .segment_settings import SegmentSettings

OUTPUT_KIND = "segment-cohort"  # the command named in the cohort folder's marker
SLIDE_STAGE = "slide"  # the Progress stage of a slide's start and end (between them segment_slide's)
TABLE = "cohort.csv"
RECORD = "cohort.json"
TABLE_COLUMNS = ("slide", "class", "area_mm2", "percent_of_tissue")
RESERVED = ("cohort",)  # names taken by the cohort's own files
SLIDE_SUFFIXES = (*_backends.TIFF_SUFFIXES, *_backends.IMAGE_SUFFIXES, ".mrxs", ".vms", ".bif", ".zarr")
_GLOB_CHARS = frozenset("*?[")


@dataclass
class SlideStatus:
    """One slide of a cohort: its outputs' ``name`` in the folder, ``status`` ("pending", "running",
    "done" or "failed"; only finished ones are recorded) and, when failed, the one-line ``error``.
    A copy is the payload of each :data:`SLIDE_STAGE` event of :func:`segment_cohort`."""

    slide: str
    name: str
    status: str = "pending"
    error: str | None = None
    finished_before: bool = False  # done by an earlier run; skipped by this one

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (as in ``cohort.json``)."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class CohortResult:
    """A cohort run: ``slides`` in order, with their per-slide results for the finished ones."""

    out_dir: Path
    slides: list[SlideStatus]
    results: dict[str, SegmentResult] = field(default_factory=dict)  # by output name

    @property
    def failed(self) -> list[SlideStatus]:
        """The slides that failed in this run."""
        return [s for s in self.slides if s.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (for ``--json``): the folder, its table and each slide's status."""
        return {
            "out": str(self.out_dir),
            "table": str(self.out_dir / TABLE),
            "slides": [s.to_dict() for s in self.slides],
            "failed": len(self.failed),
        }


def is_cohort(paths: list[str | os.PathLike]) -> bool:
    """True when ``paths`` name a cohort: several, a folder of slides or a glob pattern (not a path)."""
    if len(paths) != 1:
        return True
    p = Path(paths[0])
    if p.is_dir():
        return not _is_zarr(p)
    return not p.exists() and bool(_GLOB_CHARS & set(str(p)))


def _is_zarr(folder: Path) -> bool:
    return folder.name.lower().endswith(".zarr") or any(
        (folder / n).is_file() for n in ("zarr.json", ".zattrs", ".zgroup")
    )


def _is_slide_file(p: Path) -> bool:
    name = p.name.lower()
    if name.startswith(".") or not name.endswith(SLIDE_SUFFIXES):
        return False
    if p.is_dir():
        return _is_zarr(p)
    if p.suffix.lower() in (".tif", ".tiff"):
        return tiff_kind(p) != "labels"  # a label image beside its slide is not a slide
    return True


def expand_slides(paths: list[str | os.PathLike]) -> list[Path]:
    """The slides ``paths`` name, in order, each once: a slide as given, a folder's slides (by
    suffix, sorted by name) and a glob pattern's matches (sorted); see :data:`SLIDE_SUFFIXES`.

    Raises:
        SlideError: a pattern or folder without slides (naming it and what was looked for).
    """
    found: list[Path] = []
    for given in paths:
        p = Path(given)
        if p.is_dir() and not _is_zarr(p):
            hits = [q for q in sorted(p.iterdir()) if _is_slide_file(q)]
            if not hits:
                raise SlideError(
                    f"the folder {p} holds no slides (files ending {', '.join(SLIDE_SUFFIXES)}); "
                    "give a folder of slides, slide files or a quoted pattern such as 'slides/*.svs'"
                )
        elif not p.exists() and _GLOB_CHARS & set(str(p)):
            hits = [Path(q) for q in sorted(glob.glob(str(p))) if _is_slide_file(Path(q))]
            if not hits:
                raise SlideError(
                    f"the pattern {str(p)!r} matches no slide (files ending {', '.join(SLIDE_SUFFIXES)}); "
                    "check the pattern and quote it so pbip, not the shell, expands it"
                )
        else:
            hits = [p]  # missing or unreadable files fail as that slide, not the cohort
        found.extend(hits)
    seen: set[str] = set()
    unique = []
    for p in found:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _stem(p: Path) -> str:
    name = p.name
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return p.stem or name


def output_names(slides: list[Path], recorded: dict[str, str] | None = None) -> dict[Path, str]:
    """Each slide's output name: its file name without suffix; where several slides share one
    (ignoring case, as some file systems do), the slide whose absolute path sorts first keeps it
    and the others get ``-2``, ``-3``, ... in that order. ``cohort`` is reserved (``cohort-2``).

    ``recorded`` (slide as given -> name, from an earlier run's ``cohort.json``) keeps the names
    slides had then, so adding a slide to a cohort never renames another's outputs.
    """
    recorded = recorded or {}
    names = {p: recorded[str(p)] for p in slides if str(p) in recorded}
    if len({n.casefold() for n in names.values()}) < len(names):
        names = {}  # a damaged record: name afresh
    taken = {r.casefold() for r in RESERVED} | {n.casefold() for n in names.values()}
    for p in sorted((q for q in slides if q not in names), key=lambda q: os.path.abspath(q)):
        stem = _stem(p)
        name, i = stem, 1
        while name.casefold() in taken:
            i += 1
            name = f"{stem}-{i}"
        taken.add(name.casefold())
        names[p] = name
    return names


def check_cohort_output(
    out_dir: Path, slides: list[Path], model: Any, overwrite: bool, folders: list[Path] = ()
) -> None:
    """Refuse ``out_dir`` unless it is new, empty or a previous cohort output (any of them with
    ``overwrite``: then it is deleted); it may not be, hold or lie inside a slide or the model.

    Raises:
        OutputExistsError: ``out_dir`` holds something that is not a cohort output of pbip segment.
        OutputConflictError: ``out_dir`` and an input overlap.
    """
    inputs = {"model": model, **{f"slide {p.name}": p for p in slides}}
    inputs.update({f"slide folder {f}": f for f in folders})
    _atomic.check_output(out_dir, OUTPUT_KIND, inputs, overwrite=overwrite, resume=not overwrite)
    if out_dir.is_dir() and any(out_dir.iterdir()) and _atomic.output_kind(out_dir) != OUTPUT_KIND:
        raise OutputExistsError(
            f"{out_dir} exists and is not a cohort output of `pbip segment` (it has no {_atomic.MARKER} "
            "naming one); give a new or empty folder as --out"
        )
    if overwrite:
        _atomic.clear_output(out_dir, OUTPUT_KIND, inputs)


def _previous(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The slides a previous run recorded, by output name."""
    path = out_dir / RECORD
    if not path.is_file():
        return {}
    record = _atomic.read_json_object(path, OutputExistsError, "pass --overwrite to start the cohort again")
    return {s["name"]: s for s in record.get("slides", []) if isinstance(s, dict) and "name" in s}


def segment_cohort(
    slides: list[str | os.PathLike] | str | os.PathLike,
    model: str | os.PathLike | DensePredictor,
    out_dir: str | os.PathLike,
    settings: SegmentSettings | None = None,
    overwrite: bool = False,
    slide_mpp: float | None = None,
) -> Job[CohortResult]:
    """Segment several slides into ``out_dir``, one after the other (a job: iterate it or
    ``events.run`` it); see the module docstring for the folder's layout.

    Args:
        slides: slide paths, folders of slides and glob patterns (:func:`expand_slides`), or one
            folder or pattern.
        model: trained model folder or a :class:`DensePredictor` (threads only).
        out_dir: the cohort folder; a previous one of the same cohort is continued.
        settings: :class:`SegmentSettings` shared by all slides.
        overwrite: delete a previous cohort output in ``out_dir`` and start again.
        slide_mpp: level-0 um/px for slides whose files lack it.

    Yields:
        ``Progress(SLIDE_STAGE, i, n, "slide i+1/n: NAME ...")`` before each slide and when it ends,
        with a copy of its :class:`SlideStatus` (``running``, then ``done`` or ``failed``) as the
        payload, and each slide's own events (:func:`segment_slide`) between the two.

    Returns:
        :class:`CohortResult`; a slide that failed is in it with its error and did not stop the
        others. Closing the job early keeps what is finished (rerun to continue).

    Raises:
        OutputExistsError, OutputConflictError: ``out_dir`` refused (:func:`check_cohort_output`).
        SlideError: a folder or pattern without slides.
    """
    s = settings or SegmentSettings()
    out_dir = Path(out_dir)
    if isinstance(slides, str | os.PathLike):  # one folder or pattern
        slides = [slides]
    paths = expand_slides(slides)
    folders = [Path(f) for f in slides if Path(f).is_dir() and not _is_zarr(Path(f))]
    check_cohort_output(out_dir, paths, model, overwrite, folders)
    before = _previous(out_dir)
    names = output_names(paths, {str(v.get("slide")): k for k, v in before.items()})
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic.mark_output(out_dir, OUTPUT_KIND)
    result = CohortResult(out_dir, [SlideStatus(str(p), names[p]) for p in paths])
    n = len(paths)
    for i, (p, status) in enumerate(zip(paths, result.slides, strict=True)):
        status.status = "running"
        yield Progress(SLIDE_STAGE, i, n, f"slide {i + 1}/{n}: {p.name}", payload=replace(status))
        was_done = before.get(status.name, {}).get("status") == "done"
        try:
            job = _one_slide(p, model, out_dir, status.name, s, slide_mpp, was_done)
            seg = yield from job
        except Exception as exc:  # noqa: BLE001 - one slide's failure (a damaged file may raise anything)
            status.status, status.error = "failed", one_line(exc)
        else:
            status.status, status.finished_before = "done", seg.finished_before and was_done
            result.results[status.name] = seg
        _write_summary(result, paths[: i + 1], before)
        word = "skipped (finished before)" if status.finished_before else status.status
        yield Progress(SLIDE_STAGE, i + 1, n, f"slide {i + 1}/{n}: {p.name} {word}", payload=replace(status))
    return result


def _one_slide(
    slide: Path,
    model: Any,
    out_dir: Path,
    name: str,
    s: SegmentSettings,
    slide_mpp: float | None,
    was_done: bool,
) -> Job[SegmentResult]:
    """Segment (or resume, or only read back) one slide and write its exports where missing."""
    out, csv_path, geo_path = (out_dir / f"{name}{ext}" for ext in (".zarr", ".csv", ".geojson"))
    job = segment_slide(slide, model, out, s, slide_mpp=slide_mpp, reuse_finished=True)
    seg = yield from job
    fresh = not (seg.finished_before and was_done)
    if fresh or not csv_path.is_file():
        export_areas(out, csv_path, overwrite=True)
    if fresh or not geo_path.is_file():
        export_geojson(out, geo_path, overwrite=True)
    return seg


def cohort_rows(name: str, seg: SegmentResult) -> list[list[str]]:
    """The cohort table's rows of one slide, from the per-slide area rows (:func:`area_rows`)."""
    rows = []
    for r in area_rows(seg.class_pixels, seg.mpp):
        pct = "" if r.percent_of_tissue is None else f"{r.percent_of_tissue:.3f}"
        rows.append([name, r.name, f"{r.area_um2 / 1e6:.6f}", pct])
    return rows


def _write_summary(result: CohortResult, seen: list[Path], before: dict[str, dict[str, Any]]) -> None:
    """Rewrite ``cohort.csv`` and ``cohort.json`` (atomically) with every slide so far; slides not
    reached yet keep what an earlier run recorded."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    for status in result.slides:
        if status.name in result.results:
            writer.writerows(cohort_rows(status.name, result.results[status.name]))
    _atomic.write_text(result.out_dir / TABLE, buf.getvalue())
    reached = len(seen)
    slides = [
        s.to_dict() if i < reached else {**s.to_dict(), **before.get(s.name, {}), "slide": s.slide}
        for i, s in enumerate(result.slides)
    ]
    _atomic.write_json(result.out_dir / RECORD, {"kind": OUTPUT_KIND, "slides": slides})


__all__ = [
    "OUTPUT_KIND",
    "CohortResult",
    "SlideStatus",
    "cohort_rows",
    "expand_slides",
    "is_cohort",
    "output_names",
    "segment_cohort",
]
