"""A tiny trained stage-1 run on a tiny synthetic data set, shared by the CAM tests."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest


@pytest.fixture(scope="package")
def tiny_dataset(tmp_path_factory):
    from napari_pbip.synthetic.synth import write_synthetic_dataset

    return write_synthetic_dataset(
        tmp_path_factory.mktemp("cam") / "synth", n_train=12, n_val=4, n_test=0, size=64
    )


@pytest.fixture(scope="package")
def tiny_run(tiny_dataset, tmp_path_factory):
    """A PBIP run of 2 epochs with the tiny backbone and encoder (seconds on a CPU)."""
    pytest.importorskip("torch")
    from napari_pbip.data.layouts import open_dataset
    from napari_pbip.events import run
    from napari_pbip.models import create_encoder
    from napari_pbip.stage1 import TrainSettings, train

    classes = open_dataset(tiny_dataset).spec.classes
    protos = np.random.default_rng(0).normal(size=(len(classes), 2, 32)).astype(np.float32)
    bank = SimpleNamespace(
        classes=classes,
        encoder_name="tiny-encoder",
        content_hash="fake",
        version=1,
        prototype_tensor=lambda: (protos, np.ones((len(classes), 2), bool)),
        encoder=lambda device="auto", encoder=None: create_encoder("tiny-encoder"),
    )
    settings = TrainSettings(
        backbone="tiny-backbone", pretrained=False, image_size=64, match_size=32, batch_size=4, epochs=2,
        preview_every=0, device="cpu",
    )  # fmt: skip
    out = tmp_path_factory.mktemp("cam") / "run"
    run(train(settings, tiny_dataset, bank, out))
    return out
