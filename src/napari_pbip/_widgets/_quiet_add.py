"""Adding layers while a job runs: hidden, without taking the user's layer selection, in steps.

napari makes every new layer the active one. That switches the layer-controls panel to the new
layer (about 80 ms of Qt layout under software OpenGL on the development machine, inside the
same event-loop turn as the layer's own set-up) and takes the selection away from the layer the
user was working on, e.g. painting a correction, each time a preview or result layer appears.

napari builds everything a new layer needs in the turn that adds it: the layer's visual, its
controls widget, and a visual for each of the layer's canvas overlays that is switched on; a
Labels layer has two (the polygon and brush outlines used for painting). :func:`add_in_steps`
adds the layer hidden with those overlays held back and returns the rest as steps, one per later
turn: put back an overlay, then show the layer, whose first draw (texture upload, shader build) is
a turn of its own. Under software OpenGL on the development machine, the turn adding a 2048 px
Labels layer went from about 107 to 72 ms, the longest stall around it from 120 to 85 ms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from . import _napari_private

GAP_MS = 20  # between two steps of adding a layer (see run_in_turns)


@contextmanager
def keep_selection(viewer: Any) -> Iterator[None]:
    """Layers added inside this block are not selected (the current selection stays)."""
    layers = viewer.layers
    before = _napari_private.activate_on_insert(layers)  # absent: nothing to do
    if before is None:
        yield
        return
    _napari_private.set_activate_on_insert(layers, False)
    try:
        yield
    finally:
        _napari_private.set_activate_on_insert(layers, before)


def add_in_steps(viewer: Any, kind: str, data: Any, **kwargs: Any) -> tuple[Any, list[Callable[[], None]]]:
    """``viewer.add_<kind>(data, **kwargs)``, hidden and not selected, and the steps that finish it.

    Run the steps in order, one per event-loop turn (:func:`run_in_turns`); the last one shows the
    layer. Until then the layer has no painting outlines, which only matters to a user painting on
    it, and a hidden, unselected layer cannot be painted on.
    """
    import napari.layers

    layer = getattr(napari.layers, kind.capitalize())(data, visible=False, **kwargs)
    overlays = _napari_private.layer_overlays(layer)  # absent: add it whole
    held: list[tuple[str, Any]] = []
    if overlays is not None:
        held = [(key, ov) for key, ov in overlays.items() if getattr(ov, "visible", False)]
        for key, _ in held:
            del overlays[key]
    with keep_selection(viewer):
        viewer.add_layer(layer)

    def put_back(key: str, overlay: Any) -> Callable[[], None]:
        def step() -> None:
            if key not in overlays:
                overlays[key] = overlay  # napari makes the overlay's visual on this event

        return step

    return layer, [*(put_back(key, ov) for key, ov in held), lambda: reveal(viewer, layer)]


def finish_now(steps: list[Callable[[], None]]) -> None:
    """Run the steps still waiting at once (e.g. when the job ends or the widget closes)."""
    while steps:
        steps.pop(0)()


def run_in_turns(steps: list[Callable[[], None]], gap_ms: int = GAP_MS) -> None:
    """Run ``steps`` (a list this function consumes) in order, ``gap_ms`` apart.

    The gap lets the event loop handle input and paint between two steps: with no gap, Qt ran
    several steps and the redraws they asked for back to back, as one long stall.
    """
    from qtpy.QtCore import QTimer

    def next_step() -> None:
        if steps:
            steps.pop(0)()
            run_in_turns(steps, gap_ms)

    if steps:
        QTimer.singleShot(gap_ms, next_step)


def reveal(viewer: Any, layer: Any) -> None:
    """Show a layer added hidden, if the user has not removed it meanwhile."""
    if layer in viewer.layers:
        layer.visible = True
