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


@pytest.fixture
def read_only(monkeypatch):
    """``read_only(folder)``: make ``folder`` unwritable for the rest of the test.

    The folder gets mode 0o555. Root ignores permission bits, so under root ``os.access`` is also
    made to answer as it would for a user (no write access in or below the folder); the real write
    would still succeed there, so a test that expects a refusal sees one only from a check that runs
    before any work.
    """
    folders: list[Path] = []
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK:
            p = Path(os.path.abspath(path))
            if any(p == f or f in p.parents for f in folders):
                return False
        return real_access(path, mode, *args, **kwargs)

    def make(folder: Path) -> Path:
        folder = Path(os.path.abspath(folder))
        folder.chmod(0o555)
        folders.append(folder)
        if os.geteuid() == 0:
            monkeypatch.setattr(os, "access", access)
        return folder

    yield make
    for folder in folders:
        folder.chmod(0o755)
