"""Live CAMs over the slide in view while "Train PBIP" trains: layers in register with the slide,
replaced in place at every preview, following the camera when the user pans."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui

CLASSES = ("tumor", "stroma", "lymphocyte", "necrosis")
VIEW_UM = 60  # the canvas's longer side covers this much tissue: 60 px at the training 1 um/px


@pytest.fixture
def widget(make_napari_viewer, dataset, built_bank, small_slide, tmp_path):
    from napari_pbip._widgets.reader import read_slide
    from napari_pbip._widgets.train_widget import TrainWidget

    viewer = make_napari_viewer()
    ((data, kwargs, _),) = read_slide(str(small_slide.slide))
    viewer.add_image(data, **kwargs)
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.dataset.set_path(dataset)
    w.bank.set_path(built_bank)
    w.out.set_path(tmp_path / "run")
    w.backbone.setCurrentText("tiny-backbone")
    w.pretrained.setChecked(False)
    w.image_size.setValue(32)  # the 64 px patches of 0.5 um/px shown at 32 px: the model sees 1 um/px
    w.match_size.setValue(32)
    w.batch_size.setValue(8)
    w.epochs.setValue(2)  # 40 images / 8 = 5 steps per epoch: previews at steps 2, 4, 6, 8, 10
    w.preview_every.setValue(2)
    w.device_box.setCurrentText("cpu")
    return w


def _look_at(viewer, center_um: tuple[float, float]) -> tuple[float, float]:
    """Centre the camera on ``center_um`` zoomed to :data:`VIEW_UM`; the world top-left of the view."""
    from napari_pbip._widgets._slide_cams import camera

    h, w = viewer.canvas.size
    camera(viewer).zoom = max(h, w) / VIEW_UM
    camera(viewer).center = center_um
    zoom = camera(viewer).zoom
    return center_um[0] - h / 2 / zoom, center_um[1] - w / 2 / zoom


def test_slide_cams_follow_the_view_in_register_and_are_replaced_in_place(widget, qtbot, wait_job):
    from napari_pbip._widgets._preview import PATCHES
    from napari_pbip._widgets._slide_cams import SLIDE_BG, SLIDE_FG, slide_cam_layer_name
    from napari_pbip.events import Preview

    viewer = widget.viewer
    slide = viewer.layers[0]
    first_origin = _look_at(viewer, (200.0, 150.0))
    names = [SLIDE_FG, SLIDE_BG, *map(slide_cam_layer_name, CLASSES)]
    previews = []

    def on_event(ev):
        if isinstance(ev.payload, Preview):
            previews.append(ev.payload.maps)
            if len(previews) == 1:
                widget.toggle_pause()  # look at the first preview's layers before panning

    widget.start().yielded.connect(on_event)
    qtbot.waitUntil(
        lambda: widget.paused and not widget.preview.busy and all(n in viewer.layers for n in names),
        timeout=60_000,
    )
    first = {name: viewer.layers[name] for name in names}
    shown = previews[-1]  # the preview whose layers are on screen (training may have gone a step further)
    np.testing.assert_allclose(first[SLIDE_FG].translate, shown["region"]["where"].translate)
    panned = _look_at(viewer, (330.0, 260.0))  # the user pans
    widget.toggle_pause()
    wait_job(widget)
    qtbot.waitUntil(lambda: not widget.preview.busy)
    assert not widget.status.is_error, widget.status.text()
    assert len(previews) == 5 and all(p.get("region") is not None for p in previews)

    def placed(maps):
        return np.array(maps["region"]["where"].translate)

    # the first preview lies over what was in view, the last over where the user panned to,
    # to within one training pixel (1 um)
    assert np.abs(placed(previews[0]) - first_origin).max() <= 1.0
    assert np.abs(placed(previews[-1]) - panned).max() <= 1.0
    for name in names:
        layer = viewer.layers[name]
        assert layer is first[name], f"{name} is a new layer"  # later previews replaced its data
        # the slide's physical units, at the training 1 um/px, where the last preview lies
        assert tuple(layer.scale) == (1.0, 1.0) and tuple(map(str, layer.units)) == ("micrometer",) * 2
        np.testing.assert_allclose(layer.translate, placed(previews[-1]))
    last = previews[-1]["region"]
    tumour = viewer.layers[slide_cam_layer_name("tumor")].data
    np.testing.assert_array_equal(tumour, np.rint(last["cams"][0].astype(np.float32) * 255).astype(np.uint8))
    # the pixels the model saw are the slide's own under the layer (1 um/px = every second level-0 pixel)
    top_left = np.floor(slide.world_to_data(viewer.layers[SLIDE_FG].translate)).astype(int)  # first 2 x 2 px
    assert tuple(last["image"].shape[:2]) == tumour.shape and tumour.shape[0] <= VIEW_UM + 2

    def level0_under(dy, dx):  # 2 x 2 means of the slide's level 0 from that pixel on
        y, x = top_left[0] + dy, top_left[1] + dx
        block = np.asarray(slide.data[0][y : y + 32, x : x + 32], dtype=np.float32)
        return block.reshape(16, 2, 16, 2, 3).mean(axis=(1, 3))

    seen = last["image"][:16, :16].astype(np.float32)
    error = {(dy, dx): np.abs(seen - level0_under(dy, dx)).mean() for dy in (-2, 0, 2) for dx in (-2, 0, 2)}
    assert min(error, key=error.get) == (0, 0) and error[0, 0] < 8, error  # one training pixel off is worse
    assert not viewer.layers[SLIDE_FG].visible and viewer.layers[slide_cam_layer_name("tumor")].visible
    assert PATCHES in viewer.layers  # patch previews too, by default
    assert "px at 1 um/px of slide.tif" in widget.slide_label.text()


def test_patch_previews_alone_read_no_slide(widget, qtbot, wait_job):
    from napari_pbip._widgets._preview import PATCHES
    from napari_pbip._widgets.train_widget import ON_PATCHES
    from napari_pbip.events import Preview

    _look_at(widget.viewer, (200.0, 150.0))
    widget.preview_on.setCurrentText(ON_PATCHES)
    widget.epochs.setValue(1)
    regions = []
    widget.start().yielded.connect(
        lambda ev: isinstance(ev.payload, Preview) and regions.append(ev.payload.maps.get("region"))
    )
    wait_job(widget)
    qtbot.waitUntil(lambda: not widget.preview.busy)
    assert regions and all(r is None for r in regions)
    assert PATCHES in widget.viewer.layers
    assert not any(layer.name.startswith("PBIP slide") for layer in widget.viewer.layers)
