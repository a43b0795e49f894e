"""What the Train segmenter widget runs, without Qt: from a stage-1 run to pseudo-masks to a segmenter.

:func:`plan` checks the paths and decides, before anything starts, whether the pseudo-masks are
made or reused (:func:`~napari_pbip.stage1.pseudo_masks_current`) and whether the outputs may be
written; :func:`pseudo_then_train` is the job: the library's ``make_pseudo_masks`` (``pbip
pseudo``), a preview of the masks, then ``train_segmenter`` (``pbip train-seg``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PbipError
from ..events import Job, Progress
from ._mask_preview import mask_preview


class PlanError(PbipError):
    """A path of the form cannot be used; ``field`` names the form field to mark."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Plan:
    """What one Start (or Pseudo-masks) does, decided before the job starts.

    Attributes:
        run: the stage-1 run folder.
        dataset: its data set folder.
        masks: the pseudo-mask folder.
        cam: how CAMs become masks (``CamSettings``).
        make_masks: make the masks (False: reuse the finished ones in ``masks``).
        replace_masks: the new masks replace a previous pseudo-mask folder.
        device: torch device.
        seg: the segmenter's settings (``SegSettings``); None: pseudo-masks only.
        out: the segmenter folder.
        resume: continue the segmenter run in ``out``.
        overwrite: replace a previous segmenter folder ``out``.
    """

    run: Path
    dataset: Path
    masks: Path
    cam: Any
    make_masks: bool
    replace_masks: bool
    device: str = "auto"
    seg: Any = None
    out: Path | None = None
    resume: bool = False
    overwrite: bool = False


def default_masks(run: Path) -> Path:
    """Where the pseudo-masks of ``run`` go when no folder is given: ``RUN-pseudo`` beside it."""
    return run.with_name(f"{run.name}-pseudo")


def plan(
    run: Path | None,
    dataset: Path | None,
    masks: Path | None,
    cam: Any,
    *,
    replace: bool = False,
    device: str = "auto",
    seg: Any = None,
    out: Path | None = None,
    resume: bool = False,
) -> Plan:
    """Decide what to run; ``seg`` None plans the pseudo-masks only.

    Masks made from ``run`` with ``cam`` are reused; other masks in ``masks`` are replaced only with
    ``replace``, and only when a previous pseudo-mask job wrote them. A resumed segmenter keeps the
    masks it was trained on.

    Raises:
        PlanError: naming the field (``run``, ``dataset``, ``masks``, ``out``) and what to do.
    """
    from .. import _atomic
    from ..stage1 import pseudo_masks_current
    from ..stage1.predict import PSEUDO
    from ..stage2.seg_train import OUTPUT_KIND as SEGMENTER_KIND

    if run is None or not (run / "model.json").is_file():
        raise PlanError(
            "run",
            f"{run or '(empty)'} is not a finished stage-1 run (no model.json); train one in Train PBIP first",
        )
    if dataset is None or not dataset.is_dir():
        raise PlanError(
            "dataset",
            f"data set folder {dataset or '(empty)'} does not exist; choose the data set the run was trained on",
        )
    masks = masks or default_masks(run)
    make = not pseudo_masks_current(masks, run, cam)
    if make and seg is not None and resume:
        if _atomic.output_kind(masks) != PSEUDO:
            raise PlanError(
                "masks",
                f"{masks} holds no finished pseudo-masks to resume the segmenter with; give the folder it "
                "was trained on",
            )
        make = False
    replace_masks = make and masks.is_dir() and any(masks.iterdir())
    if replace_masks and not replace:
        raise PlanError(
            "masks",
            f"{masks} holds pseudo-masks made with other settings or from an earlier run; tick 'replace' to "
            "remake them, or choose another folder",
        )
    _checked("masks", masks, PSEUDO, {"run": run, "data set": dataset}, overwrite=True, resume=not make)
    if seg is None:
        return Plan(run, dataset, masks, cam, make, replace_masks, device)
    if out is None:
        raise PlanError("out", "give the segmenter folder to write")
    _checked(
        "out", out, SEGMENTER_KIND, {"data set": dataset, "masks": masks}, overwrite=replace, resume=resume
    )
    return Plan(run, dataset, masks, cam, make, replace_masks, device, seg, out, resume, replace)


def _checked(field: str, path: Path, kind: str, inputs: dict[str, Path], **how: bool) -> None:
    from .. import _atomic

    try:
        _atomic.check_output(path, kind, inputs, **how)
    except PbipError as exc:
        raise PlanError(field, str(exc)) from None


def pseudo_then_train(p: Plan) -> Job[Any]:
    """Make (or reuse) the pseudo-masks, yield a preview of them, then train the segmenter.

    Returns the segmenter's ``TrainResult``, or the mask folder when ``p.seg`` is None.
    """
    from ..stage1 import make_pseudo_masks
    from ..stage1.predict import PSEUDO
    from ..stage2 import train_segmenter

    if p.make_masks:
        yield from make_pseudo_masks(
            p.run, p.dataset, p.masks, settings=p.cam, device=p.device, overwrite=p.replace_masks
        )
    preview = mask_preview(p.dataset, p.masks)
    n = len(preview.maps["names"])
    yield Progress(PSEUDO, 1, 1, f"pseudo-masks in {p.masks} (preview of {n})", payload=preview)
    if p.seg is None:
        return p.masks
    return (
        yield from train_segmenter(p.seg, p.dataset, p.masks, p.out, resume=p.resume, overwrite=p.overwrite)
    )


def offer_model(viewer: Any, model: Path) -> int:
    """Put ``model`` in the model field of every Segment slide widget docked in ``viewer``'s window;
    returns how many got it."""
    window = getattr(viewer, "window", None)
    docked = list(getattr(window, "dock_widgets", {}).values()) if window is not None else []
    takers = [w for w in docked if callable(getattr(w, "offer_model", None))]
    for w in takers:
        w.offer_model(model)
    return len(takers)
