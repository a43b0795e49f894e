"""OME-Zarr label writer: pyramid by mode, NGFF 0.5 metadata, read back by zarr and our reader."""

from __future__ import annotations

import numpy as np
import pbip_toy as toy
import pytest
import zarr

from napari_pbip.errors import OutputExistsError, SlideError
from napari_pbip.export import open_labels, write_labels_ome_zarr
from napari_pbip.export.label_values import to_values
from napari_pbip.export.ome_zarr import downsample_mode, n_levels_for


def test_mode_downsampling_keeps_the_majority_class():
    labels = np.array([[1, 1, 2, 3], [1, 0, 2, 2], [4, 4, 0, 0], [4, 5, 1, 2]], np.uint8)
    assert downsample_mode(labels).tolist() == [
        [1, 2],
        [4, 0],
    ]  # 0/1/2 tie at the bottom right: top-left wins
    odd = np.array([[7, 7, 1], [7, 2, 1], [3, 3, 3]], np.uint8)
    assert downsample_mode(odd).tolist() == [[7, 1], [3, 3]]


def test_written_labels_read_back_with_names_colours_and_pyramid(tmp_path):
    labels = toy.blob_labels((1300, 1700), seed=41)
    probs = np.stack([(labels == k).astype(np.float32) for k in range(4)])
    path = write_labels_ome_zarr(
        labels, tmp_path / "l.zarr", 0.5, toy.CLASSES, toy.PALETTE, probabilities=probs, block=512
    )

    root = zarr.open_group(str(path), mode="r")
    values = to_values(labels, 3, toy.BACKGROUND)  # 0 background, classes from 1
    assert np.array_equal(root["labels/tissue/0"][:], values)
    assert root["labels/tissue/0"].metadata.dimension_names == ("y", "x")
    assert np.array_equal(root["labels/tissue/2"][:], downsample_mode(downsample_mode(values)))
    assert np.array_equal(root["probabilities/0"][:][2], (labels == 1) * 255)  # channel = label value
    colours = root["labels/tissue"].attrs["ome"]["image-label"]["colors"]
    assert colours[0] == {"label-value": 0, "rgba": [255, 255, 255, 0]}  # background drawn transparent
    img = open_labels(path)
    assert img.classes == toy.CLASSES and img.background_index == 0
    assert img.palette == (toy.PALETTE[3], *toy.PALETTE[:3])
    assert img.mpp == [0.5, 1.0, 2.0] and img.levels[2].shape == (325, 425)  # halved until <= 512 px
    assert n_levels_for((1300, 1700), 512) == 3
    # a block must stay divisible at every level: 768 = 3 * 2**8 allows 9 levels, 4096 all 12 needed
    assert n_levels_for((10**6, 10**6), 768) == 9 and n_levels_for((10**6, 10**6), 4096) == 12


def test_refuses_to_overwrite_and_rejects_bad_labels(tmp_path):
    labels = np.zeros((64, 64), np.uint8)
    write_labels_ome_zarr(labels, tmp_path / "l.zarr", 1.0, toy.CLASSES, toy.PALETTE)
    with pytest.raises(OutputExistsError):
        write_labels_ome_zarr(labels, tmp_path / "l.zarr", 1.0, toy.CLASSES, toy.PALETTE)
    with pytest.raises(SlideError, match="0..3"):
        write_labels_ome_zarr(labels + 9, tmp_path / "bad.zarr", 1.0, toy.CLASSES, toy.PALETTE)
    assert not (tmp_path / "bad.zarr").exists()  # nothing half-written is left behind
    with pytest.raises(SlideError, match="palette"):
        write_labels_ome_zarr(labels, tmp_path / "p.zarr", 1.0, toy.CLASSES, toy.PALETTE[:2])
