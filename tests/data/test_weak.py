"""Weak tiling: tiles get the classes their mask crop shows, background tiles go, output is a data set."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_pbip.cli.main import main
from napari_pbip.data.images import read_mask, read_rgb, write_mask, write_rgb
from napari_pbip.data.labels import parse_labels
from napari_pbip.data.layouts import DatasetSpec, open_dataset, write_spec
from napari_pbip.data.weak import WeakSettings, infer_spec, tile_label, tile_starts, weak_dataset
from napari_pbip.errors import DatasetError, OutputConflictError, OutputExistsError, SettingsError
from napari_pbip.events import run

SPEC = DatasetSpec("generic", ("a", "b"), ((200, 0, 0), (0, 200, 0), (255, 255, 255)), 2, "space")
PINK = (200, 100, 150)


def _annotated(tmp_path, mask, name="img", white=None):
    """Write a pink image with ``mask`` (white where the mask is background or ``white`` is set)."""
    image = np.empty((*mask.shape, 3), np.uint8)
    image[:] = PINK
    image[mask == SPEC.background_index] = 255
    if white is not None:
        image[white] = 255
    write_rgb(tmp_path / "img" / f"{name}.png", image)
    write_mask(tmp_path / "mask" / f"{name}.png", mask, SPEC.palette)
    return image


def _two_class_mask():
    # 8 x 16: columns 0-5 class a, 6-10 class b, 11-15 background.
    mask = np.full((8, 16), 1, np.uint8)
    mask[:, :6] = 0
    mask[:, 11:] = 2
    return mask


def test_tile_starts_hand_computed():
    assert tile_starts(300, 224, 56) == [0, 56, 76]  # last tile flush with the edge
    assert tile_starts(336, 224, 56) == [0, 56, 112]
    assert tile_starts(224, 224, 56) == [0]
    assert tile_starts(100, 224, 56) == [0]


@pytest.mark.parametrize("bg", [0, 1])
def test_tile_labels_follow_the_classes_when_background_is_not_last(bg):
    """Background at mask index 0 or 1: class a (mask index 1 or 0) and class b (index 2)."""
    spec = DatasetSpec("generic", ("a", "b"), ((255, 255, 255), (200, 0, 0), (0, 200, 0)), bg, "space")
    a, b = (1, 2) if bg == 0 else (0, 2)
    mask = np.full((8, 16), b, np.uint8)
    mask[:, 12:] = bg  # 25% background
    white = np.zeros(mask.shape, bool)
    assert tile_label(mask, white, spec, WeakSettings()) == (0, 1)
    mask[:, :12] = a
    assert tile_label(mask, white, spec, WeakSettings()) == (1, 0)


def test_tiles_are_labelled_by_class_cover_and_background_tiles_dropped(tmp_path):
    image = _annotated(tmp_path, _two_class_mask())
    settings = WeakSettings(tile=8, stride=4, min_fraction=0.3, max_background=0.5)
    events = []
    summary = run(
        weak_dataset(tmp_path / "img", tmp_path / "mask", tmp_path / "out", settings, SPEC), events.append
    )
    # x=0: a 6/8, b 2/8 -> [1 0]; x=4: a 2/8, b 5/8, bg 1/8 -> [0 1]; x=8: bg 5/8 > 0.5 -> dropped.
    names = sorted(p.name for p in (tmp_path / "out" / "train").iterdir())
    assert names == ["img-y0-x0-[1 0].png", "img-y0-x4-[0 1].png"]
    assert summary["tiles"] == 2 and summary["dropped"] == {"background": 1, "unlabelled": 0}
    assert summary["class_counts"] == {"a": 1, "b": 1} and summary["single_class_counts"] == {"a": 1, "b": 1}
    np.testing.assert_array_equal(read_rgb(tmp_path / "out/train/img-y0-x4-[0 1].png"), image[:, 4:12])
    assert [e.step for e in events] == [0, 1] and events[-1].total == 1
    ds = open_dataset(tmp_path / "out")
    assert ds.spec == SPEC and [s.labels for s in ds.samples("train")] == [(1, 0), (0, 1)]
    assert WeakSettings.load(tmp_path / "out" / "weak_settings.json") == settings
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["tiles"] == 2


def test_lower_min_fraction_adds_the_minor_class(tmp_path):
    _annotated(tmp_path, _two_class_mask())
    settings = WeakSettings(tile=8, stride=4, min_fraction=0.2)
    run(weak_dataset(tmp_path / "img", tmp_path / "mask", tmp_path / "out", settings, SPEC))
    assert (tmp_path / "out/train/img-y0-x0-[1 1].png").exists()  # b covers 2/8 = 0.25 >= 0.2


def test_defaults_keep_airy_tissue_and_drop_glass(tmp_path):
    """Normal lung is mostly white airspace: a tile that is 3/4 white with class a in the rest is kept
    and labelled a by default; one that is 7/8 white is dropped; a class covering 1/16 labels nothing."""
    mask = np.full((16, 48), SPEC.background_index, np.uint8)
    mask[:4, :16] = 0  # tile x=0: class a in 1/4 (the rest background, white)
    mask[:2, 16:32] = 0  # tile x=16: class a in 1/8
    mask[:4, 32:48] = 1  # tile x=32: class b in 1/4 ...
    mask[:1, 32:48] = 0  # ... class a in 1/16 of it
    _annotated(tmp_path, mask)
    settings = WeakSettings(tile=16, stride=16)
    summary = run(weak_dataset(tmp_path / "img", tmp_path / "mask", tmp_path / "out", settings, SPEC))
    names = sorted(p.name for p in (tmp_path / "out" / "train").iterdir())
    assert names == ["img-y0-x0-[1 0].png", "img-y0-x32-[0 1].png"]
    assert summary["dropped"]["background"] == 1


def test_white_pixels_count_as_background_even_if_labelled(tmp_path):
    mask = np.zeros((8, 16), np.uint8)
    white = np.zeros((8, 16), bool)
    white[:5, :8] = True  # 5/8 of the left tile is white glass labelled as class a
    _annotated(tmp_path, mask, white=white)
    settings = WeakSettings(tile=8, stride=8, max_background=0.5)
    summary = run(weak_dataset(tmp_path / "img", tmp_path / "mask", tmp_path / "out", settings, SPEC))
    assert summary["dropped"]["background"] == 1
    assert [p.name for p in (tmp_path / "out" / "train").iterdir()] == ["img-y0-x8-[1 0].png"]


def test_nothing_kept_is_an_error_and_writes_nothing(tmp_path):
    _annotated(tmp_path, np.full((8, 8), 2, np.uint8))
    with pytest.raises(DatasetError, match="no tile"):
        run(weak_dataset(tmp_path / "img", tmp_path / "mask", tmp_path / "out", WeakSettings(tile=8), SPEC))
    assert not (tmp_path / "out").exists()


def test_small_images_are_padded_with_white_background(tmp_path):
    mask = np.zeros((6, 5), np.uint8)  # 30 of 64 pixels after padding to 8 x 8
    _annotated(tmp_path, mask)
    settings = WeakSettings(tile=8, stride=4, max_background=0.6, save_masks=True)
    summary = run(weak_dataset(tmp_path / "img", tmp_path / "mask", tmp_path / "out", settings, SPEC))
    assert summary["tiles"] == 1
    tile = read_rgb(tmp_path / "out/train/img-y0-x0-[1 0].png")
    assert tile.shape == (8, 8, 3) and tuple(tile[0, 0]) == PINK and tuple(tile[7, 7]) == (255, 255, 255)
    crop = read_mask(tmp_path / "out/train_masks/img-y0-x0-[1 0].png", SPEC)
    assert (crop == 0).sum() == 30 and (crop == 2).sum() == 34


def test_existing_output_is_kept_unless_overwrite_and_a_folder_it_did_not_write_always(tmp_path):
    _annotated(tmp_path, _two_class_mask())
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    settings = WeakSettings(tile=8, stride=4)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run(weak_dataset(tmp_path / "img", tmp_path / "mask", tmp_path / "out", settings, SPEC))
    with pytest.raises(OutputExistsError, match=r"not a `pbip data weak` output.*keep\.txt"):
        run(
            weak_dataset(
                tmp_path / "img", tmp_path / "mask", tmp_path / "out", settings, SPEC, overwrite=True
            )
        )
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"

    run(weak_dataset(tmp_path / "img", tmp_path / "mask", tmp_path / "weak", settings, SPEC))
    (tmp_path / "weak" / "train" / "stale-[1 0].png").write_bytes(b"from an older tiling")
    run(weak_dataset(tmp_path / "img", tmp_path / "mask", tmp_path / "weak", settings, SPEC, overwrite=True))
    assert not (tmp_path / "weak" / "train" / "stale-[1 0].png").exists()
    assert (tmp_path / "weak" / "dataset.json").exists()


def test_input_problems_are_reported(tmp_path):
    _annotated(tmp_path, _two_class_mask())
    write_rgb(tmp_path / "img" / "lonely.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match="lonely.png"):
        run(weak_dataset(tmp_path / "img", tmp_path / "mask", tmp_path / "out", WeakSettings(tile=8), SPEC))
    with pytest.raises(DatasetError, match="--dataset-json"):
        run(weak_dataset(tmp_path / "img", tmp_path / "mask", tmp_path / "out", WeakSettings(tile=8)))
    with pytest.raises(
        OutputConflictError, match="output .* contains the images .*img; .*choose an output path"
    ):
        run(
            weak_dataset(
                tmp_path / "img", tmp_path / "mask", tmp_path, WeakSettings(tile=8), SPEC, overwrite=True
            )
        )
    assert (tmp_path / "img" / "img.png").exists()
    with pytest.raises(SettingsError, match="min_fraction=0"):
        WeakSettings(min_fraction=0)


def test_spec_inferred_from_split_folder_and_mismatched_sizes_reported(tmp_path):
    root = tmp_path / "ds"
    write_spec(root, SPEC)
    mask = _two_class_mask()
    write_rgb(root / "val" / "img" / "x.png", np.zeros((8, 9, 3), np.uint8))
    write_mask(root / "val" / "mask" / "x.png", mask, SPEC.palette)
    assert infer_spec(root / "val" / "img") == SPEC
    with pytest.raises(DatasetError, match="9x8 px but its mask"):
        run(weak_dataset(root / "val" / "img", root / "val" / "mask", tmp_path / "out", WeakSettings(tile=8)))


def test_cli_weak_and_info_print_json(tmp_path, capsys):
    _annotated(tmp_path, _two_class_mask())
    write_spec(tmp_path / "spec", SPEC)
    argv = ["data", "weak", "--images", str(tmp_path / "img"), "--masks", str(tmp_path / "mask")]
    argv += ["--out", str(tmp_path / "out"), "--tile", "8", "--stride", "4", "--min-fraction", "0.3"]
    argv += ["--max-background", "0.5"]
    argv += ["--dataset-json", str(tmp_path / "spec" / "dataset.json"), "--json", "--quiet"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["tiles"] == 2
    assert main(argv) == 1  # exists
    assert "already exists" in capsys.readouterr().err
    assert main(["data", "info", str(tmp_path / "out"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layout"] == "generic" and info["splits"]["train"]["class_counts"] == {"a": 1, "b": 1}


@pytest.mark.slow
@pytest.mark.shared_data
def test_wsss4luad_val_gives_a_usable_training_set(shared_data, tmp_path):
    val = shared_data / "wsss4luad-dev" / "val"
    settings = WeakSettings(tile=224, stride=56)
    summary = run(weak_dataset(val / "img", val / "mask", tmp_path / "weak", settings))
    assert summary["tiles"] >= 100
    assert all(summary["class_counts"][c] > 0 for c in ("tumor", "stroma", "normal"))
    ds = open_dataset(tmp_path / "weak")
    assert ds.spec.classes == ("tumor", "stroma", "normal") and ds.spec.background_index == 3
    samples = ds.samples("train")
    assert len(samples) == summary["tiles"]
    for sample in samples[::7]:  # each label agrees with the source mask crop at the tile's origin
        stem, y, x = sample.image.name.split("-[")[0].rsplit("-", 2)
        y, x = int(y[1:]), int(x[1:])
        with Image.open(val / "mask" / f"{stem}.png") as m:
            crop = np.asarray(m)[y : y + 224, x : x + 224]
        tissue = [(crop == c).sum() / 224**2 >= settings.min_fraction for c in range(3)]
        assert sample.labels == tuple(int(t) for t in tissue) == parse_labels(sample.image.name, 3)
        source = read_rgb(val / "img" / f"{stem}.png")[y : y + 224, x : x + 224]
        np.testing.assert_array_equal(read_rgb(sample.image)[: source.shape[0], : source.shape[1]], source)
