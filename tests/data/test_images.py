"""Reading images and masks the way the data sets store them; writing masks other programs read back."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_pbip.data.images import (
    list_images,
    nearest_palette_indices,
    read_mask,
    read_rgb,
    write_mask,
    write_rgb,
)
from napari_pbip.data.layouts import LUAD_HISTOSEG, WSSS4LUAD, open_dataset
from napari_pbip.errors import DatasetError


def _rgb(h=5, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_read_rgb_puts_transparency_over_white_and_expands_grey(tmp_path):
    rgb = _rgb()
    rgba = np.concatenate([rgb, np.full((5, 7, 1), 255, np.uint8)], axis=2)
    rgba[0, :, 3] = 0  # a transparent row: glass, whatever colour it stores
    Image.fromarray(rgba).save(tmp_path / "a.png")
    expected = rgb.copy()
    expected[0] = 255
    np.testing.assert_array_equal(read_rgb(tmp_path / "a.png"), expected)
    grey = rgb[:, :, 0]
    Image.fromarray(grey).save(tmp_path / "g.png")
    out = read_rgb(tmp_path / "g.png")
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 2], grey)


def test_read_rgb_tiff_16_bit_is_scaled(tmp_path):
    data = np.zeros((4, 4, 3), np.uint16)
    data[0, 0] = 65535
    data[1, 1] = 257 * 100
    tifffile.imwrite(tmp_path / "a.tif", data, photometric="rgb")
    out = read_rgb(tmp_path / "a.tif")
    assert out.dtype == np.uint8
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[1, 1]) == (100, 100, 100)


def test_read_rgb_reports_missing_and_broken_files(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_rgb(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="bad.png"):
        read_rgb(tmp_path / "bad.png")


def test_write_mask_is_a_palette_png_read_back_by_pil(tmp_path):
    mask = np.array([[0, 1, 2], [3, 4, 4]], np.uint8)
    write_mask(tmp_path / "m.png", mask, LUAD_HISTOSEG.palette)
    with Image.open(tmp_path / "m.png") as image:
        assert image.mode == "P"
        np.testing.assert_array_equal(np.asarray(image), mask)
        shown = np.asarray(image.convert("RGB"))
    assert tuple(shown[0, 0]) == (205, 51, 51) and tuple(shown[1, 2]) == (255, 255, 255)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", LUAD_HISTOSEG), mask)
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]  # no temporary left behind


def test_write_mask_rejects_index_without_colour(tmp_path):
    with pytest.raises(DatasetError, match=r"0\.\.4"):
        write_mask(tmp_path / "m.png", np.array([[5]]), LUAD_HISTOSEG.palette)
    assert not (tmp_path / "m.png").exists()


def test_rgb_mask_maps_to_nearest_palette_colour(tmp_path):
    colours = np.array(WSSS4LUAD.palette, np.uint8)
    truth = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)
    rgb = colours[truth].astype(np.int16)
    rgb[0, 0] += 6  # JPEG-like noise stays nearest to its colour
    rgb[1, 0] -= 5
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", WSSS4LUAD), truth)


def test_nearest_palette_indices_hand_computed():
    rgb = np.array([[[250, 250, 250], [10, 60, 120], [240, 160, 10]]], np.uint8)
    np.testing.assert_array_equal(nearest_palette_indices(rgb, WSSS4LUAD.palette), [[3, 0, 2]])


def test_grey_mask_with_foreign_indices_is_reported(tmp_path):
    Image.fromarray(np.array([[0, 255]], np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(DatasetError, match=r"\[255\]"):
        read_mask(tmp_path / "m.png", WSSS4LUAD)


def test_write_rgb_round_trip_and_listing(tmp_path):
    rgb = _rgb(seed=3)
    write_rgb(tmp_path / "b.png", rgb)
    (tmp_path / ".hidden.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    write_rgb(tmp_path / "a.png", rgb)
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.png"]
    np.testing.assert_array_equal(read_rgb(tmp_path / "b.png"), rgb)


@pytest.mark.shared_data
def test_real_masks_read_as_documented_indices(shared_data):
    ds = open_dataset(shared_data / "wsss4luad-dev")
    sample = ds.samples("val")[0]
    mask = read_mask(sample.mask, ds.spec)
    image = read_rgb(sample.image)
    assert mask.shape == image.shape[:2]
    assert set(np.unique(mask)) <= {0, 1, 2, 3}
    # The data set's own binary background mask equals mask == 3 (SOURCES.md).
    with Image.open(shared_data / "wsss4luad-dev/val/background-mask" / sample.mask.name) as bg:
        np.testing.assert_array_equal(np.asarray(bg) == 1, mask == 3)
    # Background pixels are bright in the image.
    assert image[mask == 3].mean() > image[mask != 3].mean() + 30
