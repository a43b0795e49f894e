"""Adding layers while a job runs: hidden, without taking the user's layer selection.

napari makes every new layer the active one. That switches the layer-controls panel to the new
layer (about 80 ms of Qt layout under software OpenGL on the development machine, inside the
same event-loop turn as the layer's own set-up) and takes the selection away from the layer the
user was working on, e.g. painting a correction, each time a preview or result layer appears.

A layer added hidden and shown on a later event-loop turn splits napari's set-up of the layer and
the canvas's first draw of it (texture upload) into two turns, so the GUI stalls twice briefly
rather than once for both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def keep_selection(viewer: Any) -> Iterator[None]:
    """Layers added inside this block are not selected (the current selection stays)."""
    layers = viewer.layers
    before = getattr(layers, "_activate_on_insert", None)  # napari's switch; absent: nothing to do
    if before is None:
        yield
        return
    layers._activate_on_insert = False
    try:
        yield
    finally:
        layers._activate_on_insert = before


def add_hidden(viewer: Any, kind: str, data: Any, **kwargs: Any) -> Any:
    """``viewer.add_<kind>(data, **kwargs)``, hidden and not selected; show it with :func:`reveal`."""
    with keep_selection(viewer):
        return getattr(viewer, f"add_{kind}")(data, visible=False, **kwargs)


def reveal(viewer: Any, layer: Any) -> None:
    """Show a layer from :func:`add_hidden`, if the user has not removed it meanwhile."""
    if layer in viewer.layers:
        layer.visible = True
