"""The training engine both stages run on: a run folder's life, written once.

A stage (stage 1's ClassNet, stage 2's segmenter, a later fine-tuning on corrections) subclasses
:class:`TrainingStage` and gives what is its own: how to describe itself, one optimizer step,
a validation, the extra fields of its checkpoint state and its ``model.json`` metadata.
:func:`run_training` does the rest, the same for every stage:

* a new run empties and marks ``out`` and saves the settings; ``resume`` restores ``out/last``
  (weights, optimizer, step, best) and cuts the log back to that step;
* the step loop, one :class:`~napari_pbip.events.Progress` with a
  :class:`~napari_pbip.events.StepMetrics` per optimizer step, with the poly learning-rate
  schedule, previews every ``preview_every`` steps and ``settings.max_minutes``;
* after each epoch a validation, ``best/`` kept by val mIoU, and a checkpoint;
* Stop (closing the generator), Ctrl-C or an error checkpoints the last completed step, unless
  the model was caught mid-update (then the previous checkpoint stands);
* ``log.jsonl`` holds one line per step and per validation (:mod:`.runlog`); ``model.json`` and
  ``model.safetensors`` always name the weights inference should use (best with val, else last).

Every random draw of a stage must be keyed by ``(seed, step)``, so that a run stopped and resumed
ends with the same weights as one that ran straight through.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from .. import _atomic
from ..events import LOSS, CheckpointSaved, Job, Preview, Progress, RunStarted, StepMetrics
from . import checkpoint
from .model_meta import MODEL_FILE, read_model_json
from .runlog import append_log, truncate_log

VAL_FIELDS = ("miou", "fwiou", "mean_dice", "pixel_accuracy", "n_images")  # what a validation reports


@dataclass
class TrainResult:
    """What a finished (or stopped) training job leaves, for every stage.

    Attributes:
        out: the run folder (stage 1's run, stage 2's segmenter folder).
        step: optimizer steps done.
        total_steps: steps planned (``epochs * steps_per_epoch``).
        stopped: ``"finished"`` or ``"time limit"`` (resume to continue).
        best: val metrics of the best checkpoint (None without val masks).
        history: the val metrics of each validation.
    """

    out: Path
    step: int
    total_steps: int
    stopped: str
    best: dict[str, Any] | None
    history: list[dict[str, Any]]

    @property
    def run(self) -> Path:
        """The run folder: the name stage-1 results had before both stages shared this type."""
        return self.out


class TrainingStage:
    """One stage's part of a training run; :func:`run_training` drives it.

    A subclass sets, in its ``__init__``: ``settings`` (frozen settings with ``epochs``,
    ``max_minutes``, ``poly_power`` and ``save``), ``out``, ``classes``, ``model``, ``optimizer``
    (param groups with a ``base_lr``), ``device``, ``steps_per_epoch``, ``val`` (the masked val
    samples, may be empty) and ``meta`` (its ``model.json`` fields); and the class attributes
    below. The engine keeps ``step``, ``saved_step``, ``best``, ``history`` and ``notes`` on it.
    """

    event: ClassVar[str]  # the Progress stage of its events, a constant of the stage's module
    output_kind: ClassVar[str]  # the command named in the run folder's output marker
    model_kind: ClassVar[str]  # stamped in model.json and the checkpoints' weights
    preview_every: int = 0  # steps between previews (0: none)

    step: int = 0
    saved_step: int = -1  # the step on disk in last/ (-1: none yet)
    best: dict[str, Any] | None = None
    dirty: bool = False  # True from a step's forward pass until its optimizer update is done

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.notes: list[str] = []  # lines for the next step's message (e.g. a smaller micro-batch)

    @property
    def total(self) -> int:
        """Optimizer steps of the whole run."""
        return self.settings.epochs * self.steps_per_epoch

    # -- what a stage gives --------------------------------------------------------------------

    def inputs(self) -> dict[str, Any]:
        """The run's inputs by name (``{"data set": ds, ...}``): a new run never empties one of them."""
        raise NotImplementedError

    def describe(self) -> str:
        """What is trained on what, for the start message (``"pbip on 48 images"``)."""
        raise NotImplementedError

    def train_step(self, step: int) -> tuple[dict[str, float], int]:
        """Load batch ``step``, call :meth:`begin_update`, forward, backward, update.

        Returns:
            The named loss parts (:data:`~napari_pbip.events.LOSS`, the one minimised, and any
            others) and the number of images in the batch.
        """
        raise NotImplementedError

    def validate(self) -> dict[str, Any] | None:
        """The val metrics (:data:`VAL_FIELDS`, best kept by ``miou``); None without val images."""
        return None

    def preview(self) -> dict[str, Any] | None:
        """The arrays of a :class:`~napari_pbip.events.Preview` (every :attr:`preview_every` steps)."""
        return None

    def extra_state(self) -> dict[str, Any]:
        """Fields of its own in each checkpoint's ``state.json``."""
        return {}

    def load_state(self, state: dict[str, Any], saved_meta: dict[str, Any]) -> None:
        """Take back :meth:`extra_state` when resuming; ``saved_meta`` is the run's ``model.json``
        (empty when it has none). Raise :class:`~napari_pbip.errors.CheckpointError` to refuse."""

    def close(self) -> None:
        """Release what the stage holds (loader threads) when the job ends, however it ends."""

    # -- what a stage calls --------------------------------------------------------------------

    def begin_update(self) -> None:
        """Set the step's learning rate (poly schedule) and train mode; from here until the step
        ends the model changes, so a stop in between keeps the previous checkpoint."""
        factor = (1 - self.step / self.total) ** self.settings.poly_power
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.model.train()
        self.dirty = True

    # -- run-folder bookkeeping ----------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """A checkpoint's ``state.json`` fields (the optimizer's are added by the checkpoint)."""
        return {
            "step": self.step,
            "epoch": self.step / self.steps_per_epoch,
            "classes": list(self.classes),
            "best": self.best,
            **self.extra_state(),
        }


def run_training(stage: TrainingStage, resume: bool) -> Job[TrainResult]:
    """Train ``stage`` until its last step or its time limit; checkpoint on every exit.

    Yields ``Progress(stage.event, ...)``: first the start, with a
    :class:`~napari_pbip.events.RunStarted` payload, then one per optimizer step with a
    :class:`~napari_pbip.events.StepMetrics` payload (``val_miou`` set after a validation),
    followed, when due, by one with a :class:`~napari_pbip.events.Preview` payload; after each
    checkpoint (epoch ends, the run's end) one with a :class:`~napari_pbip.events.CheckpointSaved`
    payload.
    """
    out, settings = stage.out, stage.settings
    if resume:
        _restore(stage)
    else:
        _atomic.clear_output(out, stage.output_kind, stage.inputs())
        out.mkdir(parents=True)
        settings.save(out / "settings.json")
    _atomic.mark_output(out, stage.output_kind)  # runs from before the marker get it when resumed
    start, stopped = time.monotonic(), "finished"
    stage.dirty = False
    started = RunStarted(str(stage.device), stage.step, stage.total)
    yield Progress(stage.event, stage.step, stage.total, _start_message(stage, resume), payload=started)
    try:
        while stage.step < stage.total:
            epoch, index = divmod(stage.step, stage.steps_per_epoch)
            saved_before = stage.saved_step
            metrics = _step(stage)
            append_log(out, metrics.log_line())
            if index == stage.steps_per_epoch - 1:
                metrics = replace(metrics, val_miou=_end_epoch(stage))
            message = f"epoch {epoch + 1}/{settings.epochs}" + "".join(f"; {n}" for n in stage.notes)
            stage.notes.clear()
            yield Progress(stage.event, stage.step, stage.total, message, payload=metrics)
            every = stage.preview_every
            due = bool(every) and (stage.step % every == 0 or stage.step == stage.total)
            maps = stage.preview() if due else None  # the last step too: short runs show their end
            if maps is not None:
                yield Progress(stage.event, stage.step, stage.total, payload=Preview(stage.step, maps))
            if stage.saved_step > saved_before:
                yield _checkpoint_event(stage)
            if (
                settings.max_minutes
                and time.monotonic() - start > 60 * settings.max_minutes
                and stage.step < stage.total
            ):
                stopped = "time limit"
                break
    except BaseException:  # Stop, Ctrl-C, an unreadable image...: keep the last completed step
        if not stage.dirty and stage.step > stage.saved_step:
            _save(stage)
        raise
    finally:
        stage.close()
    if stage.step > stage.saved_step:
        _save(stage)
        yield _checkpoint_event(stage)
    return TrainResult(out, stage.step, stage.total, stopped, stage.best, stage.history)


def _step(stage: TrainingStage) -> StepMetrics:
    """Run the stage's next optimizer step and return its numbers."""
    t0 = time.perf_counter()
    parts, n_images = stage.train_step(stage.step)
    stage.step += 1
    stage.dirty = False
    parts = dict(parts)
    loss = parts.pop(LOSS)
    return StepMetrics(
        step=stage.step,
        total=stage.total,
        epoch=stage.step / stage.steps_per_epoch,
        loss=loss,
        parts=parts,
        lr=stage.optimizer.param_groups[0]["lr"],
        images_per_s=n_images / max(time.perf_counter() - t0, 1e-9),
    )


def _checkpoint_event(stage: TrainingStage) -> Progress:
    folder = stage.out / "last"
    best = None if stage.best is None else stage.best.get("step")
    saved = CheckpointSaved(stage.saved_step, str(folder), best)
    return Progress(
        stage.event, stage.step, stage.total, f"checkpoint: step {saved.step} in {folder}", payload=saved
    )


def _start_message(stage: TrainingStage, resume: bool) -> str:
    head = f"resumed at step {stage.step}: " if resume else "started: "
    what = f"{stage.describe()}, {stage.steps_per_epoch} steps/epoch, {stage.total} steps"
    val = f", val on {len(stage.val)} masked images" if stage.val else ", no val masks (best = last)"
    return head + what + val + f", device {stage.device}"


def _end_epoch(stage: TrainingStage) -> float | None:
    """Validate (best by val mIoU) and checkpoint; the val mIoU (None without val masks)."""
    result = stage.validate()
    if result is not None:
        entry = {"step": stage.step, "epoch": stage.step // stage.steps_per_epoch, "val": result}
        stage.history.append(entry)
        append_log(stage.out, entry)
        if stage.best is None or (result["miou"] or 0) > (stage.best.get("miou") or 0):
            stage.best = {**result, "step": stage.step}
            checkpoint.save_checkpoint(stage.out / "best", stage.model, stage.state(), kind=stage.model_kind)
    _save(stage)
    return None if result is None else result["miou"]


def _save(stage: TrainingStage) -> None:
    """Checkpoint ``last`` and refresh the inference weights (best with val, else last)."""
    out = stage.out
    checkpoint.save_checkpoint(
        out / "last", stage.model, stage.state(), stage.optimizer, kind=stage.model_kind
    )
    stage.saved_step = stage.step
    source = out / ("best" if stage.best is not None and (out / "best").is_dir() else "last")
    with _atomic.atomic_path(out / "model.safetensors") as tmp:
        shutil.copyfile(source / "model.safetensors", tmp)
    meta = {**stage.meta, "step": stage.step, "weights": source.name, "best": stage.best}
    _atomic.write_json(out / "model.json", meta)


def _restore(stage: TrainingStage) -> None:
    out = stage.out
    state = checkpoint.load_checkpoint(out / "last", stage.model, stage.optimizer, tuple(stage.classes))
    saved = read_model_json(out) if (out / MODEL_FILE).is_file() else {}
    stage.load_state(state, saved)
    stage.step = stage.saved_step = int(state["step"])
    stage.best = state.get("best")
    truncate_log(out, stage.step)


def masked_val_samples(ds) -> list:
    """The samples of a data set's ``val`` split that have a mask (what a validation scores)."""
    if "val" not in ds.splits():
        return []
    return [s for s in ds.samples("val") if s.mask is not None]
