"""The "Train PBIP" widget: live loss parts, CAM and FG/BG layers, pause, stop keeps the checkpoint,
resume, and form validation that marks the bad field."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_pbip.events import LOSS
from napari_pbip.stage1 import losses

pytestmark = pytest.mark.gui

CLASSES = ("tumor", "stroma", "lymphocyte", "necrosis")


@pytest.fixture
def widget(make_napari_viewer, dataset, built_bank, tmp_path):
    from napari_pbip._widgets.train_widget import TrainWidget

    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.dataset.set_path(dataset)
    w.bank.set_path(built_bank)
    w.out.set_path(tmp_path / "run")
    w.backbone.setCurrentText("tiny-backbone")
    w.pretrained.setChecked(False)
    w.image_size.setValue(64)
    w.match_size.setValue(32)
    w.batch_size.setValue(8)
    w.epochs.setValue(2)  # 40 images / 8 = 5 steps per epoch
    w.preview_every.setValue(2)
    w.device_box.setCurrentText("cpu")
    return w


def _state_step(run) -> int:
    return json.loads((run / "last" / "state.json").read_text())["step"]


def test_training_shows_loss_parts_cams_and_fgbg_and_finishes(widget, tmp_path, qtbot, wait_job):
    from napari_pbip._widgets._preview import BG, FG, PATCHES, cam_layer_name, mosaic
    from napari_pbip.events import Preview

    user = widget.viewer.add_image(np.zeros((8, 8)), name="user's layer")  # selected: being worked on
    previews = []
    widget.start().yielded.connect(lambda ev: isinstance(ev.payload, Preview) and previews.append(ev.payload))
    wait_job(widget)
    qtbot.waitUntil(lambda: not widget.preview.busy)
    assert not widget.status.is_error, widget.status.text()
    assert "finished at step 10/10" in widget.status.text()
    assert all(len(widget.plot.series[k]) == 10 for k in (LOSS, losses.CLS, losses.FG, losses.BG))
    layers = widget.viewer.layers
    assert len(previews) == 5 and previews[-1].step == 10
    assert previews[-1].layers[0] is None  # layers made in the worker thread, for "strongest class" FG/BG
    last = previews[-1].maps
    assert layers[PATCHES].data.shape == mosaic(last["images"]).shape
    for n, name in enumerate(CLASSES):
        cam = layers[cam_layer_name(name)].data
        want = mosaic(last["cams"][:, n].astype(np.float32) * last["labels"][:, n, None, None])
        # the class's CAM (0-1 shown as 0-255) where the patch is labelled with it, else 0
        np.testing.assert_allclose(cam / 255, want, atol=0.5 / 255 + 1e-6)
    assert layers[FG].rgb and layers[BG].rgb and layers[FG].translate[1] > 0
    assert all(layers[n].visible for n in (PATCHES, FG, BG, *map(cam_layer_name, CLASSES)))
    assert layers.selection.active is user  # previews appeared without taking the selection
    # the synthetic patches record 0.5 um/px and are shown at their own 64 px: the layers are in um
    assert last["mpp"] == 0.5 and tuple(layers[PATCHES].scale) == (0.5, 0.5)
    assert all(tuple(map(str, layers[n].units)) == ("micrometer",) * 2 for n in (PATCHES, FG))
    assert "device cpu" in widget.device_label.text() and "RSS" in widget.device_label.text()
    assert (tmp_path / "run" / "model.json").is_file() and _state_step(tmp_path / "run") == 10
    assert "step 10" in widget.checkpoint_label.text()
    widget.fgbg_class.setCurrentText("stroma")  # FG/BG of one chosen class
    qtbot.waitUntil(lambda: not widget.preview.busy)
    fg_stroma = mosaic(
        (last["images"] * last["fg"][:, 1, :, :, None].astype(np.float32)).astype(np.uint8), 255
    )
    np.testing.assert_array_equal(layers[FG].data, fg_stroma)


def test_pause_holds_training_and_stop_keeps_the_last_step_for_resume(widget, tmp_path, qtbot, wait_job):
    run = tmp_path / "run"
    widget.epochs.setValue(20)  # 100 steps: far more than run before the pause lands
    widget.preview_every.setValue(0)
    widget.start()
    qtbot.waitUntil(lambda: widget.step >= 1, timeout=60_000)
    widget.toggle_pause()
    qtbot.waitUntil(lambda: widget.paused, timeout=60_000)
    held = widget.step
    qtbot.wait(1500)
    assert (
        widget.step == held and widget.pause_button.text() == "Continue" and "paused" in widget.status.text()
    )
    widget.stop()  # stopping while paused: the job closes and checkpoints the step it held at
    wait_job(widget)
    assert 0 < held < 100 and widget.step == held
    assert _state_step(run) == held
    assert "kept" in widget.status.text() and widget.start_button.isEnabled()
    assert f"step ({held})" in widget.status.text() and f"step {held} in" in widget.checkpoint_label.text()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert max(e["step"] for e in log) == held

    widget.resume.setChecked(True)
    widget.epochs.setValue(4)  # epochs may change on resume: 20 steps in all
    widget.start()
    wait_job(widget)
    assert "finished at step 20/20" in widget.status.text() and _state_step(run) == 20
    assert widget.plot.series[LOSS][0][0] == held + 1  # the resumed run continued, not restarted


def test_bad_settings_mark_their_field_and_start_nothing(widget, tmp_path):
    widget.image_size.setValue(100)  # not a multiple of 32
    assert widget.start() is None and widget.worker is None
    assert list(widget.marks.marked) == ["image_size"] and "image_size=100" in widget.status.text()
    assert widget.image_size.styleSheet() != "" and "multiple of 32" in widget.image_size.toolTip()
    widget.image_size.setValue(64)
    widget.lr.setText("fast")
    assert widget.start() is None and list(widget.marks.marked) == ["lr"]
    widget.lr.setText("1e-4")
    widget.bank.set_path(tmp_path / "no-bank")
    assert widget.start() is None and list(widget.marks.marked) == ["bank"]
    widget.baseline.setChecked(True)  # the baseline needs no bank
    widget.dataset.set_path(tmp_path / "missing")
    assert widget.start() is None and list(widget.marks.marked) == ["dataset"]
    assert not (tmp_path / "run").exists()


def test_a_failing_job_is_reported_not_swallowed(widget, tmp_path, wait_job):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "old.txt").write_text("an earlier run")
    widget.start()
    wait_job(widget)
    assert widget.status.is_error and "already exists" in widget.status.text()
    assert (tmp_path / "run" / "old.txt").is_file() and widget.start_button.isEnabled()


def test_preview_layers_are_made_in_the_job_and_closing_still_closes_the_job():
    from napari_pbip._widgets._preview import FG, preview_layers, with_layers
    from napari_pbip.events import Preview, Progress
    from napari_pbip.stage1.loop import TRAIN_STAGE

    rng = np.random.default_rng(0)
    maps = {
        "step": 2,
        "classes": ["tumor", "stroma"],
        "palette": [(255, 0, 0), (0, 255, 0)],
        "images": rng.integers(0, 255, (3, 16, 16, 3), dtype=np.uint8),
        "labels": np.array([[1, 0], [0, 1], [1, 1]], np.uint8),
        "cams": rng.random((3, 2, 16, 16), dtype=np.float32),
        "fg": rng.random((3, 2, 16, 16), dtype=np.float32),
        "bg": rng.random((3, 2, 16, 16), dtype=np.float32),
    }
    closed = []

    def job():
        try:
            yield Progress(TRAIN_STAGE, 1, 4, "step 1")
            yield Progress(TRAIN_STAGE, 2, 4, "preview", payload=Preview(2, maps))
            yield Progress(TRAIN_STAGE, 3, 4, "broken preview", payload=Preview(3, {"images": None}))
            yield Progress(TRAIN_STAGE, 4, 4, "step 4")
        except GeneratorExit:
            closed.append("checkpointed")
            raise
        return "done"

    inner = job()  # held here too, so only an explicit close reaches it
    wrapped = with_layers(inner, lambda: 1)  # the user picked "stroma" for FG/BG
    assert next(wrapped).payload is None
    ev = next(wrapped)
    chosen, layers = ev.payload.layers
    want = {name: data for name, data, _ in preview_layers(maps, 1)}
    assert chosen == 1 and [n for n, _, _ in layers] == list(want)
    np.testing.assert_array_equal({n: d for n, d, _ in layers}[FG], want[FG])
    broken = next(wrapped)  # a preview the layers cannot be made of does not stop training
    assert broken.step == 3 and broken.payload.layers is None
    wrapped.close()  # Stop: the library job gets GeneratorExit (and checkpoints) here
    assert closed == ["checkpointed"]
