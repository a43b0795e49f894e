"""Segment slide on a slide file that records no um/px (as tcga-cr-7395-01a-01-ts1.svs): the typed
"Slide um/px" reaches the job, for one slide (Run) and for the queue (Run queue), and the result lies
over the slide's layer, which napari shows in pixels, while its exports keep real um and slide pixels."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile

pytestmark = pytest.mark.gui


@pytest.fixture
def bare_slide_widget(make_napari_viewer, small_slide, docked_segment_widget, tmp_path):
    """Segment slide over a 512 px RGB TIFF without any resolution tag, opened by the plugin's reader."""
    from napari_pbip._widgets.reader import slide_layer_data
    from napari_pbip.slides import open_slide

    pixels = np.asarray(open_slide(small_slide.slide).read_region(0, 0, 512, 512, 0.5))
    bare = tmp_path / "bare.tif"
    tifffile.imwrite(bare, pixels, tile=(256, 256), photometric="rgb")
    viewer = make_napari_viewer()
    data, kwargs, _ = slide_layer_data(bare)
    assert kwargs["metadata"]["pbip_mpp"] is None  # shown in pixels: the file has no um/px
    viewer.add_image(data, **kwargs)
    w = docked_segment_widget(viewer)
    return w


def _over_the_slide(layer) -> None:
    """The label layer covers the 512 x 512 px slide layer exactly (scale 1, in pixels)."""
    np.testing.assert_allclose(np.array(layer.data.shape[-2:]) * np.array(layer.scale[-2:]), (512, 512))
    assert str(layer.units[-1]) == "pixel"


def test_run_without_slide_mpp_says_so_and_with_it_segments_at_that_scale_over_the_slide(
    bare_slide_widget, tmp_path, wait_job
):
    w = bare_slide_widget
    w.out.set_path(tmp_path / "bare.zarr")
    assert w.run() is None and list(w.marks.marked) == ["slide_mpp"]  # refused at once, the field marked
    assert "bare.tif records no um/px" in w.status.text() and not (tmp_path / "bare.zarr").exists()

    w.slide_mpp_box.setValue(0.5)  # the scan's um/px, typed in
    w.run()
    wait_job(w)
    assert not w.status.is_error, w.status.text()
    assert w.layer.data.shape == (256, 256)  # 512 px at 0.5 um/px segmented at 1 um/px
    _over_the_slide(w.layer)

    w.layer.data[0:50, 0:50] = 1  # a correction painted in: the first class, 50 x 50 um
    w.layer.refresh()
    w.export_csv(tmp_path / "areas.csv")
    wait_job(w)
    rows = list(csv.DictReader((tmp_path / "areas.csv").open()))
    for r in rows:  # 1 um/px: a pixel is 1 um2, as the segmentation was computed
        assert float(r["area_um2"]) == pytest.approx(int(r["pixels"]) * 1.0)
    assert int(rows[0]["pixels"]) >= 50 * 50

    w.export_geojson(tmp_path / "bare.geojson")
    wait_job(w)
    features = json.loads((tmp_path / "bare.geojson").read_text())["features"]
    first = [f for f in features if f["properties"]["classification"]["name"] == rows[0]["class"]]
    xs = [x for f in first for ring in f["geometry"]["coordinates"] for x, _ in np.reshape(ring, (-1, 2))]
    assert first and min(xs) <= 1 and max(xs) <= 512  # in the slide's level-0 pixels (100 px = 50 um)


def test_queue_takes_the_typed_slide_mpp_and_opens_the_result_over_the_slide(
    bare_slide_widget, tmp_path, wait_job
):
    w = bare_slide_widget
    w.slide_mpp_box.setValue(0.5)
    w.queue.out.set_path(tmp_path / "cohort")
    w.queue.run()
    wait_job(w)
    assert not w.status.is_error, w.status.text()
    status, chunks, _ = [w.queue.table.item(0, c).text() for c in range(1, 4)]
    assert status == "done", w.status.text()
    rows = list(csv.DictReader((tmp_path / "cohort" / "cohort.csv").open()))
    area = sum(float(r["area_mm2"] or 0) for r in rows if r["slide"] == "bare")
    assert 0 < area <= 0.256 * 0.256 + 1e-6  # mm2 of a 256 um square: the typed scale, not 1 um/px per pixel
    (layer,) = w.queue.open_result(0)
    _over_the_slide(layer)
