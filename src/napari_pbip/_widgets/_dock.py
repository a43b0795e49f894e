"""Dock widgets that fit the screen: each widget's content scrolls instead of growing the window.

A ``QMainWindow`` never makes a dock smaller than its content's minimum size, so a few tall
widgets docked at once used to make napari's window grow past the screen (1089 x 2271 px with the
three first widgets on a 1600 x 1000 screen) and squeeze the canvas. napari's own panels scroll
instead; every napari-pbip dock widget does the same by building its content in a
:class:`DockBody`::

    class MyWidget(QWidget):
        def __init__(self, napari_viewer):
            super().__init__()
            lay = scrolling_body(self)  # instead of QVBoxLayout(self)
            lay.addWidget(...)          # everything else as before

``tests/_qt/test_docking.py`` docks every widget of ``napari.yaml`` in a 1920 x 1080 window and
fails when one of them grows it or does not use :func:`scrolling_body`.
"""

from __future__ import annotations

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

MIN_HEIGHT = 150  # px: the least a dock shrinks to (a few form rows); five docks fit 1080 px
MAX_MIN_WIDTH = 600  # px: a wider content scrolls sideways rather than narrowing the canvas further


class DockBody(QScrollArea):
    """A frameless scroll area around a dock widget's content (its :meth:`widget`).

    Its minimum size is small (:data:`MIN_HEIGHT` high; the content's minimum width, at most
    :data:`MAX_MIN_WIDTH`), so docking it never grows the main window; its preferred size is the
    content's (at most 24 lines of text high, as for any scroll area), so a dock with room shows
    all of it unscrolled.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWidgetResizable(True)  # the content fills the dock when the dock is taller
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setWidget(QWidget(self))

    def _bar_width(self) -> int:
        """The width beside the content: the vertical scroll bar and the frame (a style sheet may draw one)."""
        frame = self.width() - self.maximumViewportSize().width()
        return self.verticalScrollBar().sizeHint().width() + frame

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        content = self.widget().minimumSizeHint()
        return QSize(min(content.width() + self._bar_width(), MAX_MIN_WIDTH), MIN_HEIGHT)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        content = self.widget().sizeHint()  # asked each time: Qt's own hint keeps the first one
        lines = self.fontMetrics().height()
        return QSize(content.width() + self._bar_width(), min(content.height(), 24 * lines))


def scrolling_body(widget: QWidget) -> QVBoxLayout:
    """Give ``widget`` (a dock widget) a :class:`DockBody` as its only child and return the vertical
    layout of the body's content, to fill as ``QVBoxLayout(widget)`` would have been filled.

    Children made with ``widget`` as their parent are moved into the body when added to the layout.
    """
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    body = DockBody(widget)
    outer.addWidget(body)
    return QVBoxLayout(body.widget())
