"""Nothing lost: no command writes over, into or around what it reads, and ``--overwrite`` replaces
only a previous output of the same command (issue 14, section 1).

Each refusal is checked on the command line (exit code 1, one line naming both paths) and by the
bytes of the input, which must be exactly as before.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from napari_pbip import _atomic
from napari_pbip.cli.main import main
from napari_pbip.errors import OutputExistsError

pytest.importorskip("torch")


def _digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (or of ``root`` itself), by relative path."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from napari_pbip.synthetic.synth import write_synthetic_dataset

    # 24 patches: every class has single-class patches, so a bank can be built from it
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("outputs") / "D", n_train=24, n_val=4, n_test=0, size=64
    )


@pytest.fixture(scope="module")
def stage1(dataset, tmp_path_factory) -> Path:
    """A one-epoch plain-CAM run with the tiny backbone (seconds on a CPU)."""
    from napari_pbip.events import run
    from napari_pbip.stage1 import TrainSettings, train

    settings = TrainSettings(baseline=True, backbone="tiny-backbone", pretrained=False, image_size=64,
                             match_size=32, batch_size=8, epochs=1, preview_every=0, device="cpu")  # fmt: skip
    out = tmp_path_factory.mktemp("outputs") / "run"
    run(train(settings, dataset, None, out))
    return out


@pytest.fixture
def data_copy(dataset, tmp_path) -> Path:
    """A data set of the test's own (a command that wrongly deletes it harms no other test)."""
    return Path(shutil.copytree(dataset, tmp_path / "D"))


def _refused(args: list[str], capsys, *paths: Path) -> str:
    assert main([str(a) for a in args]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    for path in paths:
        assert str(path) in err
    return err


def test_segment_refuses_to_write_its_output_over_the_slide(stage1, tmp_path, capsys):
    from napari_pbip.synthetic.synth_slide import write_synthetic_slide

    slide = write_synthetic_slide(tmp_path / "c.tif", size=256, seed=0, tile=128).slide
    before = _digest(slide)
    args = [
        "segment",
        slide,
        "--model",
        stage1,
        "--out",
        slide,
        "--overwrite",
        "--chunk",
        "256",
        "--device",
        "cpu",
    ]
    err = _refused(args, capsys, slide)
    assert "is the slide" in err
    assert _digest(slide) == before


def test_predict_refuses_to_write_masks_over_its_images(stage1, dataset, tmp_path, capsys):
    images = Path(shutil.copytree(dataset / "val" / "img", tmp_path / "imgs"))
    before = _digest(images)
    args = [
        "predict",
        "--model",
        stage1,
        "--images",
        images,
        "--out",
        images,
        "--overwrite",
        "--quiet",
        "--device",
        "cpu",
    ]
    err = _refused(args, capsys, images)
    assert "is the images" in err
    assert _digest(images) == before


def test_pseudo_refuses_to_write_masks_inside_its_data_set(stage1, data_copy, capsys):
    before = _digest(data_copy)
    out = data_copy / "train"
    args = [
        "pseudo",
        "--run",
        stage1,
        "--dataset",
        data_copy,
        "--out",
        out,
        "--overwrite",
        "--quiet",
        "--device",
        "cpu",
    ]
    err = _refused(args, capsys, out, data_copy)
    assert "lies inside the data set" in err
    assert _digest(data_copy) == before


def test_bank_build_refuses_to_replace_its_data_set(data_copy, capsys):
    before = _digest(data_copy)
    args = ["bank", "build", "--dataset", data_copy, "--out", data_copy, "--overwrite", "--encoder", "tiny-encoder",
            "--k", "1", "--per-cluster", "1", "--min-tissue", "0", "--device", "cpu", "--quiet"]  # fmt: skip
    _refused(args, capsys, data_copy)
    assert _digest(data_copy) == before


def test_train_refuses_to_delete_its_data_set(data_copy, capsys):
    before = _digest(data_copy)
    args = ["train", "--dataset", data_copy, "--out", data_copy, "--overwrite", "--baseline-cam", "--backbone",
            "tiny-backbone", "--image-size", "64", "--epochs", "1", "--device", "cpu", "--quiet"]  # fmt: skip
    _refused(args, capsys, data_copy)
    assert _digest(data_copy) == before


def test_demo_refuses_to_empty_a_folder_it_did_not_write(tmp_path):
    from napari_pbip.demo import run_demo

    precious = tmp_path / "precious"
    (precious / "notes").mkdir(parents=True)
    (precious / "notes" / "thesis.txt").write_text("three years of work")
    before = _digest(precious)
    job = run_demo(precious, overwrite=True)
    try:
        with pytest.raises(
            OutputExistsError, match=r"precious is not a `pbip demo` output.*1 entry \(notes\)"
        ):
            next(job)
    finally:
        job.close()
    assert _digest(precious) == before


def test_demo_overwrite_replaces_its_own_previous_output(tmp_path):
    from napari_pbip.demo import run_demo

    out = tmp_path / "demo"
    first = run_demo(out)
    next(first)  # the demo has started writing its folder
    first.close()
    assert _atomic.output_kind(out) == "demo"
    with pytest.raises(OutputExistsError, match="--overwrite"):
        next(run_demo(out))
    again = run_demo(out, overwrite=True)
    next(again)
    again.close()
    assert (out / "demo_settings.json").is_file() and _atomic.output_kind(out) == "demo"


def test_overwrite_refuses_a_folder_no_command_wrote(stage1, dataset, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "annotations.png").write_bytes(b"hand-drawn")
    args = ["predict", "--model", stage1, "--images", dataset / "val" / "img", "--out", mine, "--overwrite",
            "--quiet", "--device", "cpu"]  # fmt: skip
    err = _refused(args, capsys, mine)
    assert "not a `pbip predict` output" in err and "annotations.png" in err
    assert _digest(mine) == {"annotations.png": hashlib.sha256(b"hand-drawn").hexdigest()}


def test_overwrite_replaces_a_previous_output_of_the_same_command_only(stage1, dataset, tmp_path, capsys):
    images = dataset / "val" / "img"
    masks = tmp_path / "masks"
    predict = ["predict", "--model", stage1, "--images", images, "--quiet", "--device", "cpu"]
    assert main([str(a) for a in [*predict, "--out", masks]]) == 0
    assert _atomic.output_kind(masks) == "predict" and len(list(masks.glob("*.png"))) == 4
    (masks / "extra.png").write_bytes(b"left from before")
    assert main([str(a) for a in [*predict, "--out", masks, "--overwrite"]]) == 0  # its own output: replaced
    assert not (masks / "extra.png").exists() and len(list(masks.glob("*.png"))) == 4
    capsys.readouterr()
    pseudo = ["pseudo", "--run", stage1, "--dataset", dataset, "--out", masks, "--overwrite", "--quiet"]
    assert "is a `pbip predict` output" in _refused(pseudo, capsys, masks)  # another command's: kept
    assert len(list(masks.glob("*.png"))) == 4


def test_a_cohort_folder_is_named_by_the_command_that_wrote_it(tmp_path):
    from napari_pbip._atomic import check_output, mark_output
    from napari_pbip.errors import OutputExistsError

    cohort = tmp_path / "cohort-out"
    cohort.mkdir()
    (cohort / "a.csv").write_text("slide,class\n")
    mark_output(cohort, "segment-cohort")
    with pytest.raises(OutputExistsError) as err:
        check_output(cohort, "segment", overwrite=True)
    assert "cohort-out is a `pbip segment` cohort output;" in str(err.value)
    assert "segment-cohort" not in str(err.value)  # not a command anyone can run
