"""``pbip evaluate`` end to end on a small generic-layout data set written to tmp_path."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_pbip.cli.main import main
from napari_pbip.data.images import write_mask, write_rgb
from napari_pbip.data.layouts import DatasetSpec, write_spec
from napari_pbip.errors import DatasetError
from napari_pbip.evaluate import evaluate_folder, format_table

CLASSES = ("tumour", "stroma", "lymph")
PALETTE = ((200, 40, 40), (40, 200, 40), (40, 40, 200), (255, 255, 255))
SPEC = DatasetSpec("generic", CLASSES, PALETTE, 3, "space")


def _reference():
    """The independent loop/sklearn implementation kept beside the metrics tests."""
    spec = importlib.util.spec_from_file_location(
        "_metrics_reference", Path(__file__).with_name("test_metrics.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.reference


def _blocky(rng: np.random.Generator, h: int, w: int, block: int) -> np.ndarray:
    small = rng.integers(0, 4, size=(-(-h // block), -(-w // block)))
    return np.kron(small, np.ones((block, block), int))[:h, :w].astype(np.uint8)


def _write_prediction(path: Path, pred: np.ndarray, how: str) -> None:
    if how == "palette":
        write_mask(path, pred, PALETTE)
    elif how == "index":
        Image.fromarray(pred, mode="L").save(path)
    else:  # rendered in the data set's colours
        Image.fromarray(np.asarray(PALETTE, np.uint8)[pred]).save(path)


@pytest.fixture
def dataset(tmp_path: Path):
    """Six val images (20-40 px) with blocky random masks and noisy predictions in three PNG kinds."""
    rng = np.random.default_rng(42)
    root, pred_dir = tmp_path / "ds", tmp_path / "pred"
    write_spec(root, SPEC, "random")
    pred_dir.mkdir()
    gts, preds = [], []
    for i in range(6):
        h, w = (int(v) for v in rng.integers(20, 41, size=2))
        gt = _blocky(rng, h, w, block=int(rng.integers(3, 9)))
        pred = np.where(rng.random((h, w)) < 0.3, _blocky(rng, h, w, block=2), gt).astype(np.uint8)
        write_rgb(root / "val" / "img" / f"patch_{i}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        write_mask(root / "val" / "mask" / f"patch_{i}.png", gt, PALETTE)
        _write_prediction(pred_dir / f"patch_{i}.png", pred, ("palette", "index", "rgb")[i % 3])
        gts.append(gt)
        preds.append(pred)
    return root, pred_dir, gts, preds


def test_cli_agrees_with_independent_implementation(dataset, tmp_path: Path, capsys) -> None:
    root, pred_dir, gts, preds = dataset
    out = tmp_path / "scores.json"
    rc = main(
        ["evaluate", "--dataset", str(root), "--split", "val", "--pred", str(pred_dir)] + ["--json", str(out)]
    )
    assert rc == 0
    result = json.loads(out.read_text())
    ref = _reference()(gts, preds, 3, 3)
    assert result["n_images"] == 6
    assert result["classes"] == list(CLASSES)
    for k, name in enumerate(CLASSES):
        for key in ("iou", "dice", "biou"):
            assert result["per_class"][name][key] == pytest.approx(ref[key][k], abs=1e-12), (name, key)
    for key in ("miou", "fwiou", "mean_dice", "mean_biou"):
        assert result[key] == pytest.approx(ref[key], abs=1e-12), key
    assert 0.3 < result["miou"] < 0.95  # the noise really lowered the scores

    table = capsys.readouterr().out
    mean_row = next(line for line in table.splitlines() if line.startswith("mean"))
    assert mean_row.split()[1] == f"{100 * ref['miou']:.2f}"
    assert all(name in table for name in CLASSES)


def test_perfect_and_empty_predictions(dataset, tmp_path: Path) -> None:
    root, _, gts, _ = dataset
    perfect, empty = tmp_path / "perfect", tmp_path / "empty"
    for i, gt in enumerate(gts):
        write_mask(perfect / f"patch_{i}.png", gt, PALETTE)
        write_mask(empty / f"patch_{i}.png", np.full_like(gt, 3), PALETTE)  # all background: all missed
    assert evaluate_folder(root, "val", perfect)["miou"] == 1.0
    result = evaluate_folder(root, "val", empty)
    assert result["miou"] == 0.0 and result["fwiou"] == 0.0


def test_missing_prediction_is_named(dataset, capsys) -> None:
    root, pred_dir, _, _ = dataset
    (pred_dir / "patch_4.png").unlink()
    with pytest.raises(DatasetError, match=r"1 of 6 .*patch_4\.png"):
        evaluate_folder(root, "val", pred_dir)
    assert main(["evaluate", "--dataset", str(root), "--split", "val", "--pred", str(pred_dir)]) == 1
    assert "patch_4.png" in capsys.readouterr().err


def test_wrong_sized_prediction_is_named(dataset) -> None:
    root, pred_dir, gts, _ = dataset
    h, w = gts[2].shape
    write_mask(pred_dir / "patch_2.png", np.zeros((h + 1, w), np.uint8), PALETTE)
    with pytest.raises(DatasetError, match=rf"patch_2\.png is {w}x{h + 1} px .* is {w}x{h} px"):
        evaluate_folder(root, "val", pred_dir)


def test_existing_json_is_kept_without_overwrite(dataset, tmp_path: Path) -> None:
    root, pred_dir, _, _ = dataset
    out = tmp_path / "scores.json"
    out.write_text("keep me")
    args = ["evaluate", "--dataset", str(root), "--split", "val", "--pred", str(pred_dir), "--json", str(out)]
    assert main([*args, "--quiet"]) == 1
    assert out.read_text() == "keep me"
    assert main([*args, "--quiet", "--overwrite"]) == 0
    assert json.loads(out.read_text())["n_images"] == 6


def test_format_table_rows() -> None:
    result = {
        "per_class": {
            "a": {"iou": 0.75, "dice": 6 / 7, "biou": 0.5, "gt_pixels": 4},
            "b": {"iou": 0.6, "dice": 0.75, "biou": None, "gt_pixels": 12},
        },
        "miou": 0.675,
        "mean_dice": 0.80357,
        "mean_biou": 0.5,
        "fwiou": 0.6375,
        "pixel_accuracy": 0.75,
        "n_images": 2,
    }
    lines = format_table(result).splitlines()
    assert lines[2].split() == ["a", "75.00", "85.71", "50.00", "25.00"]
    assert lines[3].split() == ["b", "60.00", "75.00", "-", "75.00"]
    assert lines[5].split() == ["mean", "67.50", "80.36", "50.00"]
    assert "FwIoU 63.75" in lines[6] and "images 2" in lines[6]


@pytest.mark.shared_data
def test_real_masks_scored_against_themselves(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "luad-histoseg-sample"
    result = evaluate_folder(root, "val", root / "val" / "mask")
    assert result["layout"] == "luad-histoseg"
    assert result["n_images"] == 3
    assert result["miou"] == 1.0 and result["fwiou"] == 1.0 and result["mean_biou"] == 1.0
