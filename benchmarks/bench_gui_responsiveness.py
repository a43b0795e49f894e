"""Benchmark the plugin's GUI: event-loop gaps during training and segmentation, and napari start cost.

Usage::

    python benchmarks/bench_gui_responsiveness.py                 # real backbone/encoder, in a private Xvfb
    python benchmarks/bench_gui_responsiveness.py --tiny          # tiny test models (fast smoke run)
    python benchmarks/bench_gui_responsiveness.py --only importtime
    python benchmarks/bench_gui_responsiveness.py --json out.json
    python benchmarks/bench_gui_responsiveness.py --only training --slide-previews   # CAMs over the slide

**Responsiveness.** A QTimer fires every 10 ms in the GUI thread while the "Train PBIP" widget
trains and while the "Segment slide" widget segments a synthetic slide (both through their normal
buttons, so every GUI-thread update the widgets make is included). The longest interval between
two firings, minus the 10 ms period, is the longest time the Qt event loop could not react to the
user. With ``--slide-previews`` the synthetic slide is open and zoomed in during training, every
preview also computes the CAMs over the part in view (the widget's default "slide in view and
patches"), and the camera pans to another place every few seconds, as a user looking around would;
``--slide-open`` does the same with patch previews only (what panning the slide costs by itself).
Target: under 200 ms on this CPU. Under Xvfb napari draws with Mesa's software OpenGL, so the
figures include canvas redraws on the CPU that a GPU-backed display does not pay.

**Start cost.** ``python -X importtime`` of a process that imports napari, discovers plugins and
opens a viewer (what ``napari`` does at start); the script sums the import time of every
``napari_pbip`` module in that log and times reading the plugin manifest. Target: under 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PERIOD_MS = 10
WINDOW = (1400, 900)  # napari window size (the canvas area drives software-OpenGL redraw cost)
TARGET_MS = 200.0
START_TARGET_S = 0.5
_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


# -- the probe ---------------------------------------------------------------------------------------


class GapProbe:
    """Records the intervals between firings of a QTimer in the GUI thread."""

    def __init__(self, period_ms: int = PERIOD_MS):
        from qtpy.QtCore import QTimer

        self.period = period_ms / 1000
        self.gaps: list[tuple[float, float]] = []  # (time the gap ended, gap)
        self._last: float | None = None
        self.timer = QTimer()
        self.timer.setInterval(period_ms)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.append((now, now - self._last))
        self._last = now

    def start(self) -> None:
        """Start recording."""
        self._last = None
        self.timer.start()

    def stop(self, warm: float | None = None) -> dict:
        """Stop; the longest and 99th-percentile stall (ms, period removed), also after ``warm`` (a time)."""
        import numpy as np

        self.timer.stop()

        def stats(gaps: list[float]) -> dict:
            g = np.array(gaps) - self.period if gaps else np.zeros(1)
            return {"max_stall_ms": round(1000 * float(g.max()), 1), "p99_stall_ms": round(1000 * float(np.percentile(g, 99)), 1),
                    "stalls_over_target": int((g * 1000 > TARGET_MS).sum())}  # fmt: skip

        out = {"ticks": len(self.gaps), **stats([g for _, g in self.gaps])}
        if warm is not None:
            out["after_first_layers"] = stats([g for t, g in self.gaps if t - g > warm])
        return out


class HandlerTimes:
    """Longest run of each named widget method in the GUI thread (the plugin's own work, without redraws)."""

    def __init__(self):
        self.longest: dict[str, float] = {}
        self._undo: list = []

    def watch(self, cls, *names: str) -> None:
        """Time every call of ``cls.<name>`` until :meth:`restore`."""
        for name in names:
            original = getattr(cls, name)

            def timed(*args, _f=original, _n=f"{cls.__name__}.{name}", **kwargs):
                t = time.perf_counter()
                try:
                    return _f(*args, **kwargs)
                finally:
                    self.longest[_n] = max(self.longest.get(_n, 0.0), time.perf_counter() - t)

            setattr(cls, name, timed)
            self._undo.append((cls, name, original))

    def report(self) -> dict:
        """Milliseconds per method, longest first; and restore the methods."""
        for cls, name, original in self._undo:
            setattr(cls, name, original)
        return {k: round(1000 * v, 1) for k, v in sorted(self.longest.items(), key=lambda kv: -kv[1])}


def redraw_ms(viewer, app, n: int = 5) -> float:
    """Median time of a forced canvas redraw of the current scene, with no job running."""
    import numpy as np

    times = []
    for _ in range(n):
        t = time.perf_counter()
        viewer.window._qt_viewer.canvas._scene_canvas.update()
        app.processEvents()
        times.append(time.perf_counter() - t)
    return round(1000 * float(np.median(times)), 1)


def wait(app, predicate, timeout_s: float) -> bool:
    """Run the event loop until ``predicate()`` or the timeout; True when the predicate came true."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        app.processEvents()
        if predicate():
            return True
        time.sleep(0.002)
    return False


# -- data and models (made by the library, outside the measurement) -----------------------------------


def prepare(work: Path, tiny: bool) -> dict:
    """Synthetic patches, a bank and a slide; returns their paths and the model names to use."""
    from napari_pbip.bank import BankSettings, build_bank
    from napari_pbip.events import run
    from napari_pbip.synthetic.synth import write_synthetic_dataset
    from napari_pbip.synthetic.synth_slide import write_synthetic_slide

    size = 64 if tiny else 224
    data = write_synthetic_dataset(work / "patches", n_train=40 if tiny else 80, n_val=4, n_test=0, size=size)
    encoder = "tiny-encoder" if tiny else "efficientnet_lite0"
    run(build_bank(BankSettings(encoder=encoder, k=2, per_cluster=5), data, work / "bank", device="cpu"))
    slide = write_synthetic_slide(work / "slide.tif", size=2048 if tiny else 4096, seed=3)
    return {
        "data": data,
        "bank": work / "bank",
        "slide": slide,
        "size": size,
        "backbone": "tiny-backbone" if tiny else "efficientnet_lite0",
    }


# -- phases ------------------------------------------------------------------------------------------------


PAN_EVERY_S = 4.0  # with --slide-previews: seconds between two pans of the camera


def open_slide_zoomed(viewer, app, slide: Path, view_um: float) -> None:
    """Open the slide with the plugin's reader and zoom in so the canvas spans ``view_um`` of tissue."""
    from napari_pbip._widgets._slide_cams import camera
    from napari_pbip._widgets.reader import slide_layer_data

    data, kwargs, _ = slide_layer_data(slide)
    viewer.add_image(data, **kwargs)
    camera(viewer).zoom = max(viewer.canvas.size) / view_um
    camera(viewer).center = (view_um, view_um)
    wait(app, lambda: False, 1.0)


def bench_training(
    viewer, app, prep: dict, work: Path, seconds: float, preview_every: int, slide: str = "none"
) -> dict:
    """Train from the widget for ``seconds`` (then Stop) with the probe running."""
    from napari_pbip._widgets import _preview, _slide_cams
    from napari_pbip._widgets.train_widget import ON_PATCHES, TrainWidget

    handlers = HandlerTimes()  # before the widget exists, so its timers call the timed methods
    handlers.watch(TrainWidget, "_on_event", "_refresh_view")
    handlers.watch(_preview.PreviewLayers, "show", "_apply_next")
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w, name="Train PBIP")
    w.dataset.set_path(prep["data"])
    w.bank.set_path(prep["bank"])
    w.out.set_path(work / "run")
    w.backbone.setCurrentText(prep["backbone"])
    w.image_size.setValue(prep["size"])
    w.batch_size.setValue(10)
    w.epochs.setValue(50)
    w.preview_every.setValue(preview_every)
    w.device_box.setCurrentText("cpu")
    slide_previews = slide == "previews"
    if slide != "none":
        # the view spans about 1.5 x 1 training tiles at the data set's 0.5 um/px (a cut of 6 at most)
        open_slide_zoomed(viewer, app, prep["slide"].slide, view_um=prep["size"] * 0.5 * 1.5)
        handlers.watch(TrainWidget, "_note_view")
    if not slide_previews:
        w.preview_on.setCurrentText(ON_PATCHES)
    probe = GapProbe()
    probe.start()
    t0 = time.perf_counter()
    w.start()
    warm = None
    pans, next_pan = 0, t0 + PAN_EVERY_S
    home = tuple(_slide_cams.camera(viewer).center[-2:])
    while time.perf_counter() - t0 < seconds and w.worker is not None:
        wait(app, lambda: False, 0.05)
        if slide != "none" and time.perf_counter() > next_pan:
            pans, next_pan = pans + 1, time.perf_counter() + PAN_EVERY_S
            cy, cx = home  # another place near the first, staying on the slide however long it runs
            _slide_cams.camera(viewer).center = (cy + 40.0 * (pans % 5), cx + 60.0 * (pans % 7))  # um
        if warm is None and w.last_preview is not None and not w.preview.busy:
            names = [_preview.PATCHES, _preview.FG, _preview.BG]
            names += [_preview.cam_layer_name(c) for c in w.last_preview.maps["classes"]]
            if slide_previews:
                names += [_slide_cams.slide_cam_layer_name(c) for c in w.last_preview.maps["classes"]]
            if all(n in viewer.layers for n in names):
                warm = time.perf_counter()  # every preview layer exists
    w.stop()
    if not wait(app, lambda: w.worker is None, 600):
        raise RuntimeError("training did not stop within 10 minutes")
    wait(app, lambda: not w.preview.busy, 30)
    result = probe.stop(warm)
    if w.status.is_error:
        raise RuntimeError(f"training failed: {w.status.text()}")
    result.update(steps=w.step, seconds=round(time.perf_counter() - t0, 1), preview_every=preview_every,
                  layers=len(viewer.layers), handler_ms=handlers.report(), redraw_ms_no_job=redraw_ms(viewer, app))  # fmt: skip
    if slide != "none":
        result.update(slide=slide, pans=pans)
    if slide_previews:
        region = w.last_preview.maps.get("region") if w.last_preview is not None else None
        result.update(slide_preview=w.slide_label.text(),
                      region_shape=None if region is None else list(region["cams"].shape))  # fmt: skip
    return result


def bench_segmentation(viewer, app, prep: dict, work: Path, mpp: float, chunk: int) -> dict:
    """Segment the synthetic slide from the widget with the model the training phase left."""
    from napari_pbip._widgets.reader import slide_layer_data
    from napari_pbip._widgets.segment_widget import SegmentWidget

    for layer in viewer.layers:  # the slide alone in view, as a user would have it
        layer.visible = False
    data, kwargs, _ = slide_layer_data(prep["slide"].slide)
    viewer.add_image(data, **kwargs)
    viewer.reset_view()
    wait(app, lambda: False, 1.0)
    handlers = HandlerTimes()
    handlers.watch(SegmentWidget, "_on_event", "_refresh_view", "_on_done")
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w, name="Segment slide")
    w.model.set_path(work / "run")
    w.mpp.setValue(mpp)
    w.chunk.setValue(chunk)
    w.device.setCurrentText("cpu")
    w.out.set_path(work / "seg.zarr")
    probe = GapProbe()
    probe.start()
    t0 = time.perf_counter()
    w.run()
    warm = None
    while w.worker is not None and time.perf_counter() - t0 < 1800:
        wait(app, lambda: False, 0.05)
        if warm is None and w.layer is not None:
            warm = time.perf_counter()
    if w.worker is not None:
        raise RuntimeError("segmentation did not finish within 30 minutes")
    result = probe.stop(warm)
    if w.status.is_error:
        raise RuntimeError(f"segmentation failed: {w.status.text()}")
    result.update(seconds=round(time.perf_counter() - t0, 1), layer_shape=list(w.layer.data.shape), chunks=w.chunks_done,
                  handler_ms=handlers.report(), redraw_ms_no_job=redraw_ms(viewer, app))  # fmt: skip
    return result


def responsiveness(args) -> dict:
    """Both measured phases in one viewer."""
    import napari
    from qtpy.QtWidgets import QApplication

    os.environ.setdefault("PBIP_DEVICE", "cpu")
    work = Path(tempfile.mkdtemp(prefix="pbip-bench-gui-"))
    try:
        prep = prepare(work, args.tiny)
        viewer = napari.Viewer(show=True)
        viewer.window.resize(*WINDOW)
        app = QApplication.instance()
        wait(app, lambda: False, 1.0)  # let the window settle
        out = {
            "training": bench_training(
                viewer, app, prep, work, args.train_seconds, args.preview_every, args.slide
            )
        }
        if args.only != "training":
            out["segmentation"] = bench_segmentation(viewer, app, prep, work, args.mpp, args.chunk)
        viewer.close()
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- start cost ------------------------------------------------------------------------------------------

_START = """
import napari
from napari.plugins import _initialize_plugins
from npe2 import PluginManager
_initialize_plugins()
assert "napari-pbip" in PluginManager.instance()._manifests, "napari-pbip was not discovered"
viewer = napari.Viewer(show=False)
viewer.close()
"""


def importtime() -> dict:
    """Import time of napari_pbip modules when napari starts, and the time to read the manifest."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", _START], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"napari start failed: {proc.stderr[-2000:]}")
    ours = {}
    total_us = 0
    for line in proc.stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if m:
            total_us += int(m.group(1))
            if m.group(4).startswith("napari_pbip"):
                ours[m.group(4)] = int(m.group(1))
    code = (
        "import time, npe2; t = time.perf_counter(); "
        "m = npe2.PluginManifest.from_distribution('napari-pbip'); print(time.perf_counter() - t)"
    )
    manifest = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    manifest_s = float(manifest.stdout.strip().splitlines()[-1])
    plugin_s = sum(ours.values()) / 1e6 + manifest_s
    return {
        "napari_start_imports_s": round(total_us / 1e6, 3),
        "napari_pbip_modules_imported_at_start": ours,
        "napari_pbip_import_s": round(sum(ours.values()) / 1e6, 4),
        "manifest_read_s": round(manifest_s, 4),
        "plugin_adds_s": round(plugin_s, 4),
        "target_s": START_TARGET_S,
    }


def widget_imports() -> dict:
    """Seconds to import each widget module in a napari session (paid when a widget is first opened)."""
    out = {}
    for module in ("bank_widget", "train_widget", "segment_widget", "reader", "sample_data", "writers"):
        code = (
            "import napari, napari.qt, napari.qt.threading, time; t = time.perf_counter(); "
            f"import napari_pbip._widgets.{module}; print(time.perf_counter() - t)"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        out[module] = (
            round(float(proc.stdout.strip().splitlines()[-1]), 3)
            if proc.returncode == 0
            else proc.stderr[-300:]
        )
    return out


# -- main ----------------------------------------------------------------------------------------------------


def _reexec_under_xvfb(use_display: bool) -> None:
    """Run this script again under its own Xvfb (same screen size every time) unless told otherwise."""
    if os.environ.get("PBIP_BENCH_XVFB") or (use_display and os.environ.get("DISPLAY")):
        return
    if shutil.which("xvfb-run") is None:
        raise SystemExit("no display and no xvfb-run: install xvfb or run under an X server")
    env = {**os.environ, "PBIP_BENCH_XVFB": "1"}
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, *sys.argv]
    raise SystemExit(subprocess.call(cmd, env=env))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--only",
        choices=("responsiveness", "training", "importtime"),
        help="run one part only (training: no segmentation)",
    )
    p.add_argument("--tiny", action="store_true", help="tiny test models and small data (smoke run)")
    p.add_argument("--train-seconds", type=float, default=45.0, help="training time measured before Stop")
    p.add_argument("--preview-every", type=int, default=5, help="training steps between CAM/FG-BG previews")
    p.add_argument(
        "--slide-previews", dest="slide", action="store_const", const="previews", default="none",
        help="train with the slide open, panned now and then, and previews over the part in view",
    )  # fmt: skip
    p.add_argument(
        "--slide-open", dest="slide", action="store_const", const="open",
        help="train with the slide open and panned now and then, patch previews only",
    )  # fmt: skip
    p.add_argument("--mpp", type=float, default=1.0, help="segmentation resolution (um/px)")
    p.add_argument("--chunk", type=int, default=512, help="segmentation chunk side (px)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--use-display", action="store_true", help="use $DISPLAY instead of a private Xvfb")
    args = p.parse_args(argv)
    _reexec_under_xvfb(args.use_display)
    import torch

    results: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                 "torch_threads": torch.get_num_threads(), "display": os.environ.get("DISPLAY")}}  # fmt: skip
    if args.only in (None, "importtime"):
        results["start"] = importtime()
        results["widget_import_s"] = widget_imports()
    if args.only in (None, "responsiveness", "training"):
        results["responsiveness"] = responsiveness(args)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
