"""Whole-slide segmentation: one dask task per chunk, written into an OME-Zarr image with labels.

The slide is cut into chunks of ``chunk`` pixels at the inference resolution. Each task reads its
chunk plus a halo, predicts overlapping tiles in batches (:func:`~.tiled.predict_block`), writes
every pyramid level of its chunk (as label values: 0 background, class ``k`` as ``k + 1``) and
then a done marker. Chunks without tissue are not run (their pixels are background, the store's
fill value). A rerun on the same output resumes: only chunks without a marker are computed.

The store's layout is :mod:`napari_pbip.export.ome_zarr`'s. pbip's bookkeeping lies in the
``pbip`` group as zarr nodes, so that zarr finds no stray file: the settings and the tissue mask
(an array) and one group per finished chunk under ``pbip/done`` whose attributes are the chunk's
summary. The run's metadata (status, resume fingerprint) is under ``pbip`` in the label image's
attributes. The slide is recorded by content (:func:`slide_fingerprint`), never by its path.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import _atomic
from ..errors import OutputExistsError, SettingsError
from ..events import Job, Progress
from ..export.label_values import BACKGROUND_NAME, BACKGROUND_VALUE, mask_lut, palette_by_value, values_lut
from ..export.ome_zarr import LabelsStore, create_labels_store, label_group_path
from ..settings import Settings, check
from ..slide import Slide, TissueMask, TissueSettings, detect_tissue, open_slide
from . import _scheduling
from .predictor import DensePredictor, load_predictor, model_hash
from .tiled import Cancelled, predict_block

DEFAULT_OVERLAP = 32  # px; see SegmentSettings.overlap
CPU_PIXELS_PER_CALL = 448 * 448  # default model-call size on a CPU; see SegmentSettings.batch
GPU_BATCH = 16  # default tiles per model call on a GPU
OUTPUT_KIND = "segment"  # the command named in the output store's marker
FINGERPRINT_BYTES = 1024**2  # slide_fingerprint hashes this much of the file's start and end
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
class ChunkSummary:
    """What a finished chunk reports back (also stored in its done marker)."""

    index: tuple[int, int]
    core: tuple[int, int, int, int]
    counts: list[int]
    skipped: bool = False
    tiles_run: int = 0
    tiles_skipped: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    cancelled: bool = False


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
        try:
            pred = predict_block(
                model,
                lambda y, x, h, w: task.slide.read_region(y, x, h, w, s.mpp),
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
        summary.seconds.update(pred.seconds)
    t_write = time.perf_counter()
    task.store.write_block(y0, x0, labels, probs)
    summary.seconds["write"] = time.perf_counter() - t_write
    summary.seconds["total"] = time.perf_counter() - t
    _atomic.write_json(_marker(task.store.path, task.index), _group_doc(asdict(summary)))
    return summary


def _group_doc(attributes: dict[str, Any]) -> dict[str, Any]:
    """A zarr (format 3) group's metadata document holding ``attributes``."""
    return {"zarr_format": 3, "node_type": "group", "attributes": attributes}


def _marker(out: Path, index: tuple[int, int]) -> Path:
    """A chunk's done marker: a zarr group (its ``zarr.json``, written atomically) under ``pbip/done``."""
    return Path(out) / "pbip" / "done" / f"{index[0]}_{index[1]}" / "zarr.json"


def _read_markers(out: Path) -> dict[tuple[int, int], ChunkSummary]:
    done = {}
    for p in (Path(out) / "pbip" / "done").glob("*/zarr.json"):
        d = json.loads(p.read_text())["attributes"]
        d["index"], d["core"] = tuple(d["index"]), tuple(d["core"])
        done[d["index"]] = ChunkSummary(**d)
    return done


def slide_fingerprint(path: str | os.PathLike) -> str:
    """The slide by content: ``<size>:<sha256 of its first and last MB>`` (of its metadata file for
    a folder such as an OME-Zarr slide).

    Outputs record this rather than the slide's path, which can carry patient identifiers; a
    copied or renamed slide still resumes its segmentation.
    """
    p = Path(path)
    if p.is_dir():
        p = next((p / n for n in ("zarr.json", ".zattrs", ".zgroup") if (p / n).is_file()), p)
    if p.is_dir():
        names = sorted(q.name for q in p.iterdir())
        return "dir:" + hashlib.sha256("\n".join(names).encode()).hexdigest()
    size = p.stat().st_size
    digest = hashlib.sha256()
    with p.open("rb") as f:
        digest.update(f.read(FINGERPRINT_BYTES))
        if size > FINGERPRINT_BYTES:
            f.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
            digest.update(f.read(FINGERPRINT_BYTES))
    return f"{size}:sha256:{digest.hexdigest()}"


def _fingerprint(slide: Slide, model_id: str, s: SegmentSettings, shape: tuple[int, int]) -> dict[str, Any]:
    """What must match for a rerun to resume an existing output.

    ``model_id`` is ``sha256:<model_hash>`` for a model folder (its weights and settings, not its
    path: a model retrained in the same folder must not finish a segmentation the old one began).
    The slide counts by content, not by path (:func:`slide_fingerprint`).
    """
    keep = ("mpp", "tile", "overlap", "chunk", "probabilities", "skip_background", "tissue_mpp")
    return {
        "slide": slide_fingerprint(slide.path),
        "slide_mpp": slide.mpp[0],
        "model": model_id,
        "shape": list(shape),
        **{k: getattr(s, k) for k in keep},
    }


def _prepare_output(
    out: Path,
    fingerprint: dict,
    predictor: DensePredictor,
    slide: Slide,
    s: SegmentSettings,
    overwrite: bool,
    inputs: dict[str, Any],
    reuse_finished: bool = False,
):
    """Create the store, or reopen it for resuming.

    Returns:
        ``(store, done markers, state)``; state is ``"new"`` (created by this call), ``"resumed"``
        or ``"finished"`` (a finished output of the same inputs, with ``reuse_finished``; the
        store is then None and nothing is written).
    """
    import zarr

    classes = tuple(predictor.classes)
    palette = palette_by_value(predictor.palette, len(classes), predictor.background_index)
    if out.exists() and any(out.iterdir()) and not overwrite:  # segment_slide checked it is a folder
        attrs = _run_attrs(out)
        if not attrs:
            raise OutputExistsError(
                f"{out} exists but is not a readable segmentation store, so it cannot be resumed or exported: "
                "choose another output (or --overwrite an earlier segmentation)"
            )
        finished = attrs.get("status") == "complete"
        if finished and not reuse_finished:
            raise OutputExistsError(
                f"{out} already holds a finished segmentation; pass --overwrite to redo it "
                "(or only --geojson/--areas to export it)"
            )
        if attrs.get("layout") == "bare" and not finished:
            raise OutputExistsError(
                f"{out} is an unfinished segmentation in the layout of an earlier napari-pbip (a bare label "
                "image), which this version does not resume; pass --overwrite to start it again"
            )
        saved = attrs.get("fingerprint") or {}
        _check_same_model(out, inputs["model"], str(saved.get("model")), str(fingerprint["model"]))
        if saved != fingerprint:
            differ = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
            what = ", ".join(f"{k} {saved.get(k)!r} then, {fingerprint.get(k)!r} now" for k in differ)
            raise OutputExistsError(
                f"{out} exists but was started with other inputs ({what}), so it cannot be resumed; rerun "
                f"with the same ones (e.g. --tile, --overlap, --chunk, --mpp as then), choose another output, "
                f"or pass --overwrite"
            )
        if finished:
            return None, _read_markers(out), "finished"
        ome = zarr.open_group(str(label_group_path(out)), mode="r").attrs["ome"]
        store = LabelsStore(
            out,
            tuple(fingerprint["shape"]),
            s.mpp,
            len(ome["multiscales"][0]["datasets"]),
            s.chunk,
            classes,
            palette,
            s.probabilities,
        )
        return store, _read_markers(out), "resumed"
    _atomic.clear_output(out, OUTPUT_KIND, inputs)  # only a previous segmentation (or an empty folder)
    image_mpp = max(s.tissue_mpp, s.mpp)  # the slide as tissue detection reads it: small and cheap
    try:
        store = create_labels_store(
            out,
            tuple(fingerprint["shape"]),
            s.mpp,
            classes,
            palette,
            s.chunk,
            s.probabilities,
            {"status": "running", "fingerprint": fingerprint},
            image=slide.read_all(image_mpp),
            image_mpp=image_mpp,
        )
        _atomic.mark_output(out, OUTPUT_KIND, in_zarr=True)
        pbip = zarr.open_group(str(out / "pbip"), mode="w", zarr_format=3)
        pbip.attrs["settings"] = {"settings": type(s).__name__, **s.to_dict()}
        pbip.create_group("done")
    except BaseException:
        _remove_unstarted(out)
        raise
    return store, {}, "new"


def _run_attrs(out: Path) -> dict[str, Any]:
    """The run metadata of an existing output (``layout: "bare"`` for an earlier version's layout)."""
    import zarr

    try:
        return dict(zarr.open_group(str(label_group_path(out)), mode="r").attrs.get("pbip") or {})
    except Exception:
        pass
    try:
        old = dict(zarr.open_group(str(out), mode="r").attrs.asdict().get("pbip") or {})
    except Exception:
        return {}
    return {**old, "layout": "bare"} if old else {}


def _set_run_attrs(out: Path, **values: Any) -> None:
    import zarr

    group = zarr.open_group(str(label_group_path(out)), mode="r+")
    group.attrs["pbip"] = {**dict(group.attrs["pbip"]), **values}


def _check_same_model(out: Path, model: Any, then: str, now: str) -> None:
    """Refuse to resume ``out`` with a model folder whose weights or settings changed."""
    if then != now and then.startswith("sha256:") and now.startswith("sha256:"):
        raise OutputExistsError(
            f"the model {model} changed since {out} was started (weights and model.json hash "
            f"{then[7:19]} then, {now[7:19]} now), so its finished chunks cannot be mixed with the new "
            f"model's: use a new --out, or pass --overwrite to start this one again"
        )


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
        ``Progress("tissue")`` once with the :class:`TissueMask` as payload, then
        ``Progress("segment")`` per finished chunk with a :class:`ChunkDone` payload.

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
    fingerprint = _fingerprint(slide, _model_id(predictor, content), s, shape)
    if s.compile:
        _check_compilable(predictor)  # before any output is written
    store, done, state = _prepare_output(
        out, fingerprint, predictor, slide, s, overwrite, inputs, reuse_finished
    )
    if state == "finished":
        return _finished_result(out, predictor, s, shape, done, time.perf_counter() - t_start)
    try:
        job = _segment(out, slide, predictor, model_path, content, s, shape, store, done, t_start)
        return (yield from job)
    except BaseException:
        if state == "new":
            _remove_unstarted(out)
        raise


def _remove_unstarted(out: Path) -> None:
    """Delete an output created by this run when no chunk of it finished: a stub would only block
    the next run (with other settings) and holds nothing to resume."""
    import shutil

    try:
        if not any((out / "pbip" / "done").glob("*/zarr.json")):
            shutil.rmtree(out, ignore_errors=True)
    except OSError:
        pass  # leave it; the original error is what the user needs to see


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
        yield Progress("compile", 0, 1, "compiling the model (once per process; can take a minute)")
        t = time.perf_counter()
        if model_path:
            predictor = _cached_predictor(model_path, s.device, (s.batch, s.tile), content)
        else:
            predictor = _compiled(predictor, s.batch, s.tile)
        compile_seconds = time.perf_counter() - t
        yield Progress("compile", 1, 1, f"model compiled in {compile_seconds:.0f} s")

    tissue = None
    if s.skip_background:
        yield Progress("tissue", 0, 1, "detecting tissue")
        tissue = detect_tissue(slide, TissueSettings(mpp=s.tissue_mpp))
        _save_tissue(out, tissue)
        yield Progress("tissue", 1, 1, f"tissue covers {tissue.fraction:.1%} of the slide", payload=tissue)

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
    yield Progress("segment", len(summaries), len(boxes), f"{len(done)} chunks already done")
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
            yield Progress("segment", len(summaries), len(boxes), msg, {"tiles/s": rate}, payload)
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


def _save_tissue(out: Path, tissue: TissueMask) -> None:
    """The tissue mask as a zarr array ``pbip/tissue`` (255 = tissue) with its um/px and origin."""
    import zarr

    group = zarr.open_group(str(out / "pbip"), mode="r+")
    arr = group.create_array(
        "tissue",
        shape=tissue.mask.shape,
        dtype="uint8",
        fill_value=0,
        overwrite=True,
        dimension_names=("y", "x"),
    )
    arr[:] = tissue.mask.astype(np.uint8) * 255
    arr.attrs.update({"mpp": tissue.mpp, "origin": list(tissue.origin)})


def _finished_result(
    out: Path,
    predictor: DensePredictor,
    s: SegmentSettings,
    shape: tuple[int, int],
    summaries: dict[tuple[int, int], ChunkSummary],
    seconds: float,
) -> SegmentResult:
    """The result of an output finished by an earlier run, read from its attributes and markers."""
    tissue = _run_attrs(out).get("tissue_fraction")
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
    )
    return result


def _finish(out, slide, predictor, s, shape, tissue, summaries, resumed, seconds) -> SegmentResult:
    fraction = None if tissue is None else tissue.fraction
    result = _summarise(out, predictor, s, shape, fraction, summaries, resumed, seconds)
    _set_run_attrs(
        out,
        status="complete",
        slide_mpp=slide.mpp[0],
        slide_shape=list(slide.shape),
        class_pixels=result.class_pixels,
        tissue_fraction=result.tissue_fraction,
    )
    return result
