"""What the two training widgets (Train PBIP, Train segmenter) show alike while a run goes on.

The metrics line, the device and memory line, and the step of the last checkpoint; the spin boxes
of their forms; and Pause / Continue / Stop of the running job (:class:`PausableTraining`).
"""

from __future__ import annotations

import os
from pathlib import Path

from qtpy.QtWidgets import QSpinBox

from ..engine.checkpoint import read_state
from ..errors import CheckpointError
from ..events import VAL_MIOU, CheckpointSaved, StepMetrics


class PausableTraining:
    """Pause, Continue and Stop of a training widget's job.

    Mixed into a widget that holds ``worker`` (a :class:`~napari_pbip._widgets._worker.JobWorker`
    or None), ``step``, ``pause_button``, ``status`` (a StatusLine) and ``_message``.
    """

    def watch_pause(self, worker) -> None:
        """Show the worker's pauses on the Pause button and the status line."""
        worker.paused.connect(lambda: self._paused(True))
        worker.resumed.connect(lambda: self._paused(False))

    def toggle_pause(self) -> None:
        """Pause after the current step, or carry on."""
        if self.worker is not None:
            self.worker.toggle_pause()

    def stop(self) -> None:
        """Stop after the current step; the training job checkpoints it."""
        if self.worker is not None:
            self.worker.quit()

    @property
    def paused(self) -> bool:
        """True while the job is paused."""
        return self.worker is not None and self.worker.is_paused

    def _paused(self, paused: bool) -> None:
        self.pause_button.setText("Continue" if paused else "Pause")
        self._message = None
        self.status.info(f"paused at step {self.step}" if paused else f"continuing from step {self.step}")


def spin(lo: int, hi: int, value: int, step: int = 1) -> QSpinBox:
    """An integer spin box from ``lo`` to ``hi`` showing ``value``."""
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setSingleStep(step)
    box.setValue(value)
    return box


def memory_text(device: str) -> str:
    """Resident memory of this process, and CUDA memory when training runs on a GPU."""
    import sys

    import psutil

    text = f"RSS {psutil.Process().memory_info().rss / 1e9:.2f} GB"
    torch = sys.modules.get("torch")
    if device.startswith("cuda") and torch is not None and torch.cuda.is_available():
        text += f", CUDA {torch.cuda.memory_allocated() / 1e9:.2f} GB (peak {torch.cuda.max_memory_allocated() / 1e9:.2f})"
    return text


def metrics_text(metrics: StepMetrics, last: dict[str, float]) -> str:
    """``step s/t, epoch e, n images/s[, val mIoU m] | loss parts`` for a training step's metrics.

    ``last`` holds the latest value of each plotted series (the loss parts, and val mIoU where plotted).
    """
    m = metrics
    text = f"step {m.step}/{m.total}, epoch {m.epoch:.2f}, {m.images_per_s:.1f} images/s"
    if m.val_miou is not None:
        text += f", val mIoU {m.val_miou:.3f}"
    parts = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k != VAL_MIOU)  # shown above
    return f"{text}  |  {parts}" if parts else text


class CheckpointWatch:
    """The step of a run folder's last checkpoint: from the job's
    :class:`~napari_pbip.events.CheckpointSaved` events while it runs, from ``RUN/last/state.json``
    where no event tells (a resumed run's start, after a Stop, which checkpoints after the last event).
    """

    def __init__(self) -> None:
        self.run_dir: Path | None = None
        self.step: int | None = None
        self._stamp: int | None = None

    def reset(self, run_dir: Path | None) -> None:
        """Watch ``run_dir`` from now on (nothing read yet)."""
        self.run_dir, self.step, self._stamp = run_dir, None, None

    def saw(self, saved: CheckpointSaved) -> None:
        """Take the step of a :class:`~napari_pbip.events.CheckpointSaved` event."""
        self.step = saved.step

    def read(self) -> int | None:
        """The checkpoint's step; the last one read while the file is missing, mid-write or damaged."""
        path = None if self.run_dir is None else self.run_dir / "last" / "state.json"
        try:
            stamp = os.stat(path).st_mtime_ns if path is not None else None
        except OSError:
            stamp = None
        if stamp is not None and stamp != self._stamp:
            self._stamp = stamp
            try:
                self.step = int(read_state(path.parent)["step"])
            except (CheckpointError, ValueError, KeyError):
                pass
        return self.step

    def text(self) -> str:
        """``last checkpoint: step N in RUN/last``, or empty before the first checkpoint."""
        if self.step is None or self.run_dir is None:
            return ""
        return f"last checkpoint: step {self.step} in {self.run_dir / 'last'}"
