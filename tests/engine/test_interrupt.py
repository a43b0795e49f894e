"""Ctrl-C during `pbip train` / `pbip train-seg`, then --resume: the same weights as a run never stopped.

Ctrl-C lands anywhere, also inside a forward pass that has already moved BatchNorm statistics; the
job must checkpoint its last completed step (issue 14 section 3), and so must a run that stops on
an unreadable image.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_pbip.events import StepMetrics, run  # noqa: E402

pytestmark = pytest.mark.slow

TRAIN = ["--backbone", "tiny-backbone", "--image-size", "64", "--match-size", "32", "--batch-size", "4"]
TRAIN += ["--epochs", "8", "--device", "cpu", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from napari_pbip.bank import BankSettings, build_bank
    from napari_pbip.synthetic.synth import write_synthetic_dataset

    root = tmp_path_factory.mktemp("interrupt")
    ds = write_synthetic_dataset(root / "ds", n_train=16, n_val=0, n_test=0, size=64)
    bank = root / "bank"
    run(
        build_bank(
            BankSettings(encoder="tiny-encoder", k=1, per_cluster=2, min_tissue=0.0), ds, bank, device="cpu"
        )
    )
    return ds, bank


def _pbip(*args: str) -> list[str]:
    return [sys.executable, "-m", "napari_pbip.cli.main", *map(str, args)]


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return os.environ | {
        "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
    }


def _weights(run_dir: Path) -> dict[str, np.ndarray]:
    from napari_pbip.engine.checkpoint import load_tensors

    return {k: v.numpy() for k, v in load_tensors(run_dir / "last" / "model.safetensors").items()}


def _interrupted(cmd: list[str], out: Path, after_steps: int, delay: float) -> int:
    """Start ``cmd``; once its log holds ``after_steps`` steps, wait ``delay`` s (landing anywhere in
    the next step) and send SIGINT; return its exit code."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = out / "log.jsonl"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if log.is_file() and log.read_text().count("\n") >= after_steps:
            break
        time.sleep(0.01)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert b"Traceback" not in err, err.decode()
    return proc.returncode


def test_sigint_anywhere_then_resume_equals_an_uninterrupted_run(data, tmp_path):
    ds, bank = data
    straight = tmp_path / "straight"
    subprocess.run(
        _pbip("train", "--dataset", ds, "--bank", bank, "--out", straight, *TRAIN), env=_env(), check=True
    )
    expected = _weights(straight)
    rng = random.Random(0)
    stopped = 0
    for i in range(10):
        out = tmp_path / f"run{i}"
        cmd = _pbip("train", "--dataset", ds, "--bank", bank, "--out", out, *TRAIN)
        code = _interrupted(cmd, out, rng.randint(0, 25), rng.uniform(0.0, 0.3))
        if code == 130:
            stopped += 1
            assert (out / "last" / "state.json").is_file() or not (out / "log.jsonl").is_file()
        resume = _pbip("train", "--dataset", ds, "--bank", bank, "--out", out, "--resume", *TRAIN)
        if (out / "last").is_dir():
            subprocess.run(resume, env=_env(), check=True, capture_output=True)
        else:  # stopped before the first step: nothing to resume, start again
            subprocess.run([*cmd, "--overwrite"], env=_env(), check=True, capture_output=True)
        got = _weights(out)
        assert got.keys() == expected.keys()
        for k in expected:
            np.testing.assert_array_equal(got[k], expected[k], err_msg=f"run {i}: {k}")
    assert stopped >= 5  # most of the ten Ctrl-Cs landed during training


def test_sigint_then_resume_of_train_seg_equals_an_uninterrupted_run(data, tmp_path):
    from napari_pbip.data.images import read_rgb, write_mask
    from napari_pbip.data.layouts import open_dataset

    ds, _ = data
    dataset = open_dataset(ds)
    masks = tmp_path / "masks"
    masks.mkdir()
    for sample in dataset.samples("train"):  # class 0 where there is tissue, background on glass
        tissue = read_rgb(sample.image).min(axis=2) < 200
        label = np.where(tissue, 0, dataset.spec.background_index).astype(np.uint8)
        write_mask(masks / (sample.image.stem + ".png"), label, dataset.spec.palette)
    seg = ["--backbone", "tiny-backbone", "--epochs", "6", "--batch-size", "4", "--crop-size", "64"]
    seg += [
        "--loader-threads",
        "0",
        "--device",
        "cpu",
        "--mpp",
        "0.5",
        "--config",
        '{"width": 16}',
        "--quiet",
    ]
    straight = tmp_path / "straight"
    subprocess.run(
        _pbip("train-seg", "--dataset", ds, "--masks", masks, "--out", straight, *seg), env=_env(), check=True
    )
    expected = _weights(straight)
    rng = random.Random(1)
    stopped = 0
    for i in range(5):
        out = tmp_path / f"seg{i}"
        cmd = _pbip("train-seg", "--dataset", ds, "--masks", masks, "--out", out, *seg)
        stopped += _interrupted(cmd, out, rng.randint(0, 18), rng.uniform(0.0, 0.3)) == 130
        if (out / "last").is_dir():
            resume = _pbip(
                "train-seg", "--dataset", ds, "--masks", masks, "--out", out, "--resume", "--quiet"
            )
            subprocess.run(resume, env=_env(), check=True, capture_output=True)
        else:
            subprocess.run([*cmd, "--overwrite"], env=_env(), check=True, capture_output=True)
        got = _weights(out)
        for k in expected:
            np.testing.assert_array_equal(got[k], expected[k], err_msg=f"run {i}: {k}")
    assert stopped >= 3


def test_an_unreadable_image_mid_epoch_keeps_the_last_completed_step(data, tmp_path):
    from napari_pbip.stage1 import TrainSettings, train

    ds, bank = data
    broken = tmp_path / "ds"
    import shutil

    shutil.copytree(ds, broken)
    from napari_pbip.data.layouts import open_dataset
    from napari_pbip.engine import augment

    samples = open_dataset(broken).samples("train")
    last_batch = augment.batch_indices(len(samples), 4, 0, 0, 3)  # seed 0, epoch 0, its 4th step
    samples[int(last_batch[0])].image.write_bytes(b"not a png")
    settings = TrainSettings(
        backbone="tiny-backbone",
        image_size=64,
        match_size=32,
        batch_size=4,
        epochs=1,
        preview_every=0,
        device="cpu",
    )
    out = tmp_path / "run"
    job = train(settings, broken, bank, out)
    steps = []
    with pytest.raises(Exception, match="not a png|cannot|image"):
        for event in job:
            if isinstance(event.payload, StepMetrics):
                steps.append(event.payload.step)
    from napari_pbip.engine.checkpoint import read_state

    assert steps, "no step completed before the broken image"
    assert read_state(out / "last")["step"] == steps[-1]  # the last completed step is on disk, resumable


def test_a_ctrl_c_after_the_command_has_returned_prints_no_traceback():
    """CI once sent the interrupt while a finished `pbip train-seg` was shutting down: torch's exit
    handler printed a KeyboardInterrupt traceback. The `pbip` entry point ignores Ctrl-C once the
    command has returned (its outputs are written by then)."""
    code = (
        "import os, signal, time\n"
        "from napari_pbip.cli.main import entry\n"
        "code = entry(['models'])\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "time.sleep(0.2)\n"
        "raise SystemExit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, timeout=120)
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr.decode()
