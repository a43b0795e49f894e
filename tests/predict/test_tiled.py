"""Tiled prediction: seamless blending, a global tile grid, skipping glass, cancelling."""

from __future__ import annotations

import threading

import numpy as np
import pbip_toy as toy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_pbip.predict.tiled import Cancelled, blend_window, predict_block, tile_starts


def _reader(img: np.ndarray):
    def read(y, x, h, w):
        out = np.full((h, w, 3), 255, np.uint8)
        a, b, c, d = max(y, 0), max(x, 0), min(y + h, img.shape[0]), min(x + w, img.shape[1])
        out[a - y : c - y, b - x : d - x] = img[a:c, b:d]
        return out

    return read


@settings(max_examples=60, deadline=None)
@given(tile=st.integers(8, 96), frac=st.floats(0, 0.5), extent=st.integers(1, 400))
def test_every_pixel_gets_total_weight_one(tile, frac, extent):
    overlap = int(tile * frac)
    starts = tile_starts(0, extent, tile, overlap, extent)
    w = blend_window(tile, overlap)
    total = np.zeros(extent + 2 * tile)
    for s in starts:
        total[s + tile : s + 2 * tile] += w  # shifted by `tile` so negative starts fit
    assert np.allclose(total[tile : tile + extent], 1.0, atol=1e-5)


def test_pixelwise_model_is_reproduced_exactly_and_blocks_join_without_seams():
    labels = toy.blob_labels((230, 260), seed=4)
    img = toy.render(labels, seed=4)
    model = toy.ColourPredictor()
    truth = model.predict(img[None])[0].argmax(0)
    whole = predict_block(model, _reader(img), (0, 0, 230, 260), (230, 260), 48, 12, 7, probabilities=True)
    assert np.array_equal(whole.labels, truth)
    assert whole.probs.shape == (4, 230, 260) and np.allclose(whole.probs.sum(0), 255, atol=3)
    pieced = np.zeros_like(truth)
    for y in range(0, 230, 100):
        for x in range(0, 260, 100):
            core = (y, x, min(y + 100, 230), min(x + 100, 260))
            part = predict_block(model, _reader(img), core, (230, 260), 48, 12, 7)
            pieced[core[0] : core[2], core[1] : core[3]] = part.labels
    assert np.array_equal(pieced, truth)


def test_tiled_conv_net_matches_single_pass_except_near_tile_borders():
    """Issue 5's correctness number: at most 0.5% of pixels differ from one pass over the whole image."""
    labels = toy.blob_labels((384, 448), seed=5)
    img = toy.render(labels, seed=5)
    model = toy.ConvPredictor(seed=0)
    # one pass over the whole image, with white glass around it as a slide has (tiles at the
    # image border see that white too; the net pads with zeros beyond it)
    single = model.predict(np.pad(img, ((32, 32), (32, 32), (0, 0)), constant_values=255)[None])[0]
    single = single.argmax(0)[32:-32, 32:-32]
    blended = predict_block(model, _reader(img), (0, 0, 384, 448), (384, 448), 64, 16, 16).labels
    no_overlap = predict_block(model, _reader(img), (0, 0, 384, 448), (384, 448), 64, 0, 16).labels
    diff, diff_plain = (blended != single).mean(), (no_overlap != single).mean()
    assert diff <= 0.005
    assert diff < diff_plain  # blending is what removes the tile-border errors


def test_tiles_without_tissue_are_not_run_and_become_background():
    img = toy.render(toy.blob_labels((200, 200), seed=6), seed=6)
    model = toy.ColourPredictor()
    only_left = predict_block(
        model, _reader(img), (0, 0, 200, 200), (200, 200), 40, 8, 4, has_tissue=lambda y0, x0, y1, x1: x0 < 60
    )
    everything = predict_block(model, _reader(img), (0, 0, 200, 200), (200, 200), 40, 8, 4)
    assert 0 < only_left.tiles_run < everything.tiles_run
    assert only_left.tiles_run + only_left.tiles_skipped == everything.tiles_run
    assert (only_left.labels[:, 100:] == toy.BACKGROUND).all()
    assert np.array_equal(only_left.labels[:, :50], everything.labels[:, :50])


def test_cancel_stops_between_batches():
    img = toy.render(toy.blob_labels((200, 200), seed=7), seed=7)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        predict_block(
            toy.ColourPredictor(), _reader(img), (0, 0, 200, 200), (200, 200), 40, 8, 4, cancel=cancel
        )
