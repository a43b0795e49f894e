"""The screenshots of docs/gui.md on two real slides: the own-slide loop driven through the widgets.

Run through ``python scripts/screenshots.py --slides DIR`` (DIR holds ``CMU-1-Small-Region.svs``
and ``tcga-cr-7395-01a-01-ts1.svs``, e.g. ``../shared/data/slides``). It opens both slides with the
plugin's reader, draws class regions on them as shapes in "Training data" (the head-and-neck slide
records no um/px: 0.5 is typed into *Slide um/px*), builds the data set, a bank in "Image bank"
(EfficientNet-Lite0), trains stage 1 in "Train PBIP" with the live CAM layers over the skin slide in
view, trains a segmenter on its pseudo-masks in "Train segmenter", and segments both slides in
"Segment slide" (one run on the skin slide, then the queue of both). Training is kept short (4
epochs of stage 1, 6 of stage 2 on about a hundred tiles: 40 + 78 steps) so the whole run takes
about 25 minutes on a loaded 2-core CPU. The PNGs are ``slides-*.png`` beside the synthetic ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from screenshots import PLUGIN, dock, focus_on_patches, new_viewer, save, settle, wait

SKIN = "CMU-1-Small-Region.svs"  # skin, H&E, 0.499 um/px
HEAD_NECK = "tcga-cr-7395-01a-01-ts1.svs"  # squamous cell carcinoma of the head and neck, no um/px
HEAD_NECK_MPP = 0.5  # typed into Slide um/px: the file records none
CLASSES = ("epithelium", "stroma", "keratin", "lymphocytes")
TILE = 96  # px at 1 um/px: the regions of these small slides hold a few dozen such tiles
STAGE1_EPOCHS = 4
STAGE2_EPOCHS = 6

# Class regions as a pathologist would draw them, in level-0 pixels (x, y), chosen by looking at the
# slides: on the skin slide the epidermis (squamous epithelium), the dermis (stroma) and the keratin
# in the cleft and on the surface of the epidermis; on the head-and-neck slide the squamous tumour
# nests (epithelium), the stroma between them and a dense lymphocytic infiltrate.
REGIONS = {
    SKIN: {
        "epithelium": [
            [(1040, 640), (1340, 620), (1360, 1000), (1200, 1120), (1040, 1100)],
            [(1060, 1140), (1230, 1120), (1290, 1500), (1300, 1800), (1240, 1960), (1180, 2200),
             (1120, 2320), (1070, 2260), (1040, 2000), (1040, 1500)],
            [(1580, 2460), (1740, 2280), (1800, 2400), (1780, 2960), (1540, 2960), (1560, 2680)],
            [(560, 2600), (700, 2520), (820, 2680), (800, 2960), (520, 2960)],
        ],
        "stroma": [
            [(1420, 1860), (1580, 1800), (1700, 1920), (1740, 2240), (1600, 2400), (1500, 2520),
             (1420, 2360), (1390, 2060)],
            [(900, 2400), (1380, 2360), (1420, 2600), (1180, 2680), (960, 2600)],
            [(820, 1500), (1010, 1460), (1020, 1960), (840, 2000)],
            [(840, 2640), (1060, 2620), (1080, 2960), (840, 2960)],
            [(840, 1060), (1045, 1060), (1045, 1460), (840, 1480)],
        ],
        "keratin": [[(1280, 1130), (1420, 1120), (1600, 1300), (1580, 1740), (1400, 1740), (1260, 1500)]],
    },
    HEAD_NECK: {
        "epithelium": [
            [(460, 960), (1140, 960), (1140, 1540), (460, 1540)],
            [(2900, 1250), (3500, 1250), (3500, 1600), (2900, 1600)],
            [(2400, 2000), (2650, 2000), (2650, 2450), (2400, 2450)],
            [(1640, 690), (2180, 690), (2180, 1090), (1640, 1090)],
            [(1450, 2420), (1950, 2420), (1950, 2820), (1450, 2820)],
            [(3250, 2600), (3650, 2600), (3650, 2950), (3250, 2950)],
            [(3750, 2850), (4200, 2850), (4200, 3300), (3750, 3300)],
        ],
        "stroma": [
            [(3250, 3330), (3400, 3350), (4080, 2720), (3980, 2640)],
            [(2700, 2650), (2750, 2780), (3600, 2380), (3550, 2250)],
            [(3860, 1260), (4140, 1260), (4140, 2000), (3860, 2000)],
        ],
        "lymphocytes": [
            [(830, 2650), (1450, 2650), (1450, 3110), (830, 3110)],
            [(2220, 1640), (2580, 1640), (2580, 2000), (2220, 2000)],
            [(1990, 1850), (2210, 1850), (2210, 2450), (1990, 2450)],
            [(2710, 620), (2990, 620), (2990, 1000), (2710, 1000)],
        ],
    },
}  # fmt: skip
SKIN_VIEW = (1550, 1300)  # level-0 (y, x) the stage-1 shot centres on: epidermis, dermis and keratin meet


def open_slides(viewer, slides: Path, names: tuple[str, ...] = (SKIN, HEAD_NECK)) -> dict[str, object]:
    """Open the slides with the plugin's reader (File > Open, choosing napari-pbip); their layers by name."""
    for name in names:
        viewer.open(str(slides / name), plugin=PLUGIN)
    return {name: viewer.layers[name] for name in names}


def show_only(viewer, app, layer, *also) -> None:
    """Hide every other layer and fit the view to ``layer`` (the two slides lie in different units)."""
    from napari_pbip._widgets._slide_cams import camera

    for other in viewer.layers:
        other.visible = other is layer or other in also
    viewer.layers.selection.active = layer
    h, w = (layer.data[0] if layer.multiscale else layer.data).shape[:2]
    sy, sx = layer.scale[-2:]
    cam = camera(viewer)
    cam.center = (sy * h / 2, sx * w / 2)
    cw, ch = viewer.canvas.size[1], viewer.canvas.size[0]
    cam.zoom = 0.95 * min(cw / (sx * w), ch / (sy * h))
    settle(app, 0.5)


def shoot_training_data(viewer, app, slides: Path, work: Path, out: Path, width: int) -> None:
    """Draw the class regions on both slides as shapes, then Build the data set; one picture per slide."""
    layers = open_slides(viewer, slides)
    w = dock(viewer, "Training data")
    w.classes.setText(", ".join(CLASSES))
    w.classes.editingFinished.emit()
    drawn = {}
    for row, (name, regions) in enumerate(REGIONS.items()):
        w.table.selectRow(row)
        layer = w.new_regions_layer()
        for cls, polygons in regions.items():
            w.draw_class.setCurrentText(cls)
            for xy in polygons:
                layer.add_polygons([np.array([(y, x) for x, y in xy], float)])
        drawn[name] = layer
    w.tile.setValue(TILE)
    w.slide_mpp.setValue(HEAD_NECK_MPP)
    w.out.set_path(work / "data")
    w.build()
    wait(app, lambda: w.worker is None, 900, "the training data build")
    if w.status.is_error:
        raise RuntimeError(w.status.text())
    print("training data:", w.result.text())
    show_only(viewer, app, layers[SKIN], drawn[SKIN])
    save(viewer, app, out / "slides-training-data.png", width)
    show_only(viewer, app, layers[HEAD_NECK], drawn[HEAD_NECK])
    save(viewer, app, out / "slides-training-data-head-neck.png", width)


def shoot_bank(viewer, app, slides: Path, work: Path, out: Path, width: int) -> None:
    """Build the bank of the data set with EfficientNet-Lite0 (K=2 sub-clusters of 2 tiles per class)."""
    skin = open_slides(viewer, slides, (SKIN,))[SKIN]
    w = dock(viewer, "Image bank")
    w.dataset.set_path(work / "data")
    w.encoder.setCurrentText("efficientnet_lite0")
    w.k.setValue(2)
    w.per_cluster.setValue(2)
    w.out.set_path(work / "bank")
    w.build()
    wait(app, lambda: w.worker is None, 900, "the bank build")
    if w.status.is_error:
        raise RuntimeError(w.status.text())
    show_only(viewer, app, skin)
    save(viewer, app, out / "slides-bank.png", width)


def shoot_train(viewer, app, slides: Path, work: Path, out: Path, width: int) -> None:
    """Train stage 1 with the skin slide zoomed in: live CAMs over the part in view; then the patches."""
    from napari_pbip._widgets._slide_cams import camera, slide_cam_layer_name
    from napari_pbip._widgets.train_widget import ON_SLIDE_AND_PATCHES

    skin = open_slides(viewer, slides, (SKIN,))[SKIN]
    w = dock(viewer, "Train PBIP")
    w.dataset.set_path(work / "data")
    w.bank.set_path(work / "bank")
    w.out.set_path(work / "run")
    w.backbone.setCurrentText("efficientnet_lite0")
    w.image_size.setValue(TILE)
    w.epochs.setValue(STAGE1_EPOCHS)
    w.batch_size.setValue(10)
    w.preview_every.setValue(8)
    w.preview_on.setCurrentText(ON_SLIDE_AND_PATCHES)
    w.device_box.setCurrentText("cpu")
    settle(app, 0.5)
    cam = camera(viewer)
    cam.center = (skin.scale[0] * SKIN_VIEW[0], skin.scale[1] * SKIN_VIEW[1])
    cam.zoom = viewer.canvas.size[1] / (TILE * 3 * 1.15)  # the canvas spans 3 tiles of 96 um
    viewer.layers.selection.active = skin
    w.start()
    wait(app, lambda: w.worker is None, 3600, "stage-1 training")
    if w.status.is_error:
        raise RuntimeError(w.status.text())
    classes = w.last_preview.maps["classes"]
    if not all(slide_cam_layer_name(c) in viewer.layers for c in classes):
        raise RuntimeError(f"no slide CAM layers: {w.slide_label.text()}")
    print("stage 1:", w.metrics_label.text(), "|", w.slide_label.text())
    save(viewer, app, out / "slides-train-slide.png", width)
    for layer in [x for x in viewer.layers if x is skin or x.name.startswith("PBIP slide ")]:
        viewer.layers.remove(layer)  # the view fits the preview patches alone
    focus_on_patches(viewer, app)
    save(viewer, app, out / "slides-train.png", width)


def shoot_seg_train(viewer, app, work: Path, out: Path, width: int) -> None:
    """Pseudo-masks of the stage-1 run over their tiles, then a short segmenter training;
    Segment slide, docked beside it, is offered the new segmenter."""
    segment = dock(viewer, "Segment slide")
    w = dock(viewer, "Train segmenter")
    w.run.set_path(work / "run")
    w.masks.set_path(work / "run-pseudo")
    w.crop_size.setValue(TILE)
    w.epochs.setValue(STAGE2_EPOCHS)
    w.device_box.setCurrentText("cpu")
    w.out_edit.set_path(work / "seg")
    w.start()
    wait(app, lambda: w.worker is None, 3600, "the segmenter training")
    if w.status.is_error:
        raise RuntimeError(w.status.text())
    if segment.model.path() != work / "seg":
        raise RuntimeError(f"Segment slide was not offered the new segmenter: {segment.model.path()}")
    viewer.window.remove_dock_widget(segment)  # offered (checked above); the curves get the height
    settle(app, 0.5)
    scroll_to_end(w)
    viewer.reset_view()
    save(viewer, app, out / "slides-seg-train.png", width)


def scroll_to_end(widget) -> None:
    """Scroll a widget's dock body (it scrolls in its dock) down to its last rows: the curves."""
    from napari_pbip._widgets._dock import DockBody

    for body in widget.findChildren(DockBody):
        body.verticalScrollBar().setValue(body.verticalScrollBar().maximum())


def shoot_segment(viewer, app, slides: Path, work: Path, out: Path, width: int) -> None:
    """Segment the skin slide (filling in), then queue the folder of both slides; the skin slide's
    queue result over it. (The head-and-neck result of so short a training is not shown: docs/gui.md
    says why.)"""
    skin = open_slides(viewer, slides, (SKIN,))[SKIN]
    w = dock(viewer, "Segment slide")
    w.offer_model(work / "seg")
    w.slide_mpp_box.setValue(HEAD_NECK_MPP)
    w.chunk.setValue(256)
    w.device.setCurrentText("cpu")
    w.out.set_path(work / "skin.pbip.zarr")
    show_only(viewer, app, skin)
    w.run()
    wait(app, lambda: w.chunks_done >= 8 or w.worker is None, 1800, "the first chunks")
    show_only(viewer, app, skin, w.layer)
    save(viewer, app, out / "slides-segment-running.png", width)
    wait(app, lambda: w.worker is None, 1800, "the segmentation")
    if w.status.is_error:
        raise RuntimeError(w.status.text())
    print("segment:", w.status.text())
    viewer.layers.remove(w.layer)
    w.chunk.setValue(1024)
    w.queue.entries.item(0).setCheckState(Qt.CheckState.Unchecked)  # the folder holds it too
    w.queue.add_folder(slides)
    w.queue.out.set_path(work / "cohort")
    w.queue.run()
    wait(app, lambda: w.worker is None, 1800, "the queue")
    if w.status.is_error:
        raise RuntimeError(w.status.text())
    print("queue:", w.status.text())
    names = [w.queue.table.item(r, 0).text() for r in range(w.queue.table.rowCount())]
    (result,) = w.queue.open_result(names.index(SKIN))
    show_only(viewer, app, skin, result)
    scroll_to_end(w)
    save(viewer, app, out / "slides-segment.png", width)


def run(args: argparse.Namespace, work: Path) -> None:
    """Take the shots in order (each uses what the one before made), each in a fresh window."""
    slides = args.slides.resolve()
    missing = [n for n in REGIONS if not (slides / n).is_file()]
    if missing:
        raise SystemExit(f"--slides {slides}: missing {', '.join(missing)}")
    shots = {
        "training-data": lambda v, a: shoot_training_data(v, a, slides, work, args.out, args.width),
        "bank": lambda v, a: shoot_bank(v, a, slides, work, args.out, args.width),
        "train": lambda v, a: shoot_train(v, a, slides, work, args.out, args.width),
        "seg-train": lambda v, a: shoot_seg_train(v, a, work, args.out, args.width),
        "segment": lambda v, a: shoot_segment(v, a, slides, work, args.out, args.width),
    }
    for name, shoot in shots.items():
        if args.only and name not in args.only:
            continue
        viewer, app = new_viewer()
        shoot(viewer, app)
        viewer.close()
        settle(app, 0.5)
