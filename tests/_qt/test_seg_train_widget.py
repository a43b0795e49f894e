"""The "Train segmenter" widget: pseudo-masks from a stage-1 run with a preview, a segmenter trained with
live curves, Stop and resume, bad values marked, and the new segmenter offered to Segment slide."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_pbip.events import LOSS, VAL_MIOU

pytestmark = pytest.mark.gui


@pytest.fixture
def widgets(make_napari_viewer, trained_model, tmp_path):
    """Train segmenter and Segment slide docked in one viewer; the form set for a tiny segmenter."""
    from napari_pbip._widgets.seg_train_widget import SegTrainWidget
    from napari_pbip._widgets.segment_widget import SegmentWidget

    viewer = make_napari_viewer()
    w = SegTrainWidget(viewer)
    segment = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w, name="Train segmenter")
    viewer.window.add_dock_widget(segment, name="Segment slide")
    w.run.set_path(trained_model)
    w.masks.set_path(tmp_path / "masks")
    w.segmenter.setCurrentText("lite0-seg")
    w.backbone.setCurrentText("tiny-backbone")
    w.pretrained.setChecked(False)
    w.crop_size.setValue(64)
    w.batch_size.setValue(8)
    w.epochs.setValue(2)  # 40 images / 8 = 5 steps per epoch
    w.device_box.setCurrentText("cpu")
    w.out_edit.set_path(tmp_path / "seg")
    return w, segment


def _state_step(folder) -> int:
    return json.loads((folder / "last" / "state.json").read_text())["step"]


def test_pseudo_masks_preview_training_curves_and_segment_slide_gets_the_model(
    widgets, dataset, tmp_path, qtbot, wait_job
):
    from napari_pbip._widgets._mask_preview import MASK_IMAGES, MASKS
    from napari_pbip._widgets._preview import mosaic
    from napari_pbip.data.images import read_mask
    from napari_pbip.data.layouts import open_dataset
    from napari_pbip.export.label_values import to_values

    w, segment = widgets
    masks = tmp_path / "masks"
    w.make_masks()
    wait_job(w)
    assert not w.status.is_error, w.status.text()
    assert w.dataset.path() == dataset  # read from the run's model.json
    spec = open_dataset(dataset).spec
    names = sorted(p.name for p in (dataset / "train").glob("*.png"))
    assert sorted(p.name for p in masks.glob("*.png")) == names and "pseudo-masks ready" in w.status.text()
    assert json.loads((masks / "cam_settings.json").read_text())["background"] == "white"
    shown = w.preview.maps["names"]
    assert 1 < len(shown) <= 9 and not (tmp_path / "seg").exists()  # a preview, no training yet
    layers = w.viewer.layers
    want = np.stack(
        [to_values(read_mask(masks / n, spec), len(spec.classes), spec.background_index) for n in shown]
    )
    np.testing.assert_array_equal(layers[MASKS].data, mosaic(want, 255))  # each mask over its image
    assert layers[MASK_IMAGES].data.shape[:2] == layers[MASKS].data.shape and layers[MASK_IMAGES].rgb
    assert tuple(layers[MASKS].scale) == (0.5, 0.5)  # the data set's um/px
    made = {p.name: p.stat().st_mtime_ns for p in masks.glob("*.png")}

    w.preview = None
    w.start()
    wait_job(w)
    assert not w.status.is_error, w.status.text()
    assert {p.name: p.stat().st_mtime_ns for p in masks.glob("*.png")} == made  # reused, not remade
    assert w.preview.maps["names"] == shown  # previewed again before training
    assert w.device == "cpu"  # from the run's RunStarted event
    assert "finished at step 10/10" in w.status.text()
    assert [s for s, _ in w.plot.series[LOSS]] == list(range(1, 11))
    assert [s for s, _ in w.plot.series[VAL_MIOU]] == [5, 10]  # one validation per epoch
    assert "val mIoU" in w.metrics_label.text()
    assert "device cpu" in w.device_label.text() and "RSS" in w.device_label.text()
    assert "step 10" in w.checkpoint_label.text() and _state_step(tmp_path / "seg") == 10
    assert segment.model.path() == tmp_path / "seg"  # Segment slide offers the new segmenter
    assert segment.mpp.value() == 0.5 and "Segment slide" in w.status.text()

    w.background.setCurrentText("power")  # other settings: the masks would change
    assert w.make_masks() is None and list(w.marks.marked) == ["masks"] and "replace" in w.status.text()
    assert {p.name: p.stat().st_mtime_ns for p in masks.glob("*.png")} == made


def test_stop_keeps_the_step_and_resume_continues_from_the_checkpoint(widgets, tmp_path, qtbot, wait_job):
    w, _ = widgets
    seg = tmp_path / "seg"
    w.epochs.setValue(8)  # 40 steps: more than run before the pause lands
    w.start()
    qtbot.waitUntil(lambda: w.step >= 1, timeout=60_000)
    w.toggle_pause()
    qtbot.waitUntil(lambda: w.paused, timeout=60_000)
    held = w.step
    qtbot.wait(1000)
    assert w.step == held and w.pause_button.text() == "Continue"
    w.stop()
    wait_job(w)
    assert 0 < held < 40 and _state_step(seg) == held
    assert "kept" in w.status.text() and w.start_button.isEnabled()
    assert f"step ({held})" in w.status.text() and f"step {held} in" in w.checkpoint_label.text()

    w.resume.setChecked(True)
    w.start()
    wait_job(w)
    assert not w.status.is_error, w.status.text()
    assert "finished at step 40/40" in w.status.text() and _state_step(seg) == 40
    assert w.plot.series[LOSS][0][0] == held + 1  # continued from the checkpoint, not restarted


def test_bad_values_mark_their_field_and_start_nothing(widgets, trained_model, tmp_path):
    w, _ = widgets
    w.lr.setText("fast")
    assert w.start() is None and list(w.marks.marked) == ["lr"] and "lr='fast'" in w.status.text()
    w.lr.setText("1e-3")
    w.crop_size.setValue(100)  # not a multiple of 8
    assert w.start() is None and list(w.marks.marked) == ["crop_size"]
    assert "multiple of 8" in w.crop_size.toolTip()
    w.crop_size.setValue(64)
    w.run.set_path(tmp_path / "no-run")
    assert w.start() is None and list(w.marks.marked) == ["run"]
    assert w.make_masks() is None and list(w.marks.marked) == ["run"]
    w.run.set_path(trained_model)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("the user's own file")
    w.masks.set_path(notes)
    w.replace.setChecked(True)  # even 'replace' never deletes a folder the widget did not write
    assert w.make_masks() is None and list(w.marks.marked) == ["masks"] and "keep.txt" in w.status.text()
    assert (notes / "keep.txt").is_file()
    assert w.worker is None and not (tmp_path / "seg").exists() and not (tmp_path / "masks").exists()
