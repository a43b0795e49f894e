"""Progress events: long jobs are generators that yield these and return their result.

The CLI drains a job with :func:`run`, the napari widgets wrap the same generator in
``thread_worker`` and tests call :func:`run` directly. What a reader acts on travels as a typed
``payload`` (tested with ``isinstance``), never in the message text: a training job's first event
carries :class:`RunStarted`, each optimizer step :class:`StepMetrics`, its previews :class:`Preview`,
its checkpoints :class:`CheckpointSaved`; a slide's chunks carry
:class:`~napari_pbip.slides.segment.ChunkDone`.

A job's stage names (``Progress.stage``) are constants of the module that yields them (for example
``slides.segment.SEGMENT_STAGE``); a reader imports them instead of spelling the string.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

LOSS = "loss"  # the loss a training step minimises, among its named parts and in log.jsonl
VAL_MIOU = "val_miou"  # the name a step's val mIoU is shown and plotted under


@dataclass
class Progress:
    """One progress report from a long job.

    Attributes:
        stage: short name of the job part ("encode", "kmeans", "train", "segment", ...), a constant
            of the module that yields it.
        step: units done so far within ``stage``.
        total: units in ``stage`` (None when unknown).
        message: one human-readable line.
        metrics: named rates and counts shown beside the progress bar (``images/s``, ``tiles/s``);
            nothing acts on them. A training step's numbers are its :class:`StepMetrics` payload.
        payload: typed objects for readers and live views (step metrics, previews, finished
            chunks); may be None.
    """

    stage: str
    step: int = 0
    total: int | None = None
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    payload: Any = None

    @property
    def fraction(self) -> float | None:
        """Share of ``stage`` done, in [0, 1], or None when the total is unknown."""
        if not self.total:
            return None
        return min(1.0, self.step / self.total)


@dataclass(frozen=True)
class RunStarted:
    """Payload of a training job's first event.

    Attributes:
        device: the torch device it trains on (``"cpu"``, ``"cuda:0"``), resolved from ``"auto"``.
        start_step: steps already done (0 for a new run, the checkpoint's step when resumed).
        total_steps: steps of the whole run.
    """

    device: str
    start_step: int
    total_steps: int


@dataclass(frozen=True)
class StepMetrics:
    """Payload of the event a training job (either stage) yields after each optimizer step.

    Attributes:
        step: the step just done (1 after the first).
        total: steps of the whole run.
        epoch: epochs done, fractional (``step / steps per epoch``).
        loss: the loss the step minimised.
        parts: the stage's other named loss parts (stage 1: ``stage1.losses.CLS``, ``FG``, ``BG``;
            stage 2: none).
        lr: the step's learning rate (of the first parameter group).
        images_per_s: the step's images over its wall time.
        val_miou: val mIoU of the validation after this step (an epoch's last step, with val
            masks); None otherwise.
    """

    step: int
    total: int
    epoch: float
    loss: float
    parts: dict[str, float] = field(default_factory=dict)
    lr: float = 0.0
    images_per_s: float = 0.0
    val_miou: float | None = None

    def named(self) -> dict[str, float]:
        """The numbers by name, as the CLI's progress line shows them and the plots pick their
        curves: ``loss``, the parts, ``lr``, ``epoch``, ``images_per_s`` and, when set, ``val_miou``.

        The one place the fields become the keys of ``log.jsonl`` (see :meth:`log_line`).
        """
        named = {
            LOSS: self.loss,
            **self.parts,
            "lr": self.lr,
            "epoch": self.epoch,
            "images_per_s": self.images_per_s,
        }
        if self.val_miou is not None:
            named[VAL_MIOU] = self.val_miou
        return named

    def log_line(self) -> dict[str, float]:
        """The step's line in ``RUN/log.jsonl``: ``step`` and :meth:`named` without ``val_miou``
        (a validation writes a line of its own)."""
        named = self.named()
        named.pop(VAL_MIOU, None)
        return {"step": self.step, **named}


@dataclass(frozen=True)
class Preview:
    """Payload of a training step that shows what the model sees (every ``preview_every`` steps).

    Attributes:
        step: the training step shown.
        maps: the stage's arrays and class table (stage 1: images, CAMs, FG/BG maps, masks; see
            :func:`napari_pbip.stage1.preview.preview_payload`).
        layers: view layers made from ``maps`` before the GUI thread gets them,
            ``(fgbg_class, layers)``, or None.
    """

    step: int
    maps: dict[str, Any]
    layers: tuple[Any, Any] | None = None


@dataclass(frozen=True)
class CheckpointSaved:
    """Payload of the event a training job yields after writing its checkpoint (at the end of each
    epoch and of the run). A Stop or Ctrl-C checkpoints after the job's last event: read that one
    from ``RUN/last``.

    Attributes:
        step: the step the checkpoint holds.
        folder: the checkpoint folder (``RUN/last``), which ``--resume`` continues from.
        best_step: the step of the best checkpoint by val mIoU (``RUN/best``); None without val masks.
    """

    step: int
    folder: str
    best_step: int | None = None


Job = Generator[Progress, None, T]


def run(job: Job[T], on_event: Callable[[Progress], None] | None = None) -> T:
    """Drain ``job``, passing each event to ``on_event``, and return the job's result."""
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)


def relay(job: Job[T], consume: Callable[[Progress], bool]) -> Job[T]:
    """Pass ``job``'s events on, except those ``consume(event)`` takes (returns True for), and
    return its result; closing the relay closes ``job`` (so a stop reaches the job at that event)."""
    try:
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                return stop.value
            if not consume(event):
                yield event
    finally:
        job.close()
