"""What other programs see in an output store: an NGFF 0.5 image with its labels under ``labels/``,
label value 0 for background (napari's "no label") and tissue classes from 1, older outputs still read.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pbip_toy as toy
import pytest
import zarr

from napari_pbip.export import export_areas, export_geojson, open_labels, write_labels_ome_zarr


def _write_old_output(path, labels: np.ndarray) -> None:
    """A label store as pbip wrote it before: bare label image at the root, background = 3."""
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    names = [*toy.CLASSES, "background"]
    root.attrs.update(
        {
            "ome": {
                "version": "0.5",
                "multiscales": [
                    {
                        "name": "tissue classes",
                        "axes": [
                            {"name": "y", "type": "space", "unit": "micrometer"},
                            {"name": "x", "type": "space", "unit": "micrometer"},
                        ],
                        "datasets": [
                            {
                                "path": "0",
                                "coordinateTransformations": [{"type": "scale", "scale": [0.5, 0.5]}],
                            }
                        ],
                    }
                ],
                "image-label": {
                    "colors": [
                        {"label-value": v, "rgba": [*toy.PALETTE[v], 0 if v == 3 else 255]} for v in range(4)
                    ],
                    "properties": [{"label-value": v, "class": n} for v, n in enumerate(names)],
                },
            },
            "pbip": {"status": "complete", "slide_mpp": 0.5},
        }
    )
    root.create_array("0", shape=labels.shape, chunks=(64, 64), dtype="uint8", fill_value=3)[:] = labels


def test_written_labels_use_zero_for_background_and_record_the_class_table(tmp_path):
    labels = toy.blob_labels((300, 400), seed=3)  # mask indices: classes 0..2, background 3
    path = write_labels_ome_zarr(labels, tmp_path / "l.zarr", 0.5, toy.CLASSES, toy.PALETTE, block=256)

    group = zarr.open_group(str(path / "labels" / "tissue"), mode="r")
    values = group["0"][:]
    expected = np.where(labels == toy.BACKGROUND, 0, labels.astype(int) + 1)
    np.testing.assert_array_equal(values, expected)  # napari's eraser (0) paints background
    ome = group.attrs["ome"]
    colours = {c["label-value"]: c["rgba"] for c in ome["image-label"]["colors"]}
    assert colours == {
        0: [255, 255, 255, 0],
        1: [205, 51, 51, 255],
        2: [0, 255, 0, 255],
        3: [65, 105, 225, 255],
    }
    table = group.attrs["pbip"]["classes"]
    assert [(c["label-value"], c["name"]) for c in table] == [
        (0, "background"),
        (1, "tumor"),
        (2, "stroma"),
        (3, "lymph"),
    ]
    img = open_labels(path)
    assert img.background_index == 0 and img.classes == toy.CLASSES
    assert img.palette[0] == (255, 255, 255) and img.palette[1] == (205, 51, 51)
    np.testing.assert_array_equal(np.asarray(img.levels[0]), expected)


def test_output_is_an_ngff_image_with_labels_that_other_readers_open(tmp_path, caplog):
    labels = toy.blob_labels((300, 400), seed=3)
    path = write_labels_ome_zarr(labels, tmp_path / "l.zarr", 0.5, toy.CLASSES, toy.PALETTE, block=256)

    root = zarr.open_group(str(path), mode="r")
    ome = root.attrs["ome"]
    assert [a["name"] for a in ome["multiscales"][0]["axes"]] == ["c", "y", "x"]
    assert root["0"].shape[0] == 3 and root["0"].dtype == np.uint8
    assert zarr.open_group(str(path / "labels"), mode="r").attrs["ome"]["labels"] == ["tissue"]
    image_label = zarr.open_group(str(path / "labels" / "tissue"), mode="r").attrs["ome"]["image-label"]
    assert image_label["source"] == {"image": "../../"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zarr warns about files that are not zarr nodes
        members = dict(root.members(max_depth=None))
    assert "labels/tissue/0" in members

    from napari_builtins.io._read import read_zarr_dataset

    data, shape = read_zarr_dataset(str(path / "labels" / "tissue"))  # napari's builtin reader
    assert shape == labels.shape and np.asarray(data[0]).max() == 3


def test_output_validates_as_ngff_05(tmp_path):
    validate = pytest.importorskip("ome_zarr_models.v05.image")
    labels = toy.blob_labels((300, 400), seed=3)
    path = write_labels_ome_zarr(labels, tmp_path / "l.zarr", 0.5, toy.CLASSES, toy.PALETTE, block=256)
    image = validate.Image.from_zarr(zarr.open_group(str(path), mode="r"))
    assert image.labels is not None


def test_ome_zarr_py_finds_the_labels_and_their_image(tmp_path, caplog):
    pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    labels = toy.blob_labels((300, 400), seed=3)
    path = write_labels_ome_zarr(labels, tmp_path / "l.zarr", 0.5, toy.CLASSES, toy.PALETTE, block=256)
    nodes = list(Reader(parse_url(str(path)))())
    label_nodes = [n for n in nodes if n.load(Label)]
    assert label_nodes and "no parent found" not in caplog.text.lower()
    assert np.asarray(label_nodes[0].data[0]).max() == 3


def test_an_older_output_still_opens_with_its_classes(tmp_path):
    labels = toy.blob_labels((200, 300), seed=5)
    _write_old_output(tmp_path / "old.zarr", labels)

    img = open_labels(tmp_path / "old.zarr")
    assert img.classes == toy.CLASSES and img.background_index == 0
    assert img.palette == (toy.PALETTE[3], *toy.PALETTE[:3])
    values = np.asarray(img.levels[0])
    np.testing.assert_array_equal(values == 0, labels == toy.BACKGROUND)
    np.testing.assert_array_equal(values[labels == 0], 1)  # tumor

    export_areas(tmp_path / "old.zarr", tmp_path / "old.csv")
    rows = (tmp_path / "old.csv").read_text().splitlines()
    assert rows[1].startswith(f"tumor,{int((labels == 0).sum())},")
    assert rows[-1].startswith(f"background,{int((labels == 3).sum())},")
    export_geojson(tmp_path / "old.zarr", tmp_path / "old.geojson", resolution=0.5)
    names = {
        f["properties"]["classification"]["name"]
        for f in json.loads((tmp_path / "old.geojson").read_text())["features"]
    }
    assert names == set(toy.CLASSES)
