"""Imports napari makes the first time a Labels layer is created, done in the background once a
plugin widget opens, so that they do not land in the GUI thread in the middle of a job.

napari builds pint's unit registry on the first layer (about 0.5 s here), and imports pandas (the
layer's features table), scipy.linalg / scipy.ndimage and parts of scikit-image lazily on the
first Labels layer. Under Xvfb on the 2-core development machine the
first ``add_labels`` of a 2048 px result took 464 ms cold and 253 ms with these modules imported
beforehand (the rest is vispy building the layer's visuals, paid per layer). The first Labels
layer also makes vispy compute its line dash patterns (about 0.13 s), cached once made.
"""

from __future__ import annotations

import importlib
import threading

MODULES = (
    "pandas",
    "scipy.linalg",
    "scipy.ndimage",
    "skimage.color",
    "skimage.draw",
    "skimage.exposure",
    "skimage.measure",
    "skimage.segmentation",
    "skimage.util",
)
_lock = threading.Lock()
_started = False


def warm_up() -> None:
    """Build pint's unit registry here, then start importing :data:`MODULES` in a daemon thread
    (once per process).

    The registry is built in the calling (GUI) thread: pint's lazy registry is not thread-safe, and
    built in the background it raced the GUI thread's first layer, which then failed with
    ``UndefinedUnitError: 'pixel' is not defined`` (tests/_qt/test_train_widget.py, now and then).
    """
    global _started
    with _lock:
        if _started:
            return
        _started = True
    try:
        import pint

        pint.get_application_registry().Unit("pixel")  # the registry parses its definitions on first use
    except Exception:  # an optimisation only: napari builds what it needs itself
        pass
    threading.Thread(target=_import_all, name="pbip-warm-up", daemon=True).start()


def _import_all() -> None:
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception:
            pass
    try:  # vispy's dash patterns, computed (and cached) when the first line visual is made
        from vispy.visuals.line.dash_atlas import DashAtlas

        DashAtlas()
    except Exception:
        pass
