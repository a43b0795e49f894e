"""A light live plot of the training loss and its parts, drawn with QPainter.

Cheaper than a matplotlib canvas: adding a point only schedules a repaint, and a repaint draws a
few polylines (thinned to about one point per pixel column), so the GUI stays responsive at one
point per training step.
"""

from __future__ import annotations

from qtpy.QtCore import QPointF
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QWidget

from ..events import LOSS, StepMetrics
from ..stage1.losses import BG, CLS, FG

SERIES = {LOSS: "#f0f0f0", CLS: "#4aa3ff", FG: "#5bd16b", BG: "#ff8c42"}  # stage 1's parts, legend order
MARGIN = (44, 8, 8, 20)  # left, top, right, bottom


class LossPlot(QWidget):
    """Loss parts against the optimizer step; call :meth:`add` per step and :meth:`clear` per run.

    Args:
        parent: the parent widget.
        series: name in :meth:`~napari_pbip.events.StepMetrics.named` -> colour of each curve, in
            legend order (default :data:`SERIES`).
        empty_text: shown before the first point.
        dots: series also drawn as a dot per point (sparse ones, such as val mIoU once per epoch).
    """

    def __init__(
        self,
        parent: QWidget | None = None,
        series: dict[str, str] | None = None,
        empty_text: str = "loss parts appear here once training runs",
        dots: tuple[str, ...] = (),
    ):
        super().__init__(parent)
        self.setMinimumHeight(150)
        self.colours = dict(series or SERIES)
        self.empty_text = empty_text
        self.dots = dots
        self.series: dict[str, list[tuple[int, float]]] = {name: [] for name in self.colours}

    def add(self, metrics: StepMetrics, repaint: bool = True) -> None:
        """Append the curves' values found in a step's ``metrics``; schedule a repaint unless told not to."""
        named = metrics.named()
        for name in self.colours:
            if name in named:
                self.series[name].append((metrics.step, float(named[name])))
        if repaint:
            self.update()

    def clear(self) -> None:
        """Forget all points."""
        self.series = {name: [] for name in self.colours}
        self.update()

    def last(self) -> dict[str, float]:
        """The latest value of each series that has points."""
        return {k: v[-1][1] for k, v in self.series.items() if v}

    def _ranges(self) -> tuple[int, int, float, float]:
        points = [p for s in self.series.values() for p in s]
        x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
        y0, y1 = min(0.0, min(p[1] for p in points)), max(p[1] for p in points)
        return x0, max(x1, x0 + 1), y0, (y1 if y1 > y0 else y0 + 1.0) * 1.05

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        """Draw the frame, axis labels, each series and the legend."""
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        left, top, right, bottom = MARGIN
        w, h = self.width() - left - right, self.height() - top - bottom
        painter.setPen(QPen(QColor("#888888")))
        painter.drawRect(left, top, w, h)
        if not any(self.series.values()):
            painter.drawText(left + 8, top + 18, self.empty_text)
            painter.end()
            return
        x0, x1, y0, y1 = self._ranges()

        def to_px(x: float, y: float) -> QPointF:
            return QPointF(left + (x - x0) / (x1 - x0) * w, top + h - (y - y0) / (y1 - y0) * h)

        painter.drawText(2, top + 10, f"{y1:.3g}")
        painter.drawText(2, top + h, f"{y0:.3g}")
        painter.drawText(left, self.height() - 4, f"step {x0}")
        painter.drawText(left + w - 70, self.height() - 4, f"step {x1}")
        metrics = painter.fontMetrics()
        shown = [name for name in self.colours if self.series[name]]
        legend = left + w - 4 - sum(metrics.horizontalAdvance(name) + 8 for name in shown)
        for name in shown:
            points, colour = self.series[name], self.colours[name]
            stride = max(1, len(points) // max(w, 1))
            painter.setPen(QPen(QColor(colour), 1.5))
            painter.drawPolyline(QPolygonF([to_px(x, y) for x, y in points[::stride] + points[-1:]]))
            if name in self.dots:
                painter.setBrush(QColor(colour))
                for x, y in points:
                    painter.drawEllipse(to_px(x, y), 2.5, 2.5)
            painter.drawText(legend, top + 14, name)
            legend += metrics.horizontalAdvance(name) + 8
        painter.end()
