"""All the plugin's dock widgets docked at once fit a 1920 x 1080 screen: the main window does not
grow past it and the canvas keeps a usable width; each widget's content scrolls instead."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.gui

SCREEN = (1920, 1080)
MIN_CANVAS_WIDTH = 800
PLUGIN = "napari-pbip"


def manifest_widgets() -> list[str]:
    """The display names of every widget the plugin's manifest contributes."""
    import napari_pbip

    manifest = yaml.safe_load((Path(napari_pbip.__file__).parent / "napari.yaml").read_text())
    return [w["display_name"] for w in manifest["contributions"]["widgets"]]


def settle(qtbot, ms: int = 300) -> None:
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    qtbot.wait(ms)


@pytest.fixture
def docked(make_napari_viewer, qtbot):
    """A shown napari window of the screen's size with every plugin widget docked."""
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(*SCREEN)
    settle(qtbot)
    assert (window.width(), window.height()) == SCREEN  # the window can be that big at all
    widgets = {}
    for name in manifest_widgets():
        _, widgets[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        settle(qtbot)
    settle(qtbot, 500)
    return viewer, widgets


def test_all_widgets_docked_fit_the_screen(docked):
    viewer, widgets = docked
    window = viewer.window._qt_window
    assert len(widgets) >= 3
    assert window.width() <= SCREEN[0] and window.height() <= SCREEN[1], (window.width(), window.height())
    assert window.minimumSizeHint().height() <= SCREEN[1]
    canvas = viewer.window._qt_viewer.canvas.native
    assert canvas.width() >= MIN_CANVAS_WIDTH, canvas.width()
    for name, widget in widgets.items():
        assert widget.isVisible() and widget.height() >= 100, (name, widget.height())  # a usable slice


def test_content_scrolls_instead_of_growing(docked):
    """A dock shorter than its content scrolls it vertically, and no form needs scrolling sideways."""
    from napari_pbip._widgets._dock import DockBody

    _, widgets = docked
    for name, widget in widgets.items():
        body = widget.findChild(DockBody)
        assert body is not None, f"{name} does not wrap its content in _dock.DockBody"
        assert not body.horizontalScrollBar().isVisible(), f"{name}'s content is wider than its dock"
        inner = body.widget().minimumSizeHint().height()
        if inner > body.viewport().height():
            bar = body.verticalScrollBar()
            assert bar.isVisible() and bar.maximum() > 0, name
