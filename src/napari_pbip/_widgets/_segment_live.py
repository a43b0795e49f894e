"""The slide segmentation job as the "Segment slide" widget consumes it.

:func:`live_segmentation` wraps the library's ``segment_slide`` job and, in the worker thread,
reads each finished chunk's labels from the output store at the display level, so the GUI thread
only copies them into the Labels layer. The display level is the finest pyramid level of the
output with at most :data:`MAX_DISPLAY_PIXELS` pixels: a single-scale, editable layer at analysis
resolution whenever the slide allows it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._labels import ClassMap

MAX_DISPLAY_PIXELS = 64 * 1024**2  # 64 MB of uint8 labels in the layer


@dataclass(frozen=True)
class Display:
    """Where and how the segmentation is shown: output store, pyramid level, its size and um/px."""

    path: Path
    level: int
    shape: tuple[int, int]
    mpp: float
    classmap: ClassMap


@dataclass
class LiveChunk:
    """A finished chunk's labels at the display level, and where they go."""

    display: Display
    box: tuple[int, int, int, int]  # (y0, x0, y1, x1) at the display level
    labels: np.ndarray


@dataclass
class Finished:
    """The job's result with the whole display level and its class counts (as shown, for the area table)."""

    result: Any
    display: Display
    labels: np.ndarray
    class_pixels: dict[str, int]


def display_of(path: Path) -> Display:
    """The display level of the label store at ``path`` (see the module docstring)."""
    from ..export import open_labels

    img = open_labels(path)
    level = next(
        (i for i, a in enumerate(img.levels) if a.shape[0] * a.shape[1] <= MAX_DISPLAY_PIXELS),
        len(img.levels) - 1,
    )
    shape = tuple(int(s) for s in img.levels[level].shape)
    return Display(
        Path(path),
        level,
        shape,
        float(img.mpp[level]),
        ClassMap(img.classes, img.palette, img.background_index),
    )


def count(labels: np.ndarray, names: list[str]) -> dict[str, int]:
    """Pixels per class name of a label array (mask indices)."""
    counts = np.bincount(labels.ravel(), minlength=len(names))[: len(names)]
    return {n: int(c) for n, c in zip(names, counts, strict=True)}


def read_level(display: Display) -> np.ndarray:
    """The whole display level of the store."""
    from ..export import open_labels

    return np.asarray(open_labels(display.path).levels[display.level])


def live_segmentation(job):
    """Pass on ``segment_slide``'s events with the chunks' pixels attached; return :class:`Finished`.

    Closing this generator closes the segmentation job (running chunks stop at their next batch;
    finished ones stay in the store for a rerun to resume).
    """
    from ..slides.segment import ChunkDone

    display = None
    try:
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                result = stop.value
                break
            chunk = event.payload
            if isinstance(chunk, ChunkDone):
                display = display or display_of(chunk.path)
                f = 2**display.level
                box = (chunk.box[0] // f, chunk.box[1] // f, -(-chunk.box[2] // f), -(-chunk.box[3] // f))
                event = dataclasses.replace(
                    event, payload=LiveChunk(display, box, chunk.labels(display.level))
                )
            yield event
    finally:
        job.close()
    display = display or display_of(result.out)
    labels = read_level(display)
    return Finished(result, display, labels, count(labels, display.classmap.names))
