"""The "Training data" widget: regions drawn on a slide layer -> a data set the bank and training read."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


@pytest.fixture
def viewer_and_slide(make_napari_viewer, small_slide):
    from napari_pbip._widgets.reader import slide_layer_data

    viewer = make_napari_viewer()
    data, kwargs, _ = slide_layer_data(small_slide.slide)
    slide = viewer.add_image(data, **kwargs)
    return viewer, slide


@pytest.fixture
def widget(viewer_and_slide):
    from napari_pbip._widgets.data_widget import TrainingDataWidget

    viewer, _ = viewer_and_slide
    w = TrainingDataWidget(viewer)
    viewer.window.add_dock_widget(w)
    return w


def _best_window(where_true: np.ndarray, side: int) -> tuple[int, int]:
    """Level-0 (y, x) of the ``side`` px window (on a grid of side/2) that ``where_true`` covers most."""
    best, where = -1.0, (0, 0)
    for y in range(0, where_true.shape[0] - side + 1, side // 2):
        for x in range(0, where_true.shape[1] - side + 1, side // 2):
            share = float(where_true[y : y + side, x : x + side].mean())
            if share > best:
                best, where = share, (y, x)
    return where


def test_shapes_drawn_on_a_slide_become_a_data_set_for_the_bank(
    widget, viewer_and_slide, small_slide, tmp_path, wait_job
):
    import tifffile

    from napari_pbip.bank import BankSettings, build_bank
    from napari_pbip.data.layouts import open_dataset
    from napari_pbip.events import run
    from napari_pbip.slides.training_data import read_provenance

    viewer, slide = viewer_and_slide
    truth = tifffile.imread(small_slide.labels)
    widget.classes.setText("tumor, stroma")
    widget.classes.editingFinished.emit()
    layer = widget.new_regions_layer()
    assert layer is not None and tuple(layer.scale) == tuple(slide.scale)  # in register with the slide
    boxes = {}
    for name in ("tumor", "stroma"):
        y, x = _best_window(truth == small_slide.classes.index(name), 256)
        boxes[name] = (y, x, y + 256, x + 256)
        widget.draw_class.setCurrentText(name)
        layer.add_rectangles(np.array([[y, x], [y + 256, x + 256]], float))  # data coordinates = level-0 px
    assert list(layer.features["class"]) == ["tumor", "stroma"]
    widget.mpp.setValue(1.0)
    widget.tile.setValue(64)
    widget.out.set_path(tmp_path / "ds")

    assert widget.build() is not None
    wait_job(widget)

    assert not widget.status.is_error, widget.status.text()
    assert "training tiles" in widget.result.text()
    ds = open_dataset(tmp_path / "ds")
    assert ds.spec.classes == ("tumor", "stroma")
    rows = read_provenance(tmp_path / "ds")
    assert len(rows) == widget.summary["tiles"] >= 4
    for row in rows:  # each tile lies inside the rectangle of its class, in level-0 pixels
        name = row["labels"].split(";")[0]
        y0, x0, y1, x1 = boxes[name]
        assert y0 <= int(row["y"]) and int(row["y"]) + int(row["size"]) <= y1 + 1, (row, boxes)
        assert x0 <= int(row["x"]) and int(row["x"]) + int(row["size"]) <= x1 + 1, (row, boxes)
    assert {r["labels"] for r in rows} >= {"tumor", "stroma"}
    from napari_pbip._widgets.bank_widget import BankWidget

    bank_widget = BankWidget(viewer)
    viewer.window.add_dock_widget(bank_widget)
    assert widget.use_dataset() == [bank_widget]
    assert bank_widget.dataset.path() == tmp_path / "ds"
    bank = run(build_bank(BankSettings(encoder="tiny-encoder", k=1, per_cluster=1, batch_size=8),
                          tmp_path / "ds", tmp_path / "bank", device="cpu"))  # fmt: skip
    assert bank.classes == ("tumor", "stroma")


def test_painted_labels_give_the_kth_class_and_a_rerun_keeps_unchanged_tiles(
    widget, viewer_and_slide, small_slide, tmp_path, wait_job
):
    import tifffile

    from napari_pbip.slides.training_data import read_provenance

    viewer, slide = viewer_and_slide
    truth = tifffile.imread(small_slide.labels)
    y, x = _best_window(truth != small_slide.background_index, 256)  # level-0 px, multiples of 128
    painted = np.zeros((512, 512), np.uint8)  # painted at 1 um/px, twice the slide's pixel size
    painted[y // 2 : y // 2 + 128, x // 2 : x // 2 + 128] = 1  # 128 um: 2 x 2 tiles of 64 px at 1 um/px
    labels = viewer.add_labels(painted, scale=tuple(2 * s for s in slide.scale), name="painted")
    widget.classes.setText("tumor stroma lymphocyte necrosis")
    widget.set_regions(slide.name, "painted")
    widget.tile.setValue(64)
    widget.out.set_path(tmp_path / "ds")
    widget.build()
    wait_job(widget)
    assert not widget.status.is_error, widget.status.text()
    first = widget.summary
    assert (first["tiles"], first["class_counts"]["tumor"]) == (4, 4)
    assert {(int(r["y"]), int(r["x"])) for r in read_provenance(tmp_path / "ds")} == {
        (y + dy, x + dx) for dy in (0, 128) for dx in (0, 128)
    }

    labels.data[y // 2 : y // 2 + 64, x // 2 : x // 2 + 64] = 2  # one tile's worth of stroma over the tumour
    labels.refresh()
    widget.build()
    wait_job(widget)
    assert not widget.status.is_error, widget.status.text()
    again = widget.summary
    assert (again["added"], again["removed"], again["unchanged"], again["updated"]) == (1, 1, 3, True)
    assert again["class_counts"] == {"tumor": 3, "stroma": 1, "lymphocyte": 0, "necrosis": 0}


def test_bad_class_is_one_red_line_and_nothing_is_written(widget, viewer_and_slide, tmp_path, wait_job):
    viewer, slide = viewer_and_slide
    widget.classes.setText("tumor")
    widget.classes.editingFinished.emit()
    layer = widget.new_regions_layer()
    layer.feature_defaults["class"] = "val"
    layer.add_rectangles(np.array([[0, 0], [400, 400]], float))
    widget.out.set_path(tmp_path / "ds")
    widget.build()
    wait_job(widget)
    assert widget.status.is_error and "no class region" in widget.status.text()
    assert not (tmp_path / "ds").exists()


def test_cancel_leaves_no_half_written_data_set(widget, viewer_and_slide, tmp_path, wait_job):
    viewer, slide = viewer_and_slide
    widget.classes.setText("tumor")
    widget.classes.editingFinished.emit()
    widget.new_regions_layer().add_rectangles(np.array([[0, 0], [1024, 1024]], float))
    widget.tile.setValue(16)  # many small tiles: the job is still running when Cancel is pressed
    widget.out.set_path(tmp_path / "ds")
    assert widget.build() is not None
    widget.cancel()
    wait_job(widget)
    assert "cancelled" in widget.status.text() and not widget.status.is_error
    assert not (tmp_path / "ds").exists()
    assert not list(tmp_path.glob(".ds.*")), "the temporary folder was left behind"
    assert widget.build_button.isEnabled()
