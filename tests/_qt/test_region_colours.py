"""Shapes drawn in a "Training data" regions layer take their class's colour, whatever order the
classes are drawn in (napari's colour cycle alone gave the first class drawn the first colour)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_each_region_has_its_class_colour_when_classes_are_drawn_out_of_order(
    make_napari_viewer, small_slide
):
    from napari_pbip._widgets.data_widget import TrainingDataWidget
    from napari_pbip._widgets.reader import slide_layer_data
    from napari_pbip.slides.training_data import spec_for_classes

    viewer = make_napari_viewer()
    data, kwargs, _ = slide_layer_data(small_slide.slide)
    viewer.add_image(data, **kwargs)
    w = TrainingDataWidget(viewer)
    viewer.window.add_dock_widget(w)
    classes = ["epithelium", "stroma", "keratin", "lymphocytes"]
    w.classes.setText(", ".join(classes))
    w.classes.editingFinished.emit()
    layer = w.new_regions_layer()
    drawn = ["lymphocytes", "epithelium", "keratin"]  # stroma skipped, lymphocytes first
    for i, name in enumerate(drawn):
        w.draw_class.setCurrentText(name)
        layer.add_rectangles(np.array([[0, 100 * i], [90, 100 * i + 90]], float))

    palette = spec_for_classes(classes).palette
    assert list(layer.features["class"]) == drawn
    for i, name in enumerate(drawn):
        rgb = np.array(palette[classes.index(name)]) / 255
        np.testing.assert_allclose(layer.edge_color[i][:3], rgb, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(layer.face_color[i][:3], rgb, atol=1e-6, err_msg=name)
