"""The bank's members as thumbnails, grouped by class and sub-cluster, with their counts.

Each sub-cluster is one horizontal strip of thumbnails under a line giving its counts. Locked
members get a gold frame; pool members that do not count in the prototype (unselected) are
dimmed. Selection spans all strips; :meth:`MemberGrid.selected_ids` lists the chosen members.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QSize, Qt, Signal
from qtpy.QtGui import QColor, QIcon, QImage, QPainter, QPen, QPixmap
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

ID_ROLE = Qt.ItemDataRole.UserRole
LOCK_COLOUR = "#f5c518"


def to_pixmap(image: np.ndarray) -> QPixmap:
    """An RGB ``uint8 (h, w, 3)`` array as a QPixmap (copied, so the array may go)."""
    image = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)
    h, w = image.shape[:2]
    qimage = QImage(image.data, w, h, 3 * w, QImage.Format.Format_RGB888)
    return QPixmap.fromImage(qimage.copy())


def _decorate(pixmap: QPixmap, locked: bool, selected: bool) -> QPixmap:
    out = QPixmap(pixmap)
    painter = QPainter(out)
    if not selected:
        painter.fillRect(out.rect(), QColor(30, 30, 30, 150))
    if locked:
        painter.setPen(QPen(QColor(LOCK_COLOUR), 4))
        painter.drawRect(out.rect().adjusted(2, 2, -2, -2))
    painter.end()
    return out


class MemberGrid(QScrollArea):
    """Thumbnails of a bank's members by class and sub-cluster.

    Signals:
        selection_changed: the set of selected thumbnails changed.
    """

    selection_changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setMinimumHeight(220)
        self.pixmaps: dict[str, QPixmap] = {}
        self.strips: dict[tuple[str, int], QListWidget] = {}
        self.headers: dict[str, QLabel] = {}
        self._body = QWidget()
        self._layout = QVBoxLayout(self._body)
        self.setWidget(self._body)

    def add_thumbnails(self, thumbs: dict[str, np.ndarray]) -> None:
        """Keep thumbnails (content hash -> RGB array) for display."""
        for h, image in thumbs.items():
            self.pixmaps[h] = to_pixmap(image)

    def show_members(self, bank: Any, show_pool: bool, icon: int = 64) -> None:
        """Lay out ``bank``'s members: selected ones, and the rest of each pool when ``show_pool``."""
        self._clear()
        for name, k in zip(bank.classes, bank.ks, strict=True):
            members = bank.members(name)
            header = QLabel(
                f"<b>{name}</b> &mdash; {k} sub-cluster(s), {sum(m.selected for m in members)} selected "
                f"of {len(members)} in the pool, {sum(m.locked for m in members)} locked"
            )
            self.headers[name] = header
            self._layout.addWidget(header)
            for c in range(k):
                in_cluster = [m for m in members if m.cluster == c]
                shown = [m for m in in_cluster if m.selected or show_pool]
                n_sel = sum(m.selected for m in in_cluster)
                label = QLabel(f"sub-cluster {c}\n{n_sel} selected\nof {len(in_cluster)}")
                label.setFixedWidth(88)
                strip = self._strip(icon)
                for m in shown:
                    strip.addItem(self._item(m))
                self.strips[(name, c)] = strip
                row = QWidget()
                lay = QHBoxLayout(row)
                lay.setContentsMargins(0, 0, 0, 0)
                lay.addWidget(label)
                lay.addWidget(strip, stretch=1)
                self._layout.addWidget(row)
        self._layout.addStretch(1)

    def _strip(self, icon: int) -> QListWidget:
        strip = QListWidget()
        strip.setViewMode(QListView.ViewMode.IconMode)
        strip.setFlow(QListView.Flow.LeftToRight)
        strip.setWrapping(False)
        strip.setMovement(QListView.Movement.Static)
        strip.setIconSize(QSize(icon, icon))
        strip.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        strip.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        strip.setFixedHeight(icon + 42)
        strip.itemSelectionChanged.connect(self.selection_changed)
        return strip

    def _item(self, m: Any) -> QListWidgetItem:
        item = QListWidgetItem(str(m.id))
        pixmap = self.pixmaps.get(m.hash)
        if pixmap is not None:
            item.setIcon(QIcon(_decorate(pixmap, m.locked, m.selected)))
        item.setData(ID_ROLE, int(m.id))
        where = m.path if not m.source else ", ".join(f"{k} {v}" for k, v in m.source.items())
        item.setToolTip(
            f"member {m.id}: distance to centre {m.distance:.3f}, "
            f"{'selected' if m.selected else 'not selected'}{', locked' if m.locked else ''}\n{where}"
        )
        return item

    def _clear(self) -> None:
        while self._layout.count():
            w = self._layout.takeAt(0).widget()  # a stretch has no widget
            if w is not None:
                w.setParent(None)
                w.deleteLater()
        self.strips, self.headers = {}, {}

    def selected_ids(self) -> list[int]:
        """Ids of the selected thumbnails, in display order."""
        return [int(it.data(ID_ROLE)) for strip in self.strips.values() for it in strip.selectedItems()]

    def select_ids(self, ids: list[int]) -> None:
        """Select exactly the thumbnails of ``ids`` (others are deselected)."""
        wanted = {int(i) for i in ids}
        for strip in self.strips.values():
            for row in range(strip.count()):
                item = strip.item(row)
                item.setSelected(int(item.data(ID_ROLE)) in wanted)

    def shown_ids(self, class_name: str | None = None) -> list[int]:
        """Ids of the thumbnails on display (of one class when given)."""
        return [
            int(strip.item(r).data(ID_ROLE))
            for (name, _), strip in self.strips.items()
            if class_name in (None, name)
            for r in range(strip.count())
        ]


def missing_thumbnails(bank: Any, known: set[str], show_pool: bool) -> dict[str, np.ndarray]:
    """Thumbnails (hash -> RGB) of the members to display whose pictures are not in ``known``.

    Runs in a worker thread: it reads (and for pool members, first writes) thumbnail PNGs.
    """
    out: dict[str, np.ndarray] = {}
    for m in bank.members():
        if (m.selected or show_pool) and m.hash not in known and m.hash not in out:
            out[m.hash] = bank.thumbnail(m.id)
    return out
