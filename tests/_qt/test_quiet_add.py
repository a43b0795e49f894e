"""Layers added while a job runs: hidden, unselected, finished over later event-loop turns."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def _overlay_visuals(viewer, layer) -> int:
    return len(viewer.window._qt_viewer.canvas._layer_overlay_to_visual.get(layer, {}))


def test_a_labels_layer_added_in_steps_ends_whole_and_paintable(make_napari_viewer, qtbot):
    from napari_pbip._widgets._quiet_add import add_in_steps, run_in_turns

    viewer = make_napari_viewer()
    users = viewer.add_image(np.zeros((64, 64), np.uint8), name="slide")
    whole = viewer.add_labels(np.zeros((64, 64), np.uint8), name="added whole")
    viewer.layers.selection.active = users
    layer, steps = add_in_steps(viewer, "labels", np.zeros((64, 64), np.uint8), name="result")

    # the adding turn: in the viewer, hidden, not selected, painting outlines not made yet
    assert layer in viewer.layers and not layer.visible
    assert viewer.layers.selection.active is users
    assert _overlay_visuals(viewer, layer) == 0 < _overlay_visuals(viewer, whole)
    run_in_turns(steps)
    qtbot.waitUntil(lambda: layer.visible, timeout=5000)
    assert not steps
    # whole: the same painting outlines as a layer napari added in one go, and painting works
    assert _overlay_visuals(viewer, layer) == _overlay_visuals(viewer, whole)
    assert set(layer._overlays) == set(whole._overlays)
    layer.mode = "paint"
    layer.paint((10, 10), 3)
    assert layer.data[10, 10] == 3
    assert viewer.layers.selection.active is users


def test_steps_after_the_user_removed_the_layer_do_nothing_visible(make_napari_viewer, qtbot):
    from napari_pbip._widgets._quiet_add import add_in_steps, finish_now

    viewer = make_napari_viewer()
    layer, steps = add_in_steps(viewer, "labels", np.zeros((32, 32), np.uint8), name="result")
    viewer.layers.remove(layer)
    finish_now(steps)
    assert layer not in viewer.layers and not layer.visible and not steps
