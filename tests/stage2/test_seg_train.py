"""Stage-2 training: the loss ignores 255, training learns, checkpoints reload exactly, resume, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from napari_pbip.cli.main import main
from napari_pbip.data.images import read_mask, read_rgb, write_mask
from napari_pbip.errors import CheckpointError, OutputConflictError, OutputExistsError, SettingsError
from napari_pbip.events import CheckpointSaved, RunStarted, StepMetrics, run
from napari_pbip.predict.predictor import DensePredictor, load_predictor
from napari_pbip.stage2.seg_settings import SegSettings
from napari_pbip.stage2.seg_train import segmentation_loss, train_segmenter
from napari_pbip.stage2.segmenter_predictor import load_segmenter


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train fastest on one thread (more threads only contend on a shared CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


COLOURS = np.array([[200, 60, 120], [90, 60, 200], [255, 255, 255]], np.uint8)  # pink, blue, background
BACKGROUND = 2


def _labels(rng: np.random.Generator, size: int) -> np.ndarray:
    """A half-plane of class 0 and a disc of class 1 on background."""
    lab = np.full((size, size), BACKGROUND, np.uint8)
    yy, xx = np.mgrid[:size, :size] - size / 2
    a, b, c = rng.normal(size=3)
    lab[a * yy + b * xx + c * size / 4 > 0] = 0
    cy, cx = rng.integers(-size // 2, size // 2, size=2)
    lab[np.hypot(yy - cy, xx - cx) < size / 3] = 1
    return lab


def _render(rng: np.random.Generator, lab: np.ndarray) -> np.ndarray:
    return np.clip(COLOURS[lab] + rng.normal(0, 12, (*lab.shape, 3)), 0, 255).astype(np.uint8)


def write_colour_set(root: Path, n_train: int = 16, n_val: int = 4, size: int = 64) -> tuple[Path, Path]:
    """A generic-layout set of two flat-colour classes on white, with exact pseudo-masks."""
    rng = np.random.default_rng(0)
    data, masks = root / "data", root / "masks"
    for d in (data / "train", data / "val" / "img", data / "val" / "mask", masks):
        d.mkdir(parents=True)
    spec = {"name": "colours", "classes": ["pink", "blue"], "palette": COLOURS.tolist(),
            "background_index": BACKGROUND, "label_format": "space"}  # fmt: skip
    (data / "dataset.json").write_text(json.dumps(spec))
    for i in range(n_train):
        lab = _labels(rng, size)
        name = f"p{i:03d}-[{int((lab == 0).any())} {int((lab == 1).any())}].png"
        Image.fromarray(_render(rng, lab)).save(data / "train" / name)
        write_mask(masks / name, lab, COLOURS.tolist())
    for i in range(n_val):
        lab = _labels(rng, size)
        Image.fromarray(_render(rng, lab)).save(data / "val" / "img" / f"v{i:03d}.png")
        write_mask(data / "val" / "mask" / f"v{i:03d}.png", lab, COLOURS.tolist())
    return data, masks


def tiny(**changes) -> SegSettings:
    base = dict(backbone="tiny-backbone", crop_size=64, batch_size=4, epochs=6, device="cpu", num_workers=1)
    return SegSettings(**{**base, **changes})


@pytest.fixture(scope="module")
def colour_set(tmp_path_factory) -> tuple[Path, Path]:
    return write_colour_set(tmp_path_factory.mktemp("colours"))


@pytest.fixture(scope="module")
def trained(colour_set, tmp_path_factory):
    data, masks = colour_set
    out = tmp_path_factory.mktemp("runs") / "seg"
    return run(train_segmenter(tiny(), data, masks, out)), data


def test_loss_ignores_unlabelled_pixels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=g)
    target = torch.randint(0, 3, (2, 8, 8), generator=g)
    target[:, :4] = 255
    before = segmentation_loss(logits, target)
    changed = logits.clone()
    changed[:, :, :4] = torch.randn(2, 3, 4, 8, generator=g) * 10  # only ignored pixels change
    assert torch.allclose(segmentation_loss(changed, target), before)
    changed[:, 0, 6] += 5.0  # class 0 rises on a labelled row: the loss must notice
    assert not torch.allclose(segmentation_loss(changed, target), before)
    expected = torch.nn.functional.cross_entropy(logits[:, :, 4:], target[:, 4:])
    assert torch.allclose(before, expected)
    assert segmentation_loss(logits, torch.full_like(target, 255)).item() == 0.0  # no NaN


def test_class_weights_make_a_rare_class_count_like_a_common_one():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 8, 8, generator=g)
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 0, :2] = 1  # 2 of 64 pixels are class 1
    target[0, 7] = 255
    ones = torch.ones(3)
    assert torch.allclose(segmentation_loss(logits, target, ones), segmentation_loss(logits, target))
    weight = torch.tensor([1.0, 8.0, 1.0])
    per_pixel = torch.nn.functional.cross_entropy(logits, target, ignore_index=255, reduction="none")
    labelled = target != 255
    w = weight[target.clamp(max=2)] * labelled
    assert torch.allclose(segmentation_loss(logits, target, weight), (per_pixel * w).sum() / w.sum())
    logits.requires_grad_(True)
    segmentation_loss(logits, target, weight).backward()
    rare = logits.grad[0, :, 0, 0].abs().sum()
    common = logits.grad[0, :, 3, 3].abs().sum()
    plain = torch.autograd.grad(segmentation_loss(logits, target), logits)[0]
    assert rare / common > 4 * plain[0, :, 0, 0].abs().sum() / plain[0, :, 3, 3].abs().sum()


def test_training_learns_the_classes_and_the_background(trained):
    result, data = trained
    assert result.stopped == "finished" and result.step == result.total_steps == 24
    log = [json.loads(ln) for ln in (result.out / "log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in log if "loss" in e]
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])
    assert result.best["miou"] > 0.85
    predictor = load_predictor(result.out, device="cpu")
    images = sorted((data / "val" / "img").glob("*.png"))
    spec_palette = predictor.palette
    batch = np.stack([read_rgb(p) for p in images])
    pred = predictor.predict(batch).argmax(axis=1)
    from napari_pbip.data.layouts import open_dataset

    spec = open_dataset(data).spec
    gt = np.stack([read_mask(data / "val" / "mask" / p.name, spec) for p in images])
    glass = gt == BACKGROUND
    assert (pred[glass] == BACKGROUND).mean() > 0.9  # background is a class the model predicts
    assert spec_palette[BACKGROUND] == (255, 255, 255)


def test_folder_reloads_to_identical_predictions_and_describes_itself(trained):
    result, data = trained
    meta = json.loads((result.out / "model.json").read_text())
    assert meta["kind"] == "pbip-segmenter" and meta["classes"] == ["pink", "blue"]
    assert meta["background_index"] == BACKGROUND and meta["tile"] == 64 and meta["mpp"] is None
    assert meta["segmenter"] == "lite0-seg" and meta["config"]["backbone"] == "tiny-backbone"
    assert meta["weights"] == "best" and meta["best"]["step"] == result.best["step"]
    assert SegSettings.load(result.out / "settings.json") == tiny()
    a, _ = load_segmenter(result.out, device="cpu")
    b, _ = load_segmenter(result.out, device="cpu")
    x = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    best = load_segmenter(result.out, device="cpu")[0].state_dict()
    from napari_pbip.engine.checkpoint import load_tensors

    saved = load_tensors(result.out / "best" / "model.safetensors")
    assert all(torch.equal(best[k], saved[k]) for k in saved)


def test_load_predictor_gives_probabilities_over_mask_indices(trained):
    result, _ = trained
    predictor = load_predictor(result.out, device="cpu")
    assert isinstance(predictor, DensePredictor)
    assert predictor.classes == ("pink", "blue") and predictor.background_index == BACKGROUND
    assert (predictor.train_tile, predictor.tile) == (64, 128)  # slides tiled at twice the training size
    batch = np.random.default_rng(1).integers(0, 256, (3, 40, 72, 3), dtype=np.uint8)  # not a multiple of 32
    probs = predictor.predict(batch)
    assert probs.shape == (3, 3, 40, 72) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5) and probs.min() >= 0


def test_predictor_runs_channels_last_and_agrees_with_the_plain_network(trained):
    """The predictor's fast memory layout must not change what the trained network says."""
    result, _ = trained
    predictor = load_predictor(result.out, device="cpu")
    kernels = [p for p in predictor.model.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    plain, _ = load_segmenter(result.out, device="cpu")
    batch = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div(255).contiguous()
    with torch.no_grad():
        expected = torch.softmax(plain(x), 1).numpy()
    assert np.allclose(predictor.predict(batch), expected, atol=1e-5)


def test_each_step_yields_its_numbers_and_logs_them_under_the_names_the_log_always_had(colour_set, tmp_path):
    data, masks = colour_set
    out, events = tmp_path / "seg", []
    result = run(train_segmenter(tiny(epochs=2), data, masks, out), events.append)
    steps = [e.payload for e in events if isinstance(e.payload, StepMetrics)]
    assert [(m.step, m.total, m.epoch) for m in steps] == [(s, 8, s / 4) for s in range(1, 9)]  # 16 / 4
    assert all(m.parts == {} and m.loss > 0 and m.images_per_s > 0 for m in steps)
    assert steps[-1].lr < steps[0].lr  # poly decay
    vals = [entry["val"]["miou"] for entry in result.history]  # one validation per epoch
    assert [m.val_miou for m in steps] == [None, None, None, vals[0], None, None, None, vals[1]]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert list(log[0]) == ["step", "loss", "lr", "epoch", "images_per_s"]  # a file format: unchanged
    assert [e for e in log if "loss" in e] == [m.log_line() for m in steps]


def test_resume_after_closing_ends_where_an_uninterrupted_run_ends(colour_set, tmp_path):
    data, masks = colour_set
    s = tiny(epochs=2, cutmix=0.5)  # every random draw, CutMix's boxes too, repeats when resumed
    straight = run(train_segmenter(s, data, masks, tmp_path / "straight"))
    job = train_segmenter(s, data, masks, tmp_path / "stopped")
    for event in job:
        if event.step == 3:
            break
    job.close()  # as Ctrl-C in the CLI or a cancelled widget worker
    state = json.loads((tmp_path / "stopped" / "last" / "state.json").read_text())
    assert state["step"] == 3
    assert (
        load_predictor(tmp_path / "stopped", device="cpu")
        .predict(np.zeros((1, 32, 32, 3), np.uint8))
        .shape[1]
        == 3
    )
    events = []
    resumed = run(train_segmenter(None, data, masks, tmp_path / "stopped", resume=True), events.append)
    assert resumed.step == straight.step == 8
    assert events[0].payload == RunStarted(device="cpu", start_step=3, total_steps=8)  # where it goes on
    saved = [e.payload.step for e in events if isinstance(e.payload, CheckpointSaved)]
    assert saved == [4, 8]  # the epoch ends after the resumed step (4 steps an epoch)
    a = load_segmenter(tmp_path / "straight", device="cpu")[0].state_dict()
    b = load_segmenter(tmp_path / "stopped", device="cpu")[0].state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    assert resumed.best["miou"] == pytest.approx(straight.best["miou"], abs=1e-6)


def test_time_limit_stops_cleanly(colour_set, tmp_path):
    data, masks = colour_set
    result = run(train_segmenter(tiny(max_minutes=1e-6), data, masks, tmp_path / "seg"))
    assert result.stopped == "time limit" and result.step == 1
    assert json.loads((tmp_path / "seg" / "last" / "state.json").read_text())["step"] == 1


def test_existing_output_needs_overwrite_and_resume_needs_same_settings(trained, colour_set):
    result, _ = trained
    data, masks = colour_set
    with pytest.raises(OutputExistsError, match="overwrite"):
        next(train_segmenter(tiny(), data, masks, result.out))
    with pytest.raises(CheckpointError, match=r"lr.*saved 0\.001, given 0\.5"):
        next(train_segmenter(tiny(lr=0.5), data, masks, result.out, resume=True))


def test_overwrite_replaces_a_previous_segmenter_but_no_other_folder(colour_set, tmp_path):
    data, masks = colour_set
    s = tiny(epochs=1)
    run(train_segmenter(s, data, masks, tmp_path / "seg"))
    run(train_segmenter(s.replace(seed=3), data, masks, tmp_path / "seg", overwrite=True))
    assert SegSettings.load(tmp_path / "seg" / "settings.json").seed == 3
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "weights.pt").write_bytes(b"a week of GPU time")
    with pytest.raises(OutputExistsError, match=r"mine is not a `pbip train-seg` output.*weights\.pt"):
        next(train_segmenter(s, data, masks, mine, overwrite=True))
    assert (mine / "weights.pt").read_bytes() == b"a week of GPU time"
    with pytest.raises(OutputConflictError, match="lies inside the masks"):
        next(train_segmenter(s, data, masks, masks / "seg"))


def test_settings_reject_bad_values_by_name():
    with pytest.raises(SettingsError, match="crop_size=100"):
        SegSettings(crop_size=100)
    with pytest.raises(SettingsError, match="segmenter_config"):
        SegSettings(segmenter_config={"backbone": "x"})
    with pytest.raises(SettingsError, match=r"stain_jitter=0\.8 .*\[0, 0\.5\]"):
        SegSettings(stain_jitter=0.8)
    with pytest.raises(SettingsError, match=r"class_balance=2 .*\[0, 1\]"):
        SegSettings(class_balance=2)
    with pytest.raises(SettingsError, match=r"cutmix=1\.5 .*\[0, 1\]"):
        SegSettings(cutmix=1.5)
    assert SegSettings.from_dict(SegSettings(segmenter_config={"width": 32}).to_dict()).segmenter_config == {
        "width": 32
    }


def test_cli_turns_cutmix_off_and_names_a_bad_probability(colour_set, tmp_path, capsys):
    data, masks = colour_set
    out = tmp_path / "seg"
    common = ["train-seg", "--dataset", str(data), "--masks", str(masks), "--out", str(out), "--quiet",
              "--backbone", "tiny-backbone", "--crop-size", "64", "--workers", "0", "--device", "cpu"]  # fmt: skip
    assert main([*common, "--cutmix", "2"]) == 1
    err = capsys.readouterr().err
    assert "cutmix=2.0 is invalid" in err and "Traceback" not in err and not out.exists()
    assert main([*common, "--cutmix", "0", "--max-minutes", "0.000001"]) == 0
    assert SegSettings.load(out / "settings.json").cutmix == 0.0


def test_cli_trains_and_resumes(colour_set, tmp_path, capsys):
    data, masks = colour_set
    out = tmp_path / "seg"
    common = ["train-seg", "--dataset", str(data), "--masks", str(masks), "--out", str(out), "--quiet"]
    args = [*common, "--backbone", "tiny-backbone", "--epochs", "1", "--batch", "8", "--crop-size", "64",
            "--workers", "0", "--device", "cpu", "--mpp", "0.5", "--config", '{"width": 16}']  # fmt: skip
    assert main([*args, "--max-minutes", "0.000001"]) == 0
    assert "time limit at step 1/2" in capsys.readouterr().out
    assert main([*common, "--resume", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["step"] == 2 and printed["stopped"] == "finished" and printed["best"]["miou"] is not None
    meta = json.loads((out / "model.json").read_text())
    assert meta["mpp"] == 0.5 and meta["config"]["width"] == 16
    assert main([*common, "--epochs", "3", "--resume"]) == 1
    assert "differ from the saved run" in capsys.readouterr().err


@pytest.mark.slow
def test_compiled_segmenter_segments_a_slide_like_the_eager_one(trained, tmp_path):
    """`pbip segment --compile`: same labels as without it, including the chunks' short last
    batches (padded to the compiled batch size) and two chunks at a time sharing the compiled
    model, and the compile time reported."""
    from napari_pbip.export import open_labels
    from napari_pbip.slides.segment import SegmentSettings, segment_slide
    from napari_pbip.synthetic.synth_slide import write_synthetic_slide

    result, _ = trained
    slide = write_synthetic_slide(tmp_path / "slide.tif", size=768, seed=1).slide
    base = SegmentSettings(mpp=0.5, batch=8, chunk=512, skip_background=False, device="cpu")
    eager = run(segment_slide(slide, result.out, tmp_path / "eager.zarr", base))
    compiled = run(
        segment_slide(
            slide, result.out, tmp_path / "compiled.zarr", base.replace(compile=True, num_workers=2)
        )
    )
    assert compiled.seconds["compile"] > 0 and "compile" not in eager.seconds
    assert compiled.tiles["run"] % 8 != 0  # some model calls had fewer tiles than the batch
    a = np.asarray(open_labels(tmp_path / "eager.zarr").levels[0])
    b = np.asarray(open_labels(tmp_path / "compiled.zarr").levels[0])
    assert a.shape == b.shape and (a != b).mean() < 1e-4


def test_only_segmenters_can_be_compiled_and_the_refusal_writes_nothing(tmp_path):
    from napari_pbip.slides.segment import SegmentSettings, segment_slide
    from napari_pbip.synthetic.synth_slide import write_synthetic_slide

    class Stage1Like:  # a DensePredictor without a torch.compile path
        classes, palette, background_index, mpp, tile = ("a",), ((255, 0, 0), (255, 255, 255)), 1, 0.5, 64

        def predict(self, batch):
            raise AssertionError("never called")

    slide = write_synthetic_slide(tmp_path / "slide.tif", size=256, seed=0).slide
    with pytest.raises(SettingsError, match="stage-2 segmenter.*without --compile"):
        run(segment_slide(slide, Stage1Like(), tmp_path / "out.zarr", SegmentSettings(compile=True)))
    assert not (tmp_path / "out.zarr").exists()
