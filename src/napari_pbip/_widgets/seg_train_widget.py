"""The "Train segmenter" dock widget: stage 2 from a finished stage-1 run.

From the run folder that Train PBIP (``pbip train``) wrote, the widget makes pseudo-masks for the
run's training images with the job ``pbip pseudo`` runs (``make_pseudo_masks``, same background
rule and thresholds), shows a few of them over their images, then trains a segmenter on them with
the job ``pbip train-seg`` runs (``train_segmenter``): Start / Pause / Stop / resume, loss and
val-mIoU curves, device and memory, as Train PBIP. Masks already made from this run with these
settings are reused. When the segmenter is saved, each Segment slide widget docked in the same
window gets it as its model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from ..errors import SettingsError
from ..events import LOSS, VAL_MIOU, CheckpointSaved, Preview, Progress, RunStarted, StepMetrics
from . import _seg_pipeline
from ._dock import scrolling_body
from ._forms import FieldMarks, PathEdit, StatusLine, Throttled, progress_bar, report_error, show_progress
from ._mask_preview import show_mask_preview
from ._seg_pipeline import Plan, PlanError, offer_model, pseudo_then_train
from ._training_status import CheckpointWatch, PausableTraining, memory_text, metrics_text, spin
from ._warmup import warm_up
from ._worker import JobWorker, start_job
from .loss_plot import LossPlot

if TYPE_CHECKING:
    import napari

DEFAULT_BACKBONE = "segmenter's default"
CURVES = {LOSS: "#f0f0f0", VAL_MIOU: "#5bd16b"}  # the plot's series and colours


class SegTrainWidget(PausableTraining, QWidget):
    """Pseudo-masks from a stage-1 run, then a segmenter trained on them, watched as it learns."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        warm_up()  # napari's lazy imports for the first result layer, off the GUI thread
        self.viewer = napari_viewer
        self.worker: JobWorker | None = None
        self.out: Path | None = None
        self.device = ""
        self.step = 0
        self.preview: Preview | None = None
        self.result: Any = None
        self.checkpoint = CheckpointWatch()
        self._event: Progress | None = None
        self._metrics: StepMetrics | None = None  # the last step's numbers
        self._message: str | None = None
        self._training = False
        self.view = Throttled(self._refresh_view, self)
        lay = scrolling_body(self)  # content scrolls in its dock (_dock.py)
        lay.addWidget(self._pseudo_form())
        lay.addWidget(self._seg_form())
        lay.addLayout(self._buttons())
        self.progress = progress_bar(self)
        self.status = StatusLine(self)
        self.metrics_label, self.device_label, self.checkpoint_label = QLabel(), QLabel(), QLabel()
        for label in (self.metrics_label, self.device_label, self.checkpoint_label):
            label.setWordWrap(True)
        for w in (self.progress, self.status, self.metrics_label, self.device_label, self.checkpoint_label):
            lay.addWidget(w)
        self.plot = LossPlot(self, CURVES, "loss and val mIoU appear here once training runs", (VAL_MIOU,))
        lay.addWidget(self.plot, stretch=1)
        self.marks = FieldMarks(
            {
                "run": self.run,
                "dataset": self.dataset,
                "masks": self.masks,
                "background": self.background,
                "white_level": self.white_level,
                "bg_power": self.bg_power,
                "segmenter": self.segmenter,
                "backbone": self.backbone,
                "epochs": self.epochs,
                "batch_size": self.batch_size,
                "lr": self.lr,
                "crop_size": self.crop_size,
                "device": self.device_box,
                "out": self.out_edit,
            }
        )

    # -- form ------------------------------------------------------------------------------------

    def _pseudo_form(self) -> QGroupBox:
        from ..stage1 import CamSettings
        from ..stage1.pseudo import BACKGROUND_MODES

        d = CamSettings()
        box = QGroupBox("Pseudo-masks from a stage-1 run")
        form = QFormLayout(box)
        self.run = PathEdit("dir", "stage-1 run folder (Train PBIP / pbip train)")
        self.run.line.editingFinished.connect(self._run_chosen)
        self.dataset = PathEdit("dir", "the run's data set (read from the run)")
        self.masks = PathEdit("dir", "pseudo-mask folder (default: RUN-pseudo beside the run)")
        self.background = QComboBox()
        self.background.addItems(BACKGROUND_MODES)
        self.background.setCurrentText(d.background)
        self.white_level = QDoubleSpinBox()
        self.white_level.setRange(0, 255)
        self.white_level.setDecimals(0)
        self.white_level.setValue(d.white_level)
        self.white_level.setToolTip("grey level above which white is background (white rules)")
        self.bg_power = QDoubleSpinBox()
        self.bg_power.setRange(0.0, 100.0)
        self.bg_power.setDecimals(2)
        self.bg_power.setSingleStep(0.25)
        self.bg_power.setValue(d.bg_power)
        self.bg_power.setToolTip("alpha of the (1 - max)^alpha background channel (power rules)")
        for label, w in (
            ("Run folder", self.run),
            ("Data set", self.dataset),
            ("Pseudo-masks", self.masks),
            ("Background", self.background),
            ("White level", self.white_level),
            ("BG power", self.bg_power),
        ):
            form.addRow(label, w)
        return box

    def _seg_form(self) -> QGroupBox:
        from ..models.registry import list_backbones, list_segmenters
        from ..stage2 import SegSettings

        d = SegSettings()
        box = QGroupBox("Segmenter")
        form = QFormLayout(box)
        self.segmenter = QComboBox()
        self.segmenter.addItems(sorted(list_segmenters()))
        self.segmenter.setCurrentText(d.segmenter)
        self.backbone = QComboBox()
        self.backbone.addItems([DEFAULT_BACKBONE, *sorted(list_backbones())])
        self.backbone.setEditable(True)
        self.pretrained = QCheckBox("pretrained weights")
        self.pretrained.setChecked(d.pretrained)
        self.epochs = spin(1, 10_000, d.epochs)
        self.batch_size = spin(1, 4096, d.batch_size)
        self.lr = QLineEdit(f"{d.lr:g}")
        self.crop_size = spin(32, 4096, d.crop_size, 8)
        self.device_box = QComboBox()
        self.device_box.addItems(["auto", "cpu", "cuda"])
        self.device_box.setEditable(True)
        self.out_edit = PathEdit("dir", "segmenter folder to write (or to resume)")
        self.resume = QCheckBox("resume the segmenter in the output folder")
        self.replace = QCheckBox("replace earlier pseudo-masks / segmenter")
        for label, w in (
            ("Segmenter", self.segmenter),
            ("Backbone", self.backbone),
            ("", self.pretrained),
            ("Epochs", self.epochs),
            ("Batch size", self.batch_size),
            ("Learning rate", self.lr),
            ("Crop size", self.crop_size),
            ("Device", self.device_box),
            ("Output", self.out_edit),
            ("", self.resume),
            ("", self.replace),
        ):
            form.addRow(label, w)
        return box

    def _buttons(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.masks_button = QPushButton("Pseudo-masks")
        self.masks_button.setToolTip("make (or reuse) the pseudo-masks and preview them, without training")
        self.masks_button.clicked.connect(self.make_masks)
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(self.toggle_pause)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        for b in (self.masks_button, self.start_button, self.pause_button, self.stop_button):
            row.addWidget(b)
        self._set_running(False)
        return row

    def _run_chosen(self) -> None:
        """Fill the data set from the run's ``model.json`` when the field is empty."""
        if self.dataset.path() is None:
            recorded = self._recorded_dataset(self.run.path())
            if recorded is not None:
                self.dataset.set_path(recorded)

    @staticmethod
    def _recorded_dataset(run: Path | None) -> Path | None:
        from ..engine.model_meta import read_model_json
        from ..errors import CheckpointError

        try:
            recorded = read_model_json(run).get("dataset") if run is not None else None
        except CheckpointError:
            return None
        return Path(recorded) if recorded else None

    # -- settings ----------------------------------------------------------------------------------

    def cam_settings(self):
        """The form's ``CamSettings``, or None after marking the field that is wrong."""
        from ..stage1 import CamSettings

        try:
            return CamSettings(
                background=self.background.currentText(),
                white_level=self.white_level.value(),
                bg_power=self.bg_power.value(),
            )
        except SettingsError as exc:
            report_error(exc, self.status, self.marks)
            return None

    def seg_settings(self):
        """The form's ``SegSettings`` (the saved ones with resume), or None after marking the bad field."""
        from ..stage2 import SegSettings, resume_seg_settings

        device = self.device_box.currentText().strip()
        try:
            if self.resume.isChecked():
                return resume_seg_settings(self.out_edit.path(), device=device)
            lr = float(self.lr.text())
        except ValueError:
            report_error(
                SettingsError(f"lr={self.lr.text()!r} is invalid: expected a number such as 1e-3"),
                self.status,
                self.marks,
            )
            return None
        except Exception as exc:  # CheckpointError: nothing to resume in the output folder
            report_error(exc, self.status, self.marks, "out")
            return None
        backbone = self.backbone.currentText().strip()
        try:
            return SegSettings(
                segmenter=self.segmenter.currentText().strip(),
                backbone=None if backbone in ("", DEFAULT_BACKBONE) else backbone,
                pretrained=self.pretrained.isChecked(),
                epochs=self.epochs.value(),
                batch_size=self.batch_size.value(),
                lr=lr,
                crop_size=self.crop_size.value(),
                device=device,
            )
        except SettingsError as exc:
            report_error(exc, self.status, self.marks)
            return None

    def plan(self, train: bool) -> Plan | None:
        """What Start (``train``) or Pseudo-masks would do, or None after marking what is wrong."""
        self.marks.clear()
        run = self.run.path()
        if self.dataset.path() is None:
            self.dataset.set_path(self._recorded_dataset(run))
        cam = self.cam_settings()
        seg = self.seg_settings() if train and cam is not None else None
        if cam is None or (train and seg is None):
            return None
        try:
            return _seg_pipeline.plan(
                run,
                self.dataset.path(),
                self.masks.path(),
                cam,
                replace=self.replace.isChecked(),
                device=self.device_box.currentText().strip(),
                seg=seg,
                out=self.out_edit.path(),
                resume=train and self.resume.isChecked(),
            )
        except PlanError as exc:
            report_error(exc, self.status, self.marks, exc.field)
            return None

    # -- running -----------------------------------------------------------------------------------

    def make_masks(self) -> JobWorker | None:
        """Make (or reuse) the pseudo-masks and show the preview, without training."""
        return self._launch(train=False)

    def start(self) -> JobWorker | None:
        """Make or reuse the pseudo-masks, preview them, then train (or resume) the segmenter."""
        return self._launch(train=True)

    def _launch(self, train: bool) -> JobWorker | None:
        if self.worker is not None:
            return None
        plan = self.plan(train)
        if plan is None:
            return None
        self.out, self.step, self.device, self.result = plan.out, 0, "", None
        self._event = self._metrics = self._message = None
        self._training = False
        self.checkpoint.reset(plan.out)
        self.checkpoint_label.setText("")
        self.plot.clear()
        what = "making pseudo-masks" if plan.make_masks else "reusing the pseudo-masks"
        self.status.info(f"{what} in {plan.masks} ...")
        self._set_running(True)
        self.worker = start_job(
            lambda: pseudo_then_train(plan),
            on_event=self._on_event,
            on_done=self._on_done,
            on_error=lambda exc: report_error(exc, self.status, self.marks),
            on_aborted=lambda: self.status.info(f"stopping at step {self.step}: checkpointing ..."),
            on_finished=self._on_finished,
        )
        self.watch_pause(self.worker)
        return self.worker

    def _set_running(self, running: bool) -> None:
        self.masks_button.setEnabled(not running)
        self.start_button.setEnabled(not running)
        self.pause_button.setEnabled(running)
        self.stop_button.setEnabled(running)
        self.pause_button.setText("Pause")

    def _on_event(self, ev: Progress) -> None:
        """Keep the event's state; the preview is shown at once, the rest by :meth:`_refresh_view`."""
        self._event = ev
        if isinstance(ev.payload, StepMetrics):  # later events without numbers keep the line
            self._metrics = ev.payload
            self.plot.add(ev.payload, repaint=False)
        if isinstance(ev.payload, Preview) and "masks" in ev.payload.maps:
            self.preview = ev.payload
            show_mask_preview(self.viewer, ev.payload)
        if isinstance(ev.payload, RunStarted):
            self.device, self._training = ev.payload.device, True
            if ev.payload.start_step:  # resumed: the checkpoint it goes on from
                self.checkpoint.read()
        if self._training:
            self.step = ev.step
        if isinstance(ev.payload, CheckpointSaved):
            self.checkpoint.saw(ev.payload)
        if ev.message:
            self._message = ev.message
        self.view.poke()

    def _refresh_view(self) -> None:
        """Draw progress, numbers, the plot, device/memory and the checkpoint from the latest event."""
        ev = self._event
        if ev is None:
            return
        show_progress(self.progress, ev)
        if self._metrics is not None:
            self.metrics_label.setText(metrics_text(self._metrics, self.plot.last()))
        if self._message and not self.status.is_error:
            self.status.info(self._message)
        self._message = None
        self.plot.update()
        if self._training:
            self.device_label.setText(f"device {self.device or '?'}  |  {memory_text(self.device)}")
            self.checkpoint_label.setText(self.checkpoint.text())

    def _on_done(self, result) -> None:
        self.result = result
        self.view.flush()
        if isinstance(result, Path):
            self.status.info(f"pseudo-masks ready in {result}: look at the preview, then Start to train")
            return
        best = result.best
        text = f"{result.stopped} at step {result.step}/{result.total_steps}"
        if best and best.get("miou") is not None:
            text += f"; best val mIoU {best['miou']:.3f} at step {best['step']}"
        text += f". Segmenter: {result.out}"
        if (Path(result.out) / "model.json").is_file():
            n = offer_model(self.viewer, Path(result.out))
            text += " (now the model of Segment slide)" if n else " (open Segment slide to use it)"
        self.status.info(text)

    def _on_finished(self) -> None:
        aborted = self.worker is not None and self.worker.abort_requested
        self.worker = None
        self._set_running(False)
        self.view.flush()
        if aborted and self._training:  # Stop checkpoints after the job's last event: read it from RUN/last
            self.checkpoint.read()
            self.checkpoint_label.setText(self.checkpoint.text())
        if aborted and not self.status.is_error:
            if self._training:
                self.status.info(
                    f"stopped; the last completed step ({self.checkpoint.step}) is kept in {self.out}/last - "
                    "tick 'resume' and Start to continue"
                )
            else:
                self.status.info(
                    "stopped before training; no pseudo-masks were kept unless they were finished"
                )

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        """Stop when the dock closes (a segmenter run checkpoints)."""
        self.stop()
        super().closeEvent(event)
