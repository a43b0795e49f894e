"""Running library jobs off the GUI thread.

A job is a generator of :class:`~napari_pbip.events.Progress` events that returns its result
(``build_bank``, ``train``, ``segment_slide``, ...). :func:`start_job` runs one in a Qt thread
pool worker; its events arrive in the GUI thread through Qt signals, so the widgets only update
views and never wait on the work.

Stopping a job closes its generator *in the worker thread*: that is what makes the library keep
its last checkpoint or its finished chunks (``GeneratorExit`` reaches the job's own ``finally``
/ ``except`` blocks), and it happens before ``finished`` is emitted, so a widget that sees
``finished`` can rely on what is on disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from napari.qt.threading import GeneratorWorker

from ..events import Job
from . import _gc_pause
from ._triton_guard import guard_triton


def _drive(make_job: Callable[[], Job[Any]]) -> Job[Any]:
    """Build the job in the worker thread (its set-up may be slow) and pass its events on."""
    return (yield from make_job())


def as_job(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Job[Any]:
    """A job without events that returns ``fn(*args, **kwargs)`` (for quick edits run off the GUI thread)."""
    return fn(*args, **kwargs)
    yield  # noqa: B901 - unreachable; makes this a generator function


class JobWorker(GeneratorWorker):
    """A generator worker that closes its job when it ends, fails or is stopped.

    superqt's worker stops asking for events when it is quit but leaves the generator open (it
    would be closed by the garbage collector, in whatever thread, at whatever time); it also
    returns a ``RuntimeError`` raised by the job instead of reporting it, and then never emits
    ``finished``. This worker raises every error to ``errored`` and always closes the job.
    """

    def work(self) -> Any:
        """Ask the job for events until it returns, fails, or is stopped; honour pause requests."""
        try:
            while True:
                if self.abort_requested:
                    self.aborted.emit()
                    return None
                if self._paused:
                    if self._resume_requested:
                        self._paused = self._resume_requested = False
                        self.resumed.emit()
                    else:
                        time.sleep(self._pause_interval)
                    continue
                if self._pause_requested:
                    self._paused, self._pause_requested = True, False
                    self.paused.emit()
                    continue
                try:
                    event = next(self._gen)
                except StopIteration as stop:
                    return stop.value
                self.yielded.emit(event)
        finally:
            self._gen.close()


def start_job(
    make_job: Callable[[], Job[Any]],
    *,
    on_event: Callable[[Any], None] | None = None,
    on_done: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    on_finished: Callable[[], None] | None = None,
    on_aborted: Callable[[], None] | None = None,
) -> JobWorker:
    """Start ``make_job()`` in a worker thread and connect its signals; returns the worker.

    Args:
        make_job: called in the worker thread; returns the job generator.
        on_event: each yielded event, in the GUI thread.
        on_done: the job's return value, when it finished by itself.
        on_error: the exception, when the job raised.
        on_finished: always, last, after the job is closed.
        on_aborted: when the worker was quit (Stop / Cancel) before the job ended.
    """
    guard_triton()  # torch may import Triton in the job; with the GL driver's LLVM loaded that crashes
    worker = JobWorker(_drive, make_job)
    _gc_pause.job_started()
    worker.finished.connect(_gc_pause.job_ended)
    first = [True]

    def _first_event(_event: Any) -> None:
        if first[0]:
            first[0] = False
            _gc_pause.job_event()

    worker.yielded.connect(_first_event)
    for signal, slot in (
        (worker.yielded, on_event),
        (worker.returned, on_done),
        (worker.errored, on_error),
        (worker.aborted, on_aborted),
        (worker.finished, on_finished),
    ):
        if slot is not None:
            signal.connect(slot)
    worker.start()
    return worker
