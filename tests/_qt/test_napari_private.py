"""napari still has the private names the plugin uses (all of them in ``_widgets/_napari_private.py``).

Without them the plugin keeps working but loses what they are for: results would take the user's
layer selection, and result layers would be built in one long turn. This test is what says so
when a napari upgrade moves one.
"""

from __future__ import annotations

import numpy as np

from napari_pbip._widgets import _napari_private as private


def test_a_layer_list_has_the_switch_that_selects_added_layers():
    from napari.components import LayerList
    from napari.layers import Image

    layers = LayerList()
    assert private.activate_on_insert(layers) is True, f"napari moved LayerList.{private.ACTIVATE_ON_INSERT}"
    private.set_activate_on_insert(layers, False)
    layers.append(Image(np.zeros((4, 4))))
    assert layers.selection.active is None  # added, not selected
    private.set_activate_on_insert(layers, True)


def test_a_labels_layer_has_its_painting_overlays_by_name():
    from napari.layers import Labels

    overlays = private.layer_overlays(Labels(np.zeros((8, 8), np.uint8)))
    assert overlays is not None, f"napari moved Layer.{private.OVERLAYS}"
    assert any(getattr(ov, "visible", False) for ov in overlays.values())  # what add_in_steps holds back
    key = next(iter(overlays))
    overlay = overlays[key]
    del overlays[key]
    overlays[key] = overlay  # held back and put back, as add_in_steps does


def test_a_viewer_adds_a_reader_layer_data_tuple():
    from napari.components import ViewerModel

    viewer = ViewerModel()
    layer = private.add_layer_data(viewer, np.zeros((8, 8), np.uint8), {"name": "slide"}, "image")
    assert viewer.layers["slide"] is (layer[0] if isinstance(layer, list) else layer)
