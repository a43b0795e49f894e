"""The queue of the "Segment slide" widget: several slides segmented one after another into one folder.

The user ticks open slide layers and adds folders of slides; **Run queue** runs the library's
``segment_cohort`` job (the one ``pbip segment A B --out DIR`` runs) in a worker thread with the
widget's model and settings. The folder gets, per slide, ``NAME.zarr``, ``NAME.csv`` and
``NAME.geojson``, and ``cohort.csv`` / ``cohort.json`` for all. One line per slide shows its
status (queued, running, done, failed), its chunks and, for a failed slide, the reason; a failed
slide does not stop the others, and running the queue again skips the finished slides. A done
line opens its segmentation as a Labels layer when double-clicked.

:class:`QueueLines` turns the job's events into those lines without Qt; :class:`QueuePanel` shows
them and starts the job for its :class:`~.segment_widget.SegmentWidget`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
)

from ..errors import SlideError
from ._forms import PathEdit, report_error, show_progress
from ._worker import JobWorker, start_job

if TYPE_CHECKING:
    from ..slides.cohort import CohortResult
    from .segment_widget import SegmentWidget

COLUMNS = ("slide", "status", "chunks", "note")
DEFAULT_FOLDER = "pbip-cohort"  # the queue's output, beside the first queued slide or folder
PATH_ROLE = Qt.ItemDataRole.UserRole  # an entry's slide file or folder
FOLDER_TAG = "folder: "


@dataclass
class SlideLine:
    """What one slide's line says: ``status`` queued, running, done or failed; ``chunks`` "k/n"."""

    slide: str
    status: str = "queued"
    chunks: str = ""
    note: str = ""
    output: str = ""  # the segmentation's name in the folder, once done

    def cells(self) -> tuple[str, str, str, str]:
        """The line's cells, in :data:`COLUMNS` order."""
        return Path(self.slide).name, self.status, self.chunks, self.note


class QueueLines:
    """The lines of a queue run, kept up to date from ``segment_cohort``'s events (no Qt).

    Args:
        slides: the queued slides in the order the job takes them (``expand_slides``).
    """

    def __init__(self, slides: list[Path]):
        self.lines = [SlideLine(str(p)) for p in slides]
        self._index = {str(p): i for i, p in enumerate(slides)}
        self.current: int | None = None

    def update(self, event) -> int | None:
        """Apply one event; the index of the line it changed, or None."""
        from ..slides.cohort import SLIDE_STAGE, SlideStatus
        from ..slides.segment import SEGMENT_STAGE

        status = event.payload
        if event.stage == SLIDE_STAGE and isinstance(status, SlideStatus):
            i = self._index.get(status.slide)
            if i is None:
                return None
            line = self.lines[i]
            line.status = status.status
            self.current = i if status.status == "running" else None
            if status.status == "done":
                before = " (finished by an earlier run)" if status.finished_before else ""
                line.output = f"{status.name}.zarr"
                line.note = f"{line.output}{before}"
            elif status.status == "failed":
                line.note = status.error or ""
            return i
        if event.stage == SEGMENT_STAGE and self.current is not None and event.total:
            self.lines[self.current].chunks = f"{event.step}/{event.total}"
            return self.current
        return None

    def stop(self) -> int | None:
        """Mark the running slide as cancelled (its finished chunks are kept); its index, or None."""
        i, self.current = self.current, None
        if i is not None:
            self.lines[i].status = "cancelled"
            self.lines[i].note = "finished chunks kept: Run queue again to resume"
        return i


def _same(path: str | None, resolved: Path) -> bool:
    return path is not None and Path(path).resolve() == resolved


class QueuePanel(QGroupBox):
    """Slides to segment one after another with the owner's model and settings, and a line per slide."""

    def __init__(self, owner: SegmentWidget, set_running: Callable[[bool], None]):
        super().__init__("Queue: several slides into one folder")
        self.owner = owner
        self.set_running = set_running  # the owner's: enables Run, Cancel and the exports
        self.lines: QueueLines | None = None
        self._folder: Path | None = None
        form = QFormLayout(self)
        self.entries = QListWidget(self)
        self.entries.setToolTip("ticked slide layers and folders are segmented in this order")
        self.entries.setMaximumHeight(110)
        form.addRow("Slides", self.entries)
        row = QHBoxLayout()
        add = QPushButton("Add folder...")
        add.clicked.connect(self._ask_folder)
        self.run_button = QPushButton("Run queue")
        self.run_button.clicked.connect(self.run)
        row.addWidget(add)
        row.addWidget(self.run_button)
        form.addRow("", row)
        self.out = PathEdit("dir", f"output folder (default: {DEFAULT_FOLDER} beside the first slide)")
        form.addRow("Folder", self.out)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setMinimumHeight(110)
        self.table.setToolTip("double-click a done slide to open its segmentation")
        self.table.cellDoubleClicked.connect(lambda row, _col: self.open_result(row))
        form.addRow(self.table)

    # -- the entries ---------------------------------------------------------------------------------

    def fill_layers(self, layers) -> None:
        """List the open slide layers (keeping their ticks; new ones ticked) and the added folders."""
        ticked = {self.entries.item(i).text(): self._ticked(i) for i in range(self.entries.count())}
        folders = [self.entries.item(i) for i in range(self.entries.count())]
        folders = [(it.text(), it.data(PATH_ROLE)) for it in folders if it.text().startswith(FOLDER_TAG)]
        self.entries.clear()
        for layer in layers:
            if layer.metadata.get("pbip_slide"):
                self._add(layer.name, layer.metadata["pbip_slide"], ticked.get(layer.name, True))
        for text, path in folders:
            self._add(text, path, ticked.get(text, True))

    def add_folder(self, folder: str | Path) -> None:
        """Queue a folder of slides (its slide files, by name; see ``expand_slides``)."""
        text = f"{FOLDER_TAG}{folder}"
        if not self.entries.findItems(text, Qt.MatchFlag.MatchExactly):
            self._add(text, str(folder), True)

    def _add(self, text: str, path: str, ticked: bool) -> None:
        item = QListWidgetItem(text)
        item.setData(PATH_ROLE, path)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked if ticked else Qt.CheckState.Unchecked)
        self.entries.addItem(item)

    def _ticked(self, i: int) -> bool:
        return self.entries.item(i).checkState() == Qt.CheckState.Checked

    def queued(self) -> list[Path]:
        """The ticked entries' paths (slides and folders), in list order."""
        return [
            Path(self.entries.item(i).data(PATH_ROLE)) for i in range(self.entries.count()) if self._ticked(i)
        ]

    def _ask_folder(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Choose a folder of slides")
        if chosen:
            self.add_folder(chosen)

    # -- running -------------------------------------------------------------------------------------

    def folder(self, queued: list[Path]) -> Path:
        """The output folder: the one typed, else :data:`DEFAULT_FOLDER` beside the first entry."""
        return self.out.path() or queued[0].parent / DEFAULT_FOLDER

    def run(self) -> JobWorker | None:
        """Segment the ticked slides and folders one after another in a worker thread."""
        from ..slides.cohort import expand_slides, segment_cohort

        w = self.owner
        if w.worker is not None:
            return None
        w.marks.clear()
        queued, model = self.queued(), w.model.path()
        if not queued:
            return self._error(SlideError("tick at least one slide layer or add a folder of slides to queue"))
        if model is None or not (model / "model.json").is_file():
            report_error(
                SlideError(f"{model or '(empty)'} is not a trained model folder (no model.json)"),
                w.status,
                w.marks,
                "model",
            )
            return None
        settings = w.settings()
        if settings is None:
            return None
        try:
            slides = expand_slides(queued)  # the order segment_cohort takes them in, for the lines
        except SlideError as exc:
            return self._error(exc)
        out, overwrite, slide_mpp = self.folder(queued), w.overwrite.isChecked(), w.given_slide_mpp()
        self._folder = out
        self.lines = QueueLines(slides)
        self._show_all()
        self.set_running(True)
        w.status.info(f"segmenting {len(slides)} slides one after another into {out} ...")
        w.worker = start_job(
            lambda: segment_cohort(queued, model, out, settings, overwrite=overwrite, slide_mpp=slide_mpp),
            on_event=self._on_event,
            on_done=self._on_done,
            on_error=lambda exc: report_error(exc, w.status, w.marks),
            on_finished=self._on_finished,
        )
        return w.worker

    def _error(self, exc: Exception) -> None:
        report_error(exc, self.owner.status)

    def _show_all(self) -> None:
        self.table.setRowCount(len(self.lines.lines))
        for i in range(len(self.lines.lines)):
            self._show(i)

    def _show(self, i: int) -> None:
        for j, text in enumerate(self.lines.lines[i].cells()):
            item = QTableWidgetItem(text)
            item.setToolTip(text)
            self.table.setItem(i, j, item)

    def open_result(self, row: int) -> list | None:
        """Open the segmentation of the slide on line ``row`` (when done) as a Labels layer, over its
        slide's layer (in the slide's pixels when that layer is shown in pixels)."""
        from ._labels import to_slide_pixels

        line = self.lines.lines[row] if self.lines and 0 <= row < len(self.lines.lines) else None
        if line is None or not line.output:
            return None
        layers = self.owner.viewer.open(str(self._folder / line.output), plugin="napari-pbip")
        here = Path(line.slide).resolve()
        slide = next((x for x in self.owner.viewer.layers if _same(x.metadata.get("pbip_slide"), here)), None)
        if slide is not None and not slide.metadata.get("pbip_mpp"):
            for layer in layers:
                to_slide_pixels(layer)
        return layers

    def _on_event(self, event) -> None:
        from ..slides.cohort import SLIDE_STAGE

        i = self.lines.update(event) if self.lines else None
        if i is not None:
            self._show(i)
        if event.stage == SLIDE_STAGE and event.message and not self.owner.status.is_error:
            self.owner.status.info(event.message)
        show_progress(self.owner.progress, event)

    def _on_done(self, result: CohortResult) -> None:
        done = sum(s.status == "done" for s in result.slides)
        text = f"queue done: {done} of {len(result.slides)} slides segmented into {result.out_dir}"
        text += f"; areas of all in {result.out_dir / 'cohort.csv'}"
        if result.failed:
            names = ", ".join(Path(s.slide).name for s in result.failed)
            self.owner.status.error(
                f"{text}. {len(result.failed)} failed ({names}): see their lines; fix them and Run queue "
                "again (finished slides are skipped)"
            )
        else:
            self.owner.status.info(text)

    def _on_finished(self) -> None:
        w = self.owner
        aborted = w.worker is not None and w.worker.abort_requested
        w.worker = None
        self.set_running(False)
        if aborted and self.lines is not None:
            i = self.lines.stop()
            if i is not None:
                self._show(i)
            if not w.status.is_error:
                w.status.info(
                    f"queue cancelled; finished slides are in {self._folder} - Run queue again to go on "
                    "(finished slides are skipped, the cut-off one resumes)"
                )
