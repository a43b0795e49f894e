"""Atomic outputs appear whole, and with the permissions a plain write would give them."""

from __future__ import annotations

import os
import stat

import pytest

from napari_pbip import _atomic
from napari_pbip.errors import OutputExistsError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_files_and_folders_get_the_usual_permissions_not_private_temp_ones(tmp_path):
    _atomic.write_json(tmp_path / "result.json", {"miou": 0.5})
    with _atomic.atomic_dir(tmp_path / "masks") as tmp:
        (tmp / "a.png").write_bytes(b"x")
    mask = _umask()
    assert stat.S_IMODE((tmp_path / "result.json").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "masks").stat().st_mode) == 0o777 & ~mask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), _atomic.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["table.csv"]
    with pytest.raises(OutputExistsError):
        with _atomic.atomic_dir(tmp_path / "table.csv"):
            pass
