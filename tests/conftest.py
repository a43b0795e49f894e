"""Shared fixtures: the real data beside the checkout (skipped when absent), CPU device, threads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PBIP_DEVICE", "cpu")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real data folder {SHARED_DATA} is absent (only present beside the development checkout)"
        )
    return SHARED_DATA
