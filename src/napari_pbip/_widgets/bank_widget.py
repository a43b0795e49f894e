"""The "Image bank" dock widget: build or open a bank, look at it, and curate it.

The widget owns the current :class:`~napari_pbip.bank.Bank` and calls the library's bank functions
(``build_bank``, ``open_bank``, ``add_images_job``, ``remove``, ``move``, ``lock``, ``recluster``,
``undo``) in a worker thread; each edit writes a new bank version, whose thumbnails, counts,
prototype similarity and history are then shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..errors import BankError, SettingsError
from ._bank_grid import MemberGrid, missing_thumbnails
from ._bank_panels import HistoryPanel, SimilarityPanel
from ._dock import scrolling_body
from ._forms import FieldMarks, PathEdit, StatusLine, Throttled, progress_bar, report_error, show_progress
from ._worker import JobWorker, as_job, start_job

if TYPE_CHECKING:
    import napari

NEAREST = "nearest centre"
NO_SHAPES = "(whole current patch)"


@dataclass
class Loaded:
    """What a bank job hands the GUI: the bank, its summary and the thumbnails it lacked."""

    bank: Any
    info: dict[str, Any]
    thumbs: dict[str, Any]


def _with_view(job, known: set[str], show_pool: bool):
    """Run a job returning a Bank, then gather its summary and missing thumbnails (still off the GUI thread)."""
    from ..bank import bank_info

    bank = yield from job
    return Loaded(bank, bank_info(bank), missing_thumbnails(bank, known, show_pool))


def _add_region(bank, class_name: str, region, device: str):
    from ..bank import add_images_job

    pixels = region.read()
    return (yield from add_images_job(bank, class_name, [pixels], [region.source], device=device))


def _combo(items: list[str], editable: bool = False) -> QComboBox:
    box = QComboBox()
    box.addItems(items)
    box.setEditable(editable)
    return box


class BankWidget(QWidget):
    """Build, open and curate a prototype image bank."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.bank: Any = None
        self.info: dict[str, Any] | None = None
        self.worker: JobWorker | None = None
        self._event = None
        self.view = Throttled(self._show_event, self)
        lay = scrolling_body(self)  # content scrolls in its dock (_dock.py)
        lay.addWidget(self._build_box())
        self.progress = progress_bar(self)
        self.status = StatusLine(self)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        self.header = QLabel("no bank open")
        self.header.setWordWrap(True)
        lay.addWidget(self.header)
        self.show_pool = QCheckBox("show unselected pool members too")
        self.show_pool.toggled.connect(self._reload_view)
        self.grid = MemberGrid(self)
        self.grid.selection_changed.connect(self._on_selection)
        members = QWidget()
        mlay = QVBoxLayout(members)
        mlay.setContentsMargins(0, 0, 0, 0)
        mlay.addWidget(self.show_pool)
        mlay.addWidget(self.grid, stretch=1)
        self.similarity = SimilarityPanel(self)
        self.history = HistoryPanel(self)
        self.tabs = QTabWidget(self)
        self.tabs.addTab(members, "Members")
        self.tabs.addTab(self.similarity, "Prototype similarity")
        self.tabs.addTab(self.history, "Versions")
        lay.addWidget(self.tabs, stretch=1)
        lay.addWidget(self.similarity.warning)
        self.edits = self._edit_box()
        lay.addWidget(self.edits)
        self.edits.setEnabled(False)
        self._fill_dataset()
        self.viewer.layers.events.inserted.connect(self._on_layers_changed)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        self._on_layers_changed()

    # -- form ------------------------------------------------------------------------------------

    def _build_box(self) -> QGroupBox:
        from ..bank import BankSettings
        from ..models.registry import list_encoders

        d = BankSettings()
        box = QGroupBox("Build or open a bank")
        form = QFormLayout(box)
        self.dataset = PathEdit("dir", "weakly labelled data set folder")
        self.encoder = _combo(sorted(list_encoders()), editable=True)
        self.encoder.setCurrentText(d.encoder)
        self.k = QSpinBox()
        self.k.setRange(1, 64)
        self.k.setValue(d.k)
        self.per_cluster = QSpinBox()
        self.per_cluster.setRange(1, 100_000)
        self.per_cluster.setValue(d.per_cluster)
        self.out = PathEdit("dir", "bank folder (to build, or to open)")
        self.overwrite = QCheckBox("replace an existing bank when building")
        for label, w in (
            ("Data set", self.dataset),
            ("Encoder", self.encoder),
            ("K (sub-clusters)", self.k),
            ("Per cluster (N_K)", self.per_cluster),
            ("Bank folder", self.out),
            ("", self.overwrite),
        ):
            form.addRow(label, w)
        self.marks = FieldMarks(
            {
                "dataset": self.dataset,
                "encoder": self.encoder,
                "k": self.k,
                "per_cluster": self.per_cluster,
                "out": self.out,
            }
        )
        row = QHBoxLayout()
        self.build_button = QPushButton("Build")
        self.build_button.clicked.connect(self.build)
        self.open_button = QPushButton("Open")
        self.open_button.clicked.connect(self.open)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        for b in (self.build_button, self.open_button, self.cancel_button):
            row.addWidget(b)
        form.addRow(row)
        return box

    def _edit_box(self) -> QGroupBox:
        box = QGroupBox("Edit (each edit is saved as a new bank version)")
        form = QFormLayout(box)
        self.selection_label = QLabel("nothing selected")
        form.addRow(self.selection_label)
        row = QHBoxLayout()
        for text, slot in (
            ("Remove", self.remove),
            ("Lock", self.lock),
            ("Unlock", self.unlock),
            ("Undo", self.undo),
        ):
            b = QPushButton(text)
            b.clicked.connect(slot)
            row.addWidget(b)
        form.addRow(row)
        self.move_class, self.move_cluster = QComboBox(), QComboBox()
        self.move_class.currentTextChanged.connect(self._fill_clusters)
        move = QPushButton("Move selected")
        move.clicked.connect(self.move)
        form.addRow("Move to", self._row(self.move_class, self.move_cluster, move))
        self.add_class, self.add_image, self.add_shapes = QComboBox(), QComboBox(), QComboBox()
        self.add_mpp = QDoubleSpinBox()
        self.add_mpp.setRange(0.05, 50.0)
        self.add_mpp.setDecimals(3)
        self.add_mpp.setSuffix(" um/px")
        self.add_mpp.setToolTip("resolution a slide region is read at (default: the slide's own)")
        add = QPushButton("Add region")
        add.clicked.connect(self.add_region)
        form.addRow("Add to class", self._row(self.add_class, add))
        form.addRow("  from image", self._row(self.add_image, self.add_mpp))
        form.addRow("  rectangle in", self.add_shapes)
        self.add_image.currentTextChanged.connect(self._default_mpp)
        self.re_class = QComboBox()
        self.re_k = QSpinBox()
        self.re_k.setRange(1, 64)
        self.re_k.setPrefix("k = ")
        recluster = QPushButton("Re-cluster")
        recluster.clicked.connect(self.recluster)
        form.addRow("Re-cluster", self._row(self.re_class, self.re_k, recluster))
        return box

    @staticmethod
    def _row(*widgets: QWidget) -> QWidget:
        w = QWidget()
        lay = QHBoxLayout(w)
        lay.setContentsMargins(0, 0, 0, 0)
        for x in widgets:
            lay.addWidget(x)
        return w

    def _fill_dataset(self) -> None:
        if self.dataset.path() is None:
            for layer in self.viewer.layers:
                if layer.metadata.get("pbip_dataset"):
                    self.dataset.set_path(layer.metadata["pbip_dataset"])

    def _on_layers_changed(self, event=None) -> None:
        from napari.layers import Image, Shapes

        self._fill_dataset()
        for box, kind, extra in ((self.add_image, Image, []), (self.add_shapes, Shapes, [NO_SHAPES])):
            current = box.currentText()
            box.blockSignals(True)
            box.clear()
            box.addItems(extra + [layer.name for layer in self.viewer.layers if isinstance(layer, kind)])
            added = getattr(event, "value", None)
            if kind is Shapes and isinstance(added, Shapes):
                box.setCurrentText(added.name)  # a new Shapes layer: the user is about to draw in it
            elif box.findText(current) >= 0:
                box.setCurrentText(current)
            box.blockSignals(False)
        self._default_mpp()

    def _default_mpp(self, *args) -> None:
        name = self.add_image.currentText()
        if name in self.viewer.layers:
            mpp = self.viewer.layers[name].metadata.get("pbip_mpp")
            self.add_mpp.setEnabled(bool(mpp))
            self.add_mpp.setVisible(bool(mpp))  # a patch set has no read resolution to choose
            if mpp:
                self.add_mpp.setValue(float(mpp))

    # -- jobs --------------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """True while a build, open or edit runs."""
        return self.worker is not None

    def _run(self, make_job, what: str) -> JobWorker | None:
        if self.busy:
            self.status.error("wait for the running bank job to finish (or cancel it)")
            return None
        known, pool = set(self.grid.pixmaps), self.show_pool.isChecked()
        self.status.info(f"{what} ...")
        self._set_busy(True)
        self.worker = start_job(
            lambda: _with_view(make_job(), known, pool),
            on_event=self._on_event,
            on_done=self._on_loaded,
            on_error=lambda exc: report_error(exc, self.status, self.marks),
            on_aborted=lambda: self.status.info(f"{what}: cancelled"),
            on_finished=self._on_finished,
        )
        return self.worker

    def _on_event(self, ev) -> None:
        self._event = ev
        self.view.poke()

    def _show_event(self) -> None:
        if self._event is not None:
            show_progress(self.progress, self._event)

    def _set_busy(self, busy: bool) -> None:
        self.build_button.setEnabled(not busy)
        self.open_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.edits.setEnabled(not busy and self.bank is not None)

    def _on_finished(self) -> None:
        self.view.flush()
        self.worker = None
        self._set_busy(False)
        if not self.status.is_error and self.progress.maximum() == 0:
            self.progress.setRange(0, 1)

    def cancel(self) -> None:
        """Stop the running job (a build keeps its encoded features and resumes next time)."""
        if self.worker is not None:
            self.worker.quit()

    def build(self) -> JobWorker | None:
        """Build a bank from the form's data set and settings into the bank folder."""
        from ..bank import BankSettings, build_bank

        self.marks.clear()
        dataset, out = self.dataset.path(), self.out.path()
        if dataset is None or not dataset.is_dir():
            self._field_error("dataset", f"data set folder {dataset or '(empty)'} does not exist; choose one")
            return None
        if out is None:
            self._field_error("out", "give the bank folder to write")
            return None
        try:
            settings = BankSettings(
                encoder=self.encoder.currentText().strip(),
                k=self.k.value(),
                per_cluster=self.per_cluster.value(),
            )
        except SettingsError as exc:
            report_error(exc, self.status, self.marks)
            return None
        overwrite = self.overwrite.isChecked()
        return self._run(
            lambda: build_bank(settings, dataset, out, overwrite=overwrite), f"building {out.name}"
        )

    def open(self) -> JobWorker | None:
        """Open the bank in the bank folder."""
        from ..bank import open_bank

        self.marks.clear()
        out = self.out.path()
        if out is None or not out.is_dir():
            self._field_error("out", f"bank folder {out or '(empty)'} does not exist; build a bank first")
            return None
        return self._run(lambda: as_job(open_bank, out), f"opening {out.name}")

    def _field_error(self, field: str, why: str) -> None:
        report_error(BankError(why), self.status, self.marks, field)

    def _on_loaded(self, loaded: Loaded) -> None:
        self.bank, self.info = loaded.bank, loaded.info
        self.grid.add_thumbnails(loaded.thumbs)
        self._show()
        edit = self.bank.last_edit
        skipped = edit.get("skipped") or []
        text = f"bank version {self.bank.version}: {edit.get('summary') or 'built'}"
        if skipped:
            self.status.error(
                text + " - skipped: " + "; ".join(f"{s['item']}: {s['reason']}" for s in skipped[:3])
            )
        else:
            self.status.info(text)

    def _show(self) -> None:
        bank, info = self.bank, self.info
        enc = info["encoder"]
        self.header.setText(
            f"<b>{bank.root.name}</b> version {bank.version} (parent {bank.parent}) &mdash; encoder {enc['name']}, "
            f"{len(bank.classes)} classes, {info['valid_prototypes']} prototypes, patch {bank.patch_size} px"
        )
        self.out.set_path(bank.root)
        self.grid.show_members(bank, self.show_pool.isChecked(), bank.settings.thumb_size)
        self.similarity.show_similarity(info["similarity"], bank.classes)
        self.history.show_history(info["history"])
        for box in (self.move_class, self.add_class, self.re_class):
            current = box.currentText()
            box.clear()
            box.addItems(list(bank.classes))
            if current in bank.classes:
                box.setCurrentText(current)
        self._fill_clusters()
        self._on_selection()
        self.edits.setEnabled(not self.busy)

    def _fill_clusters(self, *args) -> None:
        self.move_cluster.clear()
        self.move_cluster.addItem(NEAREST)
        if self.bank is not None and self.move_class.currentText() in self.bank.classes:
            k = self.bank.ks[self.bank.class_index(self.move_class.currentText())]
            self.move_cluster.addItems([str(c) for c in range(k)])

    def _on_selection(self) -> None:
        n = len(self.grid.selected_ids())
        self.selection_label.setText(
            f"{n} member(s) selected" if n else "select thumbnails to remove, move or lock them"
        )

    def _reload_view(self, *args) -> None:
        if self.bank is not None:
            bank = self.bank
            self._run(lambda: as_job(lambda: bank), "loading thumbnails")

    # -- edits -------------------------------------------------------------------------------------

    def _selected(self) -> list[int] | None:
        ids = self.grid.selected_ids()
        if not ids:
            self.status.error("select one or more thumbnails first")
            return None
        return ids

    def _edit(self, fn, *args, what: str) -> JobWorker | None:
        if self.bank is None:
            self.status.error("open or build a bank first")
            return None
        bank = self.bank
        return self._run(lambda: as_job(fn, bank, *args), what)

    def remove(self) -> JobWorker | None:
        """Remove the selected members."""
        from ..bank import remove

        ids = self._selected()
        return None if ids is None else self._edit(remove, ids, what=f"removing {len(ids)} member(s)")

    def lock(self, locked: bool = True) -> JobWorker | None:
        """Lock the selected members (they stay selected through re-clustering)."""
        from ..bank import lock

        ids = self._selected()
        word = "locking" if locked else "unlocking"
        return None if ids is None else self._edit(lock, ids, locked, what=f"{word} {len(ids)} member(s)")

    def unlock(self) -> JobWorker | None:
        """Unlock the selected members."""
        return self.lock(False)

    def move(self) -> JobWorker | None:
        """Move the selected members to the chosen class and sub-cluster."""
        from ..bank import move

        ids = self._selected()
        if ids is None:
            return None
        to_class = self.move_class.currentText()
        cluster = (
            None if self.move_cluster.currentText() in (NEAREST, "") else int(self.move_cluster.currentText())
        )
        return self._edit(move, ids, to_class, cluster, what=f"moving {len(ids)} member(s) to {to_class}")

    def recluster(self) -> JobWorker | None:
        """Re-cluster the chosen class into k sub-clusters."""
        from ..bank import recluster

        name = self.re_class.currentText()
        return self._edit(recluster, name, self.re_k.value(), what=f"re-clustering {name}")

    def undo(self) -> JobWorker | None:
        """Go back to the version the current one was made from."""
        from ..bank import undo

        return self._edit(undo, what="undoing the last edit")

    def add_region(self) -> JobWorker | None:
        """Add the region under the chosen rectangle (or the current patch) to the chosen class."""
        from ._regions import region_for_bank

        if self.bank is None:
            self.status.error("open or build a bank first")
            return None
        image_name, shapes_name = self.add_image.currentText(), self.add_shapes.currentText()
        if image_name not in self.viewer.layers:
            self.status.error("open a slide or an image of patches to add from")
            return None
        shapes = None if shapes_name in (NO_SHAPES, "") else self.viewer.layers[shapes_name]
        mpp = self.add_mpp.value() if self.add_mpp.isEnabled() else None
        try:
            region = region_for_bank(self.viewer.layers[image_name], shapes, self.viewer.dims.point, mpp)
        except BankError as exc:
            report_error(exc, self.status)
            return None
        bank, name = self.bank, self.add_class.currentText()
        return self._run(
            lambda: _add_region(bank, name, region, "auto"), f"adding {region.description} to {name}"
        )

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        """Stop a running job when the dock closes."""
        self.cancel()
        super().closeEvent(event)
