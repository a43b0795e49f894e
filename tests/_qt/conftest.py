"""Fixtures for the widget tests: tiny synthetic data, a tiny bank, a tiny trained model, a small slide.

Everything is made once per session in a temporary folder with the library's own functions and
the tiny test models, so the widget tests only exercise the widgets.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PBIP_DEVICE", "cpu")

JOB_TIMEOUT_MS = 120_000


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pbip-gui")


@pytest.fixture(scope="session")
def dataset(session_dir) -> Path:
    """40 weakly labelled 64 px training patches (about 16 single-class), 4 masked val patches."""
    from napari_pbip.synthetic.synth import write_synthetic_dataset

    return write_synthetic_dataset(session_dir / "patches", n_train=40, n_val=4, n_test=0, size=64)


def bank_settings(**changes):
    from napari_pbip.bank import BankSettings

    return BankSettings(**{"encoder": "tiny-encoder", "k": 2, "per_cluster": 2, "batch_size": 8, **changes})


@pytest.fixture(scope="session")
def built_bank(session_dir, dataset) -> Path:
    """A tiny-encoder bank of the data set (K=2, 2 images per sub-cluster), built by the library."""
    from napari_pbip.bank import build_bank
    from napari_pbip.events import run

    out = session_dir / "bank"
    run(build_bank(bank_settings(), dataset, out, device="cpu"))
    return out


def tiny_train_settings(**changes):
    from napari_pbip.stage1 import TrainSettings

    base = dict(backbone="tiny-backbone", pretrained=False, image_size=64, match_size=32, batch_size=8,
                epochs=1, preview_every=2, n_preview=4, device="cpu")  # fmt: skip
    return TrainSettings(**{**base, **changes})


@pytest.fixture(scope="session")
def trained_model(session_dir, dataset, built_bank) -> Path:
    """A stage-1 run (tiny backbone, one epoch) trained by the library: a model folder for segmentation."""
    from napari_pbip._widgets._triton_guard import guard_triton
    from napari_pbip.events import run
    from napari_pbip.stage1 import train

    guard_triton()  # a viewer may already have loaded the GL driver's LLVM (see _triton_guard)
    out = session_dir / "run"
    run(train(tiny_train_settings(preview_every=0), dataset, built_bank, out))
    return out


@pytest.fixture(scope="session")
def small_slide(session_dir):
    """A 1024 px synthetic pyramidal slide at 0.5 um/px (3 levels) with ground truth."""
    from napari_pbip.synthetic.synth_slide import write_synthetic_slide

    return write_synthetic_slide(session_dir / "slide.tif", size=1024, seed=1)


@pytest.fixture
def docked_segment_widget(trained_model):
    """Dock a Segment slide widget in a viewer, set as these tests run it: the session's stage-1
    model at 1 um/px, 256 px chunks, 16 tiles per batch, on the CPU."""

    def dock(viewer):
        from napari_pbip._widgets.segment_widget import SegmentWidget

        w = SegmentWidget(viewer)
        viewer.window.add_dock_widget(w)
        w.model.set_path(trained_model)
        w.mpp.setValue(1.0)
        w.chunk.setValue(256)
        w.batch.setValue(16)
        w.device.setCurrentText("cpu")
        return w

    return dock


@pytest.fixture
def wait_job(qtbot):
    """``wait_job(widget)``: wait until the widget's job has finished (its worker is gone)."""

    def wait(widget, timeout: int = JOB_TIMEOUT_MS) -> None:
        qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)

    return wait


@pytest.fixture(scope="session")
def segment_output(session_dir):
    """A ``pbip segment`` output of a 600 x 700 px toy slide at 0.5 um/px (tests/slides/pbip_toy.py's
    colour model), and the slide's ground truth as label values (0 background, classes from 1)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slides"))  # pbip_toy.py
    import pbip_toy as toy

    from napari_pbip.cli.main import main
    from napari_pbip.export.label_values import to_values

    labels = toy.blob_labels((600, 700), seed=31)
    folder = session_dir / "segment-output"
    folder.mkdir()
    slide = toy.write_tiff_slide(folder / "s.tif", toy.render(labels, seed=31), mpp=0.5)
    model = toy.save_toy_model(folder / "model", "colour")
    toy.register()
    out = folder / "s.zarr"
    args = ["segment", slide, "--model", model, "--out", out, "--chunk", "512", "--batch", "4", "--quiet"]
    assert main([str(a) for a in args]) == 0
    return out, to_values(labels, len(toy.CLASSES), toy.BACKGROUND)
