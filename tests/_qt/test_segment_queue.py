"""The "Segment slide" queue: several slides (open layers and a folder) segmented one after another
into one folder, a line per slide, and a broken slide that fails alone."""

from __future__ import annotations

import csv
import json

import napari
import pytest

pytestmark = pytest.mark.gui


@pytest.fixture
def queue_widget(make_napari_viewer, small_slide, docked_segment_widget, tmp_path):
    """The widget with the session's slide open as a layer and a folder of one good and one broken slide."""
    from napari_pbip._widgets.reader import slide_layer_data
    from napari_pbip.synthetic.synth_slide import write_synthetic_slide

    folder = tmp_path / "more"
    folder.mkdir()
    write_synthetic_slide(folder / "second.tif", size=512, seed=2)  # and second.labels.tif: not a slide
    (folder / "broken.svs").write_bytes(b"not a slide")
    viewer = make_napari_viewer()
    data, kwargs, _ = slide_layer_data(small_slide.slide)
    viewer.add_image(data, **kwargs)
    w = docked_segment_widget(viewer)
    w.queue.add_folder(folder)
    w.queue.out.set_path(tmp_path / "cohort")
    return w


def _lines(w) -> dict[str, list[str]]:
    t = w.queue.table
    return {t.item(r, 0).text(): [t.item(r, c).text() for c in range(1, 4)] for r in range(t.rowCount())}


def test_queue_segments_each_slide_with_a_line_per_slide_and_a_broken_one_fails_alone(
    queue_widget, small_slide, tmp_path, wait_job
):
    w = queue_widget
    assert [w.queue.entries.item(i).text() for i in range(w.queue.entries.count())] == [
        small_slide.slide.name,
        f"folder: {tmp_path / 'more'}",
    ]
    seen: list[tuple[str, str]] = []  # (slide, status) each time a line changes
    show = w.queue._show
    w.queue._show = lambda i: (show(i), seen.append(tuple(w.queue.lines.lines[i].cells()[:2])))

    w.queue.run()
    assert list(_lines(w)) == ["slide.tif", "broken.svs", "second.tif"]  # the folder's slides by name
    wait_job(w)

    lines = _lines(w)
    for name in ("slide.tif", "second.tif"):
        assert [s for n, s in seen if n == name][0] == "queued"
        assert "running" in [s for n, s in seen if n == name]
        status, chunks, note = lines[name]
        done, total = map(int, chunks.split("/"))
        assert status == "done" and done == total >= 1 and note.endswith(".zarr"), lines[name]
    status, _, note = lines["broken.svs"]
    assert status == "failed" and "broken.svs" in note and "\n" not in note
    assert w.status.is_error and "1 failed (broken.svs)" in w.status.text()
    assert w.run_button.isEnabled() and w.queue.run_button.isEnabled()

    out = tmp_path / "cohort"
    record = {s["name"]: s["status"] for s in json.loads((out / "cohort.json").read_text())["slides"]}
    assert record == {"slide": "done", "broken": "failed", "second": "done"}
    table = list(csv.DictReader((out / "cohort.csv").open()))
    assert {r["slide"] for r in table} == {"slide", "second"}
    assert sum(float(r["percent_of_tissue"] or 0) for r in table if r["slide"] == "second") == pytest.approx(
        100, abs=0.01
    )
    for name in ("slide", "second"):
        assert all((out / f"{name}{ext}").exists() for ext in (".zarr", ".csv", ".geojson"))
    assert w.queue.open_result(1) is None  # the failed slide has nothing to open
    (layer,) = w.queue.open_result(2)  # second.tif: its segmentation over it, in um
    assert isinstance(layer, napari.layers.Labels)
    assert layer.data.shape[-2:] == (256, 256) and tuple(layer.scale) == (1.0, 1.0)  # 512 px at 0.5 um/px

    w.queue.run()  # again: the finished slides are skipped, the broken one is retried
    wait_job(w)
    lines = _lines(w)
    assert "earlier run" in lines["slide.tif"][2] and "earlier run" in lines["second.tif"][2]
    assert lines["broken.svs"][0] == "failed"


def test_unticked_layers_are_left_out_and_an_empty_queue_is_refused(queue_widget, tmp_path):
    from qtpy.QtCore import Qt

    w = queue_widget
    w.queue.entries.item(0).setCheckState(Qt.CheckState.Unchecked)  # the open slide
    assert w.queue.queued() == [tmp_path / "more"]
    w.queue.entries.item(1).setCheckState(Qt.CheckState.Unchecked)
    assert w.queue.run() is None and w.worker is None
    assert w.status.is_error and "tick at least one slide" in w.status.text()


def test_cancel_stops_the_queue_keeps_finished_chunks_and_run_queue_goes_on(queue_widget, tmp_path, wait_job):
    w = queue_widget
    w.mpp.setValue(0.5)  # slide.tif: 1024 x 1024 px, 16 chunks
    from napari_pbip.slides.segment import SEGMENT_STAGE

    w.queue.run().yielded.connect(lambda ev: ev.stage == SEGMENT_STAGE and ev.step >= 1 and w.cancel())
    wait_job(w)
    lines = _lines(w)
    assert lines["slide.tif"][0] == "cancelled" and "Run queue again" in lines["slide.tif"][2]
    assert [lines[n][0] for n in ("broken.svs", "second.tif")] == ["queued", "queued"]
    assert "queue cancelled" in w.status.text() and w.queue.run_button.isEnabled()
    done = list((tmp_path / "cohort" / "slide.zarr" / "pbip" / "done").glob("*/zarr.json"))
    assert 1 <= len(done) < 16

    w.queue.run()
    wait_job(w)
    assert [v[0] for v in _lines(w).values()] == ["done", "failed", "done"]


def test_a_folder_that_is_not_a_queue_output_is_refused_in_one_line_and_left_alone(
    queue_widget, tmp_path, wait_job
):
    w = queue_widget
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me\n")
    w.queue.out.set_path(other)
    w.queue.run()
    wait_job(w)
    assert w.status.is_error and str(other) in w.status.text() and "\n" not in w.status.text()
    assert "new or empty folder" in w.status.text()
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    assert {v[0] for v in _lines(w).values()} == {"queued"}  # nothing ran


def _without_um_per_px(source, path):
    """A copy of the synthetic slide's pixels as a pyramidal TIFF that records no resolution."""
    import tifffile

    level = tifffile.imread(source)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for i in range(3):
            tw.write(level, tile=(256, 256), compression="jpeg", photometric="rgb", subfiletype=1 if i else 0)
            level = level[::2, ::2]
    return path


def test_a_slide_that_records_no_um_px_is_read_at_the_slide_um_px_given(
    queue_widget, small_slide, tmp_path, wait_job
):
    from qtpy.QtCore import Qt

    from napari_pbip.export import open_labels

    w = queue_widget
    for i in range(w.queue.entries.count()):
        w.queue.entries.item(i).setCheckState(Qt.CheckState.Unchecked)
    scan = _without_um_per_px(small_slide.slide, tmp_path / "scan.tif")
    w.viewer.open(str(scan), plugin="napari-pbip")  # shown in pixels: the file has no um/px
    w.slide_layer.setCurrentText("scan.tif")
    assert w.run() is None and list(w.marks.marked) == ["slide_mpp"]  # one Run: refused, the field marked
    assert "scan.tif records no um/px" in w.status.text()

    w.queue.run()  # the queue: that slide fails alone, and its line says why
    wait_job(w)
    status, _, note = _lines(w)["scan.tif"]
    assert status == "failed" and "does not record its resolution" in note

    w.slide_mpp_box.setValue(0.5)
    w.queue.run()
    wait_job(w)
    assert _lines(w)["scan.tif"][0] == "done", _lines(w)
    store = open_labels(tmp_path / "cohort" / "scan.zarr")
    assert store.levels[0].shape[-2:] == (512, 512)  # 1024 px at the 0.5 um/px given, segmented at 1 um/px
    assert store.attrs["pbip"]["slide_mpp"] == 0.5
