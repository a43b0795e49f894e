"""The "Train PBIP" dock widget: stage-1 training with live loss parts, CAMs and FG/BG images.

The widget builds :class:`~napari_pbip.stage1.TrainSettings` from its form (the settings' own
validation names a bad field, which the form marks) and runs the library's ``train`` job in a
worker thread. Pause stops asking the job for steps; Stop closes it, and the job checkpoints the
last completed step (``Resume`` continues it exactly).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from ..errors import DatasetError, SettingsError
from ..events import CheckpointSaved, Preview, RunStarted, StepMetrics
from ._dock import scrolling_body
from ._forms import FieldMarks, PathEdit, StatusLine, Throttled, progress_bar, report_error, show_progress
from ._preview import PreviewLayers, with_layers
from ._slide_cams import SlideView, ViewReader, camera, describe, view_of
from ._training_status import CheckpointWatch, PausableTraining, memory_text, metrics_text
from ._training_status import spin as _spin
from ._warmup import warm_up
from ._worker import JobWorker, start_job
from .loss_plot import LossPlot

if TYPE_CHECKING:
    import napari

STRONGEST = "strongest labelled class"
# what the previews show ("Preview on")
ON_SLIDE_AND_PATCHES, ON_SLIDE, ON_PATCHES = "slide in view and patches", "slide in view", "training patches"


class TrainWidget(PausableTraining, QWidget):
    """Train ClassNet + ImgMatchNet (or the plain-CAM baseline) and watch it learn."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        warm_up()  # napari's lazy imports for the first result layer, off the GUI thread
        self.viewer = napari_viewer
        self.worker: JobWorker | None = None
        self.run_dir = None
        self.device = ""
        self.step = 0
        self.last_preview: Preview | None = None
        self.checkpoint_step: int | None = None
        self.checkpoint = CheckpointWatch()
        self._event = None
        self._metrics: StepMetrics | None = None  # the last step's numbers
        self._message: str | None = None
        self.preview = PreviewLayers(napari_viewer)
        self._fgbg_choice: int | None = None  # FG/BG class picked, None: each pixel's strongest
        self.view = Throttled(self._refresh_view, self)
        self.slide_view: SlideView | None = None  # noted in the GUI thread, read by the job's ViewReader
        lay = scrolling_body(self)  # content scrolls in its dock (_dock.py)
        lay.addWidget(self._form())
        lay.addLayout(self._buttons())
        self.progress = progress_bar(self)
        self.status = StatusLine(self)
        self.metrics_label, self.device_label, self.checkpoint_label = QLabel(), QLabel(), QLabel()
        self.slide_label = QLabel()
        self.slide_label.setWordWrap(True)
        for w in (
            self.progress,
            self.status,
            self.metrics_label,
            self.device_label,
            self.checkpoint_label,
            self.slide_label,
        ):
            lay.addWidget(w)
        self.plot = LossPlot(self)
        lay.addWidget(self.plot, stretch=1)
        self.fgbg_class = QComboBox()
        self.fgbg_class.addItem(STRONGEST)
        self.fgbg_class.currentIndexChanged.connect(self._refresh_preview)
        row = QHBoxLayout()
        row.addWidget(QLabel("FG/BG layers of"))
        row.addWidget(self.fgbg_class, stretch=1)
        lay.addLayout(row)
        self._fill_paths()
        self.viewer.layers.events.inserted.connect(self._fill_paths)
        self._view_events = (  # what changes the part of the slide in view
            camera(self.viewer).events.center,
            camera(self.viewer).events.zoom,
            self.viewer.canvas.events.size,
            self.viewer.dims.events.ndisplay,
            self.viewer.layers.events.inserted,
            self.viewer.layers.events.removed,
            self.viewer.layers.selection.events.active,
        )
        for event in self._view_events:
            event.connect(self._note_view)
        self._note_view()

    # -- form ------------------------------------------------------------------------------------

    def _form(self) -> QGroupBox:
        from ..models.registry import list_backbones
        from ..stage1 import TrainSettings
        from ..stage1.region_preview import MAX_TILES

        d = TrainSettings()
        box = QGroupBox("Run")
        form = QFormLayout(box)
        self.dataset = PathEdit("dir", "data set folder (train split with image labels)")
        self.bank = PathEdit("dir", "image bank folder (not needed for the baseline)")
        self.out = PathEdit("dir", "run folder to write (or to resume)")
        self.backbone = QComboBox()
        self.backbone.addItems(sorted(list_backbones()))
        self.backbone.setEditable(True)
        self.backbone.setCurrentText(d.backbone)
        self.pretrained = QCheckBox("pretrained weights")
        self.pretrained.setChecked(d.pretrained)
        self.baseline = QCheckBox("plain-CAM baseline (no prototypes)")
        self.epochs = _spin(1, 10_000, d.epochs)
        self.batch_size = _spin(1, 4096, d.batch_size)
        self.lr = QLineEdit(f"{d.lr:g}")
        self.image_size = _spin(32, 4096, d.image_size, 32)
        self.match_size = _spin(0, 1024, d.match_size or 0, 16)  # 0: the bank encoder's input size
        self.match_size.setSpecialValueText("bank's size")
        self.match_size.setToolTip(
            "FG/BG image side for the encoder; bank's size (default) matches the prototypes' scale"
        )
        self.preview_every = _spin(0, 100_000, d.preview_every)
        self.preview_every.setToolTip("steps between CAM / FG-BG previews (0: none)")
        self.preview_on = QComboBox()
        self.preview_on.addItems([ON_SLIDE_AND_PATCHES, ON_SLIDE, ON_PATCHES])
        self.preview_on.setToolTip(
            f"slide in view: CAM and FG/BG layers over the part of the open slide in view, read at the "
            f"training um/px; at most {MAX_TILES} tiles of the image size (the centre of a larger view). "
            "Pan or zoom and the next preview follows. Training patches: the fixed preview patches."
        )
        self.preview_on.currentIndexChanged.connect(self._note_view)
        self.device_box = QComboBox()
        self.device_box.addItems(["auto", "cpu", "cuda"])
        self.device_box.setEditable(True)
        self.resume = QCheckBox("resume the run in the run folder")
        self.overwrite = QCheckBox("replace an existing run")
        rows = (
            ("Data set", self.dataset),
            ("Bank", self.bank),
            ("Run folder", self.out),
            ("Backbone", self.backbone),
            ("", self.pretrained),
            ("", self.baseline),
            ("Epochs", self.epochs),
            ("Batch size", self.batch_size),
            ("Learning rate", self.lr),
            ("Image size", self.image_size),
            ("Match size", self.match_size),
            ("Preview every", self.preview_every),
            ("Preview on", self.preview_on),
            ("Device", self.device_box),
            ("", self.resume),
            ("", self.overwrite),
        )
        for label, w in rows:
            form.addRow(label, w)
        self.marks = FieldMarks(
            {
                "dataset": self.dataset,
                "bank": self.bank,
                "out": self.out,
                "backbone": self.backbone,
                "epochs": self.epochs,
                "batch_size": self.batch_size,
                "lr": self.lr,
                "image_size": self.image_size,
                "match_size": self.match_size,
                "preview_every": self.preview_every,
                "device": self.device_box,
            }
        )
        return box

    def _buttons(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.start_button.clicked.connect(self.start)
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(self.toggle_pause)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        for b in (self.start_button, self.pause_button, self.stop_button):
            row.addWidget(b)
        self._set_running(False)
        return row

    def _fill_paths(self, *args) -> None:
        if self.dataset.path() is None:
            for layer in self.viewer.layers:
                if layer.metadata.get("pbip_dataset"):
                    self.dataset.set_path(layer.metadata["pbip_dataset"])

    def _field_error(self, field: str, why: str) -> None:
        report_error(DatasetError(why), self.status, self.marks, field)

    def settings(self):
        """The form's :class:`TrainSettings`, or None after marking the field that is wrong."""
        from ..stage1 import TrainSettings, resume_settings

        self.marks.clear()
        try:
            lr = float(self.lr.text())
        except ValueError:
            report_error(
                SettingsError(f"lr={self.lr.text()!r} is invalid: expected a number such as 1e-4"),
                self.status,
                self.marks,
            )
            return None
        fields = dict(
            epochs=self.epochs.value(),
            device=self.device_box.currentText().strip(),
            preview_every=self.preview_every.value(),
        )
        try:
            if self.resume.isChecked():
                return resume_settings(self.out.path(), **fields)
            return TrainSettings(
                backbone=self.backbone.currentText().strip(),
                pretrained=self.pretrained.isChecked(),
                baseline=self.baseline.isChecked(),
                batch_size=self.batch_size.value(),
                lr=lr,
                image_size=self.image_size.value(),
                match_size=self.match_size.value() or None,
                **fields,
            )
        except Exception as exc:  # SettingsError names its field; CheckpointError explains a bad resume
            report_error(exc, self.status, self.marks, None if isinstance(exc, SettingsError) else "out")
            return None

    def _check_paths(self) -> bool:
        dataset, bank, out = self.dataset.path(), self.bank.path(), self.out.path()
        if dataset is None or not dataset.is_dir():
            self._field_error("dataset", f"data set folder {dataset or '(empty)'} does not exist; choose one")
        elif not self.baseline.isChecked() and (bank is None or not (bank / "bank.json").is_file()):
            self._field_error(
                "bank",
                f"{bank or '(empty)'} is not an image bank; build one in 'Image bank', or train the baseline",
            )
        elif out is None:
            self._field_error("out", "give the run folder to write")
        else:
            return True
        return False

    # -- running -----------------------------------------------------------------------------------

    def start(self) -> JobWorker | None:
        """Validate the form and start (or resume) training in a worker thread."""
        from ..stage1 import train

        if self.worker is not None:
            return None
        self.marks.clear()
        if not self._check_paths():
            return None
        settings = self.settings()
        if settings is None:
            return None
        dataset, out, resume, overwrite = (
            self.dataset.path(),
            self.out.path(),
            self.resume.isChecked(),
            self.overwrite.isChecked(),
        )
        bank = None if settings.baseline else self.bank.path()
        self.run_dir, self.step, self.device, self.checkpoint_step = out, 0, "", None
        self.checkpoint.reset(out)
        self._event = self._metrics = self._message = None
        self.plot.clear()
        if not resume:
            self._set_classes([])
        self.status.info(f"starting {settings.mode} training in {out} ...")
        self._set_running(True)
        self.worker = start_job(
            lambda: with_layers(
                train(
                    settings,
                    dataset,
                    bank,
                    out,
                    resume=resume,
                    overwrite=overwrite,
                    view=ViewReader(lambda: self.slide_view),
                ),
                lambda: self._fgbg_choice,
            ),
            on_event=self._on_event,
            on_done=self._on_done,
            on_error=lambda exc: report_error(exc, self.status, self.marks),
            on_aborted=lambda: self.status.info(f"stopping at step {self.step}: checkpointing ..."),
            on_finished=self._on_finished,
        )
        self.watch_pause(self.worker)
        return self.worker

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.pause_button.setEnabled(running)
        self.stop_button.setEnabled(running)
        self.pause_button.setText("Pause")

    def _on_event(self, ev) -> None:
        """Keep the event's state; previews are queued at once, the rest is drawn by :meth:`_refresh_view`."""
        self.step, self._event = ev.step, ev
        if isinstance(ev.payload, StepMetrics):  # later events without numbers keep the line
            self._metrics = ev.payload
            self.plot.add(ev.payload, repaint=False)
        if isinstance(ev.payload, RunStarted):
            self.device = ev.payload.device
            if ev.payload.start_step:  # resumed: the checkpoint it goes on from
                self.checkpoint_step = self.checkpoint.read()
        if isinstance(ev.payload, CheckpointSaved):
            self.checkpoint.saw(ev.payload)
            self.checkpoint_step = ev.payload.step
        if ev.message:
            self._message = ev.message
        if isinstance(ev.payload, Preview):
            self.last_preview = ev.payload
            self._set_classes(list(ev.payload.maps["classes"]))
            self._refresh_preview()
            if self.preview_on.currentText() != ON_PATCHES:
                maps = ev.payload.maps
                self.slide_label.setText(describe(maps.get("region"), maps.get("region_note")))
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
        self.device_label.setText(f"device {self.device or '?'}  |  {memory_text(self.device)}")
        self.checkpoint_label.setText(self.checkpoint.text())

    def _set_classes(self, classes: list[str]) -> None:
        current = [self.fgbg_class.itemText(i) for i in range(1, self.fgbg_class.count())]
        if current != classes:
            self.fgbg_class.blockSignals(True)
            self.fgbg_class.clear()
            self.fgbg_class.addItems([STRONGEST, *classes])
            self.fgbg_class.blockSignals(False)

    def _refresh_preview(self, *args) -> None:
        index = self.fgbg_class.currentIndex()
        self._fgbg_choice = None if index <= 0 else index - 1  # read by the worker (with_layers)
        if self.last_preview is not None:
            choice = self.preview_on.currentText()
            self.preview.show(
                self.last_preview, self._fgbg_choice, patches=choice != ON_SLIDE, slide=choice != ON_PATCHES
            )

    def _note_view(self, *args) -> None:
        """Note the part of the slide in view for the job's next preview (None: patches only, or no slide)."""
        on = self.preview_on.currentText() != ON_PATCHES
        self.slide_view = view_of(self.viewer) if on else None
        if not on:
            self.slide_label.setText("")
        elif self.last_preview is None:  # afterwards the label describes the last preview
            self.slide_label.setText(
                describe(None, None)
                if self.slide_view is None
                else f"slide preview: over {self.slide_view.layer} in view"
            )

    def _on_done(self, result) -> None:
        self.view.flush()
        best = result.best
        text = f"{result.stopped} at step {result.step}/{result.total_steps}"
        if best and best.get("miou") is not None:
            text += f"; best val mIoU {best['miou']:.3f} at step {best['step']}"
        self.status.info(text + f". Model: {result.out}")

    def _on_finished(self) -> None:
        aborted = self.worker is not None and self.worker.abort_requested
        self.worker = None
        self._set_running(False)
        self.view.flush()
        if aborted:  # Stop checkpoints after the job's last event: read it from RUN/last
            self.checkpoint_step = self.checkpoint.read()
            self.checkpoint_label.setText(self.checkpoint.text())
        if aborted and not self.status.is_error:
            self.status.info(
                f"stopped; the last completed step ({self.checkpoint_step}) is kept in {self.run_dir}/last - "
                "tick 'resume' and Start to continue"
            )

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        """Stop training when the dock closes (the job checkpoints)."""
        self.stop()
        for viewer_event in self._view_events:
            viewer_event.disconnect(self._note_view)
        super().closeEvent(event)
