"""The stage-1 training job: events, run folder, exact resume, and the bad inputs it must explain."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_pbip.engine.checkpoint import load_tensors  # noqa: E402
from napari_pbip.errors import BankError, CheckpointError, OutputExistsError  # noqa: E402
from napari_pbip.events import CheckpointSaved, Preview, RunStarted, StepMetrics, run  # noqa: E402
from napari_pbip.stage1 import TrainingDivergedError, TrainSettings, train  # noqa: E402
from napari_pbip.stage1 import loop as loop_mod  # noqa: E402
from napari_pbip.stage1.losses import BG, CLS, FG  # noqa: E402

CLASSES = ("tumor", "stroma", "lymphocyte", "necrosis")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from napari_pbip.synthetic.synth import write_synthetic_dataset

    return write_synthetic_dataset(
        tmp_path_factory.mktemp("d") / "synth", n_train=12, n_val=3, n_test=0, size=64
    )


def fake_bank(classes=CLASSES, seed=0, d=32):
    """A bank stand-in with the Bank interface (random prototypes in tiny-encoder space)."""
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(len(classes), 2, d)).astype(np.float32)
    valid = np.ones((len(classes), 2), bool)
    return SimpleNamespace(
        classes=tuple(classes),
        encoder_name="tiny-encoder",
        content_hash=f"fake{seed}",
        version=1,
        prototype_tensor=lambda: (protos, valid),
        encoder=lambda device="auto", encoder=None: _tiny_encoder(),
    )


def _tiny_encoder():
    from napari_pbip.models import create_encoder

    return create_encoder("tiny-encoder")


def tiny(**kw) -> TrainSettings:
    base = dict(
        backbone="tiny-backbone",
        pretrained=False,
        image_size=64,
        match_size=32,
        batch_size=4,
        epochs=2,
        preview_every=2,
        n_preview=2,
        device="cpu",
    )
    return TrainSettings(**{**base, **kw})


def test_a_run_shorter_than_the_preview_interval_still_ends_with_a_preview(dataset, tmp_path):
    events = []
    run(train(tiny(preview_every=4), dataset, fake_bank(), tmp_path / "run"), events.append)
    assert [e.step for e in events if isinstance(e.payload, Preview)] == [
        4,
        6,
    ]  # 6 steps: every 4th, and the last


def test_events_carry_loss_parts_and_previews_and_run_folder_is_complete(dataset, tmp_path):
    out = tmp_path / "run"
    events = []
    result = run(train(tiny(), dataset, fake_bank(), out), events.append)
    steps = [e.payload for e in events if isinstance(e.payload, StepMetrics)]
    assert len(steps) == result.step == result.total_steps == 6  # 12 images / batch 4 * 2 epochs
    assert events[0].payload == RunStarted(device="cpu", start_step=0, total_steps=6)
    assert [(m.step, m.total, m.epoch) for m in steps] == [(s, 6, s / 3) for s in range(1, 7)]
    assert all(set(m.parts) == {CLS, FG, BG} and m.images_per_s > 0 for m in steps)
    assert steps[0].parts[FG] > 0 and steps[0].parts[BG] > 0
    assert steps[-1].lr < steps[0].lr  # poly decay
    vals = [entry["val"]["miou"] for entry in result.history]  # one validation per epoch
    assert [m.val_miou for m in steps] == [None, None, vals[0], None, None, vals[1]]
    previews = [e.payload for e in events if isinstance(e.payload, Preview)]
    assert len(previews) == 3
    p = previews[0].maps
    assert p["images"].shape == (2, 64, 64, 3) and p["cams"].shape == (2, 4, 64, 64)
    assert p["fg"].shape == p["bg"].shape == p["cams"].shape and p["masks"].shape == (2, 64, 64)
    assert 0 <= float(p["cams"].min()) and float(p["cams"].max()) <= 1
    meta = json.loads((out / "model.json").read_text())
    assert meta["kind"] == "pbip-stage1" and meta["classes"] == list(CLASSES)
    assert (
        meta["encoder"] == "tiny-encoder" and meta["bank_hash"] == "fake0" and meta["background_index"] == 4
    )
    assert "prototypes" in load_tensors(out / "model.safetensors")  # self-contained for inference
    assert (out / "last" / "optimizer.safetensors").is_file() and (out / "best" / "state.json").is_file()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == list(range(1, 7)) and sum("val" in e for e in log) == 2
    # the log's keys are a file format: the typed step numbers map onto the names it always had
    assert list(log[0]) == ["step", "loss", "cls", "fg", "bg", "lr", "epoch", "images_per_s"]
    assert [e for e in log if "loss" in e] == [m.log_line() for m in steps]
    assert TrainSettings.load(out / "settings.json") == tiny()


def test_each_checkpoint_is_announced_with_its_step_and_folder(dataset, tmp_path):
    out, seen = tmp_path / "run", []

    def on_event(event):
        if isinstance(event.payload, CheckpointSaved):  # the files are there when the event comes
            state = json.loads((out / "last" / "state.json").read_text())
            seen.append((event.payload, state["step"], (state.get("best") or {}).get("step")))

    run(train(tiny(preview_every=0), dataset, fake_bank(), out), on_event)
    assert [c.step for c, _, _ in seen] == [
        3,
        6,
    ]  # each epoch's end (3 steps an epoch); the last is the run's end
    assert all(c.folder == str(out / "last") and c.step == on_disk for c, on_disk, _ in seen)
    assert all(c.best_step == best and best in (3, 6) for c, _, best in seen)  # val masks: a best step


def _weights(path):
    return load_tensors(path / "last" / "model.safetensors")


def test_resume_continues_identically(dataset, tmp_path):
    s = tiny(epochs=2, preview_every=0)
    straight = tmp_path / "straight"
    run(train(s, dataset, fake_bank(), straight))

    split = tmp_path / "split"
    job = train(s, dataset, fake_bank(), split)
    for event in job:
        if event.step == 4:  # stop mid-epoch 2, as a GUI "Stop" does
            job.close()
            break
    assert json.loads((split / "last" / "state.json").read_text())["step"] == 4
    result = run(train(None, dataset, fake_bank(), split, resume=True))
    assert result.step == 6
    a, b = _weights(straight), _weights(split)
    assert set(a) == set(b)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k
    assert len((split / "log.jsonl").read_text().splitlines()) == len(
        (straight / "log.jsonl").read_text().splitlines()
    )


def test_keyboard_interrupt_keeps_the_last_completed_step(dataset, tmp_path, monkeypatch):
    original = loop_mod._Trainer._train_step
    calls = {"n": 0}

    def interrupted(self, epoch, index):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, epoch, index)

    monkeypatch.setattr(loop_mod._Trainer, "_train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(train(tiny(preview_every=0), dataset, fake_bank(), tmp_path / "run"))
    assert json.loads((tmp_path / "run" / "last" / "state.json").read_text())["step"] == 2


def test_time_limit_stops_cleanly_and_resumes(dataset, tmp_path):
    out = tmp_path / "run"
    result = run(train(tiny(max_minutes=1e-6, preview_every=0), dataset, fake_bank(), out))
    assert result.stopped == "time limit" and result.step == 1
    result = run(train(tiny(preview_every=0), dataset, fake_bank(), out, resume=True))
    assert result.stopped == "finished" and result.step == 6


def test_bank_with_other_classes_is_refused_naming_both(dataset, tmp_path):
    bank = fake_bank(classes=("tumor", "stroma", "normal"))
    with pytest.raises(
        BankError, match=r"\['tumor', 'stroma', 'normal'\].*\['tumor', 'stroma', 'lymphocyte', 'necrosis'\]"
    ):
        run(train(tiny(), dataset, bank, tmp_path / "run"))


def test_checkpoint_from_another_class_set_is_refused(dataset, tmp_path):
    out = tmp_path / "run"
    run(train(tiny(epochs=1, preview_every=0), dataset, fake_bank(), out))
    state_path = out / "last" / "state.json"
    state = json.loads(state_path.read_text())
    state["classes"] = ["tumor", "stroma", "normal"]
    state_path.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="classes.*normal.*lymphocyte"):
        run(train(tiny(epochs=2, preview_every=0), dataset, fake_bank(), out, resume=True))


def test_resume_with_changed_settings_or_bank_is_refused(dataset, tmp_path):
    out = tmp_path / "run"
    run(train(tiny(epochs=1, preview_every=0), dataset, fake_bank(), out))
    with pytest.raises(CheckpointError, match="lr"):
        run(train(tiny(epochs=2, lr=1e-3, preview_every=0), dataset, fake_bank(), out, resume=True))
    with pytest.raises(CheckpointError, match="bank hash"):
        run(train(tiny(epochs=2, preview_every=0), dataset, fake_bank(seed=1), out, resume=True))


def test_existing_run_is_not_overwritten_without_asking(dataset, tmp_path):
    out = tmp_path / "run"
    run(train(tiny(epochs=1, preview_every=0), dataset, fake_bank(), out))
    with pytest.raises(OutputExistsError):
        run(train(tiny(epochs=1), dataset, fake_bank(), out))
    run(train(tiny(epochs=1, preview_every=0, seed=3), dataset, fake_bank(), out, overwrite=True))
    assert TrainSettings.load(out / "settings.json").seed == 3


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(dataset, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "slide.svs").write_bytes(b"scan")
    with pytest.raises(OutputExistsError, match=r"mine is not a `pbip train` output.*slide\.svs"):
        next(train(tiny(epochs=1), dataset, fake_bank(), mine, overwrite=True))
    assert (mine / "slide.svs").read_bytes() == b"scan"


def test_nan_loss_stops_naming_step_and_last_checkpoint(dataset, tmp_path, monkeypatch):
    from napari_pbip.stage1 import losses

    original = losses.pbip_loss
    calls = {"n": 0}

    def poisoned(*args, **kw):
        calls["n"] += 1
        parts = original(*args, **kw)
        if calls["n"] == 5:
            parts["loss"] = parts["loss"] * float("nan")
        return parts

    monkeypatch.setattr(losses, "pbip_loss", poisoned)
    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"step 5 .*last.*\(step 3\)"):
        run(train(tiny(preview_every=0), dataset, fake_bank(), out))
    state = json.loads((out / "last" / "state.json").read_text())
    assert state["step"] == 3  # the NaN step was not applied or saved


def test_out_of_memory_halves_the_images_per_pass_and_says_so(dataset, tmp_path, monkeypatch):
    original = loop_mod._Trainer._accumulate

    def oom_at_full_batch(self, x, y):
        if self.images_per_pass == 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(self, x, y)

    monkeypatch.setattr(loop_mod._Trainer, "_accumulate", oom_at_full_batch)
    out = tmp_path / "run"
    events = []
    result = run(train(tiny(epochs=1, preview_every=0), dataset, fake_bank(), out), events.append)
    assert result.step == 3
    assert any("out of memory with 4 images per pass: continuing with 2" in e.message for e in events)
    assert json.loads((out / "last" / "state.json").read_text())["micro_batch"] == 2


def test_baseline_needs_no_bank_and_has_no_similarity_loss(dataset, tmp_path):
    events = []
    run(train(tiny(baseline=True, epochs=1, preview_every=0), dataset, None, tmp_path / "run"), events.append)
    steps = [e.payload for e in events if isinstance(e.payload, StepMetrics)]
    assert steps and all(m.parts[FG] == 0 and m.parts[BG] == 0 for m in steps)
    assert json.loads((tmp_path / "run" / "model.json").read_text())["mode"] == "baseline"
    with pytest.raises(BankError, match="needs an image bank"):
        run(train(tiny(), dataset, None, tmp_path / "run2"))


def _stop_at(job, step: int) -> None:
    for event in job:
        if event.step == step:  # as a GUI "Stop" does
            job.close()
            return


@pytest.mark.parametrize("val", [False, True], ids=["no-val", "val"])
def test_presence_thresholds_follow_the_weights_they_were_fitted_for(dataset, tmp_path, val):
    import warnings

    from napari_pbip.stage1 import load_stage1_predictor
    from napari_pbip.stage1.presence import PRESENCE_FILE
    from napari_pbip.synthetic.synth import write_synthetic_dataset

    data = dataset if val else write_synthetic_dataset(tmp_path / "d", n_train=12, n_val=0, n_test=0, size=64)
    out = tmp_path / "run"
    run(train(tiny(epochs=2, preview_every=0), data, fake_bank(), out))  # ends: thresholds fitted
    fitted = tuple(json.loads((out / PRESENCE_FILE).read_text())["thresholds"])
    assert load_stage1_predictor(out, "cpu").presence_thresholds == fitted
    _stop_at(train(tiny(epochs=4, preview_every=0), data, fake_bank(), out, resume=True), 7)
    if val:  # stopped mid-epoch: the inference weights are still the best-by-val ones, thresholds apply
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert load_stage1_predictor(out, "cpu").presence_thresholds == fitted
        return
    with pytest.warns(UserWarning, match="pbip train --resume"):  # new weights (last), no new thresholds
        assert load_stage1_predictor(out, "cpu").presence_thresholds == 0.5
    with warnings.catch_warnings():  # refitting does not warn about the thresholds it replaces
        warnings.simplefilter("error")
        run(train(tiny(epochs=4, preview_every=0), data, fake_bank(), out, resume=True))  # finished: refitted
    refit = json.loads((out / PRESENCE_FILE).read_text())
    assert load_stage1_predictor(out, "cpu").presence_thresholds == tuple(refit["thresholds"])


def test_model_records_the_um_per_px_its_resized_images_show(dataset, tmp_path):
    """The synthetic 64 px patches are drawn at 0.5 um/px; trained at image size 32 the network sees
    them at 1 um/px, which is the resolution a slide must be read at to show it the same tissue."""
    from napari_pbip.predict.predictor import load_predictor

    run(train(tiny(baseline=True, epochs=1, preview_every=0, image_size=32), dataset, None, tmp_path / "run"))
    assert json.loads((tmp_path / "run" / "model.json").read_text())["mpp"] == pytest.approx(1.0)
    pred = load_predictor(tmp_path / "run", device="cpu")
    assert pred.tile == 32 and pred.mpp == pytest.approx(1.0)
