"""Whole-slide segmentation: one dask task per chunk, written into an OME-Zarr image with labels.

The slide is cut into chunks of ``chunk`` pixels at the inference resolution. Each task reads its
chunk plus a halo, predicts overlapping tiles in batches (:func:`~.tiled.predict_block`), writes
every pyramid level of its chunk (as label values: 0 background, class ``k`` as ``k + 1``) and
then a done marker. Chunks without tissue are not run (their pixels are background, the store's
fill value). A rerun on the same output resumes: only chunks without a marker are computed.

The store's layout is :mod:`napari_pbip.export.ome_zarr`'s; its bookkeeping (resume fingerprint,
done markers, the slide recorded by content) is :mod:`.segment_store`'s, the settings
:mod:`.segment_settings`'.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import _atomic
from ..errors import SettingsError
from ..events import Job, Progress
from ..export.label_values import BACKGROUND_NAME, BACKGROUND_VALUE, mask_lut, palette_by_value, values_lut
from ..export.ome_zarr import LabelsStore, label_group_path
from ..export.run_record import read_run_record, update_run_record
from ..predict.predictor import DensePredictor, load_predictor, model_hash
from ..predict.tiled import Cancelled, predict_block
from . import _scheduling
from .readers import Slide, open_slide
from .segment_settings import SegmentSettings, default_batch
from .segment_store import (
    OUTPUT_KIND,
    ChunkSummary,
    prepare_output,
    remove_unstarted,
    run_fingerprint,
    save_tissue,
    slide_fingerprint,
    write_marker,
)
from .tissue import TissueMask, TissueSettings, detect_tissue

COMPILE_STAGE = "compile"  # the Progress stages of segment_slide, in order
TISSUE_STAGE = "tissue"
SEGMENT_STAGE = "segment"


@dataclass
class ChunkTask:
    """Everything one chunk task needs; pickles small (no pixels, no model, no file handles)."""

    index: tuple[int, int]
    core: tuple[int, int, int, int]
    extent: tuple[int, int]
    slide: Slide
    store: LabelsStore
    settings: SegmentSettings
    tissue: TissueMask | None
    model_path: str | None
    model_hash: str | None = None


@dataclass
class ChunkDone:
    """Event payload for live display: where a finished chunk lies; its pixels are read on demand."""

    index: tuple[int, int]
    box: tuple[int, int, int, int]  # (y0, x0, y1, x1) in pixels at ``mpp``
    mpp: float
    path: Path
    skipped: bool

    def labels(self, level: int = 0) -> np.ndarray:
        """The chunk's labels at pyramid ``level`` (level 0 is at ``mpp``)."""
        import zarr

        f = 2**level
        y0, x0, y1, x1 = self.box[0] // f, self.box[1] // f, -(-self.box[2] // f), -(-self.box[3] // f)
        return zarr.open_array(store=str(label_group_path(self.path)), path=str(level), mode="r")[
            y0:y1, x0:x1
        ]


@dataclass
class SegmentResult:
    """A finished segmentation; ``palette`` is by label value (``background_index`` 0 first) and
    ``class_pixels`` counts pixels per class name."""

    out: Path
    shape: tuple[int, int]
    mpp: float
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    background_index: int
    class_pixels: dict[str, int]
    tissue_fraction: float | None
    chunks: dict[str, int]
    tiles: dict[str, int]
    seconds: dict[str, float]
    settings: SegmentSettings
    finished_before: bool = False  # an earlier run finished it; this one only read it back
    unreadable: list[list[int]] = field(default_factory=list)  # level-0 (y0, x0, y1, x1) of damaged tiles

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (for ``--json``)."""
        d = asdict(self)
        d["out"] = str(self.out)
        d["settings"] = self.settings.to_dict()
        return d


@functools.lru_cache(maxsize=2)
def _cached_predictor(
    path: str, device: str, compile_for: tuple[int, int] | None = None, content: str | None = None
) -> DensePredictor:
    """One model per process and model folder (dask workers load it once, never per task);
    compiled for ``(batch, tile)`` when given. ``content`` (the folder's :func:`model_hash`) is
    part of the cache key only: a model retrained in the same folder is loaded afresh."""
    predictor = load_predictor(path, device=device)
    return _compiled(predictor, *compile_for) if compile_for else predictor


def _check_compilable(predictor: DensePredictor) -> None:
    if not hasattr(predictor, "compiled"):
        raise SettingsError(
            f"compile=True works with stage-2 segmenter folders (pbip train-seg); a "
            f"{type(predictor).__name__} cannot be compiled. Segment without --compile"
        )


def _compiled(predictor: DensePredictor, batch: int, tile: int) -> DensePredictor:
    _check_compilable(predictor)
    return predictor.compiled(batch, tile)


def _chunk_predictor(task: ChunkTask) -> DensePredictor:
    s = task.settings
    compile_for = (s.batch, s.tile) if s.compile else None
    return _cached_predictor(task.model_path, s.device, compile_for, task.model_hash)


def run_chunk(
    task: ChunkTask, predictor: DensePredictor | None = None, cancel: threading.Event | None = None
) -> ChunkSummary:
    """Segment one chunk, write it into the store with its pyramid, then write its done marker.

    ``counts`` in the summary are pixels per label value.
    """
    s, (y0, x0, y1, x1) = task.settings, task.core
    n_ch = len(task.store.palette)
    bg = BACKGROUND_VALUE
    if cancel is not None and cancel.is_set():
        return ChunkSummary(task.index, task.core, [0] * n_ch, cancelled=True)
    margin = s.overlap * s.mpp  # a tile reaching tissue within its blend ramp still runs
    reach = s.tile * s.mpp  # tiles that cover this chunk's pixels extend at most a tile beyond it
    summary = ChunkSummary(task.index, task.core, [0] * n_ch)
    t = time.perf_counter()
    if task.tissue is not None and not task.tissue.any(y0, x0, y1, x1, s.mpp, reach):
        summary.skipped = True
        summary.counts[bg] = (y1 - y0) * (x1 - x0)
        labels = np.full((y1 - y0, x1 - x0), bg, np.uint8)
        probs = None
        if task.store.probabilities:
            probs = np.zeros((n_ch, y1 - y0, x1 - x0), np.uint8)
            probs[bg] = 255
    else:
        model = predictor if predictor is not None else _chunk_predictor(task)
        tissue = task.tissue
        bad: list[tuple[int, int, int, int]] = []  # damaged tiles read as glass, listed in the result
        try:
            pred = predict_block(
                model,
                lambda y, x, h, w: task.slide.read_region(y, x, h, w, s.mpp, unreadable=bad),
                task.core,
                task.extent,
                s.tile,
                s.overlap,
                s.batch,
                has_tissue=None
                if tissue is None
                else lambda a, b, c, d: tissue.any(a, b, c, d, s.mpp, margin),
                probabilities=task.store.probabilities,
                cancel=cancel,
            )
        except Cancelled:
            return ChunkSummary(task.index, task.core, [0] * n_ch, cancelled=True)
        n, model_bg = len(model.classes), model.background_index
        labels = values_lut(n, model_bg)[pred.labels]  # mask indices -> label values
        probs = None if pred.probs is None else pred.probs[mask_lut(n, model_bg)]
        summary.counts = np.bincount(labels.ravel(), minlength=n_ch)[:n_ch].tolist()
        summary.tiles_run, summary.tiles_skipped = pred.tiles_run, pred.tiles_skipped
        summary.unreadable = sorted({tuple(int(v) for v in box) for box in bad})
        summary.seconds.update(pred.seconds)
    t_write = time.perf_counter()
    task.store.write_block(y0, x0, labels, probs)
    summary.seconds["write"] = time.perf_counter() - t_write
    summary.seconds["total"] = time.perf_counter() - t
    write_marker(task.store.path, summary)
    return summary


def _model_id(predictor: DensePredictor, content: str | None) -> str:
    if content is not None:
        return f"sha256:{content}"
    return f"{type(predictor).__module__}.{type(predictor).__qualname__}"


def _load_model(
    model: str | os.PathLike | DensePredictor, s: SegmentSettings
) -> tuple[DensePredictor, str | None, str | None]:
    """The predictor, its folder and the folder's :func:`model_hash` (None, None for an in-memory one)."""
    if isinstance(model, str | os.PathLike):
        path = str(Path(model).resolve())
        content = model_hash(path)
        return _cached_predictor(path, s.device, None, content), path, content
    if s.distributed:
        raise SettingsError(
            f"scheduler={s.scheduler!r} needs the model as a folder path so each worker loads it once; "
            f"got an in-memory {type(model).__name__}"
        )
    return model, None, None


def _chunk_boxes(
    shape: tuple[int, int], chunk: int
) -> list[tuple[tuple[int, int], tuple[int, int, int, int]]]:
    h, w = shape
    return [
        ((i, j), (y, x, min(y + chunk, h), min(x + chunk, w)))
        for i, y in enumerate(range(0, h, chunk))
        for j, x in enumerate(range(0, w, chunk))
    ]


def segment_slide(
    slide: str | os.PathLike | Slide,
    model: str | os.PathLike | DensePredictor,
    out: str | os.PathLike,
    settings: SegmentSettings | None = None,
    overwrite: bool = False,
    slide_mpp: float | None = None,
    reuse_finished: bool = False,
) -> Job[SegmentResult]:
    """Segment a whole slide into an OME-Zarr label pyramid (a job: iterate it or ``events.run`` it).

    Args:
        slide: slide path or an opened :class:`Slide`.
        model: trained model folder (``model.json``) or a :class:`DensePredictor` (threads only).
        out: output ``.zarr`` folder; an unfinished one from the same inputs is resumed.
        settings: :class:`SegmentSettings` (defaults: model resolution and tile, threads).
        overwrite: replace an existing output (a previous segmentation) instead of refusing or
            resuming.
        slide_mpp: the slide's level-0 um/px when the file lacks it.
        reuse_finished: when ``out`` holds a finished segmentation of the same inputs, return its
            result (``finished_before=True``) without segmenting or writing anything, e.g. to
            export it, instead of refusing.

    Yields:
        ``Progress(TISSUE_STAGE)`` once with the :class:`TissueMask` as payload, then
        ``Progress(SEGMENT_STAGE)`` per finished chunk with a :class:`ChunkDone` payload.

    Returns:
        :class:`SegmentResult`. Closing the generator early stops after the running chunks'
        current batch; finished chunks are kept for resuming. An output this call created is
        deleted again when it stops (error, refusal or cancel) before any chunk is finished, so
        it cannot block the next run.

    Raises:
        OutputConflictError: ``out`` is, contains or lies inside the slide or the model folder.
        OutputExistsError: ``out`` holds a finished segmentation, one started with other inputs
            (another model, or the same folder retrained), or is not a segmentation (with
            ``overwrite`` too: only a previous segmentation is deleted).
    """
    s = settings or SegmentSettings()
    t_start = time.perf_counter()
    out = Path(out)
    inputs = {"slide": slide, "model": model}
    _atomic.check_output(out, OUTPUT_KIND, inputs, overwrite=overwrite, resume=not overwrite)
    slide = slide if isinstance(slide, Slide) else open_slide(slide, mpp=slide_mpp)
    predictor, model_path, content = _load_model(model, s)
    s = s.resolve(predictor)
    shape = slide.size_at(s.mpp)
    fingerprint = run_fingerprint(slide, _model_id(predictor, content), s, shape)
    if s.compile:
        _check_compilable(predictor)  # before any output is written
    store, done, state = prepare_output(
        out, fingerprint, predictor, slide, s, overwrite, inputs, reuse_finished
    )
    if state == "finished":
        return _finished_result(out, predictor, s, shape, done, time.perf_counter() - t_start)
    try:
        job = _segment(out, slide, predictor, model_path, content, s, shape, store, done, t_start)
        return (yield from job)
    except BaseException:
        if state == "new":
            remove_unstarted(out)
        raise


def _segment(
    out: Path,
    slide: Slide,
    predictor: DensePredictor,
    model_path: str | None,
    content: str | None,
    s: SegmentSettings,
    shape: tuple[int, int],
    store: LabelsStore,
    done: dict[tuple[int, int], ChunkSummary],
    t_start: float,
) -> Job[SegmentResult]:
    """The work of :func:`segment_slide` once its output is ready: tissue, chunks, summary."""
    compile_seconds = None
    if s.compile and not s.distributed:  # on a cluster each worker compiles its own copy
        yield Progress(COMPILE_STAGE, 0, 1, "compiling the model (once per process; can take a minute)")
        t = time.perf_counter()
        if model_path:
            predictor = _cached_predictor(model_path, s.device, (s.batch, s.tile), content)
        else:
            predictor = _compiled(predictor, s.batch, s.tile)
        compile_seconds = time.perf_counter() - t
        yield Progress(COMPILE_STAGE, 1, 1, f"model compiled in {compile_seconds:.0f} s")

    tissue = None
    if s.skip_background:
        yield Progress(TISSUE_STAGE, 0, 1, "detecting tissue")
        tissue = detect_tissue(slide, TissueSettings(mpp=s.tissue_mpp), unreadable=[])
        save_tissue(out, tissue)
        yield Progress(
            TISSUE_STAGE, 1, 1, f"tissue covers {tissue.fraction:.1%} of the slide", payload=tissue
        )

    boxes = _chunk_boxes(shape, s.chunk)
    halo = (s.tile + s.overlap) * s.mpp
    tasks = [
        ChunkTask(
            index,
            core,
            shape,
            slide,
            store,
            s,
            None if tissue is None else tissue.crop(*core, s.mpp, halo),
            model_path,
            content,
        )
        for index, core in boxes
        if index not in done
    ]
    summaries = dict(done)
    t_run = time.perf_counter()
    tiles_now = 0
    yield Progress(SEGMENT_STAGE, len(summaries), len(boxes), f"{len(done)} chunks already done")
    if s.distributed:
        results = _scheduling.run_distributed(run_chunk, tasks, s.scheduler)
    else:
        results = _scheduling.run_local(run_chunk, tasks, (predictor,), s.num_workers, s.scheduler == "sync")
    with _closing(results):
        for summary in results:
            if summary.cancelled:
                continue
            summaries[summary.index] = summary
            tiles_now += summary.tiles_run
            rate = tiles_now / max(time.perf_counter() - t_run, 1e-9)
            payload = ChunkDone(summary.index, summary.core, s.mpp, out, summary.skipped)
            msg = f"chunk {summary.index} {'skipped (no tissue)' if summary.skipped else 'done'}"
            yield Progress(SEGMENT_STAGE, len(summaries), len(boxes), msg, {"tiles/s": rate}, payload)
    result = _finish(
        out, slide, predictor, s, shape, tissue, summaries, len(done), time.perf_counter() - t_start
    )
    if compile_seconds is not None:
        result.seconds["compile"] = compile_seconds
    return result


class _closing:
    """Close a generator on leaving the block (so cancellation reaches running tasks)."""

    def __init__(self, gen):
        self.gen = gen

    def __enter__(self):
        return self.gen

    def __exit__(self, *exc):
        self.gen.close()
        return False


def _finished_result(
    out: Path,
    predictor: DensePredictor,
    s: SegmentSettings,
    shape: tuple[int, int],
    summaries: dict[tuple[int, int], ChunkSummary],
    seconds: float,
) -> SegmentResult:
    """The result of an output finished by an earlier run, read from its attributes and markers."""
    tissue = read_run_record(out).get("tissue_fraction")
    result = _summarise(out, predictor, s, shape, tissue, summaries, len(summaries), seconds)
    result.finished_before = True
    result.tiles["run"] = 0  # none in this call
    return result


def _summarise(out, predictor, s, shape, tissue_fraction, summaries, resumed, seconds) -> SegmentResult:
    names = [BACKGROUND_NAME, *predictor.classes]  # by label value
    counts = np.sum([sm.counts for sm in summaries.values()], axis=0).astype(int)
    timing: dict[str, float] = {}
    for sm in summaries.values():
        for k, v in sm.seconds.items():
            timing[k] = timing.get(k, 0.0) + v
    timing["wall"] = seconds
    tiles_run = sum(sm.tiles_run for sm in summaries.values())
    result = SegmentResult(
        out=out,
        shape=shape,
        mpp=s.mpp,
        classes=tuple(predictor.classes),
        palette=palette_by_value(predictor.palette, len(predictor.classes), predictor.background_index),
        background_index=BACKGROUND_VALUE,
        class_pixels={n: int(c) for n, c in zip(names, counts, strict=True)},
        tissue_fraction=tissue_fraction,
        chunks={
            "total": len(summaries),
            "skipped": sum(sm.skipped for sm in summaries.values()),
            "resumed": resumed,
        },
        tiles={"run": tiles_run, "skipped": sum(sm.tiles_skipped for sm in summaries.values())},
        seconds=timing,
        settings=s,
        unreadable=sorted({tuple(b) for sm in summaries.values() for b in sm.unreadable}),
    )
    return result


def _finish(out, slide, predictor, s, shape, tissue, summaries, resumed, seconds) -> SegmentResult:
    fraction = None if tissue is None else tissue.fraction
    result = _summarise(out, predictor, s, shape, fraction, summaries, resumed, seconds)
    update_run_record(
        out,
        status="complete",
        slide_mpp=slide.mpp[0],
        slide_shape=list(slide.shape),
        class_pixels=result.class_pixels,
        tissue_fraction=result.tissue_fraction,
    )
    return result


__all__ = [
    "ChunkDone",
    "ChunkSummary",
    "ChunkTask",
    "SegmentResult",
    "SegmentSettings",
    "default_batch",
    "run_chunk",
    "segment_slide",
    "slide_fingerprint",
]
