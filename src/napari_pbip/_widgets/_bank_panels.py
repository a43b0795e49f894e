"""Bank panels: the prototype similarity table with its warning (classes whose prototypes are too
alike, :func:`napari_pbip.bank.info.too_alike`), and the version history."""

from __future__ import annotations

from typing import Any

from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QLabel, QListWidget, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from ..bank.info import too_alike
from ._forms import StatusLine

ALIKE_COLOUR = QColor(170, 40, 40)


class SimilarityPanel(QWidget):
    """Class x class mean prototype cosine (diagonal: within a class) and a warning line (``warning``, placed by the owner)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.table = QTableWidget(0, 0, self)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setMinimumHeight(120)
        self.warning = StatusLine(self)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(
            QLabel("Prototype cosine similarity (mean over prototype pairs; diagonal: within a class)")
        )
        lay.addWidget(self.table)
        self.pairs: list[tuple[str, str, float, float]] = []

    def show_similarity(self, similarity: dict[str, Any], classes: tuple[str, ...]) -> None:
        """Fill the table and warn about the pairs :func:`too_alike` finds."""
        n = len(classes)
        self.table.setRowCount(n)
        self.table.setColumnCount(n)
        self.table.setHorizontalHeaderLabels(list(classes))
        self.table.setVerticalHeaderLabels(list(classes))
        self.pairs = too_alike(similarity, classes)
        flagged = {(a, b) for a, b, _, _ in self.pairs} | {(b, a) for a, b, _, _ in self.pairs}
        for i, a in enumerate(classes):
            for j, b in enumerate(classes):
                value = similarity["matrix"][i][j]
                item = QTableWidgetItem("-" if value is None else f"{value:.3f}")
                if (a, b) in flagged:
                    item.setBackground(QBrush(ALIKE_COLOUR))
                self.table.setItem(i, j, item)
        self.table.resizeColumnsToContents()
        if self.pairs:
            self.warning.error(
                "Prototypes too alike: "
                + "; ".join(f"{a} / {b} cosine {c:.3f} >= {lim:.3f}" for a, b, c, lim in self.pairs)
                + ". ClassNet will find these classes hard to tell apart: remove ambiguous images, add distinct "
                "ones, or re-cluster."
            )
        else:
            self.warning.info("Every pair of classes is less alike than each class's own sub-clusters.")


class HistoryPanel(QListWidget):
    """The bank's versions, newest first, the current one marked."""

    def show_history(self, history: list[dict[str, Any]]) -> None:
        """List ``bank_info(...)["history"]``."""
        self.clear()
        for h in reversed(history):
            mark = "  <- current" if h["current"] else ""
            self.addItem(f"v{h['version']} {h['op']}: {h['summary']}{mark}")
