"""Tissue detection finds the stained area and nothing of the glass."""

from __future__ import annotations

import numpy as np
import pbip_toy as toy
import pytest

from napari_pbip.errors import SettingsError
from napari_pbip.slides import TissueMask, TissueSettings, detect_tissue, open_slide


def test_tissue_mask_matches_ground_truth(tmp_path):
    labels = toy.blob_labels((1600, 2000), seed=1)
    path = toy.write_tiff_slide(tmp_path / "s.tif", toy.render(labels, seed=1), mpp=0.5)
    mask = detect_tissue(open_slide(path), TissueSettings(mpp=8.0))
    assert mask.mpp == 8.0 and mask.mask.shape == (100, 125)
    truth = labels[8::16, 8::16] != toy.BACKGROUND
    iou = (mask.mask & truth).sum() / (mask.mask | truth).sum()
    assert iou > 0.93
    assert mask.fraction == pytest.approx(truth.mean(), abs=0.04)


def test_all_glass_slide_has_no_tissue(tmp_path):
    rng = np.random.default_rng(0)
    glass = np.clip(240 + rng.normal(0, 3, (800, 800, 3)), 0, 255).astype(np.uint8)
    path = toy.write_tiff_slide(tmp_path / "glass.tif", glass, mpp=0.5)
    assert not detect_tissue(open_slide(path)).mask.any()


def test_box_queries_use_slide_coordinates_at_any_resolution():
    mask = np.zeros((10, 10), bool)
    mask[4, 6] = True  # one tissue pixel at 8 um/px: y 32-40 um, x 48-56 um
    tm = TissueMask(mask, 8.0)
    assert tm.any(60, 90, 80, 110, mpp=0.5)  # 30-40 um, 45-55 um
    assert not tm.any(0, 0, 60, 90, mpp=0.5)
    assert tm.any(0, 0, 60, 90, mpp=0.5, margin_um=8)  # grown by one mask pixel
    crop = tm.crop(40, 60, 120, 160, mpp=0.5)
    assert crop.origin == (2, 3) and crop.any(60, 90, 80, 110, mpp=0.5)
    assert not crop.any(0, 0, 400, 40, mpp=0.5)


def test_settings_reject_bad_values():
    with pytest.raises(SettingsError, match="min_threshold"):
        TissueSettings(min_threshold=0.5, max_threshold=0.1)


@pytest.mark.shared_data
def test_real_slide_tissue_excludes_glass(shared_data):
    slide = open_slide(shared_data / "slides" / "CMU-1-Small-Region.svs")
    mask = detect_tissue(slide)
    assert 0.25 < mask.fraction < 0.6
    rgb = slide.read_all(mask.mpp).astype(float)
    grey = rgb.mean(-1)
    assert grey[~mask.mask].mean() > 225 and grey[mask.mask].mean() < 200
