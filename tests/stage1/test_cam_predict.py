"""Running a trained run: dense predictor, pseudo-masks, predictions scored by pbip evaluate, CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")

from napari_pbip.data.images import read_mask  # noqa: E402
from napari_pbip.data.layouts import open_dataset  # noqa: E402
from napari_pbip.errors import CheckpointError, OutputExistsError  # noqa: E402
from napari_pbip.events import run  # noqa: E402
from napari_pbip.predict.predictor import load_predictor  # noqa: E402
from napari_pbip.stage1 import CamSettings, make_pseudo_masks, predict_folder  # noqa: E402


def test_run_loads_as_a_dense_predictor(tiny_run):
    pred = load_predictor(tiny_run, device="cpu")
    assert pred.classes == ("tumor", "stroma", "lymphocyte", "necrosis")
    assert pred.background_index == 4 and len(pred.palette) == 5 and pred.tile == 64
    assert pred.mpp == 0.5  # the synthetic data set records the um/px its patches are drawn at
    batch = np.random.default_rng(0).integers(0, 255, size=(2, 64, 64, 3), dtype=np.uint8)
    probs = pred.predict(batch)
    assert probs.shape == (2, 5, 64, 64) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)


def test_pseudo_masks_are_named_like_the_images_and_gated_by_their_labels(tiny_run, tiny_dataset, tmp_path):
    out = tmp_path / "masks"
    run(make_pseudo_masks(tiny_run, tiny_dataset, out, device="cpu"))
    ds = open_dataset(tiny_dataset)
    samples = ds.samples("train")
    assert sorted(p.name for p in out.glob("*.png")) == sorted(s.image.name for s in samples)
    for s in samples:
        mask = read_mask(out / s.image.name, ds.spec)
        allowed = {i for i, v in enumerate(s.labels) if v} | {ds.spec.background_index}
        assert set(np.unique(mask).tolist()) <= allowed, s.image.name
    assert json.loads((out / "cam_settings.json").read_text())["background"] == "white"
    with pytest.raises(OutputExistsError):
        run(make_pseudo_masks(tiny_run, tiny_dataset, out, device="cpu"))


def test_pseudo_masks_are_reused_only_when_made_from_this_run_with_these_settings(
    tiny_run, tiny_dataset, tmp_path
):
    import os

    from napari_pbip.stage1 import pseudo_masks_current

    out = tmp_path / "masks"
    assert not pseudo_masks_current(out, tiny_run)  # nothing there yet
    run(
        make_pseudo_masks(tiny_run, tiny_dataset, out, settings=CamSettings(background="power"), device="cpu")
    )
    assert pseudo_masks_current(out, tiny_run, CamSettings(background="power"))
    assert pseudo_masks_current(out, tiny_run, CamSettings(background="power", tta=True))  # the default
    assert not pseudo_masks_current(out, tiny_run, CamSettings(background="power", tta=False))
    assert not pseudo_masks_current(out, tiny_run, CamSettings())  # another background rule
    assert not pseudo_masks_current(out, tiny_run, CamSettings(background="power", bg_power=2.0))
    later = (out / "cam_settings.json").stat().st_mtime + 10
    os.utime(tiny_run / "model.json", (later, later))  # the run was trained again after the masks
    try:
        assert not pseudo_masks_current(out, tiny_run, CamSettings(background="power"))
    finally:
        earlier = (out / "cam_settings.json").stat().st_mtime - 10
        os.utime(tiny_run / "model.json", (earlier, earlier))
    other = tmp_path / "other"
    shutil.copytree(out, other)
    (other / ".pbip-output.json").unlink()  # the same files, but not a finished pseudo output
    assert not pseudo_masks_current(other, tiny_run, CamSettings(background="power"))


def test_predictions_on_unlabelled_images_score_with_pbip_evaluate(tiny_run, tiny_dataset, tmp_path):
    from napari_pbip.evaluate import evaluate_folder

    images = tmp_path / "images"
    shutil.copytree(tiny_dataset / "val" / "img", images)  # images only: no labels, no masks
    out = tmp_path / "pred"
    run(predict_folder(tiny_run, images, out, device="cpu"))
    result = evaluate_folder(tiny_dataset, "val", out)
    assert result["n_images"] == 4 and 0 <= result["miou"] <= 1


def test_presence_threshold_decides_how_many_classes_a_prediction_holds(tiny_run, tiny_dataset, tmp_path):
    out = tmp_path / "pred"
    strict = CamSettings(presence_threshold=0.999, background="none")
    run(predict_folder(tiny_run, tiny_dataset / "val" / "img", out, strict, device="cpu"))
    spec = open_dataset(tiny_dataset).spec
    for path in out.glob("*.png"):
        assert len(np.unique(read_mask(path, spec))) == 1  # only the most probable class survives


def test_pseudo_masks_refuse_a_run_of_other_classes(tiny_run, tmp_path):
    from napari_pbip.synthetic.synth import write_synthetic_dataset

    other = write_synthetic_dataset(
        tmp_path / "other", n_train=2, n_val=0, n_test=0, size=32, classes=("tumor", "stroma")
    )
    with pytest.raises(
        CheckpointError, match=r"\['tumor', 'stroma', 'lymphocyte', 'necrosis'\].*\['tumor', 'stroma'\]"
    ):
        run(make_pseudo_masks(tiny_run, other, tmp_path / "m", device="cpu"))


def test_cli_train_pseudo_predict_evaluate(tiny_dataset, tmp_path, capsys):
    from napari_pbip.cli.main import main

    runs = tmp_path / "run"
    common = ["--device", "cpu", "--quiet"]
    assert main(["train", "--dataset", str(tiny_dataset), "--out", str(runs), "--baseline-cam", "--backbone",
                 "tiny-backbone", "--epochs", "1", "--image-size", "64", *common]) == 0  # fmt: skip
    assert "finished at step 2/2" in capsys.readouterr().out  # 12 images, batch 10
    assert (
        main(
            [
                "pseudo",
                "--run",
                str(runs),
                "--dataset",
                str(tiny_dataset),
                "--out",
                str(tmp_path / "m"),
                *common,
            ]
        )
        == 0
    )
    assert len(list((tmp_path / "m").glob("*.png"))) == 12
    pred = tmp_path / "p"
    assert main(["predict", "--model", str(runs), "--images", str(tiny_dataset / "val" / "img"), "--out", str(pred),
                 "--threshold", "0.4", *common]) == 0  # fmt: skip
    assert (
        main(["evaluate", "--dataset", str(tiny_dataset), "--split", "val", "--pred", str(pred), "--quiet"])
        == 0
    )
    assert "mean" in capsys.readouterr().out
    assert main(["train", "--dataset", str(tiny_dataset), "--out", str(runs), "--baseline-cam", *common]) == 1
    assert "already exists" in capsys.readouterr().err


def test_unlabelled_predictions_and_pseudo_masks_average_over_symmetries_by_default(
    tiny_run, tiny_dataset, tmp_path
):
    from napari_pbip.data.images import list_images, read_rgb
    from napari_pbip.engine.tta import DihedralTTA
    from napari_pbip.stage1 import load_stage1_predictor

    images = tiny_dataset / "val" / "img"
    run(predict_folder(tiny_run, images, tmp_path / "pred", device="cpu"))
    run(predict_folder(tiny_run, images, tmp_path / "plain", CamSettings(tta=False), device="cpu"))
    assert json.loads((tmp_path / "pred" / "cam_settings.json").read_text())["tta"] is True
    assert json.loads((tmp_path / "plain" / "cam_settings.json").read_text())["tta"] is False
    spec = open_dataset(tiny_dataset).spec
    predictor = load_stage1_predictor(tiny_run, device="cpu")
    for path in list_images(images):
        image = read_rgb(path)[None]
        assert np.array_equal(
            read_mask(tmp_path / "pred" / path.name, spec), DihedralTTA(predictor).predict_masks(image)[0]
        )
        assert np.array_equal(
            read_mask(tmp_path / "plain" / path.name, spec), predictor.predict_masks(image)[0]
        )
    run(make_pseudo_masks(tiny_run, tiny_dataset, tmp_path / "pseudo", device="cpu"))
    assert json.loads((tmp_path / "pseudo" / "cam_settings.json").read_text())["tta"] is True
    ds = open_dataset(tiny_dataset)
    for sample in ds.samples("train")[:3]:  # pseudo-masks are the TTA label maps, gated by image labels
        image = read_rgb(sample.image)[None]
        expected = DihedralTTA(predictor).predict_masks(image, np.asarray([sample.labels], np.float32))[0]
        assert np.array_equal(read_mask(tmp_path / "pseudo" / sample.image.name, spec), expected)


def test_predict_refuses_scales_for_a_stage1_run_in_one_line(tiny_run, tiny_dataset, tmp_path, capsys):
    from napari_pbip.cli.main import main

    out = tmp_path / "pred"
    args = [
        "predict",
        "--model",
        str(tiny_run),
        "--images",
        str(tiny_dataset / "val" / "img"),
        "--out",
        str(out),
    ]
    assert main([*args, "--scales", "0.75", "1", "1.25", "--quiet"]) != 0
    err = capsys.readouterr().err.strip()
    assert "only apply to a segmenter folder" in err and "leave --scales out" in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_pseudo_masks_can_leave_unsure_pixels_to_be_ignored_by_stage2(tiny_run, tiny_dataset, tmp_path):
    from napari_pbip.data.images import read_rgb
    from napari_pbip.engine.tta import DihedralTTA, channel_scores
    from napari_pbip.stage1 import load_stage1_predictor
    from napari_pbip.stage2.seg_data import IGNORE, read_pseudo_mask

    run(make_pseudo_masks(tiny_run, tiny_dataset, tmp_path / "all", device="cpu"))
    settings = CamSettings(ignore_margin=0.2)
    run(make_pseudo_masks(tiny_run, tiny_dataset, tmp_path / "sure", settings=settings, device="cpu"))
    assert json.loads((tmp_path / "sure" / "cam_settings.json").read_text())["ignore_margin"] == 0.2
    spec = open_dataset(tiny_dataset).spec
    predictor = DihedralTTA(load_stage1_predictor(tiny_run, device="cpu"))
    ignored = 0
    for sample in open_dataset(tiny_dataset).samples("train"):
        full = read_mask(tmp_path / "all" / sample.image.name, spec)
        sure = read_pseudo_mask(tmp_path / "sure" / sample.image.name, spec)  # as stage 2 reads it
        kept = sure != IGNORE
        assert np.array_equal(sure[kept], full[kept])  # the same labels where sure...
        gate = np.asarray([sample.labels], np.float32)
        scores = np.sort(channel_scores(predictor, read_rgb(sample.image)[None], gate)[0], axis=0)
        margin = scores[-1] - scores[-2]
        assert np.array_equal(~kept, margin < 0.2)  # ...and ignored exactly where the top two are close
        ignored += (~kept).sum()
    assert ignored > 0
