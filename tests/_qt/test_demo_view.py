"""`pbip demo --view`: a finished demo opens with its slide, ground truth and segmentations, and the
three widgets docked and pointed at the demo's data set, bank and models."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.gui, pytest.mark.slow]


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    from napari_pbip.demo import DemoSettings, run_demo
    from napari_pbip.events import run

    settings = DemoSettings(
        n_train=24, n_val=8, n_test=0, patch=128, bank_k=2, bank_per_cluster=3, epochs=1, seg_epochs=1,
        slide_size=1024, device="cpu",
    )  # fmt: skip
    return run(run_demo(tmp_path_factory.mktemp("demo") / "out", settings)).out


def test_demo_opens_with_layers_and_widgets_pointed_at_it(make_napari_viewer, small_demo, wait_job):
    from napari.layers import Image, Labels

    from napari_pbip._widgets.demo_view import open_demo

    viewer = make_napari_viewer()
    widgets = open_demo(viewer, small_demo)
    names = [layer.name for layer in viewer.layers]
    assert isinstance(viewer.layers[0], Image)
    assert "ground truth" in names and "segmentation (stage2)" in names
    truth, seg = viewer.layers["ground truth"], viewer.layers["segmentation (stage2)"]
    assert isinstance(truth, Labels) and isinstance(seg, Labels) and seg.visible
    assert tuple(seg.scale) == tuple(truth.scale)  # both in um: they overlay the slide
    assert widgets["Image bank"].out.path() == small_demo / "bank"
    assert widgets["Train PBIP"].dataset.path() == small_demo / "data"
    assert widgets["Segment slide"].model.path() == small_demo / "seg"
    assert widgets["Segment slide"].mpp.value() == 0.5  # the segmenter's recorded resolution
    wait_job(widgets["Image bank"])
    assert widgets["Image bank"].bank is not None and widgets["Image bank"].bank.root == small_demo / "bank"


def test_a_folder_without_a_demo_is_refused_with_the_command_to_make_one(make_napari_viewer, tmp_path):
    from napari_pbip._widgets.demo_view import open_demo

    with pytest.raises(FileNotFoundError, match="pbip demo --out"):
        open_demo(make_napari_viewer(), tmp_path)
