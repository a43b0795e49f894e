"""The synthetic H&E data set: determinism, labels that agree with pixels, distinct classes."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from napari_pbip.errors import OutputExistsError, SettingsError
from napari_pbip.synthetic.synth import (
    demo_image,
    is_single,
    label_suffix,
    palette_for,
    patch_labels,
    render_tissue,
    synthetic_patch,
    write_synthetic_dataset,
)

SMALL = {"n_train": 10, "n_val": 4, "n_test": 4, "size": 64}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "ds", seed=3, **SMALL)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_dataset_and_other_seed_differs(dataset, tmp_path):
    again = _files(write_synthetic_dataset(tmp_path / "again", seed=3, **SMALL))
    assert again == _files(dataset)
    other = _files(write_synthetic_dataset(tmp_path / "other", seed=4, **SMALL))
    assert other.keys() != again.keys() or any(other[k] != again[k] for k in again if k.endswith(".png"))


def test_layout_and_spec(dataset):
    import json

    spec = json.loads((dataset / "dataset.json").read_text())
    assert spec["classes"] == ["tumor", "stroma", "lymphocyte", "necrosis"]
    assert spec["background_index"] == 4 and spec["label_format"] == "space"
    assert spec["palette"][4] == [255, 255, 255] and len({tuple(c) for c in spec["palette"]}) == 5
    assert len(list((dataset / "train").glob("*.png"))) == 10
    for split in ("val", "test"):
        images = sorted(p.name for p in (dataset / split / "img").glob("*.png"))
        assert images == sorted(p.name for p in (dataset / split / "mask").glob("*.png")) and len(images) == 4


def test_train_names_state_exactly_the_classes_drawn(dataset):
    singles = 0
    for path in sorted((dataset / "train").glob("*.png")):
        index = int(re.search(r"synth-train-(\d+)-", path.name).group(1))
        rgb, labels = synthetic_patch("train", index, seed=3, size=64)
        assert path.name.endswith(f"-{label_suffix(labels, 4)}.png")
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), rgb)
        vector = [int(v) for v in re.search(r"\[([01 ]+)\]", path.name).group(1).split()]
        present = set(np.unique(labels)) - {4}
        assert {i for i, v in enumerate(vector) if v} == present and present
        singles += sum(vector) == 1
    assert singles == 4  # 2 in 5 training patches show one class


def test_val_masks_are_exact_palette_label_maps(dataset):
    for path in sorted((dataset / "val" / "mask").glob("*.png")):
        mask = Image.open(path)
        assert mask.mode == "P"
        assert mask.getpalette()[:15] == [
            v for c in palette_for(["tumor", "stroma", "lymphocyte", "necrosis"]) for v in c
        ]
        index = int(re.search(r"(\d+)\.png", path.name).group(1))
        _, labels = synthetic_patch("val", index, seed=3, size=64)
        assert np.array_equal(np.asarray(mask), labels)


def test_existing_output_is_kept_unless_overwrite(dataset):
    before = _files(dataset)
    with pytest.raises(OutputExistsError, match="overwrite"):
        write_synthetic_dataset(dataset, seed=9, **SMALL)
    assert _files(dataset) == before


def test_mixed_patches_give_each_class_a_real_share():
    labels = patch_labels(seed=11, size=128, n_classes=4, classes=[0, 2, 3], background=0.2)
    counts = np.bincount(labels.ravel(), minlength=5)
    assert set(np.nonzero(counts)[0]) == {0, 2, 3, 4}
    assert counts[[0, 2, 3]].min() >= 0.06 * counts[:4].sum()
    assert 0.1 < counts[4] / labels.size < 0.3


def test_single_class_share_of_training_patches():
    assert np.mean([is_single("train", i) for i in range(300)]) == pytest.approx(0.4)


def _features(rgb: np.ndarray) -> np.ndarray:
    flat = rgb.reshape(-1, 3).astype(float)
    return np.concatenate([flat.mean(0), flat.std(0)])


def test_class_colour_statistics_separate_classes_across_stains():
    """Nearest-centroid on colour mean/std, fitted on some stains, recognises the class on others."""
    feats = {
        c: [_features(render_tissue(np.full((96, 96), c), seed=s, origin=(s * 500, 0))) for s in range(8)]
        for c in range(4)
    }
    centroids = np.array([np.mean(feats[c][:4], axis=0) for c in range(4)])
    hits = [np.argmin(np.linalg.norm(centroids - f, axis=1)) == c for c in range(4) for f in feats[c][4:]]
    assert np.mean(hits) >= 0.9
    means = np.array([np.mean(feats[c], axis=0)[:3] for c in range(4)])
    assert min(np.linalg.norm(means[i] - means[j]) for i in range(4) for j in range(i + 1, 4)) > 8


def test_background_is_near_white_glass():
    rgb = render_tissue(np.full((64, 64), 4), seed=1)
    assert 230 <= rgb.min() and rgb.max() <= 252 and rgb.std() > 0.5


def test_overlapping_regions_render_identically():
    """A region drawn alone equals the same pixels of a larger drawing: no seams between tiles."""
    rng = np.random.default_rng(0)
    big = np.repeat(np.repeat(rng.integers(0, 5, (23, 8)), 24, axis=0), 24, axis=1)  # 552 x 192, all classes
    whole = render_tissue(big, seed=5, origin=(1000, 3000))
    for y, x, h, w in [
        (0, 0, 64, 64),
        (40, 70, 80, 100),
        (100, 150, 44, 42),
        (490, 5, 50, 60),
        (300, 31, 7, 9),
    ]:
        part = render_tissue(big[y : y + h, x : x + w], seed=5, origin=(1000 + y, 3000 + x))
        assert np.array_equal(part, whole[y : y + h, x : x + w]), (y, x, h, w)


def test_render_rejects_bad_labels_and_styles():
    with pytest.raises(SettingsError, match=r"\(0, 7\).*0\.\.4"):
        render_tissue(np.array([[0, 7]]), seed=0)
    with pytest.raises(SettingsError, match="float32"):
        render_tissue(np.zeros((4, 4), np.float32), seed=0)
    with pytest.raises(SettingsError, match="bone"):
        render_tissue(np.zeros((4, 4), int), seed=0, styles=("tumor", "bone"))


def test_demo_image_has_all_classes_and_background():
    rgb, labels = demo_image(size=256, seed=0)
    assert rgb.shape == (256, 256, 3) and rgb.dtype == np.uint8
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4}
    assert rgb[labels == 4].mean() > 230 > rgb[labels == 2].mean()


def test_dataset_reads_back_through_the_layout_reader(dataset):
    layouts = pytest.importorskip("napari_pbip.data.layouts")
    ds = layouts.open_dataset(dataset)
    assert list(ds.spec.classes) == ["tumor", "stroma", "lymphocyte", "necrosis"]
    assert ds.spec.background_index == 4
    train = ds.samples("train")
    assert len(train) == 10 and all(s.labels is not None and sum(s.labels) >= 1 for s in train)
    assert all(s.mask is not None for s in ds.samples("val"))


def test_cli_synth_writes_the_same_dataset_as_the_api(dataset, tmp_path, capsys):
    from napari_pbip.cli.main import main

    out = tmp_path / "cli"
    args = ["data", "synth", "--out", str(out), "--seed", "3", "--n-train", "10", "--n-val", "4"]
    assert main([*args, "--n-test", "4", "--size", "64", "--quiet"]) == 0
    assert str(out) in capsys.readouterr().out
    assert _files(out) == _files(dataset)
    assert main([*args, "--n-test", "4", "--size", "64", "--quiet"]) == 1
    assert "already exists" in capsys.readouterr().err
