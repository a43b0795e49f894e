"""`pbip predict` with a stage-2 segmenter folder: ROIs and patches of any size, same outputs and
errors as with a stage-1 run; a folder of neither kind is refused in one line.

The segmenter is trained on a data set whose background is mask index 0, so its predictions
only score well if stage-2 targets, predictions and metrics agree on where each class sits.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from napari_pbip.cli.main import main  # noqa: E402
from napari_pbip.data.images import read_rgb, write_mask  # noqa: E402
from napari_pbip.engine.tta import SCALES, DihedralTTA, ScaleTTA  # noqa: E402
from napari_pbip.evaluate import evaluate_folder  # noqa: E402
from napari_pbip.events import run  # noqa: E402
from napari_pbip.predict.predictor import load_predictor  # noqa: E402
from napari_pbip.stage2.seg_settings import SegSettings  # noqa: E402
from napari_pbip.stage2.seg_train import train_segmenter  # noqa: E402

BACKGROUND = 0
PALETTE = [[255, 255, 255], [200, 60, 120], [90, 60, 200]]  # background, pink, blue


def _labels(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A half-plane of pink (index 1) and a disc of blue (index 2) on background (index 0)."""
    lab = np.full((h, w), BACKGROUND, np.uint8)
    yy, xx = np.mgrid[:h, :w] - np.array([h / 2, w / 2])[:, None, None]
    a, b, c = rng.normal(size=3)
    lab[a * yy + b * xx + c * min(h, w) / 4 > 0] = 1
    cy, cx = rng.integers(-h // 2, h // 2), rng.integers(-w // 2, w // 2)
    lab[np.hypot(yy - cy, xx - cx) < min(h, w) / 3] = 2
    return lab


def _render(rng: np.random.Generator, lab: np.ndarray) -> np.ndarray:
    colours = np.array(PALETTE, np.uint8)
    return np.clip(colours[lab] + rng.normal(0, 12, (*lab.shape, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny lite0-seg trained for a few seconds on two colour classes, background at index 0."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("bg0")
    data, masks = root / "data", root / "masks"
    for d in (data / "train", data / "val" / "img", data / "val" / "mask", masks):
        d.mkdir(parents=True)
    spec = {"name": "colours-bg0", "classes": ["pink", "blue"], "palette": PALETTE,
            "background_index": BACKGROUND, "label_format": "space"}  # fmt: skip
    (data / "dataset.json").write_text(json.dumps(spec))
    for i in range(16):
        lab = _labels(rng, 64, 64)
        name = f"p{i:03d}-[{int((lab == 1).any())} {int((lab == 2).any())}].png"
        Image.fromarray(_render(rng, lab)).save(data / "train" / name)
        write_mask(masks / name, lab, PALETTE)
    for i, (h, w) in enumerate([(64, 64), (64, 64), (40, 72), (150, 200)]):  # the last one is tiled
        lab = _labels(rng, h, w)
        Image.fromarray(_render(rng, lab)).save(data / "val" / "img" / f"v{i:03d}.png")
        write_mask(data / "val" / "mask" / f"v{i:03d}.png", lab, PALETTE)
    settings = SegSettings(
        backbone="tiny-backbone", crop_size=64, batch_size=4, epochs=6, device="cpu", num_workers=0
    )
    result = run(train_segmenter(settings, data, masks, root / "seg"))
    return result.out, data


def _predict(*args: str) -> int:
    return main(["predict", *args, "--device", "cpu", "--quiet"])


def test_predict_with_a_segmenter_folder_gives_its_masks_for_images_of_any_size(segmenter, tmp_path, capsys):
    seg, data = segmenter
    images = data / "val" / "img"
    out = tmp_path / "pred"
    assert _predict("--model", str(seg), "--images", str(images), "--out", str(out)) == 0
    assert f"masks written to {out}" in capsys.readouterr().out
    predictor = load_predictor(seg, device="cpu")
    assert predictor.tile == 128  # twice the training crop: the 150 x 200 image is predicted in tiles
    paths = sorted(images.glob("*.png"))
    assert sorted(p.name for p in out.glob("*.png")) == [p.name for p in paths]
    for path in paths:
        image = read_rgb(path)
        written = Image.open(out / path.name)
        assert written.mode == "P" and written.getpalette()[:9] == sum(PALETTE, [])
        mask = np.array(written)
        assert mask.shape == image.shape[:2], path.name
        assert set(np.unique(mask).tolist()) <= {0, 1, 2}
        own = DihedralTTA(ScaleTTA(predictor)).predict_masks(image[None])[0]  # its own passes, whole image
        if max(image.shape[:2]) <= predictor.tile:
            assert np.array_equal(mask, own), path.name
        else:
            assert (mask == own).mean() > 0.99, path.name  # tiles differ only near their blended borders
    settings = json.loads((out / "predict_settings.json").read_text())
    assert settings["tile"] == 128 and settings["overlap"] == 32 and settings["model"] == str(seg.resolve())
    assert settings["tta"] is True  # averaged over the 8 turns and mirrors unless --no-tta
    assert settings["scales"] == list(SCALES) == [0.75, 1.0, 1.25]  # and over three sizes of the image
    result = evaluate_folder(data, "val", out)
    assert result["background_index"] == BACKGROUND and result["miou"] > 0.8, result["per_class"]


def test_no_tta_gives_the_segmenters_single_pass(segmenter, tmp_path):
    seg, data = segmenter
    images, out = data / "val" / "img", tmp_path / "pred"
    assert _predict("--model", str(seg), "--images", str(images), "--out", str(out), "--no-tta") == 0
    predictor = load_predictor(seg, device="cpu")
    for path in sorted(images.glob("*.png")):
        image = read_rgb(path)
        if max(image.shape[:2]) <= predictor.tile:
            assert np.array_equal(
                np.array(Image.open(out / path.name)), predictor.predict_masks(image[None])[0]
            )
    assert json.loads((out / "predict_settings.json").read_text())["tta"] is False
    assert json.loads((out / "predict_settings.json").read_text())["scales"] == [1.0]


def test_scales_1_gives_the_turns_and_mirrors_only(segmenter, tmp_path):
    seg, data = segmenter
    images, out = data / "val" / "img", tmp_path / "pred"
    assert _predict("--model", str(seg), "--images", str(images), "--out", str(out), "--scales", "1") == 0
    predictor = load_predictor(seg, device="cpu")
    image = read_rgb(images / "v000.png")
    assert np.array_equal(
        np.array(Image.open(out / "v000.png")), DihedralTTA(predictor).predict_masks(image[None])[0]
    )
    assert json.loads((out / "predict_settings.json").read_text())["scales"] == [1.0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--no-tta", "--scales", "0.75", "1"], "leave out --no-tta or --scales"),
        (["--scales", "0", "1"], "factors in (0, 4]"),
    ],
)
def test_scales_that_cannot_apply_are_refused_in_one_line(segmenter, tmp_path, capsys, extra, message):
    seg, data = segmenter
    out = tmp_path / "pred"
    args = ["--model", str(seg), "--images", str(data / "val" / "img"), "--out", str(out), *extra]
    assert _predict(*args) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_predict_with_a_segmenter_keeps_the_overwrite_rules_and_refuses_cam_options(
    segmenter, tmp_path, capsys
):
    seg, data = segmenter
    args = ["--model", str(seg), "--images", str(data / "val" / "img"), "--out", str(tmp_path / "pred")]
    assert _predict(*args) == 0
    capsys.readouterr()
    assert _predict(*args) == 1
    assert "already exists" in capsys.readouterr().err
    assert _predict(*args, "--overwrite") == 0
    capsys.readouterr()
    assert _predict(*args, "--overwrite", "--threshold", "0.4") == 1
    err = capsys.readouterr().err
    assert "--threshold" in err and "stage-1" in err and "leave them out" in err
    assert len(list((tmp_path / "pred").glob("*.png"))) == 4  # the refused run left the masks alone


@pytest.mark.parametrize("meta", [None, {"kind": "napari-unknown"}, "{not json"])
def test_a_folder_of_neither_kind_is_refused_in_one_line(segmenter, tmp_path, capsys, meta):
    _, data = segmenter
    model = tmp_path / "model"
    model.mkdir()
    if meta is not None:
        (model / "model.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    out = tmp_path / "pred"
    assert _predict("--model", str(model), "--images", str(data / "val" / "img"), "--out", str(out)) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pbip predict: error: "), captured.err
    assert str(model) in lines[0] and "pbip train --out" in lines[0] and "pbip train-seg --out" in lines[0]
    assert "Traceback" not in captured.err and not out.exists()
