"""The "Training data" dock widget: class regions on open slides -> a weakly labelled data set.

For each slide layer opened by the pbip reader the user picks where its class regions are: a
Shapes layer whose shapes carry a ``class`` ("New regions layer" makes one in register with the
slide, colouring shapes by class), a painted Labels layer (value k = the k-th class) or a QuPath
GeoJSON file. Build runs :func:`~napari_pbip.slides.training_data.training_data_from_slides` in a
worker, the same job as ``pbip data from-slides``; a rerun into the same folder after editing the
regions rewrites only the tiles that changed. The finished folder can be handed to the Image bank
and Train PBIP widgets.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..errors import DatasetError, PbipError, SettingsError
from ._dock import scrolling_body
from ._forms import FieldMarks, PathEdit, StatusLine, Throttled, progress_bar, report_error, show_progress
from ._worker import JobWorker, start_job

if TYPE_CHECKING:
    import napari

NOT_USED = "(not used)"
BESIDE = "GeoJSON beside the slide"
CHOOSE = "GeoJSON file..."
FILE_PREFIX = "file: "


def _beside(slide: Path) -> Path:
    return slide.with_name(slide.name.split(".")[0] + ".geojson")


class TrainingDataWidget(QWidget):
    """Turn class regions drawn on (or imported for) open slides into a training data set."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker: JobWorker | None = None
        self._ending: tuple[str, bool] | None = None
        self.summary: dict[str, Any] | None = None
        self._event = None
        self.view = Throttled(self._show_event, self)
        lay = scrolling_body(self)  # content scrolls in its dock (_dock.py)
        lay.addWidget(self._slides_box())
        lay.addWidget(self._settings_box())
        self.progress = progress_bar(self)
        self.status = StatusLine(self)
        self.result = QLabel("")
        self.result.setWordWrap(True)
        self.use_button = QPushButton("Use in Image bank and Train PBIP")
        self.use_button.setToolTip(
            "put the data set folder into the docked Image bank and Train PBIP widgets"
        )
        self.use_button.setEnabled(False)
        self.use_button.clicked.connect(self.use_dataset)
        for w in (self.progress, self.status, self.result, self.use_button):
            lay.addWidget(w)
        lay.addStretch(1)
        self.viewer.layers.events.inserted.connect(self._on_layers_changed)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        self._on_layers_changed()

    # -- form ------------------------------------------------------------------------------------

    def _slides_box(self) -> QGroupBox:
        box = QGroupBox("Slides and their class regions")
        lay = QVBoxLayout(box)
        self.table = QTableWidget(0, 2, box)
        self.table.setHorizontalHeaderLabels(["Slide", "Regions"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setMaximumHeight(120)
        lay.addWidget(self.table)
        row = QHBoxLayout()
        self.new_layer_button = QPushButton("New regions layer")
        self.new_layer_button.setToolTip(
            "a Shapes layer on the selected slide whose new shapes get the class to draw"
        )
        self.new_layer_button.clicked.connect(self.new_regions_layer)
        self.draw_class = QComboBox()
        self.draw_class.setToolTip("class given to the shapes you draw next in the regions layer")
        self.draw_class.currentTextChanged.connect(self._set_draw_class)
        row.addWidget(self.new_layer_button)
        row.addWidget(QLabel("class to draw"))
        row.addWidget(self.draw_class, stretch=1)
        lay.addLayout(row)
        return box

    def _settings_box(self) -> QGroupBox:
        from ..slides.training_data import FromSlidesSettings

        d = FromSlidesSettings()
        box = QGroupBox("Data set")
        form = QFormLayout(box)
        self.classes = QLineEdit()
        self.classes.setPlaceholderText("tumor, stroma, necrosis (in label order)")
        self.classes.editingFinished.connect(self._fill_draw_classes)
        self.dataset_json = PathEdit("file", "or a dataset.json with classes and colours")
        self.mpp = QDoubleSpinBox()
        self.mpp.setRange(0.05, 50.0)
        self.mpp.setDecimals(3)
        self.mpp.setValue(d.mpp)
        self.mpp.setSuffix(" um/px")
        self.tile = QSpinBox()
        self.tile.setRange(8, 4096)
        self.tile.setValue(d.tile)
        self.tile.setSuffix(" px")
        self.slide_mpp = QDoubleSpinBox()
        self.slide_mpp.setRange(0.0, 50.0)
        self.slide_mpp.setDecimals(4)
        self.slide_mpp.setSpecialValueText("from the file")
        self.slide_mpp.setToolTip("the slides' own um/px, for files that do not record it")
        self.out = PathEdit("dir", "data set folder to write (or to update)")
        self.overwrite = QCheckBox("rebuild from scratch instead of updating")
        for label, w in (
            ("Classes", self.classes),
            ("", self.dataset_json),
            ("Tiles at", self.mpp),
            ("Tile size", self.tile),
            ("Slide um/px", self.slide_mpp),
            ("Output folder", self.out),
            ("", self.overwrite),
        ):
            form.addRow(label, w)
        self.marks = FieldMarks(
            {"classes": self.classes, "mpp": self.mpp, "tile": self.tile, "out": self.out}
        )
        row = QHBoxLayout()
        self.build_button = QPushButton("Build")
        self.build_button.clicked.connect(self.build)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.build_button)
        row.addWidget(self.cancel_button)
        form.addRow(row)
        return box

    def slide_layers(self) -> list[Any]:
        """The open slide layers (opened by the napari-pbip reader)."""
        return [layer for layer in self.viewer.layers if (layer.metadata or {}).get("pbip_slide")]

    def _region_choices(self, slide: Path) -> list[str]:
        from napari.layers import Labels, Shapes

        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Shapes | Labels)]
        return [NOT_USED, *names, *([BESIDE] if _beside(slide).is_file() else []), CHOOSE]

    def _on_layers_changed(self, event=None) -> None:
        slides = self.slide_layers()
        shown = [self.table.item(r, 0).text() for r in range(self.table.rowCount())]
        if shown != [layer.name for layer in slides]:  # rebuild the rows only when the slides change
            self.table.setRowCount(len(slides))
            for r, layer in enumerate(slides):
                item = QTableWidgetItem(layer.name)
                flags = (
                    Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsSelectable
                )
                item.setFlags(flags)
                item.setCheckState(Qt.CheckState.Checked)
                self.table.setItem(r, 0, item)
                combo = QComboBox()
                combo.activated.connect(lambda _i, row=r: self._maybe_choose_file(row))
                self.table.setCellWidget(r, 1, combo)
            if slides:
                self.table.selectRow(0)
        for r, layer in enumerate(slides):
            self._refresh_choices(self._combo(r), Path(layer.metadata["pbip_slide"]))

    def _refresh_choices(self, combo: QComboBox, slide: Path) -> None:
        """Offer the current Shapes/Labels layers and GeoJSON files, keeping the choice where it still exists."""
        old = combo.currentText()
        choices = self._region_choices(slide)
        files = [combo.itemText(i) for i in range(combo.count()) if combo.itemText(i).startswith(FILE_PREFIX)]
        choices[-1:-1] = files
        combo.blockSignals(True)
        combo.clear()
        combo.addItems(choices)
        if old in choices:
            combo.setCurrentText(old)
        elif BESIDE in choices:
            combo.setCurrentText(BESIDE)
        combo.blockSignals(False)

    def _combo(self, row: int) -> QComboBox:
        return self.table.cellWidget(row, 1)

    def _row_of(self, slide_name: str) -> int:
        for r in range(self.table.rowCount()):
            if self.table.item(r, 0).text() == slide_name:
                return r
        raise DatasetError(f"no open slide named {slide_name!r}")

    def set_regions(self, slide_name: str, source: str | Path) -> None:
        """Choose the regions of a slide: a layer name, or a GeoJSON file (a Path)."""
        combo = self._combo(self._row_of(slide_name))
        text = f"{FILE_PREFIX}{source}" if isinstance(source, Path) else source
        if combo.findText(text) < 0:
            combo.insertItem(combo.count() - 1, text)
        combo.setCurrentText(text)

    def _maybe_choose_file(self, row: int) -> None:
        combo = self._combo(row)
        if combo.currentText() != CHOOSE:
            return
        chosen, _ = QFileDialog.getOpenFileName(self, "QuPath GeoJSON", "", "GeoJSON (*.geojson *.json)")
        if chosen:
            self.set_regions(self.table.item(row, 0).text(), Path(chosen))
        else:
            combo.setCurrentText(NOT_USED)

    def class_names(self) -> list[str]:
        """The classes typed (commas or spaces between them), or those of the dataset.json."""
        from ..data.layouts import read_spec

        path = self.dataset_json.path()
        if path is not None:
            return list(read_spec(path).classes)
        return [c for c in re.split(r"[,\s]+", self.classes.text().strip()) if c]

    def _fill_draw_classes(self) -> None:
        current = self.draw_class.currentText()
        try:
            names = self.class_names()
        except PbipError:
            names = []
        self.draw_class.blockSignals(True)
        self.draw_class.clear()
        self.draw_class.addItems([*names, "val"])
        if current in names:
            self.draw_class.setCurrentText(current)
        self.draw_class.blockSignals(False)
        self._set_draw_class()

    def _regions_layer(self):
        from napari.layers import Shapes

        row = self.table.currentRow()
        if row < 0 or self._combo(row) is None:
            return None
        name = self._combo(row).currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        return layer if isinstance(layer, Shapes) else None

    def _set_draw_class(self, *args) -> None:
        layer, name = self._regions_layer(), self.draw_class.currentText()
        if layer is not None and name and "class" in layer.features.columns:
            layer.feature_defaults["class"] = name

    def new_regions_layer(self) -> Any:
        """Add a Shapes layer over the selected slide whose shapes carry a class, coloured by class."""
        import numpy as np
        import pandas as pd

        from ..slides.training_data import spec_for_classes

        row = max(self.table.currentRow(), 0)
        if self.table.rowCount() == 0:
            self.status.error("open a slide first (File > Open, or drop an .svs/.ndpi/.tif on the window)")
            return None
        try:
            names = self.class_names()
            if not names:
                raise DatasetError("type the classes first (e.g. tumor, stroma), or choose a dataset.json")
            palette = spec_for_classes(names).palette
        except PbipError as exc:
            report_error(exc, self.status, self.marks, "classes")
            return None
        slide = self.viewer.layers[self.table.item(row, 0).text()]
        categories = [*names, "val"]
        colours = [[c / 255 for c in rgb] for rgb in palette[: len(names)]] + [[1.0, 1.0, 1.0]]
        layer = self.viewer.add_shapes(
            name=f"{slide.name} regions",
            scale=slide.scale,
            translate=slide.translate,
            units=slide.units,  # else napari drops the um of every layer (mixed units) and the scale bar
            features=pd.DataFrame({"class": pd.Categorical([], categories=categories)}),
            face_color="class",
            face_color_cycle=[[*c, 0.25] for c in colours],
            edge_color="class",
            edge_color_cycle=[[*c, 1.0] for c in colours],
            edge_width=max(
                2.0, max(slide.data[0].shape[:2] if slide.multiscale else slide.data.shape[:2]) / 300
            ),
        )
        # napari hands out cycle colours in the order classes are first drawn: pin each to its own
        pinned = dict(zip(categories, colours, strict=True))
        layer.face_color_cycle_map = {c: np.array([*rgb, 0.25]) for c, rgb in pinned.items()}
        layer.edge_color_cycle_map = {c: np.array([*rgb, 1.0]) for c, rgb in pinned.items()}
        self.set_regions(slide.name, layer.name)
        self.table.selectRow(row)
        self._fill_draw_classes()
        self._set_draw_class()
        return layer

    # -- the job -----------------------------------------------------------------------------------

    def _inputs(self) -> list:
        from ._slide_regions import regions_input

        inputs = []
        slide_mpp = self.slide_mpp.value() or None
        for r in range(self.table.rowCount()):
            if self.table.item(r, 0).checkState() != Qt.CheckState.Checked:
                continue
            name, choice = self.table.item(r, 0).text(), self._combo(r).currentText()
            slide = self.viewer.layers[name]
            if choice in (NOT_USED, CHOOSE, ""):
                continue
            if choice == BESIDE:
                given = regions_input(slide, None, slide_mpp, _beside(Path(slide.metadata["pbip_slide"])))
            elif choice.startswith(FILE_PREFIX):
                given = regions_input(slide, None, slide_mpp, Path(choice[len(FILE_PREFIX) :]))
            else:
                given = regions_input(slide, self.viewer.layers[choice], slide_mpp)
            inputs.append(given)
        if not inputs:
            raise DatasetError(
                "choose the regions (a Shapes or Labels layer, or a GeoJSON file) of at least one slide"
            )
        return inputs

    def build(self) -> JobWorker | None:
        """Build (or update) the data set in the output folder from the chosen regions."""
        from ..slides.training_data import FromSlidesSettings, spec_for_classes
        from ._slide_regions import build_job

        if self.worker is not None:
            self.status.error("wait for the running build to finish (or cancel it)")
            return None
        self.marks.clear()
        out = self.out.path()
        try:
            if out is None:
                raise DatasetError("give the data set folder to write")
            names = self.class_names()
            if not names:
                raise DatasetError("type the classes (e.g. tumor, stroma), or choose a dataset.json")
            json_path = self.dataset_json.path()
            from ..data.layouts import read_spec

            spec = read_spec(json_path) if json_path is not None else spec_for_classes(names)
            settings = FromSlidesSettings(mpp=self.mpp.value(), tile=self.tile.value())
            inputs = self._inputs()
        except (PbipError, SettingsError) as exc:
            field = "out" if out is None else ("classes" if "classes" in str(exc) else None)
            report_error(exc, self.status, self.marks, field)
            return None
        from .._atomic import output_kind
        from ..slides.training_data import OUTPUT_KIND

        overwrite = self.overwrite.isChecked()
        updating = not overwrite and out.is_dir() and output_kind(out) == OUTPUT_KIND  # else written whole
        self._ending = None
        self.summary = None
        self.use_button.setEnabled(False)
        self.result.setText("")
        self.status.info(f"building {out.name} from {len(inputs)} slide(s) ...")
        self._set_busy(True)
        self.worker = start_job(
            lambda: build_job(inputs, out, spec, settings, overwrite),
            on_event=self._on_event,
            on_done=self._on_done,
            on_error=self._on_error,
            on_aborted=lambda: self._end(
                "build cancelled: tiles written so far are kept; build again to finish"
                if updating
                else f"build cancelled: nothing was written to {out.name}"
            ),
            on_finished=self._on_finished,
        )
        return self.worker

    def _on_event(self, ev) -> None:
        self._event = ev
        self.view.poke()

    def _show_event(self) -> None:
        if self._event is not None:
            show_progress(self.progress, self._event)
            self.status.info(self._event.message)

    def _on_done(self, summary: dict[str, Any]) -> None:
        self.summary = summary
        per_class = ", ".join(f"{k} {v}" for k, v in summary["class_counts"].items())
        self.result.setText(
            f"<b>{summary['tiles']} training tiles</b> ({per_class}); {summary['val_images']} validation images. "
            f"{summary['added']} written, {summary['removed']} removed, {summary['unchanged']} unchanged."
        )
        self._end(f"done: {summary['out']}")
        self.use_button.setEnabled(True)

    def _on_error(self, exc: BaseException) -> None:
        report_error(exc, self.status, self.marks)
        self._end(self.status.text(), error=True)

    def _end(self, text: str, error: bool = False) -> None:
        """Say how the build ended (shown again after the last progress event is drawn)."""
        self._ending = (text, error)
        (self.status.error if error else self.status.info)(text)

    def _set_busy(self, busy: bool) -> None:
        self.build_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def _on_finished(self) -> None:
        self.view.flush()
        if self._ending is not None:
            self._end(*self._ending)
        self.worker = None
        self._set_busy(False)

    def cancel(self) -> None:
        """Stop the running build (tiles already written stay; building again finishes the job)."""
        if self.worker is not None:
            self.worker.quit()

    def use_dataset(self) -> list[QWidget]:
        """Put the built data set into the Image bank and Train PBIP widgets of this viewer; returns them."""
        from .bank_widget import BankWidget
        from .train_widget import TrainWidget

        if self.summary is None:
            return []
        # this window's docks: widgets docked from the Plugins menu each hold their own proxy of the
        # viewer, so comparing viewers by identity found none of them
        window = getattr(self.viewer, "window", None)
        docked = list(getattr(window, "dock_widgets", {}).values()) if window is not None else []
        targets = [w for w in docked if isinstance(w, BankWidget | TrainWidget)]
        for w in targets:
            w.dataset.set_path(self.summary["out"])
        if targets:
            self.status.info(
                f"{Path(self.summary['out']).name} is now the data set of {len(targets)} widget(s)"
            )
        else:
            self.status.info("dock Image bank or Train PBIP (Plugins menu), then press this again")
        return targets

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        """Stop a running build when the dock closes."""
        self.cancel()
        super().closeEvent(event)
