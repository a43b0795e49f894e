"""Property: whatever a hand-edited ``model.json`` holds, ``pbip predict`` answers in one line naming it.

Random deletions and replacements of its fields (wrong types, nulls, odd strings, nested junk)
must give either a normal run or exit 1 with exactly one ``pbip predict: error:`` line, never a
traceback, and never change the model folder or the images (issue 14: model.json fields).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from napari_pbip.cli.main import main  # noqa: E402

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["../../etc/passwd", "/", "", "pbip-segmenter", "pbip-stage1", "nan"]),
    st.lists(st.integers(-3, 300), max_size=5),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


@pytest.fixture(scope="module")
def run_and_images(tmp_path_factory):
    from napari_pbip.data.images import write_rgb
    from napari_pbip.events import run
    from napari_pbip.stage1 import TrainSettings, train
    from napari_pbip.synthetic.synth import write_synthetic_dataset

    root = tmp_path_factory.mktemp("model-json")
    ds = write_synthetic_dataset(root / "ds", n_train=8, n_val=0, n_test=0, size=64)
    settings = TrainSettings(
        backbone="tiny-backbone",
        baseline=True,
        image_size=64,
        batch_size=4,
        epochs=1,
        preview_every=0,
        device="cpu",
    )
    run(train(settings, ds, None, root / "run"))
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        write_rgb(images / f"im{i}.png", rng.integers(0, 255, (48, 40, 3), dtype=np.uint8))
    return root / "run", images


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_edit_of_model_json_is_a_run_or_one_line(run_and_images, tmp_path_factory, data):
    run_dir, images = run_and_images
    work = tmp_path_factory.mktemp("case")
    model = Path(shutil.copytree(run_dir, work / "run"))
    meta = json.loads((model / "model.json").read_text())
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        key = data.draw(st.sampled_from(sorted(meta)), label="key")
        if data.draw(st.booleans(), label="delete"):
            meta.pop(key, None)
        else:
            meta[key] = data.draw(JUNK, label=f"value of {key}")
        if not meta:
            break
    (model / "model.json").write_text(json.dumps(meta))
    before_model, before_images = _digest(model), _digest(images)
    capsys_err = work / "err.txt"
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(
            [
                "predict",
                "--model",
                str(model),
                "--images",
                str(images),
                "--out",
                str(work / "out"),
                "--quiet",
                "--device",
                "cpu",
            ]
        )
    text = err.getvalue()
    capsys_err.write_text(text)
    assert "Traceback" not in text
    if code != 0:
        lines = [line for line in text.splitlines() if line.strip()]
        assert code == 1 and len(lines) == 1 and lines[0].startswith("pbip predict: error:"), text
        assert "unexpected" not in text, text  # the field is named, not a TypeError from deep inside
        assert not (work / "out").exists()
    assert _digest(model) == before_model and _digest(images) == before_images


NAME = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"),
    min_size=1,
    max_size=20,
).filter(
    lambda s: not s.startswith(".") and len(s.encode()) < 200
)  # a leading dot: hidden, skipped by design


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(NAME, min_size=1, max_size=3, unique_by=str.casefold))
def test_any_image_file_names_give_masks_named_like_them(run_and_images, tmp_path_factory, names):
    """Spaces, brackets, unicode, leading dashes and inner dots in image names: one mask per image, same
    stem. (Names with a leading dot are hidden files, which ``list_images`` skips, like macOS's
    ``._name.png`` companions.)"""
    import contextlib
    import io

    from PIL import Image

    from napari_pbip.data.images import write_rgb

    run_dir, _ = run_and_images
    work = tmp_path_factory.mktemp("names")
    images = work / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in names:
        write_rgb(images / f"{name}.png", rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    before = _digest(images)
    err = io.StringIO()
    out = work / "out"
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(
            ["predict", "--model", str(run_dir), "--images", str(images), "--out", str(out), "--quiet"]
        )
    assert "Traceback" not in err.getvalue()
    assert code == 0, err.getvalue()
    masks = sorted(p.name for p in out.glob("*.png"))
    assert masks == sorted(f"{name}.png" for name in names)
    for name in names:
        with Image.open(out / f"{name}.png") as mask:
            assert mask.size == (48, 40)
    assert _digest(images) == before
