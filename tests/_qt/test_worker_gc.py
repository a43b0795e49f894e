"""While a job runs from a widget, napari's long-lived objects are kept out of full garbage
collections (which would stall the GUI); when the job ends, collection is back to normal."""

from __future__ import annotations

import gc

from napari_pbip.events import Progress


def _job(seen: list[int]):
    seen.append(gc.get_freeze_count())
    yield Progress("test", 1, 2)
    yield Progress("test", 2, 2)
    return "result"


def test_long_lived_objects_are_frozen_only_while_a_job_runs(qtbot):
    from napari_pbip._widgets import _gc_pause
    from napari_pbip._widgets._worker import start_job

    others = _gc_pause._running  # jobs of earlier tests still closing, if any
    seen: list[int] = []
    done: list[object] = []
    finished: list[bool] = []
    start_job(lambda: _job(seen), on_done=done.append, on_finished=lambda: finished.append(True))
    qtbot.waitUntil(lambda: bool(finished), timeout=10_000)
    assert done == ["result"]
    assert seen[0] > 1000  # the interpreter's objects at start: out of the collector's walk
    assert _gc_pause._running == others
    if not others:
        assert gc.get_freeze_count() == 0  # back to normal collection after the job
