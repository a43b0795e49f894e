"""Every use of napari's private API in the plugin, in one place.

napari has no public way to do these three things. Each is reached only through this module, and
``tests/_qt/test_napari_private.py`` fails when a napari upgrade moves or renames one, instead of
the plugin quietly losing what it bought with it:

- ``LayerList._activate_on_insert``: add a layer without making it the selected one
  (:func:`~._quiet_add.keep_selection`: the user's selection stays while results appear).
- ``Layer._overlays``: a layer's canvas overlays, held back while a result layer is added over
  several event-loop turns (:func:`~._quiet_add.add_in_steps`).
- ``ViewerModel._add_layer_from_data``: add a reader's ``(data, kwargs, kind)`` tuple the way
  napari adds a reader's output (:func:`~.demo_view.open_demo`).
"""

from __future__ import annotations

from typing import Any

ACTIVATE_ON_INSERT = "_activate_on_insert"  # on viewer.layers
OVERLAYS = "_overlays"  # on a layer
ADD_LAYER_FROM_DATA = "_add_layer_from_data"  # on a viewer


def activate_on_insert(layers: Any) -> bool | None:
    """Whether ``layers`` selects each layer added to it; None when napari has no such switch."""
    return getattr(layers, ACTIVATE_ON_INSERT, None)


def set_activate_on_insert(layers: Any, value: bool) -> None:
    """Switch selecting added layers on or off (only where :func:`activate_on_insert` is not None)."""
    setattr(layers, ACTIVATE_ON_INSERT, value)


def layer_overlays(layer: Any) -> Any:
    """The layer's canvas overlays by name (a mutable mapping), or None when napari has none."""
    return getattr(layer, OVERLAYS, None)


def add_layer_data(viewer: Any, data: Any, kwargs: dict[str, Any], kind: str) -> Any:
    """Add one reader layer-data tuple to ``viewer``, as napari adds a reader's output."""
    return getattr(viewer, ADD_LAYER_FROM_DATA)(data, kwargs, kind)
