"""The segmentation output's bookkeeping: create or reopen the store, resume fingerprint, done markers.

pbip's bookkeeping lies in the ``pbip`` group as zarr nodes, so that zarr finds no stray file: the
settings and the tissue mask (an array) and one group per finished chunk under ``pbip/done`` whose
attributes are the chunk's summary (:class:`ChunkSummary`). The run's metadata (status, resume
fingerprint) is under ``pbip`` in the label image's attributes (:mod:`napari_pbip.export.run_record`). The slide is recorded by content
(:func:`slide_fingerprint`), never by its path.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import _atomic
from ..errors import OutputExistsError
from ..export.label_values import palette_by_value
from ..export.ome_zarr import LabelsStore, create_labels_store
from ..export.run_record import label_levels, read_run_record
from ..predict.predictor import DensePredictor
from .readers import Slide
from .segment_settings import SegmentSettings
from .tissue import TissueMask

OUTPUT_KIND = "segment"  # the command named in the output store's marker

FINGERPRINT_BYTES = 1024**2  # slide_fingerprint hashes this much of the file's start and end


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
    unreadable: list[list[int]] = field(
        default_factory=list
    )  # level-0 boxes of tiles that could not be decoded


def _group_doc(attributes: dict[str, Any]) -> dict[str, Any]:
    """A zarr (format 3) group's metadata document holding ``attributes``."""
    return {"zarr_format": 3, "node_type": "group", "attributes": attributes}


def marker_path(out: Path, index: tuple[int, int]) -> Path:
    """A chunk's done marker: a zarr group (its ``zarr.json``, written atomically) under ``pbip/done``."""
    return Path(out) / "pbip" / "done" / f"{index[0]}_{index[1]}" / "zarr.json"


def write_marker(out: Path, summary: ChunkSummary) -> None:
    """Mark a chunk finished: its summary as the attributes of a group under ``pbip/done``."""
    _atomic.write_json(marker_path(out, summary.index), _group_doc(asdict(summary)))


def read_markers(out: Path) -> dict[tuple[int, int], ChunkSummary]:
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


def run_fingerprint(
    slide: Slide, model_id: str, s: SegmentSettings, shape: tuple[int, int]
) -> dict[str, Any]:
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


def prepare_output(
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
        attrs = read_run_record(out)
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
        check_same_model(out, inputs["model"], str(saved.get("model")), str(fingerprint["model"]))
        if saved != fingerprint:
            differ = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
            what = ", ".join(f"{k} {saved.get(k)!r} then, {fingerprint.get(k)!r} now" for k in differ)
            raise OutputExistsError(
                f"{out} exists but was started with other inputs ({what}), so it cannot be resumed; rerun "
                f"with the same ones (e.g. --tile, --overlap, --chunk, --mpp as then), choose another output, "
                f"or pass --overwrite"
            )
        if finished:
            return None, read_markers(out), "finished"
        store = LabelsStore(
            out,
            tuple(fingerprint["shape"]),
            s.mpp,
            label_levels(out),
            s.chunk,
            classes,
            palette,
            s.probabilities,
        )
        return store, read_markers(out), "resumed"
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
            image=slide.read_all(image_mpp, unreadable=[]),  # a picture: damaged tiles show as glass
            image_mpp=image_mpp,
        )
        _atomic.mark_output(out, OUTPUT_KIND, in_zarr=True)
        pbip = zarr.open_group(str(out / "pbip"), mode="w", zarr_format=3)
        pbip.attrs["settings"] = {"settings": type(s).__name__, **s.to_dict()}
        pbip.create_group("done")
    except BaseException:
        remove_unstarted(out)
        raise
    return store, {}, "new"


def check_same_model(out: Path, model: Any, then: str, now: str) -> None:
    """Refuse to resume ``out`` with a model folder whose weights or settings changed."""
    if then != now and then.startswith("sha256:") and now.startswith("sha256:"):
        raise OutputExistsError(
            f"the model {model} changed since {out} was started (weights and model.json hash "
            f"{then[7:19]} then, {now[7:19]} now), so its finished chunks cannot be mixed with the new "
            f"model's: use a new --out, or pass --overwrite to start this one again"
        )


def remove_unstarted(out: Path) -> None:
    """Delete an output created by this run when no chunk of it finished: a stub would only block
    the next run (with other settings) and holds nothing to resume."""
    import shutil

    try:
        if not any((out / "pbip" / "done").glob("*/zarr.json")):
            shutil.rmtree(out, ignore_errors=True)
    except OSError:
        pass  # leave it; the original error is what the user needs to see


def save_tissue(out: Path, tissue: TissueMask) -> None:
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
