"""Fixtures for the bank tests: a counting tiny encoder, small data sets in tmp_path, a build helper."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bank_data.py, under --import-mode=importlib

from bank_data import write_dataset  # noqa: E402


class Counter:
    """Counts the images an encoder is run on (via a forward pre-hook; weights are untouched)."""

    def __init__(self) -> None:
        self.images = 0

    def __call__(self, module, args) -> None:
        self.images += int(args[0].shape[0])


@pytest.fixture
def encoder():
    """The registered tiny encoder (seeded weights), with ``encoder.counter.images`` counting inputs."""
    from napari_pbip.models.tiny import build_tiny_encoder

    enc = build_tiny_encoder().eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    enc.counter = Counter()
    enc.register_forward_pre_hook(enc.counter)
    return enc


@pytest.fixture
def dataset(tmp_path) -> Path:
    """6 single-class patches per class, 2 multi-class, 3 masked val images."""
    return write_dataset(tmp_path / "ds", val=3)


@pytest.fixture
def settings():
    """Tiny-encoder settings: K=2, 2 images per sub-cluster."""
    from napari_pbip.bank import BankSettings

    return BankSettings(encoder="tiny-encoder", k=2, per_cluster=2, batch_size=4)


@pytest.fixture
def build(tmp_path, settings, encoder) -> Callable:
    """``build(dataset, out=None, **setting_changes)`` -> the built Bank (tiny encoder)."""
    from napari_pbip.bank import build_bank
    from napari_pbip.events import run

    def _build(ds: Path, out: Path | None = None, overwrite: bool = False, **changes):
        out = out or tmp_path / "bank"
        return run(
            build_bank(
                settings.replace(**changes), ds, out, device="cpu", overwrite=overwrite, encoder=encoder
            )
        )

    return _build
