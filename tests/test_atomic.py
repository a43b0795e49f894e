"""Atomic outputs appear whole, with the permissions a plain write would give them, and the output guard
refuses what would lose or mix data."""

from __future__ import annotations

import os
import stat
from types import SimpleNamespace

import pytest

from napari_pbip import _atomic
from napari_pbip.errors import OutputConflictError, OutputExistsError


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


def test_an_output_that_is_contains_or_lies_inside_an_input_is_refused_naming_both(tmp_path):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (tmp_path / "link").symlink_to(data)
    cases = [
        (data, "is the data set"),
        (data / "train" / "masks", "lies inside the data set"),
        (tmp_path, "contains the data set"),
        (tmp_path / "link" / "train", "lies inside the data set"),  # symlinks are resolved
    ]
    for out, says in cases:
        for kind in ("predict", None):
            with pytest.raises(
                OutputConflictError, match=f"output {out} {says} {data}; .*choose an output path"
            ):
                _atomic.check_output(out, kind, {"data set": data, "bank": None}, overwrite=True)
    _atomic.check_output(tmp_path / "masks", "predict", {"data set": data})  # a sibling is fine
    opened = SimpleNamespace(root=data)  # an opened data set stands for its folder
    with pytest.raises(OutputConflictError, match="is the input"):
        _atomic.check_output(data, "train", [opened], resume=True)


def test_overwrite_deletes_only_a_previous_output_of_the_same_command(tmp_path):
    out = tmp_path / "masks"
    with _atomic.atomic_dir(out, kind="predict") as tmp:
        (tmp / "a.png").write_bytes(b"1")
    assert _atomic.output_kind(out) == "predict"
    with pytest.raises(OutputExistsError, match="already exists.*--overwrite"):
        _atomic.check_output(out, "predict")
    with _atomic.atomic_dir(out, overwrite=True, kind="predict") as tmp:
        (tmp / "b.png").write_bytes(b"2")
    assert sorted(p.name for p in out.iterdir()) == [_atomic.MARKER, "b.png"]
    with pytest.raises(OutputExistsError, match=r"is a `pbip predict` output; --overwrite would delete"):
        _atomic.clear_output(out, "pseudo")
    with pytest.raises(OutputExistsError, match="`pbip predict` output, not a `pbip segment` one"):
        _atomic.check_output(out, "segment", resume=True)

    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("a.txt", "b.txt", "c.txt", "d.txt"):
        (mine / name).write_text(name)
    with pytest.raises(
        OutputExistsError,
        match=r"not a `pbip train` output .*delete its 4 entries \(a.txt, b.txt, c.txt, \.\.\.\)",
    ):
        _atomic.clear_output(mine, "train")
    assert len(list(mine.iterdir())) == 4
    _atomic.check_output(mine, "train", resume=True)  # continuing deletes nothing
    (tmp_path / "empty").mkdir()
    _atomic.clear_output(tmp_path / "empty", "train")  # nothing to lose
    assert not (tmp_path / "empty").exists()
    (tmp_path / "latest").symlink_to(out)
    with pytest.raises(
        OutputExistsError, match="latest is a symbolic link to .*masks; give the folder itself"
    ):
        _atomic.clear_output(tmp_path / "latest", "predict")  # shutil.rmtree would fail on the link
    assert (out / "b.png").exists()


def test_a_file_output_replaces_a_file_but_never_a_folder_or_an_input(tmp_path):
    (tmp_path / "scores.json").write_text("old")
    _atomic.check_writable(tmp_path / "scores.json", True)
    with pytest.raises(OutputExistsError, match="folder, but this output is a single file"):
        _atomic.check_writable(tmp_path, True)
    with pytest.raises(OutputConflictError, match="is the predictions"):
        _atomic.check_writable(tmp_path / "scores.json", True, {"predictions": tmp_path / "scores.json"})
    with pytest.raises(OutputExistsError, match="is a file, not a previous `pbip segment` output folder"):
        _atomic.check_output(tmp_path / "scores.json", "segment", overwrite=True)
