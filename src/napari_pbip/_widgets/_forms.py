"""Small Qt pieces shared by the dock widgets: path fields, a status line, and error marks on fields."""

from __future__ import annotations

import re
import traceback
from pathlib import Path

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QWidget,
)

from ..errors import PbipError

VIEW_REFRESH_MS = 250  # job events update the views at most this often
ERROR_STYLE = "color: #ff6060;"
FIELD_ERROR_STYLE = "border: 2px solid #ff4040;"
_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=")


class PathEdit(QWidget):
    """A line edit for a path with a "..." button opening a file dialog.

    Args:
        mode: ``"dir"`` (an existing folder), ``"file"`` (an existing file) or ``"save"``
            (a new file or folder name).
        placeholder: grey hint shown while the field is empty.
    """

    def __init__(self, mode: str = "dir", placeholder: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.mode = mode
        self.line = QLineEdit(self)
        self.line.setPlaceholderText(placeholder)
        button = QPushButton("...", self)
        button.setFixedWidth(28)
        button.setToolTip("browse")
        button.clicked.connect(self._browse)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.line)
        lay.addWidget(button)

    def path(self) -> Path | None:
        """The path typed or chosen, or None when the field is empty."""
        text = self.line.text().strip()
        return Path(text).expanduser() if text else None

    def set_path(self, path: str | Path | None) -> None:
        """Show ``path`` (empty for None)."""
        self.line.setText("" if path is None else str(path))

    def _browse(self) -> None:
        start = str(self.path() or "")
        if self.mode == "dir":
            chosen = QFileDialog.getExistingDirectory(self, "Choose a folder", start)
        elif self.mode == "file":
            chosen, _ = QFileDialog.getOpenFileName(self, "Choose a file", start)
        else:
            chosen, _ = QFileDialog.getSaveFileName(self, "Choose where to write", start)
        if chosen:
            self.set_path(chosen)


class StatusLine(QLabel):
    """One line of status under a form: plain for progress, red for errors."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWordWrap(True)
        self.is_error = False

    def info(self, text: str) -> None:
        """Show ``text`` as a normal status."""
        self.is_error = False
        self.setStyleSheet("")
        self.setText(text)

    def error(self, text: str) -> None:
        """Show ``text`` in red."""
        self.is_error = True
        self.setStyleSheet(ERROR_STYLE)
        self.setText(text)


class FieldMarks:
    """The form's fields by settings name; marks the one an error names with a red frame and tooltip."""

    def __init__(self, fields: dict[str, QWidget]):
        self.fields = fields
        self.marked: dict[str, str] = {}
        self._tips = {name: w.toolTip() for name, w in fields.items()}

    def mark(self, name: str, why: str) -> bool:
        """Mark field ``name`` as invalid with the reason ``why``; False when there is no such field."""
        widget = self.fields.get(name)
        if widget is None:
            return False
        widget.setStyleSheet(FIELD_ERROR_STYLE)
        widget.setToolTip(why)
        self.marked[name] = why
        return True

    def clear(self) -> None:
        """Remove all marks."""
        for name in self.marked:
            self.fields[name].setStyleSheet("")
            self.fields[name].setToolTip(self._tips.get(name, ""))
        self.marked = {}


def field_of(exc: BaseException) -> str | None:
    """The settings field a :class:`~napari_pbip.errors.SettingsError` names (``"k=0 is invalid..."``)."""
    match = _FIELD.match(str(exc))
    return match.group(1) if match else None


def describe(exc: BaseException) -> str:
    """A one-paragraph message for the user: the library's own words, or the type and text of a bug."""
    if isinstance(exc, PbipError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def report_error(
    exc: BaseException, status: StatusLine, marks: FieldMarks | None = None, field: str | None = None
) -> None:
    """Show ``exc`` in the status line and as a napari notification; mark the field it names.

    Errors that are not the library's own (bugs) also get their traceback printed to stderr,
    so they can be reported.
    """
    from napari.utils.notifications import show_error

    name = field or field_of(exc)
    if marks is not None and name is not None:
        marks.mark(name, describe(exc))
    status.error(describe(exc))
    if not isinstance(exc, PbipError):
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    show_error(describe(exc))


def progress_bar(parent: QWidget | None = None) -> QProgressBar:
    """A progress bar showing ``stage step/total``."""
    bar = QProgressBar(parent)
    bar.setRange(0, 1)
    bar.setValue(0)
    bar.setFormat("idle")
    bar.setTextVisible(True)
    return bar


def show_progress(bar: QProgressBar, event) -> None:
    """Show a :class:`~napari_pbip.events.Progress` on ``bar`` (busy animation when the total is unknown)."""
    bar.setUpdatesEnabled(False)  # QProgressBar.setValue repaints at once; let Qt batch it with the rest
    if event.total:
        bar.setRange(0, int(event.total))
        bar.setValue(min(int(event.step), int(event.total)))
        bar.setFormat(f"{event.stage} {event.step}/{event.total}")
    else:
        bar.setRange(0, 0)
        bar.setFormat(event.stage)
    bar.setUpdatesEnabled(True)
    bar.update()


class Throttled:
    """Runs ``apply`` at most once per :data:`VIEW_REFRESH_MS` however often it is poked.

    Every repaint of a napari window costs tens of milliseconds under software OpenGL (more while a
    job keeps the CPUs busy), so widgets store each job event and redraw their views from the
    latest one on this timer instead of once per event.
    """

    def __init__(self, apply, parent=None, interval_ms: int = VIEW_REFRESH_MS):
        self.apply = apply
        self.timer = QTimer(parent)
        self.timer.setSingleShot(True)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.apply())

    def poke(self) -> None:
        """Ask for a refresh (the first poke after a refresh starts the timer)."""
        if not self.timer.isActive():
            self.timer.start()

    def flush(self) -> None:
        """Refresh now (e.g. when the job ends) and cancel the pending one."""
        self.timer.stop()
        self.apply()
