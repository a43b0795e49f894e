"""A data set's background may sit at any mask index: tissue class k is the k-th other index.

The tiny run and data set put background last (index 4). Moving background to index 0 or 2 in
a copy of both (masks and palette re-indexed, the run's model.json saying the same) must give
the same pseudo-masks and predictions up to that re-indexing, and the same scores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from napari_pbip.data.images import write_mask  # noqa: E402
from napari_pbip.errors import CheckpointError  # noqa: E402
from napari_pbip.evaluate import evaluate_folder  # noqa: E402
from napari_pbip.events import run  # noqa: E402
from napari_pbip.stage1 import make_pseudo_masks, predict_folder  # noqa: E402
from napari_pbip.stage1.pseudo import CamSettings, label_map, mask_channels  # noqa: E402

# old mask index (tissue 0..3, background 4) -> new mask index, written out by hand
MOVES = {0: [1, 2, 3, 4, 0], 2: [0, 1, 3, 4, 2]}


def _indices(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


def _moved(dataset: Path, run_dir: Path, bg: int, root: Path) -> tuple[Path, Path]:
    """Copies of ``dataset`` and ``run_dir`` with background at mask index ``bg``."""
    lut = np.array(MOVES[bg], np.uint8)
    data, model = root / "data", root / "run"
    shutil.copytree(dataset, data)
    shutil.copytree(run_dir, model)
    spec = json.loads((data / "dataset.json").read_text())
    palette = [None] * len(spec["palette"])
    for old, new in enumerate(lut):
        palette[new] = spec["palette"][old]
    spec.update(palette=palette, background_index=bg)
    (data / "dataset.json").write_text(json.dumps(spec))
    for mask in (data / "val" / "mask").glob("*.png"):
        write_mask(mask, lut[_indices(mask)], palette)
    meta = json.loads((model / "model.json").read_text())
    meta.update(palette=palette, background_index=bg)
    (model / "model.json").write_text(json.dumps(meta))
    return data, model


@pytest.mark.parametrize("bg", sorted(MOVES))
def test_mask_channels_put_tissue_class_k_at_the_kth_non_background_index(bg):
    scores = np.zeros((4, 1, 5), np.float32)
    for k in range(4):
        scores[k, 0, k] = 1.0  # pixel k is class k; pixel 4 is white glass
    image = np.full((1, 5, 3), (200, 120, 170), np.uint8)
    image[0, 4] = 250
    channels = mask_channels(scores, image, 5, bg, CamSettings(min_white_size=1))
    assert label_map(channels).tolist() == [MOVES[bg]]


@pytest.mark.parametrize("bg", sorted(MOVES))
def test_pseudo_masks_predictions_and_scores_agree_for_any_background_index(
    tiny_run, tiny_dataset, tmp_path, bg
):
    lut = np.array(MOVES[bg], np.uint8)
    data, model = _moved(tiny_dataset, tiny_run, bg, tmp_path / "moved")
    jobs = {
        "pseudo": lambda d, r, out: make_pseudo_masks(r, d, out, device="cpu"),
        "pseudo-val": lambda d, r, out: make_pseudo_masks(
            r, d, out, split="val", device="cpu", labels_from_masks=True
        ),
        "predict": lambda d, r, out: predict_folder(r, d / "val" / "img", out, device="cpu"),
    }
    for name, job in jobs.items():
        a, b = tmp_path / f"{name}-last", tmp_path / f"{name}-moved"
        run(job(tiny_dataset, tiny_run, a))
        run(job(data, model, b))
        files = sorted(p.name for p in a.glob("*.png"))
        assert files and files == sorted(p.name for p in b.glob("*.png"))
        for f in files:
            assert np.array_equal(lut[_indices(a / f)], _indices(b / f)), f"{name}: {f}"
        assert Image.open(b / files[0]).getpalette()[: 3 * 5] == sum(
            json.loads((data / "dataset.json").read_text())["palette"], []
        )
    last = evaluate_folder(tiny_dataset, "val", tmp_path / "predict-last")
    moved = evaluate_folder(data, "val", tmp_path / "predict-moved")
    assert moved["background_index"] == bg
    assert moved["per_class"] == last["per_class"] and moved["miou"] == last["miou"]
    assert moved["confusion"] == last["confusion"]
    perfect = evaluate_folder(data, "val", data / "val" / "mask")
    assert perfect["miou"] == 1.0 and all(c["iou"] == 1.0 for c in perfect["per_class"].values())


def test_pseudo_masks_refuse_a_run_whose_background_index_differs(tiny_run, tiny_dataset, tmp_path):
    _, model = _moved(tiny_dataset, tiny_run, 0, tmp_path / "moved")
    with pytest.raises(CheckpointError, match=r"background index 0.*background index 4"):
        run(make_pseudo_masks(model, tiny_dataset, tmp_path / "m", device="cpu"))
    assert not (tmp_path / "m").exists()
