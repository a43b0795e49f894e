"""The "Image bank" widget: build, look, curate, each edit a bank version, cancel, bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(make_napari_viewer):
    from napari_pbip._widgets.bank_widget import BankWidget

    viewer = make_napari_viewer()
    w = BankWidget(viewer)
    viewer.window.add_dock_widget(w)
    return w


@pytest.fixture
def bank_copy(built_bank, tmp_path):
    """A private copy of the session's tiny bank (edits write versions into it)."""
    return shutil.copytree(built_bank, tmp_path / "bank")


def _open(widget, wait_job, path):
    widget.out.set_path(path)
    assert widget.open() is not None
    wait_job(widget)
    assert not widget.status.is_error, widget.status.text()


def _fill_build_form(w, dataset, out):
    w.dataset.set_path(dataset)
    w.encoder.setCurrentText("tiny-encoder")
    w.k.setValue(2)
    w.per_cluster.setValue(2)
    w.out.set_path(out)


def test_build_shows_members_by_class_and_subcluster_with_similarity(widget, dataset, tmp_path, wait_job):
    from napari_pbip._widgets._bank_grid import ID_ROLE
    from napari_pbip.bank import bank_info, open_bank

    _fill_build_form(widget, dataset, tmp_path / "bank")
    widget.build()
    wait_job(widget)
    assert not widget.status.is_error, widget.status.text()
    bank = open_bank(tmp_path / "bank")
    assert bank.version == 1 and bank.settings.k == 2 and bank.settings.per_cluster == 2
    for name in bank.classes:
        for c in range(2):
            want = sorted(m.id for m in bank.members(name, c, selected=True))
            strip = widget.grid.strips[(name, c)]
            assert sorted(int(strip.item(r).data(ID_ROLE)) for r in range(strip.count())) == want
            assert all(not strip.item(r).icon().isNull() for r in range(strip.count()))
    assert "selected" in widget.grid.headers["tumor"].text()
    info = bank_info(bank)
    table = widget.similarity.table
    for i in range(len(bank.classes)):
        for j in range(len(bank.classes)):
            value = info["similarity"]["matrix"][i][j]
            assert table.item(i, j).text() == ("-" if value is None else f"{value:.3f}")
    assert widget.history.count() == 1 and "current" in widget.history.item(0).text()


def test_pool_members_appear_on_request(widget, bank_copy, wait_job):
    from napari_pbip.bank import open_bank

    _open(widget, wait_job, bank_copy)
    bank = open_bank(bank_copy)
    assert sorted(widget.grid.shown_ids()) == sorted(m.id for m in bank.members(selected=True))
    widget.show_pool.setChecked(True)
    wait_job(widget)
    assert sorted(widget.grid.shown_ids()) == sorted(m.id for m in bank.members())


def test_cancel_stops_a_build_without_leaving_a_bank(widget, dataset, tmp_path, wait_job):
    _fill_build_form(widget, dataset, tmp_path / "bank")
    worker = widget.build()
    worker.yielded.connect(lambda event: widget.cancel())  # stop at the first progress event
    wait_job(widget)
    assert not (tmp_path / "bank").exists()
    assert "cancelled" in widget.status.text() and widget.bank is None
    assert widget.build_button.isEnabled()


def test_edits_are_saved_as_versions_and_undo_goes_back(widget, bank_copy, wait_job):
    from napari_pbip.bank import open_bank

    _open(widget, wait_job, bank_copy)
    start = open_bank(bank_copy)
    tumor = [m.id for m in start.members("tumor", selected=True)]
    stroma_before = {m.id for m in start.members("stroma")}

    widget.grid.select_ids(tumor[:1])
    widget.lock()
    wait_job(widget)
    assert open_bank(bank_copy).member(tumor[0]).locked and widget.bank.version == 2

    widget.grid.select_ids(tumor[1:2])
    widget.move_class.setCurrentText("stroma")
    widget.move()
    wait_job(widget)
    moved = open_bank(bank_copy)
    assert moved.member(tumor[1]).class_name == "stroma" and moved.version == 3
    assert tumor[1] in widget.grid.shown_ids("stroma") and tumor[1] not in widget.grid.shown_ids("tumor")

    widget.grid.select_ids(tumor[2:3])
    widget.remove()
    wait_job(widget)
    after = open_bank(bank_copy)
    assert after.version == 4 and tumor[2] not in {m.id for m in after.members()}
    assert tumor[2] not in widget.grid.shown_ids()

    widget.re_class.setCurrentText("stroma")
    widget.re_k.setValue(1)
    widget.recluster()
    wait_job(widget)
    assert open_bank(bank_copy).ks[open_bank(bank_copy).class_index("stroma")] == 1
    assert [k[1] for k in widget.grid.strips if k[0] == "stroma"] == [0]

    widget.undo()
    wait_job(widget)
    back = open_bank(bank_copy)
    assert back.version == 4 and back.ks == after.ks
    assert {m.id for m in back.members("stroma")} == stroma_before | {tumor[1]}
    assert widget.history.count() == 5  # v1..v5 stay on disk; v4 is current again
    assert "v4" in next(
        widget.history.item(i).text() for i in range(5) if "current" in widget.history.item(i).text()
    )


def test_locked_members_cannot_be_removed_and_the_reason_is_shown(widget, bank_copy, wait_job):
    from napari_pbip.bank import open_bank

    _open(widget, wait_job, bank_copy)
    first = open_bank(bank_copy).members("necrosis", selected=True)[0].id
    widget.grid.select_ids([first])
    widget.lock()
    wait_job(widget)
    widget.grid.select_ids([first])
    widget.remove()
    wait_job(widget)
    assert widget.status.is_error and "locked" in widget.status.text()
    assert first in {m.id for m in open_bank(bank_copy).members()}


def test_add_the_current_patch_of_an_image_stack(widget, bank_copy, dataset, wait_job):
    from napari_pbip.bank import open_bank
    from napari_pbip.data.images import read_rgb

    _open(widget, wait_job, bank_copy)
    stack = np.stack([read_rgb(p) for p in sorted((dataset / "val" / "img").glob("*.png"))])
    widget.viewer.add_image(stack, name="patches", rgb=True)
    widget.viewer.dims.set_current_step(0, 2)
    widget.add_image.setCurrentText("patches")
    assert widget.add_mpp.isHidden()  # no read resolution to choose for a patch
    widget.add_class.setCurrentText("lymphocyte")
    widget.add_region()
    wait_job(widget)
    assert not widget.status.is_error, widget.status.text()
    bank = open_bank(bank_copy)
    new = bank.member(bank.last_edit["added"][0])
    assert new.class_name == "lymphocyte" and new.source == {"layer": "patches", "index": 2}
    np.testing.assert_array_equal(bank.image(new.id), stack[2])
    assert new.id in widget.grid.shown_ids("lymphocyte")


def test_add_the_region_under_a_rectangle_on_the_slide(widget, bank_copy, small_slide, wait_job):
    import tifffile

    from napari_pbip._widgets.reader import slide_layer_data
    from napari_pbip.bank import open_bank
    from napari_pbip.slides import open_slide

    _open(widget, wait_job, bank_copy)
    data, kwargs, _ = slide_layer_data(small_slide.slide)
    widget.viewer.add_image(data, **kwargs)
    truth = tifffile.imread(small_slide.labels)
    y, x = next(
        (y, x)
        for y in range(0, 960, 32)
        for x in range(0, 960, 32)
        if (truth[y : y + 64, x : x + 64] != 4).all()
    )
    um = 0.5  # the slide's um/px: the rectangle covers 64 x 64 slide pixels
    widget.viewer.add_shapes(
        [[[y * um, x * um], [(y + 64) * um, (x + 64) * um]]], shape_type="rectangle", name="box"
    )
    assert widget.add_shapes.currentText() == "box" and widget.add_mpp.value() == 0.5
    widget.add_image.setCurrentText(small_slide.slide.name)
    assert not widget.add_mpp.isHidden() and widget.add_mpp.value() == 0.5
    widget.add_class.setCurrentText("tumor")
    widget.add_region()
    wait_job(widget)
    assert not widget.status.is_error, widget.status.text()
    bank = open_bank(bank_copy)
    new = bank.member(bank.last_edit["added"][0])
    assert new.source == {
        "slide": str(small_slide.slide),
        "y": y,
        "x": x,
        "height": 64,
        "width": 64,
        "mpp": 0.5,
    }
    np.testing.assert_array_equal(
        bank.image(new.id), open_slide(small_slide.slide).read_region(y, x, 64, 64, 0.5)
    )


def test_bad_input_is_marked_and_explained(widget, tmp_path, wait_job):
    widget.dataset.set_path(tmp_path / "missing")
    widget.out.set_path(tmp_path / "bank")
    assert widget.build() is None
    assert (
        "dataset" in widget.marks.marked
        and widget.status.is_error
        and "does not exist" in widget.status.text()
    )
    widget.out.set_path(tmp_path / "nothing-here")
    assert widget.open() is None and "out" in widget.marks.marked
    (tmp_path / "not-a-bank").mkdir()
    widget.out.set_path(tmp_path / "not-a-bank")
    widget.open()
    wait_job(widget)
    assert widget.status.is_error and "not an image bank" in widget.status.text()
    widget.remove()
    assert widget.status.is_error
