"""The "Segment slide" dock widget: whole-slide segmentation that fills in as chunks finish.

The widget runs the library's ``segment_slide`` job (the one ``pbip segment`` runs) in a worker
thread on the slide of a layer opened by the napari-pbip reader. The result is an editable
single-scale Labels layer at the analysis resolution, scaled in um over the slide, coloured and
named by class. The area table and the exports (OME-Zarr, GeoJSON for QuPath, CSV) use that layer,
so corrections painted into it are exported too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from ..engine.model_meta import read_model_json
from ..errors import CheckpointError, SlideError
from . import _labels
from ._dock import scrolling_body
from ._forms import FieldMarks, PathEdit, StatusLine, Throttled, progress_bar, report_error, show_progress
from ._quiet_add import add_in_steps, finish_now, run_in_turns
from ._segment_live import Finished, LiveChunk, count, live_segmentation
from ._segment_queue import QueuePanel
from ._warmup import warm_up
from ._worker import JobWorker, as_job, start_job

if TYPE_CHECKING:
    import napari

DEFAULT_CHUNK = (
    2048  # smaller than the CLI's 4096 so the layer fills in visibly; still hundreds of tiles each
)


def _spin(lo: int, hi: int, value: int, step: int = 1) -> QSpinBox:
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setSingleStep(step)
    box.setValue(value)
    return box


def _write_csv(path: Path, class_pixels: dict[str, int], mpp: float) -> Path:
    from ..export import write_area_table

    return write_area_table(path, class_pixels, mpp, overwrite=True)


class SegmentWidget(QWidget):
    """Segment the slide of a layer with a trained model; show, measure and export the result."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        warm_up()  # napari's lazy imports for the first result layer, off the GUI thread
        self.viewer = napari_viewer
        self.worker: JobWorker | None = None
        self.layer = None
        self._layer_steps: list[Callable[[], None]] = []  # finishing the result layer (add_in_steps)
        self.chunks_done = 0
        self.slide_mpp: float | None = None
        self._slide_in_pixels = False  # the slide layer is shown in pixels: its file records no um/px
        self._event = None
        self._message: str | None = None
        self._chunks: list[LiveChunk] = []
        self.view = Throttled(self._refresh_view, self)
        lay = scrolling_body(self)  # content scrolls in its dock (_dock.py)
        lay.addWidget(self._form())
        row = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        lay.addLayout(row)
        self.progress = progress_bar(self)
        self.status = StatusLine(self)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        self.table = QTableWidget(0, 4, self)
        self.table.setHorizontalHeaderLabels(["class", "pixels", "area (mm²)", "% of tissue"])
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        lay.addWidget(self.table, stretch=1)
        row = QHBoxLayout()
        self.export_buttons = []
        for text, slot in (
            ("OME-Zarr...", self._ask_zarr),
            ("GeoJSON...", self._ask_geojson),
            ("CSV...", self._ask_csv),
        ):
            b = QPushButton(f"Export {text}")
            b.clicked.connect(slot)
            b.setEnabled(False)
            row.addWidget(b)
            self.export_buttons.append(b)
        lay.addLayout(row)
        self.queue = QueuePanel(self, self._set_running)
        lay.addWidget(self.queue)
        self.viewer.layers.events.inserted.connect(self._fill_layers)
        self.viewer.layers.events.removed.connect(self._fill_layers)
        self._fill_layers()

    def _form(self) -> QGroupBox:
        box = QGroupBox("Segmentation")
        form = QFormLayout(box)
        self.slide_layer = QComboBox()
        self.slide_layer.currentTextChanged.connect(self._slide_chosen)
        self.model = PathEdit("dir", "trained model folder (pbip train / train-seg)")
        self.model.line.editingFinished.connect(self._model_chosen)
        self.mpp = QDoubleSpinBox()
        self.mpp.setRange(0.05, 50.0)
        self.mpp.setDecimals(3)
        self.mpp.setValue(1.0)
        self.mpp.setSuffix(" um/px")
        self.slide_mpp_box = QDoubleSpinBox()
        self.slide_mpp_box.setRange(0.0, 50.0)
        self.slide_mpp_box.setDecimals(4)
        self.slide_mpp_box.setSpecialValueText("from the file")
        self.slide_mpp_box.setSuffix(" um/px")
        self.slide_mpp_box.setToolTip(
            "level-0 um/px of slides whose files record none (e.g. 0.5 for a 20x scan); "
            "slides that record one keep theirs"
        )
        self.tile = _spin(0, 4096, 0)
        self.tile.setSpecialValueText("model's")
        self.batch = _spin(0, 1024, 0)
        self.batch.setSpecialValueText("by device")
        self.batch.setToolTip(
            "tiles per model call; 'by device': about 200,000 pixels on a CPU, 16 tiles on a GPU"
        )
        self.chunk = _spin(256, 16384, DEFAULT_CHUNK, 256)
        self.chunk.setToolTip("pixels per chunk side (a multiple of 256); the layer fills in chunk by chunk")
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda"])
        self.device.setEditable(True)
        self.out = PathEdit("save", "output .zarr (default: beside the slide)")
        self.overwrite = QCheckBox("replace an existing result (else an unfinished one resumes)")
        rows = (
            ("Slide layer", self.slide_layer),
            ("Model", self.model),
            ("Resolution", self.mpp),
            ("Slide um/px", self.slide_mpp_box),
            ("Tile", self.tile),
            ("Batch", self.batch),
            ("Chunk", self.chunk),
            ("Device", self.device),
            ("Output", self.out),
            ("", self.overwrite),
        )
        for label, w in rows:
            form.addRow(label, w)
        self.marks = FieldMarks(
            {
                "slide": self.slide_layer,
                "model": self.model,
                "mpp": self.mpp,
                "slide_mpp": self.slide_mpp_box,
                "tile": self.tile,
                "batch": self.batch,
                "chunk": self.chunk,
                "device": self.device,
                "out": self.out,
            }
        )
        return box

    def _fill_layers(self, *args) -> None:
        current = self.slide_layer.currentText()
        names = [layer.name for layer in self.viewer.layers if layer.metadata.get("pbip_slide")]
        self.slide_layer.blockSignals(True)
        self.slide_layer.clear()
        self.slide_layer.addItems(names)
        self.slide_layer.blockSignals(False)
        self.queue.fill_layers(self.viewer.layers)
        if current in names:
            self.slide_layer.setCurrentText(current)
        elif names:
            self._slide_chosen(names[0])

    def _slide_chosen(self, name: str) -> None:
        if name in self.viewer.layers:
            meta = self.viewer.layers[name].metadata
            self.out.set_path(None)
            self.out.line.setPlaceholderText(str(self._default_out(meta["pbip_slide"])))

    def _model_chosen(self) -> None:
        """Take the model's recorded training resolution, when it has one, as the resolution."""
        path = self.model.path()
        try:
            mpp = read_model_json(path).get("mpp") if path else None
        except CheckpointError:  # no model folder (yet), or a damaged model.json
            return
        if mpp:
            self.mpp.setValue(float(mpp))

    def offer_model(self, path: str | Path) -> None:
        """Make ``path`` the model (e.g. a segmenter just trained in Train segmenter), with its resolution."""
        self.model.set_path(path)
        self._model_chosen()

    @staticmethod
    def _default_out(slide: str) -> Path:
        p = Path(slide)
        return p.with_name(p.name.split(".")[0] + ".pbip.zarr")

    def given_slide_mpp(self) -> float | None:
        """The typed level-0 um/px for slide files that record none (None: "from the file")."""
        return self.slide_mpp_box.value() or None

    # -- running -----------------------------------------------------------------------------------

    def settings(self):
        """The form's ``SegmentSettings``, or None after marking the field that is wrong."""
        from ..errors import SettingsError
        from ..slides.segment import SegmentSettings

        self.marks.clear()
        try:
            return SegmentSettings(
                mpp=self.mpp.value(),
                tile=self.tile.value() or None,
                batch=self.batch.value() or None,
                chunk=self.chunk.value(),
                device=self.device.currentText().strip(),
            )
        except SettingsError as exc:
            report_error(exc, self.status, self.marks)
            return None

    def run(self) -> JobWorker | None:
        """Start segmenting the chosen slide layer's slide in a worker thread."""
        from ..slides.segment import segment_slide

        if self.worker is not None:
            return None
        self.marks.clear()
        name, model = self.slide_layer.currentText(), self.model.path()
        if name not in self.viewer.layers:
            return self._field_error("slide", "open a slide with the napari-pbip reader first (File > Open)")
        if model is None or not (model / "model.json").is_file():
            return self._field_error(
                "model", f"{model or '(empty)'} is not a trained model folder (no model.json)"
            )
        settings = self.settings()
        if settings is None:
            return None
        meta = self.viewer.layers[name].metadata
        slide, slide_mpp = meta["pbip_slide"], meta.get("pbip_mpp") or self.given_slide_mpp()
        if slide_mpp is None:
            return self._field_error(
                "slide_mpp",
                f"{Path(slide).name} records no um/px: give its level-0 um/px in 'Slide um/px' "
                "(e.g. 0.5 for a 20x scan)",
            )
        out = self.out.path() or self._default_out(slide)
        overwrite = self.overwrite.isChecked()
        self.layer, self.chunks_done, self.slide_mpp = None, 0, slide_mpp
        self._slide_in_pixels = not meta.get("pbip_mpp")
        self._event, self._message, self._chunks = None, None, []
        self._set_running(True)
        self.status.info(f"segmenting {Path(slide).name} at {settings.mpp:g} um/px into {out} ...")
        self.worker = start_job(
            lambda: live_segmentation(
                segment_slide(slide, model, out, settings, overwrite=overwrite, slide_mpp=slide_mpp)
            ),
            on_event=self._on_event,
            on_done=self._on_done,
            on_error=lambda exc: report_error(exc, self.status, self.marks),
            on_finished=self._on_finished,
        )
        return self.worker

    def _field_error(self, field: str, why: str) -> None:
        report_error(SlideError(why), self.status, self.marks, field)

    def cancel(self) -> None:
        """Stop after the running chunks' current batch; finished chunks stay for a rerun to resume."""
        if self.worker is not None:
            self.worker.quit()

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.queue.run_button.setEnabled(not running)
        for b in self.export_buttons:
            b.setEnabled(not running and self.layer is not None)

    def _on_event(self, ev) -> None:
        """Keep the event (and its chunk); :meth:`_refresh_view` draws them together."""
        self._event = ev
        if isinstance(ev.payload, LiveChunk):
            self._chunks.append(ev.payload)
            self.chunks_done = ev.step
        if ev.message:
            self._message = ev.message
        self.view.poke()

    def _refresh_view(self) -> None:
        """Copy the finished chunks into the layer (one redraw for all) and show progress."""
        if self._chunks:
            layer = self._ensure_layer(self._chunks[-1].display)
            for chunk in self._chunks:
                y0, x0, y1, x1 = chunk.box
                layer.data[y0:y1, x0:x1] = chunk.labels
            self._chunks = []
            layer.refresh()
        if self._event is not None:
            show_progress(self.progress, self._event)
        if self._message and not self.status.is_error:
            self.status.info(self._message)
        self._message = None

    def _ensure_layer(self, display, labels: np.ndarray | None = None):
        name = f"{Path(self.slide_layer.currentText()).stem} segmentation"
        if (
            self.layer is None
            or self.layer not in self.viewer.layers
            or self.layer.data.shape != display.shape
        ):
            data = labels if labels is not None else np.full(display.shape, _labels.UNFILLED, np.uint8)
            kwargs = _labels.layer_kwargs(
                display.classmap, display.mpp, self.slide_mpp, name, self._slide_in_pixels
            )
            kwargs["metadata"]["pbip_segmentation"] = str(display.path)
            # hidden, finished over the next turns (under software OpenGL adding it whole took
            # 0.30 s with the first draw in it); selected when the job is done (_on_done)
            self.layer, self._layer_steps = add_in_steps(self.viewer, "labels", data, **kwargs)
            run_in_turns(self._layer_steps)
        elif labels is not None:
            self.layer.data = labels
        return self.layer

    def _on_done(self, finished: Finished) -> None:
        self._chunks = []  # the finished store replaces them
        self.view.flush()
        layer = self._ensure_layer(finished.display, finished.labels)
        finish_now(self._layer_steps)  # a short job can end before the layer was shown
        self.viewer.layers.selection.active = layer
        self.show_areas(finished.class_pixels, finished.display.mpp)
        r = finished.result
        self.status.info(
            f"done: {r.shape[1]}x{r.shape[0]} px at {r.mpp:g} um/px, chunks {r.chunks}, tiles {r.tiles}, "
            f"{r.seconds.get('wall', 0):.1f} s. Saved in {r.out}"
        )

    def _on_finished(self) -> None:
        aborted = self.worker is not None and self.worker.abort_requested
        self.worker = None
        self._set_running(False)
        self.view.flush()
        if aborted and not self.status.is_error:
            self.status.info(
                f"cancelled after {self.chunks_done} finished chunk(s); they are kept - Run again (without "
                "'replace') to resume"
            )

    # -- areas and exports ---------------------------------------------------------------------------

    def show_areas(self, class_pixels: dict[str, int], mpp: float) -> None:
        """Fill the area table (class, pixels, mm², share of tissue) from pixel counts at ``mpp`` um/px."""
        from ..export import area_rows

        rows = area_rows(class_pixels, mpp)
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            pct = "" if r.percent_of_tissue is None else f"{r.percent_of_tissue:.1f}"
            for j, text in enumerate((r.name, str(r.pixels), f"{r.area_um2 / 1e6:.4f}", pct)):
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()

    def _layer_state(self) -> tuple[Any, dict[str, Any]] | None:
        if self.layer is None or self.layer not in self.viewer.layers:
            self.status.error("segment a slide first: there is no result layer to export")
            return None
        attributes = {
            "metadata": dict(self.layer.metadata),
            "scale": tuple(self.layer.scale),
            "translate": tuple(self.layer.translate),
            "units": tuple(self.layer.units),
            "colormap": self.layer.colormap,
        }
        return self.layer.data, attributes

    def _export(self, what: str, fn, path: Path) -> JobWorker | None:
        if self.worker is not None:
            self.status.error("wait for the running job to finish")
            return None
        self._set_running(True)
        self.worker = start_job(
            lambda: as_job(fn, path),
            on_done=lambda written: self.status.info(f"{what} written: {written}"),
            on_error=lambda exc: report_error(exc, self.status),
            on_finished=self._on_finished,
        )
        return self.worker

    def export_zarr(self, path: str | Path) -> JobWorker | None:
        """Write the result layer (with any corrections) as an OME-Zarr label image."""
        from .writers import write_labels_zarr

        state = self._layer_state()
        return (
            None
            if state is None
            else self._export("OME-Zarr", lambda p: write_labels_zarr(str(p), *state)[0], Path(path))
        )

    def export_geojson(self, path: str | Path) -> JobWorker | None:
        """Write the result layer as GeoJSON annotations for QuPath (slide level-0 pixel coordinates)."""
        from .writers import write_labels_geojson

        state = self._layer_state()
        return (
            None
            if state is None
            else self._export("GeoJSON", lambda p: write_labels_geojson(str(p), *state)[0], Path(path))
        )

    def export_csv(self, path: str | Path) -> JobWorker | None:
        """Write the per-class area table of the result layer as CSV (and show it)."""
        state = self._layer_state()
        if state is None:
            return None
        data, attributes = state
        cm, labels = _labels.from_layer(data, attributes["metadata"])
        mpp = _labels.layer_mpp(attributes["scale"], attributes.get("units"), attributes["metadata"])
        pixels = count(labels, cm.names)
        self.show_areas(pixels, mpp)
        return self._export("area table", lambda p: _write_csv(p, pixels, mpp), Path(path))

    def _ask(self, title: str, suffix: str) -> Path | None:
        store = (
            Path(self.layer.metadata.get("pbip_segmentation", "segmentation.zarr"))
            if self.layer
            else Path("x")
        )
        start = store.with_name(store.name.split(".")[0] + suffix)
        chosen, _ = QFileDialog.getSaveFileName(self, title, str(start))
        return Path(chosen) if chosen else None

    def _ask_zarr(self) -> None:
        path = self._ask("Export OME-Zarr labels", ".labels.zarr")
        if path:
            self.export_zarr(path)

    def _ask_geojson(self) -> None:
        path = self._ask("Export GeoJSON for QuPath", ".geojson")
        if path:
            self.export_geojson(path)

    def _ask_csv(self) -> None:
        path = self._ask("Export area table", ".areas.csv")
        if path:
            self.export_csv(path)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        """Cancel a running segmentation when the dock closes (finished chunks are kept)."""
        self.cancel()
        super().closeEvent(event)
