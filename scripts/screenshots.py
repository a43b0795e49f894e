"""Retake the screenshots of the dock widgets in use (docs/screenshots/*.png).

Usage::

    python scripts/screenshots.py                # real models (EfficientNet-Lite0), a few minutes on a CPU
    python scripts/screenshots.py --quick        # tiny test models: checks the flow, pictures less telling
    python scripts/screenshots.py --out /tmp/shots
    python scripts/screenshots.py --only training-data   # one picture (names: see SHOTS)
    python scripts/screenshots.py --slides ../shared/data/slides   # the real slides (slides-*.png)

The script starts its own Xvfb (a fixed screen, so pictures do not depend on the desktop), opens
napari, docks each widget through the plugin manifest (Plugins menu entries) and drives it with its
own buttons on data the package makes offline: the synthetic slide and patch set (sample data),
class regions drawn on the slide and built into a data set in "Training data", a bank built in the
"Image bank" widget, a stage-1 run trained in "Train PBIP", a segmenter trained on that run's
pseudo-masks in "Train segmenter", and that run segmenting the slide in "Segment slide". Each PNG
shows the whole window, scaled to ``--width``. With ``--slides DIR`` it runs the same loop on two
real slides instead (scripts/slide_shots.py says which and how).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WINDOW = (1560, 980)
PLUGIN = "napari-pbip"


def wait(app, predicate, timeout_s: float, what: str = "") -> None:
    """Run the Qt event loop until ``predicate()``; raise after ``timeout_s`` seconds."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        app.processEvents()
        if predicate():
            return
        time.sleep(0.01)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what or predicate}")


def settle(app, seconds: float = 1.0) -> None:
    """Let layouts, slicing and drawing finish."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def save(viewer, app, path: Path, width: int) -> None:
    """Screenshot of the whole window, scaled to ``width`` px, as a 256-colour PNG (small for the docs)."""
    from PIL import Image

    settle(app, 1.5)
    image = Image.fromarray(viewer.screenshot(canvas_only=False, flash=False)).convert("RGB")
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
    image = image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


def dock(viewer, name: str):
    """Open the plugin's widget ``name`` as a user would (Plugins menu); return the widget."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def prepare(work: Path, quick: bool) -> dict:
    """Sample data in ``work`` (the same functions the Open Sample menu runs)."""
    os.environ["PBIP_SAMPLE_DIR"] = str(work / "samples")
    from napari_pbip._widgets import sample_data

    if quick:
        sample_data.PATCHES = {"n_train": 60, "n_val": 8, "n_test": 0, "size": 96}
    return {
        "patches": sample_data.cached_patches(),
        "encoder": "tiny-encoder" if quick else "efficientnet_lite0",
        "backbone": "tiny-backbone" if quick else "efficientnet_lite0",
        "size": 96 if quick else 224,
    }


def _majority_box(truth, value: int, side: int) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) of the ``side`` px window of ``truth`` (on a grid of side/2) most covered by ``value``."""
    best, where = -1.0, (0, 0)
    for y in range(0, truth.shape[0] - side + 1, side // 2):
        for x in range(0, truth.shape[1] - side + 1, side // 2):
            share = float((truth[y : y + side, x : x + side] == value).mean())
            if share > best:
                best, where = share, (y, x)
    return where[0], where[1], where[0] + side, where[1] + side


def shoot_training_data(viewer, app, work: Path, out: Path, width: int) -> None:
    """Draw a region per class on the synthetic slide (where its ground truth shows that class) and a
    fully annotated val area, then build the data set in the "Training data" widget."""
    import numpy as np

    viewer.open_sample(PLUGIN, "synthetic_slide")
    truth = next(layer for layer in viewer.layers if layer.name.endswith("ground truth"))
    labels = np.asarray(truth.data[0] if truth.multiscale else truth.data)
    w = dock(viewer, "Training data")
    w.classes.setText("tumor, stroma, lymphocyte, necrosis")
    w.classes.editingFinished.emit()
    regions = w.new_regions_layer()
    for value, name in enumerate(("tumor", "stroma", "lymphocyte", "necrosis"), start=1):
        y0, x0, y1, x1 = _majority_box(labels, value, 512)
        w.draw_class.setCurrentText(name)
        regions.add_rectangles(np.array([[y0, x0], [y1, x1]], float))
    w.tile.setValue(112)
    w.out.set_path(work / "from-slides")
    w.build()
    wait(app, lambda: w.worker is None, 600, "the training data build")
    if w.status.is_error:
        raise RuntimeError(w.status.text())
    viewer.layers.selection.active = viewer.layers[0]
    viewer.reset_view()
    save(viewer, app, out / "training-data.png", width)


def shoot_bank(viewer, app, prep: dict, work: Path, out: Path, width: int) -> None:
    """Build a bank in the widget, select thumbnails, warn about similar classes."""
    viewer.open_sample(PLUGIN, "synthetic_patches")
    viewer.layers["synthetic patch masks"].visible = False  # show the H&E patch the bank can take
    w = dock(viewer, "Image bank")
    w.dataset.set_path(prep["patches"])
    w.encoder.setCurrentText(prep["encoder"])
    w.k.setValue(3)
    w.per_cluster.setValue(6)
    w.out.set_path(work / "bank")
    w.build()
    wait(app, lambda: w.worker is None, 900, "the bank build")
    if w.status.is_error:
        raise RuntimeError(w.status.text())
    w.grid.select_ids(w.grid.shown_ids("tumor")[:2])
    w.move_class.setCurrentText("necrosis")
    viewer.reset_view()
    save(viewer, app, out / "bank.png", width)
    viewer.window.remove_dock_widget(w)


def shoot_train(viewer, app, prep: dict, work: Path, out: Path, width: int, steps: int) -> None:
    """Train in the widget until ``steps`` steps have run, then Stop; CAM and FG/BG layers on show."""
    w = dock(viewer, "Train PBIP")
    w.dataset.set_path(prep["patches"])
    w.bank.set_path(work / "bank")
    w.out.set_path(work / "run")
    w.backbone.setCurrentText(prep["backbone"])
    w.image_size.setValue(prep["size"])
    w.epochs.setValue(20)
    w.preview_every.setValue(5)
    w.device_box.setCurrentText("cpu")
    w.start()
    wait(app, lambda: w.step >= steps or w.worker is None, 3600, f"{steps} training steps")
    w.stop()
    wait(app, lambda: w.worker is None and not w.preview.busy, 900, "training to stop")
    if w.status.is_error:
        raise RuntimeError(w.status.text())
    focus_on_patches(viewer, app)
    save(viewer, app, out / "train.png", width)
    viewer.window.remove_dock_widget(w)


def shoot_train_slide(viewer, app, prep: dict, work: Path, out: Path, width: int, steps: int) -> None:
    """Resume the run with the synthetic slide zoomed in: live CAMs over the part in view, then Stop."""
    from napari_pbip._widgets._slide_cams import camera, slide_cam_layer_name
    from napari_pbip._widgets.train_widget import ON_SLIDE

    viewer.open_sample(PLUGIN, "synthetic_slide")
    slide = next(layer for layer in viewer.layers if layer.metadata.get("pbip_slide"))
    h, w = slide.level_shapes[0][:2] if slide.multiscale else slide.data.shape[:2]
    cam = camera(viewer)
    cam.center = (slide.scale[0] * h * 0.45, slide.scale[1] * w * 0.55)  # um, on tissue
    cam.zoom = viewer.canvas.size[1] / (prep["size"] * 0.5 * 3)  # the canvas spans 3 tiles at 0.5 um/px
    w_ = dock(viewer, "Train PBIP")
    w_.dataset.set_path(prep["patches"])
    w_.bank.set_path(work / "bank")
    w_.out.set_path(work / "run")
    w_.resume.setChecked(True)
    w_.epochs.setValue(40)
    w_.preview_every.setValue(5)
    w_.preview_on.setCurrentText(ON_SLIDE)
    w_.device_box.setCurrentText("cpu")
    w_.start()
    wait(app, lambda: w_.last_preview is not None or w_.worker is None, 3600, "a slide preview")
    start = w_.step
    wait(app, lambda: w_.step >= start + steps or w_.worker is None, 3600, f"{steps} more steps")
    w_.stop()
    wait(app, lambda: w_.worker is None and not w_.preview.busy, 900, "training to stop")
    if w_.status.is_error:
        raise RuntimeError(w_.status.text())
    classes = w_.last_preview.maps["classes"]
    if not all(slide_cam_layer_name(c) in viewer.layers for c in classes):
        raise RuntimeError(f"no slide CAM layers: {w_.slide_label.text()}")
    save(viewer, app, out / "train-slide.png", width)
    viewer.window.remove_dock_widget(w_)


def shoot_seg_train(viewer, app, prep: dict, work: Path, out: Path, width: int) -> None:
    """Pseudo-masks of the stage-1 run over their images, then a segmenter trained on them to the end;
    Segment slide, docked beside it, gets the new segmenter."""
    segment = dock(viewer, "Segment slide")
    w = dock(viewer, "Train segmenter")
    w.run.set_path(work / "run")
    w.masks.set_path(work / "run-pseudo")
    w.backbone.setCurrentText(prep["backbone"])
    w.crop_size.setValue(prep["size"])
    w.epochs.setValue(3)
    w.device_box.setCurrentText("cpu")
    w.out_edit.set_path(work / "seg")
    w.start()
    wait(app, lambda: w.worker is None, 3600, "the segmenter training")
    if w.status.is_error:
        raise RuntimeError(w.status.text())
    if segment.model.path() != work / "seg":
        raise RuntimeError(f"Segment slide was not offered the new segmenter: {segment.model.path()}")
    viewer.reset_view()
    save(viewer, app, out / "seg-train.png", width)
    viewer.window.remove_dock_widget(w)


def focus_on_patches(viewer, app) -> None:
    """Frame the preview patches with their CAMs and the FG images beside them."""
    from napari_pbip._widgets._preview import GAP, PATCHES

    viewer.reset_view()
    settle(app, 0.5)
    layer = viewer.layers[PATCHES]
    h, w = layer.data.shape[:2]
    sy, sx = layer.scale[-2:]  # in um when the patches record their um/px
    scene = getattr(viewer, "scene", None)  # napari >= 0.9 moved the camera to viewer.scene
    camera = scene.camera if scene is not None else viewer.camera
    camera.center = (sy * h / 2, sx * (w + 2 * GAP))
    camera.zoom = camera.zoom * 1.45


def shoot_segment(viewer, app, work: Path, out: Path, width: int) -> None:
    """Segment the synthetic slide with the run just trained; the result over the slide, areas listed."""
    viewer.open_sample(PLUGIN, "synthetic_slide")
    w = dock(viewer, "Segment slide")
    w.model.set_path(work / "run")
    w.mpp.setValue(0.5)  # the scan's resolution, the scale the synthetic patches were drawn at
    w.chunk.setValue(1024)
    w.device.setCurrentText("cpu")
    w.out.set_path(work / "slide.pbip.zarr")
    viewer.reset_view()
    w.run()
    wait(app, lambda: w.chunks_done >= 6 or w.worker is None, 1800, "the first chunks")
    viewer.reset_view()
    save(viewer, app, out / "segment-running.png", width)
    wait(app, lambda: w.worker is None, 3600, "the segmentation")
    if w.status.is_error:
        raise RuntimeError(w.status.text())
    viewer.reset_view()
    save(viewer, app, out / "segment.png", width)


def new_viewer():
    """A fresh napari window of the screenshot size (each widget is shown in its own window)."""
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window.resize(*WINDOW)
    app = QApplication.instance()
    settle(app, 1.0)
    return viewer, app


def run(args: argparse.Namespace) -> None:
    """Take every screenshot; later shots use what the earlier ones made (bank, then trained run)."""
    os.environ.setdefault("PBIP_DEVICE", "cpu")
    work = args.work or Path(tempfile.mkdtemp(prefix="pbip-shots-"))
    try:
        if args.slides:
            from slide_shots import run as run_on_slides

            run_on_slides(args, work)
            return
        prep = prepare(work, args.quick)
        shots = {
            "training-data": lambda viewer, app: shoot_training_data(viewer, app, work, args.out, args.width),
            "bank": lambda viewer, app: shoot_bank(viewer, app, prep, work, args.out, args.width),
            "train": lambda viewer, app: shoot_train(
                viewer, app, prep, work, args.out, args.width, args.steps
            ),
            "train-slide": lambda viewer, app: shoot_train_slide(
                viewer, app, prep, work, args.out, args.width, 10
            ),
            "seg-train": lambda viewer, app: shoot_seg_train(viewer, app, prep, work, args.out, args.width),
            "segment": lambda viewer, app: shoot_segment(viewer, app, work, args.out, args.width),
        }
        for name, shoot in shots.items():
            if args.only and name not in args.only:
                continue
            viewer, app = new_viewer()
            shoot(viewer, app)
            viewer.close()
            settle(app, 0.5)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="folder for the PNGs")
    p.add_argument("--quick", action="store_true", help="tiny test models (fast; for checking the script)")
    p.add_argument("--steps", type=int, default=60, help="training steps before the training screenshot")
    p.add_argument("--width", type=int, default=1200, help="width of the saved PNGs in pixels")
    p.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="take only these shots (training-data, bank, train, train-slide, seg-train, "
        "segment; train needs bank, the later ones need train)",
    )
    p.add_argument(
        "--slides",
        type=Path,
        metavar="DIR",
        help="take the slides-*.png shots on the real slides in DIR instead (only names: training-data, "
        "bank, train, seg-train, segment)",
    )
    p.add_argument("--work", type=Path, help="keep the intermediate data here (default: a temporary folder)")
    p.add_argument("--use-display", action="store_true", help="use $DISPLAY instead of a private Xvfb")
    args = p.parse_args(argv)
    if not (os.environ.get("PBIP_SHOTS_XVFB") or (args.use_display and os.environ.get("DISPLAY"))):
        if shutil.which("xvfb-run") is None:
            raise SystemExit("no xvfb-run: install xvfb (Debian: xvfb xauth), or pass --use-display")
        cmd = [
            "xvfb-run",
            "-a",
            "-s",
            f"-screen 0 {WINDOW[0] + 40}x{WINDOW[1] + 60}x24",
            sys.executable,
            *sys.argv,
        ]
        return subprocess.call(cmd, env={**os.environ, "PBIP_SHOTS_XVFB": "1"})
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
