"""What both training widgets draw from a step's typed numbers: the loss curves and the metrics line."""

from __future__ import annotations

import pytest

from napari_pbip.events import LOSS, VAL_MIOU, StepMetrics
from napari_pbip.stage1.losses import BG, CLS, FG

pytestmark = pytest.mark.gui


def _step(step: int, loss: float, val_miou: float | None = None) -> StepMetrics:
    parts = {CLS: loss / 2, FG: 0.25, BG: 0.5}
    return StepMetrics(step, 4, step / 2, loss, parts, lr=1e-4, images_per_s=12.5, val_miou=val_miou)


def test_curves_and_metrics_line_come_from_the_step_payload(qtbot):
    from napari_pbip._widgets._training_status import metrics_text
    from napari_pbip._widgets.loss_plot import LossPlot

    stage1 = LossPlot()  # Train PBIP: the loss and its parts
    stage2 = LossPlot(series={LOSS: "#ffffff", VAL_MIOU: "#00ff00"}, dots=(VAL_MIOU,))  # Train segmenter
    qtbot.addWidget(stage1)
    qtbot.addWidget(stage2)
    steps = [_step(1, 3.0), _step(2, 2.0, val_miou=0.4), _step(3, 1.0)]
    for m in steps:
        stage1.add(m)
        stage2.add(m)
    assert stage1.series[LOSS] == [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert stage1.series[CLS] == [(1, 1.5), (2, 1.0), (3, 0.5)] and len(stage1.series[BG]) == 3
    assert stage2.series[VAL_MIOU] == [(2, 0.4)]  # only the step with a validation
    line = metrics_text(steps[1], stage1.last())
    assert (
        line
        == "step 2/4, epoch 1.00, 12.5 images/s, val mIoU 0.400  |  loss 1.0000, cls 0.5000, fg 0.2500, bg 0.5000"
    )
    assert "val mIoU" not in metrics_text(steps[2], stage2.last()).split("|")[0]
    assert metrics_text(steps[2], stage2.last()).endswith("|  loss 1.0000")  # val mIoU not repeated
