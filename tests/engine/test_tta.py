"""Dihedral test-time augmentation: maps land back on the right pixels, and a model's output becomes
the same whichever way the image was turned or mirrored (tissue has no up or left)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pbip.engine.tta import SYMMETRIES, DihedralTTA, ScaleTTA, undo, view, with_tta


class _PositionBiased:
    """A toy dense predictor that is not symmetric: class 1 grows towards the right edge, class 0
    towards the top, mixed with the red channel, so a turned image gives another answer."""

    classes = ("a", "b")
    palette = ((255, 255, 255), (200, 0, 0), (0, 0, 200))
    background_index = 0
    mpp = None
    tile = 64

    def predict(self, batch: np.ndarray) -> np.ndarray:
        b, h, w, _ = batch.shape
        right = np.broadcast_to(np.linspace(0, 1, w)[None, :], (h, w))
        top = np.broadcast_to(np.linspace(1, 0, h)[:, None], (h, w))
        red = batch[..., 0] / 255.0
        maps = np.stack([np.broadcast_to(top, (b, h, w)), np.broadcast_to(right, (b, h, w)), red], axis=1)
        return (maps / maps.sum(axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("code", range(SYMMETRIES))
def test_each_symmetry_is_undone_onto_the_original_pixels(code):
    rng = np.random.default_rng(code)
    batch = rng.integers(0, 255, (2, 5, 7, 3), dtype=np.uint8)  # not square: turns swap the sides
    turned = view(batch, code)
    assert turned.shape == ((2, 7, 5, 3) if code % 2 else batch.shape)
    maps = np.moveaxis(turned, -1, 1)  # a "prediction" that is the turned image itself
    assert np.array_equal(undo(maps, code), np.moveaxis(batch, -1, 1))
    assert len({view(batch, c).tobytes() for c in range(SYMMETRIES)}) == SYMMETRIES  # 8 different views


def test_averaged_maps_follow_the_image_when_it_is_turned():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 255, (1, 24, 40, 3), dtype=np.uint8)
    plain, tta = _PositionBiased(), DihedralTTA(_PositionBiased())
    for code in range(1, SYMMETRIES):
        # without TTA the biased model answers differently for a turned image...
        assert not np.allclose(undo(plain.predict(view(batch, code)), code), plain.predict(batch), atol=1e-3)
        # ...with it, the answer for the turned image is the answer for the image, turned
        assert np.allclose(undo(tta.predict(view(batch, code)), code), tta.predict(batch), atol=1e-5)
    probs = tta.predict(batch)
    assert probs.shape == (1, 3, 24, 40) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    masks = tta.predict_masks(batch)
    assert masks.dtype == np.uint8 and np.array_equal(masks, probs.argmax(axis=1))


def test_wrapper_keeps_the_predictors_description_and_is_not_stacked():
    inner = _PositionBiased()
    wrapped = with_tta(inner, True)
    assert (wrapped.classes, wrapped.palette, wrapped.tile) == (inner.classes, inner.palette, inner.tile)
    assert with_tta(wrapped, True) is wrapped and with_tta(inner, False) is inner
    with pytest.raises(TypeError, match="no image labels"):
        wrapped.predict_masks(np.zeros((1, 8, 8, 3), np.uint8), np.ones((1, 2)))


class _SeesItsInputSize:
    """A toy segmenter whose class-1 probability is the height of the batch it was given / 100, so
    an average over scales shows which sizes reached it and how often."""

    classes = ("a",)
    palette = ((255, 255, 255), (200, 0, 0))
    background_index = 0
    mpp = 1.0
    tile = 64

    def __init__(self):
        self.sizes = []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.uint8 and batch.shape[-1] == 3  # what a real predictor accepts
        b, h, w, _ = batch.shape
        self.sizes.append((h, w))
        p1 = np.full((b, 1, h, w), h / 100, np.float32)
        return np.concatenate([1 - p1, p1], axis=1)


class _RedIsClassOne:
    """A pointwise toy segmenter: class 1 where the pixel is red."""

    classes = ("red",)
    palette = ((255, 255, 255), (200, 0, 0))
    background_index = 0
    mpp = 1.0
    tile = 64

    def predict(self, batch: np.ndarray) -> np.ndarray:
        p1 = (batch[..., 0].astype(np.float32) / 255.0)[:, None]
        return np.concatenate([1 - p1, p1], axis=1)


def test_scale_average_gives_each_scale_to_the_model_once_at_its_own_size():
    inner = _SeesItsInputSize()
    scaled = ScaleTTA(inner, (0.5, 1.0, 1.5))
    probs = scaled.predict(np.zeros((2, 40, 30, 3), np.uint8))
    assert sorted(inner.sizes) == [(20, 15), (40, 30), (60, 45)]
    assert probs.shape == (2, 2, 40, 30)  # back on the batch's pixels
    assert np.allclose(probs[:, 1], (0.2 + 0.4 + 0.6) / 3)  # the mean over the three sizes
    assert scaled.scales == (0.5, 1.0, 1.5) and (scaled.classes, scaled.tile) == (inner.classes, inner.tile)


def test_scale_averaged_masks_land_on_the_images_pixels():
    image = np.zeros((1, 48, 64, 3), np.uint8)
    image[:, 10:30, 20:50, 0] = 255  # a red box
    image[..., 2] = 255 - image[..., 0]
    plain = _RedIsClassOne().predict(image).argmax(axis=1)
    masks = DihedralTTA(ScaleTTA(_RedIsClassOne())).predict_masks(image)
    assert masks.shape == plain.shape and masks.dtype == np.uint8
    differ = masks != plain
    box_edge = np.zeros_like(differ)
    box_edge[:, 8:32, 18:52] = True
    box_edge[:, 12:28, 22:48] = False
    assert not (differ & ~box_edge).any()  # only within 2 px of the box's edge, if anywhere
    assert differ.mean() < 0.01


def test_scale_average_is_refused_for_a_stage1_predictor():
    class Stage1Like(_RedIsClassOne):
        def channels(self, batch, presence=None): ...

    with pytest.raises(TypeError, match="segmenters"):
        ScaleTTA(Stage1Like())
