"""The "Segment slide" widget: the result fills in chunk by chunk as a class-coloured Labels layer in um,
the area table, exports a second program reads, and cancel keeps finished chunks for a resume."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(make_napari_viewer, small_slide, docked_segment_widget, tmp_path):
    from napari_pbip._widgets.reader import slide_layer_data

    viewer = make_napari_viewer()
    data, kwargs, _ = slide_layer_data(small_slide.slide)
    viewer.add_image(data, **kwargs)
    w = docked_segment_widget(viewer)  # 1 um/px: 1024 px at 0.5 um/px -> 512 x 512; 256 px chunks: 4
    # batch 16: by device (49 tiles of 64 px here) the tiny model ran all 4 chunks between two redraws
    w.out.set_path(tmp_path / "seg.zarr")
    return w


def test_result_fills_in_as_chunks_finish_and_matches_the_store(
    widget, small_slide, tmp_path, wait_job, qtbot
):
    from napari_pbip._widgets._labels import UNFILLED
    from napari_pbip.export import open_labels

    unfilled = []  # share of the layer not yet filled, after each redraw of the views
    draw = widget.view.apply

    def spy():
        draw()
        if widget.layer is not None:
            unfilled.append(float(np.mean(widget.layer.data == UNFILLED)))

    widget.view.apply = spy
    on_event = widget._on_event

    def each_event(ev):  # redraw on every event, not on the timer, so the fill-in is seen under any load
        on_event(ev)
        widget.view.flush()

    widget._on_event = each_event
    widget.run()
    wait_job(widget)
    assert not widget.status.is_error, widget.status.text()
    assert any(0 < u < 1 for u in unfilled), unfilled  # seen part done: it filled in chunk by chunk
    layer = widget.layer
    qtbot.waitUntil(lambda: layer.visible)  # added hidden, shown on the next event-loop turn
    assert widget.viewer.layers.selection.active is layer  # selected once done, ready for corrections
    store = open_labels(tmp_path / "seg.zarr")
    np.testing.assert_array_equal(layer.data, np.asarray(store.levels[0]))
    assert layer.data.shape == (512, 512) and tuple(layer.scale) == (1.0, 1.0)
    assert layer.multiscale is False and layer.editable
    # over the slide: both span 512 um
    slide = widget.viewer.layers[small_slide.slide.name]
    assert np.allclose(
        np.array(slide.data[0].shape[:2]) * slide.scale, np.array(layer.data.shape) * layer.scale
    )
    assert layer.metadata["pbip_classes"] == list(store.classes)
    for value, rgb in enumerate(store.palette):
        if value != store.background_index:
            np.testing.assert_allclose(
                layer.colormap.map(np.array([value]))[0][:3], np.array(rgb) / 255, atol=1e-6
            )
    names = [widget.table.item(r, 0).text() for r in range(widget.table.rowCount())]
    pixels = [int(widget.table.item(r, 1).text()) for r in range(widget.table.rowCount())]
    counts = np.bincount(layer.data.ravel(), minlength=len(names))  # by label value: background 0
    assert names == [*store.classes, "background"] and pixels == [*counts[1:].tolist(), int(counts[0])]
    assert layer.colormap.background_value == 0  # napari's eraser paints background


def test_exports_of_the_corrected_layer_read_back(widget, tmp_path, wait_job):
    import zarr
    from shapely.geometry import shape

    widget.run()
    wait_job(widget)
    widget.layer.data[0:100, 0:100] = 1  # a correction painted by the user: tumor (label value 1)
    widget.layer.refresh()

    widget.export_zarr(tmp_path / "fixed.zarr")
    wait_job(widget)
    assert not widget.status.is_error, widget.status.text()
    np.testing.assert_array_equal(
        zarr.open_array(str(tmp_path / "fixed.zarr" / "labels" / "tissue" / "0"), mode="r")[:],
        widget.layer.data,
    )

    widget.export_geojson(tmp_path / "fixed.geojson")
    wait_job(widget)
    features = json.loads((tmp_path / "fixed.geojson").read_text())["features"]
    tumor = [shape(f["geometry"]) for f in features if f["properties"]["classification"]["name"] == "tumor"]
    assert any(p.contains(shape({"type": "Point", "coordinates": [100, 100]})) for p in tumor)  # slide px

    widget.export_csv(tmp_path / "areas.csv")
    wait_job(widget)
    rows = {r["class"]: r for r in csv.DictReader((tmp_path / "areas.csv").open())}
    assert int(rows["tumor"]["pixels"]) >= 100 * 100
    assert float(rows["tumor"]["area_um2"]) == pytest.approx(int(rows["tumor"]["pixels"]) * 1.0)
    assert sum(int(r["pixels"]) for r in rows.values()) == 512 * 512


def test_cancel_keeps_finished_chunks_and_a_rerun_resumes(widget, tmp_path, wait_job):
    widget.mpp.setValue(0.5)  # 1024 x 1024: 16 chunks
    from napari_pbip.slides.segment import SEGMENT_STAGE

    widget.run().yielded.connect(lambda ev: ev.step >= 1 and ev.stage == SEGMENT_STAGE and widget.cancel())
    wait_job(widget)
    assert "cancelled" in widget.status.text() and widget.run_button.isEnabled()
    done = list((tmp_path / "seg.zarr" / "pbip" / "done").glob("*/zarr.json"))
    assert 1 <= len(done) < 16
    widget.run()
    wait_job(widget)
    assert not widget.status.is_error, widget.status.text()
    assert f"'resumed': {len(done)}" in widget.status.text()
    assert len(list((tmp_path / "seg.zarr" / "pbip" / "done").glob("*/zarr.json"))) == 16


def test_missing_model_is_marked(widget, tmp_path):
    widget.model.set_path(tmp_path / "nowhere")
    assert widget.run() is None and list(widget.marks.marked) == ["model"] and widget.status.is_error


def test_a_finished_output_is_not_overwritten_silently(widget, wait_job):
    widget.run()
    wait_job(widget)
    widget.run()
    wait_job(widget)
    assert widget.status.is_error and "overwrite" in widget.status.text()
    widget.overwrite.setChecked(True)
    widget.run()
    wait_job(widget)
    assert not widget.status.is_error and "'resumed': 0" in widget.status.text()
