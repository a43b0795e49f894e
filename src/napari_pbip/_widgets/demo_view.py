"""``pbip demo --view``: the demo's slide, ground truth and segmentation in napari, widgets docked."""

from __future__ import annotations

from pathlib import Path


def show_demo(out: str | Path) -> None:
    """Open a finished demo folder in napari and block until the window closes."""
    import napari

    from .reader import read_slide

    out = Path(out)
    viewer = napari.Viewer(title=f"napari-pbip demo: {out}")
    for data, kwargs, kind in read_slide(str(out / "slide.tif")):
        viewer._add_layer_from_data(data, kwargs, kind)
    labels = out / "slide-stage2.zarr"
    if labels.exists():
        viewer.open(str(labels), plugin="napari-pbip")
    for name in ("Image bank", "Train PBIP", "Segment slide"):
        viewer.window.add_plugin_dock_widget("napari-pbip", name)
    napari.run()
