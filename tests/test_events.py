"""A training step's typed numbers: the names they have in ``log.jsonl`` and on the CLI's progress line."""

from __future__ import annotations

from napari_pbip.cli._common import drain
from napari_pbip.events import LOSS, VAL_MIOU, Progress, StepMetrics


def _step(val_miou=None) -> StepMetrics:
    parts = {"cls": 2.0, "fg": 0.25}
    return StepMetrics(3, 6, 1.0, 2.5, parts, lr=1e-4, images_per_s=40.0, val_miou=val_miou)


def test_a_step_has_the_log_names_it_always_had():
    line = _step().log_line()
    assert list(line) == ["step", "loss", "cls", "fg", "lr", "epoch", "images_per_s"]
    assert list(line.values()) == [3, 2.5, 2.0, 0.25, 1e-4, 1.0, 40.0]
    # a validation writes its own log line: the step's line is the same with or without it
    assert _step(val_miou=0.5).log_line() == _step().log_line()
    assert _step(val_miou=0.5).named()[VAL_MIOU] == 0.5 and VAL_MIOU not in _step().named()
    assert _step().named()[LOSS] == 2.5


def test_the_cli_progress_line_shows_a_steps_numbers(capsys):
    def job():
        yield Progress("train", 0, 6, "started")
        yield Progress("train", 3, 6, "epoch 1/2", payload=_step(val_miou=0.5))
        yield Progress("train", 3, 6, "checkpoint: step 3")  # no numbers: the line keeps the last ones
        return "done"

    assert drain(job()) == "done"
    line = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "3/6" in line
    for shown in ("loss=2.5", "cls=2", "fg=0.25", "lr=0.0001", "epoch=1", "images_per_s=40", "val_miou=0.5"):
        assert shown in line, line
