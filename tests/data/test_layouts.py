"""Layout detection and sample listing for the public data sets, class folders and dataset.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_pbip.data.images import write_mask, write_rgb
from napari_pbip.data.layouts import (
    BCSS_WSSS,
    LUAD_HISTOSEG,
    WSSS4LUAD,
    DatasetSpec,
    mask_index_names,
    open_dataset,
    read_spec,
    tissue_class_index,
    tissue_mask_indices,
    write_spec,
)
from napari_pbip.errors import DatasetError, LabelParseError

TILE = np.full((4, 4, 3), 200, np.uint8)


def _touch_images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        write_rgb(folder / name, TILE)


def _val(root, spec, names=("a.png", "b.png"), split="val"):
    _touch_images(root / split / "img", names)
    for name in names:
        write_mask(root / split / "mask" / name, np.zeros((4, 4), np.uint8), spec.palette)


def test_bcss_wsss_detected_from_compact_names(tmp_path):
    _touch_images(tmp_path / "train", ["TCGA-A1+0[1101].png", "TCGA-A2+0[0010].png"])
    _val(tmp_path, BCSS_WSSS)
    ds = open_dataset(tmp_path)
    assert ds.spec == BCSS_WSSS
    assert ds.splits() == ["train", "val"]
    assert [s.labels for s in ds.samples("train")] == [(1, 1, 0, 1), (0, 0, 1, 0)]
    val = ds.samples("val")
    assert [(s.image.name, s.mask.name, s.labels) for s in val] == [
        ("a.png", "a.png", None),
        ("b.png", "b.png", None),
    ]


def test_luad_and_wsss4luad_detected_from_names(tmp_path):
    _touch_images(tmp_path / "luad" / "train", ["p-1-2-[1 0 0 1].png"])
    _touch_images(tmp_path / "wsss" / "train", ["p-1-2-[1, 0, 1].png"])
    assert open_dataset(tmp_path / "luad").spec == LUAD_HISTOSEG
    assert open_dataset(tmp_path / "wsss").spec == WSSS4LUAD


def test_inconsistent_train_name_is_reported_with_file(tmp_path):
    _touch_images(tmp_path / "train", ["a-[1 0 0 1].png", "b-[1 0 1].png"])
    with pytest.raises(LabelParseError, match=r"b-\[1 0 1\]\.png"):
        open_dataset(tmp_path)


def test_unknown_label_length_asks_for_dataset_json(tmp_path):
    _touch_images(tmp_path / "train", ["a-[1 0].png"])
    with pytest.raises(DatasetError, match="dataset.json"):
        open_dataset(tmp_path)


def test_val_only_detected_from_mask_palette(tmp_path):
    _val(tmp_path, WSSS4LUAD, split="test")
    ds = open_dataset(tmp_path)
    assert ds.spec == WSSS4LUAD and ds.splits() == ["test"]


def test_generic_layout_round_trip_through_dataset_json(tmp_path):
    spec = DatasetSpec(
        "generic", ("tumour", "stroma"), ((255, 0, 0), (0, 255, 0), (255, 255, 255)), 2, "space"
    )
    write_spec(tmp_path, spec, name="mine")
    data = json.loads((tmp_path / "dataset.json").read_text())
    assert data == {
        "name": "mine",
        "classes": ["tumour", "stroma"],
        "palette": [[255, 0, 0], [0, 255, 0], [255, 255, 255]],
        "background_index": 2,
        "label_format": "space",
    }
    _touch_images(tmp_path / "train", ["t-y0-x0-[0 1].png", "t-y0-x56-[1 1].png"])
    _val(tmp_path, spec, split="test")
    ds = open_dataset(tmp_path)
    assert ds.spec == spec and read_spec(tmp_path / "dataset.json") == spec
    assert ds.splits() == ["train", "test"]
    assert [s.labels for s in ds.samples("train")] == [(0, 1), (1, 1)]
    with pytest.raises(DatasetError, match=r"available splits: \['train', 'test'\]"):
        ds.samples("val")


def test_missing_mask_is_reported(tmp_path):
    _val(tmp_path, WSSS4LUAD)
    write_rgb(tmp_path / "val" / "img" / "c.png", TILE)
    with pytest.raises(DatasetError, match=r"c\.png"):
        open_dataset(tmp_path).samples("val")


def test_folder_per_class_gives_one_hot_labels(tmp_path):
    _touch_images(tmp_path / "stroma", ["1.png", "2.png"])
    _touch_images(tmp_path / "tumor", ["3.png"])
    (tmp_path / "empty").mkdir()
    ds = open_dataset(tmp_path)
    assert ds.spec.layout == "folder" and ds.spec.classes == ("stroma", "tumor")
    assert ds.spec.background_index == 2 and len(ds.spec.palette) == 3
    assert [(s.image.name, s.labels) for s in ds.samples("train")] == [
        ("1.png", (1, 0)),
        ("2.png", (1, 0)),
        ("3.png", (0, 1)),
    ]


def test_folder_layout_with_dataset_json_keeps_its_class_order(tmp_path):
    _touch_images(tmp_path / "stroma", ["1.png"])
    _touch_images(tmp_path / "tumor", ["3.png"])
    spec = DatasetSpec("folder", ("tumor", "stroma"), ((1, 2, 3), (4, 5, 6), (255, 255, 255)), 2, "folder")
    write_spec(tmp_path, spec)
    ds = open_dataset(tmp_path)
    assert ds.spec == spec
    assert [(s.image.name, s.labels) for s in ds.samples("train")] == [("3.png", (1, 0)), ("1.png", (0, 1))]


def test_nothing_recognised_lists_what_was_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError) as info:
        open_dataset(tmp_path)
    message = str(info.value)
    for looked_for in (
        "dataset.json",
        "LUAD-HistoSeg",
        "BCSS-WSSS",
        "WSSS4LUAD",
        "folder of images per class",
    ):
        assert looked_for in message
    assert "notes.txt" in message
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "absent")


def test_a_single_image_folder_is_not_a_class_layout(tmp_path):
    _touch_images(tmp_path / "scans", ["1.png"])
    with pytest.raises(DatasetError, match="at least 2"):
        open_dataset(tmp_path)


def test_a_split_folder_is_not_mistaken_for_class_folders(tmp_path):
    _val(tmp_path, DatasetSpec("generic", ("a",), ((0, 0, 0), (9, 9, 9)), 1, "space"))
    with pytest.raises(DatasetError, match="no data set layout"):
        open_dataset(tmp_path / "val")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"classes": ["a"], "palette": [[0, 0, 0]], "background_index": 1}, "expected 2 RGB triples"),
        ({"classes": ["a", "a"], "palette": [[0, 0, 0]] * 3, "background_index": 2}, "distinct"),
        ({"classes": ["a"], "palette": [[0, 0, 0]] * 2, "background_index": 5}, "background_index=5"),
        (
            {"classes": ["a"], "palette": [[0, 0, 0]] * 2, "background_index": 1, "label_format": "x"},
            "label_format",
        ),
        ({"classes": ["a"]}, "lacks"),
    ],
)
def test_bad_dataset_json_names_the_problem(tmp_path, data, match):
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=match):
        open_dataset(tmp_path)


@pytest.mark.shared_data
def test_real_luad_histoseg_sample(shared_data):
    ds = open_dataset(shared_data / "luad-histoseg-sample")
    assert ds.spec.layout == "luad-histoseg" and ds.spec.classes == ("TE", "NEC", "LYM", "TAS")
    assert ds.splits() == ["train", "val", "test"]
    train = {s.image.name: s.labels for s in ds.samples("train")}
    assert len(train) == 9 and train["1224965-38724-30671-[1 1 0 1].png"] == (1, 1, 0, 1)
    assert len(ds.samples("val")) == 3 and len(ds.samples("test")) == 6
    assert all(s.mask.name == s.image.name for s in ds.samples("test"))


@pytest.mark.shared_data
def test_real_wsss4luad_dev(shared_data):
    ds = open_dataset(shared_data / "wsss4luad-dev")
    assert ds.spec.layout == "wsss4luad" and ds.spec.background_index == 3
    assert ds.splits() == ["train", "val"]
    train = {s.image.name: s.labels for s in ds.samples("train")}
    assert train["436219-9328-56427-[1, 1, 0].png"] == (1, 1, 0)
    val = ds.samples("val")
    assert len(val) == 31 and all(s.mask.parent.name == "mask" for s in val)  # not background-mask/


@pytest.mark.parametrize(
    "bg, indices, names",
    [
        (3, (0, 1, 2), ("a", "b", "c", "background")),
        (0, (1, 2, 3), ("background", "a", "b", "c")),
        (1, (0, 2, 3), ("a", "background", "b", "c")),
    ],
)
def test_tissue_class_k_is_the_kth_mask_index_other_than_background(bg, indices, names):
    palette = ((1, 1, 1), (2, 2, 2), (3, 3, 3), (255, 255, 255))
    spec = DatasetSpec("generic", ("a", "b", "c"), palette, bg, "space")
    assert spec.tissue_indices == tissue_mask_indices(3, bg) == indices
    assert spec.mask_names == mask_index_names(spec.classes, bg) == names
    assert [tissue_class_index(i, bg) for i in range(4)] == [
        None if i == bg else indices.index(i) for i in range(4)
    ]
    with pytest.raises(DatasetError, match="background_index=-1"):
        tissue_mask_indices(3, -1)
