"""``pbip demo --view``: the demo's slide, ground truth and segmentations in napari, widgets docked
and pointed at the demo's data set, bank and models, so every step can be redone from the GUI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WIDGETS = ("Image bank", "Train PBIP", "Segment slide")


def open_demo(viewer: Any, out: str | Path) -> dict[str, Any]:
    """Show a finished demo folder in ``viewer``; returns the docked widgets by display name.

    Raises:
        FileNotFoundError: ``out`` holds no finished demo (no ``summary.json``).
    """
    import tifffile

    from ._labels import ClassMap, as_label_values, layer_kwargs
    from ._napari_private import add_layer_data
    from .reader import labels_layer_data, read_slide

    out = Path(out)
    if not (out / "summary.json").is_file():
        raise FileNotFoundError(
            f"{out} holds no finished demo (no summary.json); run `pbip demo --out {out}` first"
        )
    for data, kwargs, kind in read_slide(str(out / "slide.tif")):
        add_layer_data(viewer, data, kwargs, kind)
    truth = out / "slide.labels.tif"
    if truth.is_file():
        with tifffile.TiffFile(truth) as tif:
            meta = json.loads(tif.pages[0].description)
            labels = tif.asarray()
        cm = ClassMap(
            tuple(meta["classes"]), tuple(map(tuple, meta["palette"])), int(meta["background_index"])
        )
        cm, labels = as_label_values(cm, labels)  # as the segmentations: 0 is background
        kwargs = layer_kwargs(cm, meta["mpp"], meta["mpp"], "ground truth")
        viewer.add_labels(labels, **{**kwargs, "opacity": 0.4, "visible": False})
    for name in ("stage1-baseline", "stage1-pbip", "stage2"):  # stage 2 ends on top
        path = out / f"slide-{name}.zarr"
        if path.is_dir():
            data, kwargs, _ = labels_layer_data(path)
            kwargs.update(name=f"segmentation ({name})", visible=name == "stage2", opacity=0.5)
            viewer.add_labels(data, **kwargs)
    widgets = {name: viewer.window.add_plugin_dock_widget("napari-pbip", name)[1] for name in WIDGETS}
    bank, train, segment = (widgets[n] for n in WIDGETS)
    bank.dataset.set_path(out / "data")
    bank.out.set_path(out / "bank")
    bank.open()  # the demo's prototypes in the grid
    train.dataset.set_path(out / "data")
    train.bank.set_path(out / "bank")
    train.out.set_path(out / "run-gui")  # a new run: the demo's own runs stay as they are
    segment.model.set_path(out / "seg")
    segment.model.line.editingFinished.emit()  # as if typed: the model's um/px fills the resolution
    viewer.reset_view()
    return widgets


def show_demo(out: str | Path) -> None:
    """Open a finished demo folder in napari and block until the window closes."""
    import napari

    out = Path(out)
    from qtpy.QtCore import QTimer

    viewer = napari.Viewer(title=f"napari-pbip demo: {out}")
    open_demo(viewer, out)
    QTimer.singleShot(200, viewer.reset_view)  # again once Qt has laid out the docks: the whole slide fits
    napari.run()
