"""Keeping full garbage collections of napari's long-lived objects out of a running job.

A full (generation 2) collection walks every tracked Python object and holds the GIL while it
does, so it stalls the GUI thread whichever thread triggers it. With napari, Qt wrappers, torch
and a model loaded that is about 0.3 s on the 2-core development machine; during training one
landed in the middle of adding a preview layer (a 0.49 s handler instead of 0.16 s).

While a job runs, :func:`job_started` moves the objects that exist (the viewer, the loaded
libraries, and at the first event the job's model) to the interpreter's permanent generation
(:func:`gc.freeze`), so collections only walk what the job creates afterwards. When the last
running job ends, :func:`job_ended` returns them to normal collection (:func:`gc.unfreeze`):
cyclic garbage among them is collected then, as it would have been without the pause.
Both are called in the GUI thread.
"""

from __future__ import annotations

import gc

_running = 0


def job_started() -> None:
    """A job started (or produced its first event): freeze what exists now."""
    global _running
    _running += 1
    gc.freeze()


def job_event() -> None:
    """Freeze again what the job built before its first event (its model, its data)."""
    if _running:
        gc.freeze()


def job_ended() -> None:
    """A job ended; after the last one, objects are collected as usual again."""
    global _running
    _running = max(0, _running - 1)
    if not _running:
        gc.unfreeze()
