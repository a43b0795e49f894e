"""Opening what pbip writes and reads in a real viewer, beside napari's builtins and napari-ome-zarr."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytestmark = pytest.mark.gui


@pytest.mark.skipif(sys.version_info < (3, 11), reason="napari-ome-zarr needs Python 3.11 or later")
def test_segment_output_opens_with_napari_ome_zarr_as_the_slide_and_its_classes(
    make_napari_viewer, segment_output
):
    out, truth = segment_output
    viewer = make_napari_viewer()
    layers = viewer.open(str(out), plugin="napari-ome-zarr")

    [labels] = [layer for layer in layers if layer._type_string == "labels"]
    images = [layer for layer in layers if layer._type_string == "image"]
    assert len(images) == 3  # the slide's picture, one layer per RGB channel
    values = np.asarray(labels.data[0] if labels.multiscale else labels.data)
    assert values.shape == truth.shape
    assert (values == truth).mean() > 0.98  # 0 background, tumor 1, stroma 2, lymph 3
    table = dict(zip(labels.properties["index"], labels.properties["class"], strict=True))
    assert table == {0: "background", 1: "tumor", 2: "stroma", 3: "lymph"}
    assert tuple(labels.scale) == (0.5, 0.5) and [str(u) for u in labels.units] == ["micrometer"] * 2
    assert labels.colormap.map(1)[:3] == pytest.approx(np.array([205, 51, 51]) / 255)  # tumor's colour
    image_extent = np.asarray(images[0].extent.world)[:, -2:]
    np.testing.assert_allclose(image_extent, np.asarray(labels.extent.world), atol=8.0)  # lie over each other
