"""The whole loop a pathologist runs in napari, through the five docked widgets and their own controls:
class regions on a slide (shapes drawn in napari, or a QuPath GeoJSON file beside the slide) -> Training
data -> Image bank -> Train PBIP with live CAM layers over the slide in view -> Train segmenter -> Segment
slide's queue over two slides -> the exports a second program reads.

State passes between the widgets only as the GUI passes it: "Use in Image bank and Train PBIP", a folder
typed into the next widget's field, the finished segmenter offered to Segment slide. One driver runs on
two synthetic slides (the CI variants: regions drawn, regions from GeoJSON) and on the shared real SVS
slides (skipped when ../shared is absent), always with tiny models.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui

PLUGIN = "napari-pbip"
WIDGETS = ("Training data", "Image bank", "Train PBIP", "Train segmenter", "Segment slide")
Box = tuple[int, int, int, int]  # level-0 px (y0, x0, y1, x1)


@dataclass
class Loop:
    """One run of the loop: the slides to open (the first gets the regions) and how to run each widget.

    Attributes:
        slides: slide files, opened in this order; ``regions`` are drawn on (or written beside) the first.
        classes: the classes typed into Training data, in label order.
        regions: class name -> level-0 boxes on the first slide.
        geojson: the regions come from a QuPath GeoJSON file beside the slide instead of drawn shapes.
        slide_mpp: the "Slide um/px" given for slides that do not record it (0: from the file).
        epochs_stage1, epochs_stage2: tiny-model epochs.
        outputs: filled in by :func:`drive_loop`: the queue's folder and the single-slide exports.
    """

    slides: list[Path]
    classes: tuple[str, ...]
    regions: dict[str, list[Box]]
    geojson: bool = False
    slide_mpp: float = 0.0
    epochs_stage1: int = 1
    epochs_stage2: int = 1
    outputs: dict[str, Path] = field(default_factory=dict)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread (more only contend on a shared CPU), as in tests/stage2."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- helpers ---------------------------------------------------------------------------------------


def _windows(where_true: np.ndarray, side: int, n: int) -> list[Box]:
    """``n`` non-overlapping ``side`` px level-0 boxes (on a grid of side/4) that ``where_true`` covers most."""
    step = side // 4
    scored = sorted(
        (-float(where_true[y : y + side, x : x + side].mean()), y, x)
        for y in range(0, where_true.shape[0] - side + 1, step)
        for x in range(0, where_true.shape[1] - side + 1, step)
    )
    boxes: list[Box] = []
    for _, y, x in scored:
        if all(y >= b[2] or y + side <= b[0] or x >= b[3] or x + side <= b[1] for b in boxes):
            boxes.append((y, x, y + side, x + side))
        if len(boxes) == n:
            break
    return boxes


def _overlap(a: Box, b: Box) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _qupath_geojson(path: Path, regions: dict[str, list[Box]]) -> Path:
    """Regions as QuPath exports them: a FeatureCollection of annotations with a classification name,
    polygons in level-0 pixel (x, y) coordinates."""
    features = []
    for name, boxes in regions.items():
        for y0, x0, y1, x1 in boxes:
            ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
            features.append(
                {
                    "type": "Feature",
                    "id": f"{name}-{y0}-{x0}",
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                    "properties": {
                        "objectType": "annotation",
                        "classification": {"name": name.capitalize(), "color": [200, 0, 0]},
                    },
                }
            )
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _docked(viewer) -> dict:
    """Dock the plugin's five widgets from the Plugins menu's entries, as a user does."""
    widgets = {}
    for name in WIDGETS:
        _, widgets[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widgets


def _ok(widget) -> None:
    assert not widget.status.is_error, widget.status.text()


# -- the driver --------------------------------------------------------------------------------------


def drive_loop(viewer, loop: Loop, out: Path, wait_job, qtbot, monkeypatch) -> dict:
    """Run the whole loop through the widgets; returns the docked widgets (outputs in ``loop.outputs``)."""
    from napari.layers import Shapes

    from napari_pbip._widgets import data_widget, segment_widget
    from napari_pbip._widgets._slide_cams import slide_cam_layer_name
    from napari_pbip._widgets.train_widget import ON_SLIDE_AND_PATCHES
    from napari_pbip.data.layouts import open_dataset
    from napari_pbip.events import Preview
    from napari_pbip.slides.training_data import read_provenance

    first = loop.slides[0]
    if loop.geojson:  # QuPath's export, saved beside the slide before it is opened
        _qupath_geojson(first.with_name(first.name.split(".")[0] + ".geojson"), loop.regions)
    viewer.window._qt_window.resize(1920, 1080)  # the screen the docks are made to fit (test_docking)
    for slide in loop.slides:  # File > Open with the plugin's reader
        viewer.open(str(slide), plugin=PLUGIN)
    slide_a = viewer.layers[first.name]
    w = _docked(viewer)

    # 1. Training data: the classes, the regions on slide A, Build, then hand the data set on
    data = w["Training data"]
    data.classes.setText(", ".join(loop.classes))
    data.classes.editingFinished.emit()
    row = data._row_of(first.name)
    if loop.geojson:
        assert data._combo(row).currentText() == data_widget.BESIDE  # found beside the slide and chosen
    else:
        data.table.selectRow(row)
        data.new_layer_button.click()
        layer = viewer.layers[f"{first.name} regions"]
        assert isinstance(layer, Shapes) and tuple(layer.scale) == tuple(slide_a.scale)
        assert layer.units == slide_a.units  # in um like the slide: napari keeps the scale bar's unit
        for name, boxes in loop.regions.items():
            data.draw_class.setCurrentText(name)
            for y0, x0, y1, x1 in boxes:  # data coordinates of the regions layer: level-0 px
                layer.add_rectangles(np.array([[y0, x0], [y1, x1]], float))
        assert list(layer.features["class"]) == [n for n, b in loop.regions.items() for _ in b]
    data.mpp.setValue(1.0)
    data.tile.setValue(64)
    data.slide_mpp.setValue(loop.slide_mpp)
    data.out.set_path(out / "dataset")
    data.build_button.click()
    wait_job(data)
    _ok(data)
    dataset = out / "dataset"
    assert open_dataset(dataset).spec.classes == loop.classes
    rows = read_provenance(dataset)
    assert {Path(r["slide"]).name for r in rows} == {first.name}
    for r in rows:  # about half of every tile or more lies in regions of its class (the rest is background
        # and tiles more than half background are dropped); 0.45 as the level-0 px in tiles.csv are rounded
        y, x, size = int(r["y"]), int(r["x"]), int(r["size"])
        inside = sum(_overlap((y, x, y + size, x + size), box) for box in loop.regions[r["labels"]])
        assert inside >= 0.45 * size * size, (r, loop.regions[r["labels"]])
    assert {r["labels"] for r in rows} == set(loop.regions)
    data.use_button.click()
    bank, train = w["Image bank"], w["Train PBIP"]
    assert bank.dataset.path() == dataset and train.dataset.path() == dataset

    # 2. Image bank: a tiny-encoder bank of the new data set
    bank.encoder.setCurrentText("tiny-encoder")
    bank.k.setValue(1)
    bank.per_cluster.setValue(2)
    bank.out.set_path(out / "bank")
    bank.build_button.click()
    wait_job(bank)
    _ok(bank)
    assert bank.bank is not None and bank.bank.classes == loop.classes

    # 3. Train PBIP with live CAMs over slide A in view
    viewer.layers.selection.active = slide_a  # the slide the user looks at
    train.bank.set_path(out / "bank")
    train.out.set_path(out / "run")
    train.backbone.setCurrentText("tiny-backbone")
    train.pretrained.setChecked(False)
    train.image_size.setValue(64)
    train.match_size.setValue(32)
    train.batch_size.setValue(8)
    train.epochs.setValue(loop.epochs_stage1)
    train.preview_every.setValue(2)
    train.preview_on.setCurrentText(ON_SLIDE_AND_PATCHES)
    train.device_box.setCurrentText("cpu")
    previews = []
    train.start_button.click()
    train.worker.yielded.connect(
        lambda ev: isinstance(ev.payload, Preview) and previews.append(ev.payload.maps)
    )
    wait_job(train)
    qtbot.waitUntil(lambda: not train.preview.busy)
    _ok(train)
    assert "finished" in train.status.text()
    f = 1.0 / slide_a.metadata["pbip_mpp"]  # level-0 px per training px (1 um/px)
    region = previews[-1]["region"]  # the last preview, read from slide A in view
    assert region is not None and region["where"].layer == first.name
    for n, name in enumerate(loop.classes):
        cam = viewer.layers[slide_cam_layer_name(name)]
        np.testing.assert_array_equal(cam.data, np.rint(region["cams"][n].astype(np.float32) * 255))
        # in register with the slide: the training um/px in the slide's units, each CAM pixel centred
        # on the block of level-0 pixels it was read from (a whole number of training pixels from the corner)
        np.testing.assert_allclose(cam.scale, np.asarray(slide_a.scale) * f)
        assert tuple(map(str, cam.units)) == tuple(map(str, slide_a.units))
        corner = (np.asarray(cam.translate) - np.asarray(slide_a.translate)) / np.asarray(slide_a.scale) + 0.5
        offset = corner / f - 0.5  # region pixels from the slide's corner
        np.testing.assert_allclose(offset, np.round(offset), atol=1e-6)
        top, bottom = slide_a.extent.world[:, -2:], cam.extent.world[:, -2:]
        assert (bottom[0] >= top[0] - 1e-6).all() and (bottom[1] <= top[1] + 1e-6).all()  # over the slide
    assert "um/px of " + first.name in train.slide_label.text()

    # 4. Train segmenter: pseudo-masks from the run, then a tiny segmenter; Segment slide gets it
    seg, segment = w["Train segmenter"], w["Segment slide"]
    seg.run.set_path(out / "run")
    seg.run.line.editingFinished.emit()  # the run's data set is filled in from its model.json
    assert seg.dataset.path() == dataset
    seg.segmenter.setCurrentText("lite0-seg")
    seg.backbone.setCurrentText("tiny-backbone")
    seg.pretrained.setChecked(False)
    seg.crop_size.setValue(64)
    seg.batch_size.setValue(8)
    seg.epochs.setValue(loop.epochs_stage2)
    seg.device_box.setCurrentText("cpu")
    seg.out_edit.set_path(out / "segmenter")
    seg.start_button.click()
    wait_job(seg)
    _ok(seg)
    assert "finished" in seg.status.text()
    assert len(list((out / "run-pseudo").glob("*.png"))) == len(rows)  # a pseudo-mask per training tile
    assert segment.model.path() == out / "segmenter"  # offered to the docked Segment slide
    assert segment.mpp.value() == pytest.approx(1.0)  # at the resolution it was trained at

    # 5. Segment slide: queue both open slides into one folder
    segment.chunk.setValue(512)
    segment.batch.setValue(16)
    segment.device.setCurrentText("cpu")
    segment.slide_mpp_box.setValue(loop.slide_mpp)
    queued = [segment.queue.entries.item(i).text() for i in range(segment.queue.entries.count())]
    assert queued == [s.name for s in loop.slides]  # every open slide, ticked
    segment.queue.out.set_path(out / "cohort")
    segment.queue.run_button.click()
    wait_job(segment)
    _ok(segment)
    table = segment.queue.table
    assert [table.item(r, 1).text() for r in range(table.rowCount())] == ["done"] * len(loop.slides)
    loop.outputs["cohort"] = out / "cohort"

    # 6. the single-slide exports of slide A's result, through the buttons (their save dialogs answered)
    segment.slide_layer.setCurrentText(first.name)
    segment.out.set_path(out / "a.zarr")
    segment.run_button.click()
    wait_job(segment)
    _ok(segment)
    result = segment.layer  # over slide A: same corner and the same physical size, to one analysis pixel
    level0 = slide_a.data[0].shape[:2] if slide_a.multiscale else slide_a.data.shape[:2]
    np.testing.assert_allclose(result.translate, slide_a.translate)
    np.testing.assert_allclose(
        np.array(result.data.shape) * result.scale, np.array(level0) * slide_a.scale, atol=result.scale[0]
    )
    answers = iter([out / "a-fixed.geojson", out / "a-fixed.csv"])
    monkeypatch.setattr(
        segment_widget.QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(next(answers)), ""))
    )
    geojson_button, csv_button = segment.export_buttons[1], segment.export_buttons[2]
    assert geojson_button.isEnabled() and csv_button.isEnabled()
    geojson_button.click()
    wait_job(segment)
    _ok(segment)
    csv_button.click()
    wait_job(segment)
    _ok(segment)
    loop.outputs.update(geojson=out / "a-fixed.geojson", csv=out / "a-fixed.csv", labels=out / "a.zarr")
    return w


def check_outputs(loop: Loop) -> None:
    """What a user reads from the outputs: per slide a label image, an area table and QuPath annotations
    of the drawn classes, and one cohort table over both slides."""
    from shapely.geometry import shape

    from napari_pbip.export import open_labels

    cohort = loop.outputs["cohort"]
    names = [s.name.split(".")[0] for s in loop.slides]
    for name in names:
        store = open_labels(cohort / f"{name}.zarr")
        assert tuple(store.classes) == loop.classes
        areas = {r["class"]: r for r in csv.DictReader((cohort / f"{name}.csv").open())}
        assert set(areas) == {*loop.classes, "background"}
        tissue = sum(float(areas[c]["area_um2"]) for c in loop.classes)
        assert tissue > 0, areas
        features = json.loads((cohort / f"{name}.geojson").read_text())["features"]
        found = {f["properties"]["classification"]["name"] for f in features}
        assert found and found <= set(loop.classes), found  # QuPath classifications of the drawn classes
        area_px = sum(shape(f["geometry"]).area for f in features)  # level-0 px
        assert area_px > 0
    table = list(csv.DictReader((cohort / "cohort.csv").open()))
    assert {r["slide"] for r in table} == set(names)
    assert {r["class"] for r in table} == {*loop.classes, "background"}
    for name in names:
        shares = [float(r["percent_of_tissue"] or 0) for r in table if r["slide"] == name]
        assert sum(shares) == pytest.approx(100, abs=0.05)

    single = json.loads(loop.outputs["geojson"].read_text())["features"]
    assert single and {f["properties"]["classification"]["name"] for f in single} <= set(loop.classes)
    rows = {r["class"]: r for r in csv.DictReader(loop.outputs["csv"].open())}
    assert set(rows) == {*loop.classes, "background"} and sum(int(r["pixels"]) for r in rows.values()) > 0


# -- the synthetic slides (CI) -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_pair(tmp_path_factory):
    """Two small synthetic slides at 0.5 um/px: A (1024 px, with its ground truth) and B (512 px)."""
    from napari_pbip.synthetic.synth_slide import write_synthetic_slide

    folder = tmp_path_factory.mktemp("loop-slides")
    a = write_synthetic_slide(folder / "slide-a.tif", size=1024, seed=1)
    b = write_synthetic_slide(folder / "slide-b.tif", size=512, seed=2)
    return a, b


@pytest.mark.parametrize("regions_from", ["drawn shapes", "QuPath GeoJSON"])
def test_the_loop_on_synthetic_slides(
    regions_from, synthetic_pair, make_napari_viewer, tmp_path, wait_job, qtbot, monkeypatch
):
    import tifffile

    a, b = synthetic_pair
    slides = tmp_path / "slides"  # the user's own copies: a GeoJSON written beside one stays in this test
    slides.mkdir()
    paths = [Path(shutil.copy(s.slide, slides / s.slide.name)) for s in (a, b)]
    truth = tifffile.imread(a.labels)
    classes = ("tumor", "stroma")
    regions = {name: _windows(truth == a.classes.index(name), 256, 2) for name in classes}
    loop = Loop(paths, classes, regions, geojson=regions_from == "QuPath GeoJSON")
    viewer = make_napari_viewer(show=True)
    drive_loop(viewer, loop, tmp_path / "work", wait_job, qtbot, monkeypatch)
    check_outputs(loop)
    if not loop.geojson:  # the window at the end: slide, regions, segmentation and the five docks
        image = viewer.screenshot(str(tmp_path / "loop.png"), canvas_only=False)
        assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 1000  # drawn, not a blank window


# -- the shared real slides (skipped when ../shared is absent) ------------------------------------------

# regions chosen on the skin slide's thumbnail and checked at 1 um/px: the epidermis's dense purple
# keratinocytes, the dermis's pink collagen (level-0 px of CMU-1-Small-Region.svs, 0.499 um/px)
SKIN_REGIONS = {
    "epidermis": [(780, 1090, 1036, 1346), (1650, 1090, 1906, 1290)],
    "dermis": [(2560, 1000, 2816, 1256), (2000, 900, 2256, 1100)],
}


@pytest.mark.shared_data
def test_the_loop_on_the_shared_real_slides(
    shared_data, make_napari_viewer, tmp_path, wait_job, qtbot, monkeypatch
):
    """CMU-1-Small-Region.svs (0.499 um/px) with drawn regions, and the TCGA slide, which records no
    um/px: the widgets' "Slide um/px" (0.5) reads it."""
    folder = shared_data / "slides"
    slides = [folder / "CMU-1-Small-Region.svs", folder / "tcga-cr-7395-01a-01-ts1.svs"]
    loop = Loop(slides, ("epidermis", "dermis"), SKIN_REGIONS, slide_mpp=0.5)
    viewer = make_napari_viewer(show=True)
    drive_loop(viewer, loop, tmp_path / "work", wait_job, qtbot, monkeypatch)
    check_outputs(loop)
