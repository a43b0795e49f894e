"""Stage-2 data: pairing images with pseudo-masks, bad masks named, crops and augmentation aligned."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_pbip.data.images import write_mask
from napari_pbip.data.layouts import open_dataset
from napari_pbip.errors import DatasetError
from napari_pbip.stage2.seg_data import (
    IGNORE,
    BatchLoader,
    class_pixel_shares,
    class_weights,
    crop_or_pad,
    cutmix,
    make_batch,
    pair_masks,
    read_pseudo_mask,
)

PALETTE = [[220, 40, 40], [40, 200, 40], [40, 40, 220], [255, 255, 255]]  # 3 classes + background


def write_set(root: Path, n: int = 6, size: int = 32) -> tuple[Path, Path]:
    """Generic layout; each image is its mask painted in the palette, so alignment is checkable."""
    rng = np.random.default_rng(0)
    data, masks = root / "data", root / "masks"
    (data / "train").mkdir(parents=True)
    masks.mkdir()
    spec = {"name": "t", "classes": ["a", "b", "c"], "palette": PALETTE, "background_index": 3,
            "label_format": "space"}  # fmt: skip
    (data / "dataset.json").write_text(json.dumps(spec))
    for i in range(n):
        mask = np.repeat(np.repeat(rng.integers(0, 4, (4, 4)), size // 4, 0), size // 4, 1).astype(np.uint8)
        name = f"img{i}-[1 1 1].png"
        Image.fromarray(np.asarray(PALETTE, np.uint8)[mask]).save(data / "train" / name)
        write_mask(masks / name, mask, PALETTE)
    return data, masks


@pytest.fixture
def dataset(tmp_path):
    data, masks = write_set(tmp_path)
    return open_dataset(data), masks


def test_missing_mask_names_the_image_and_the_folder(dataset):
    ds, masks = dataset
    (masks / "img3-[1 1 1].png").unlink()
    with pytest.raises(DatasetError) as info:
        pair_masks(ds, masks)
    message = str(info.value)
    assert "'img3-[1 1 1].png'" in message and f"no mask in {masks}" in message and "1 of 6" in message
    with pytest.raises(DatasetError, match="does not exist"):
        pair_masks(ds, masks.parent / "nowhere")


def test_mask_values_outside_the_palette_are_rejected_unless_ignore(dataset):
    ds, masks = dataset
    path = masks / "img0-[1 1 1].png"
    mask = np.zeros((32, 32), np.uint8)
    mask[:4] = IGNORE
    write_mask(path, mask, PALETTE + [[0, 0, 0]] * 252)  # palette long enough to hold 255
    assert (read_pseudo_mask(path, ds.spec)[:4] == IGNORE).all()
    mask[5, 5] = 7
    write_mask(path, mask, PALETTE + [[0, 0, 0]] * 252)
    with pytest.raises(DatasetError, match=r"img0.*\[7\].*0\.\.3.*or 255"):
        read_pseudo_mask(path, ds.spec)


def test_mask_of_another_size_is_named(dataset):
    ds, masks = dataset
    write_mask(masks / "img1-[1 1 1].png", np.zeros((16, 32), np.uint8), PALETTE)
    pairs = pair_masks(ds, masks)
    with pytest.raises(DatasetError, match=r"img1.*32x16 px.*32x32"):
        make_batch(pairs[:2], ds.spec, 32, 0.0, 0, 0, 0)


def test_rgb_masks_map_to_the_nearest_palette_colour(dataset):
    ds, masks = dataset
    path = masks / "img2-[1 1 1].png"
    rgb = np.zeros((4, 4, 3), np.uint8) + np.asarray([250, 250, 250], np.uint8)
    rgb[0] = [200, 50, 50]
    Image.fromarray(rgb).save(path)
    out = read_pseudo_mask(path, ds.spec)
    assert (out[0] == 0).all() and (out[1:] == 3).all()


def test_augmented_batches_keep_images_and_masks_aligned_and_repeat_exactly(dataset):
    ds, masks = dataset
    pairs = pair_masks(ds, masks)
    images, labels = make_batch(pairs, ds.spec, 24, 0.0, seed=3, epoch=1, index=0)
    assert images.shape == (6, 24, 24, 3) and labels.shape == (6, 24, 24)
    assert (np.asarray(PALETTE, np.uint8)[labels] == images).all()  # same crop and symmetry
    again, _ = make_batch(pairs, ds.spec, 24, 0.0, seed=3, epoch=1, index=0)
    other, _ = make_batch(pairs, ds.spec, 24, 0.0, seed=3, epoch=2, index=0)
    assert np.array_equal(images, again) and not np.array_equal(images, other)
    jittered, jlabels = make_batch(pairs, ds.spec, 24, 0.2, seed=3, epoch=1, index=0)
    assert np.array_equal(jlabels, labels) and not np.array_equal(jittered, images)


def test_small_images_are_padded_with_ignored_pixels():
    image = np.zeros((10, 20, 3), np.uint8)
    mask = np.ones((10, 20), np.uint8)
    img, m = crop_or_pad(image, mask, 16, np.random.default_rng(0))
    assert img.shape == (16, 16, 3) and m.shape == (16, 16)
    assert (m[10:] == IGNORE).all() and (m[:10] == 1).all() and (img[10:] == 255).all()


def test_threaded_loader_gives_the_same_batches_as_loading_inline(dataset):
    ds, masks = dataset
    pairs = pair_masks(ds, masks)
    inline = BatchLoader(pairs, ds.spec, 4, 32, 0.1, 0, workers=0)
    threaded = BatchLoader(pairs, ds.spec, 4, 32, 0.1, 0, workers=2)
    try:
        assert inline.steps_per_epoch == 2
        for step in range(5):
            a, b = inline.get(step, 5), threaded.get(step, 5)
            assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    finally:
        threaded.close()


def test_stain_jitter_changes_stain_amounts_not_the_tissue_and_repeats_with_the_seed():
    from skimage.color import hed_from_rgb

    from napari_pbip.stage2.seg_data import stain_jitter

    rng = np.random.default_rng(0)
    nuclei = rng.random((64, 64)) < 0.2  # dark purple nuclei on pink stroma, a white hole
    image = np.where(nuclei[..., None], [70, 40, 120], [230, 150, 190]).astype(np.uint8)
    image[40:, 40:] = 255
    assert np.abs(stain_jitter(image, 1e-9, rng).astype(int) - image).max() <= 1  # no change: no loss
    out = stain_jitter(image, 0.1, np.random.default_rng(5))
    assert np.array_equal(out, stain_jitter(image, 0.1, np.random.default_rng(5)))  # seeded: resumable
    assert np.abs(out.astype(int) - image).mean() > 3  # the colours move...
    density = -np.log(np.maximum(out.astype(float), 1) / 255) @ hed_from_rgb
    h = density[..., 0]
    assert h[nuclei].mean() > h[~nuclei].mean() + 0.2  # ...but the nuclei stay haematoxylin-dark
    assert stain_jitter(image, 0.0, rng) is image


def test_stain_jitter_leaves_masks_alone(dataset):
    ds, masks = dataset
    pairs = pair_masks(ds, masks)
    images, labels = make_batch(pairs, ds.spec, 24, 0.0, seed=3, epoch=1, index=0)
    stained, slabels = make_batch(pairs, ds.spec, 24, 0.0, seed=3, epoch=1, index=0, stain=0.1)
    assert np.array_equal(slabels, labels) and not np.array_equal(stained, images)


def test_scale_jitter_shows_tissue_at_other_sizes_with_the_mask_still_on_it(dataset):
    from napari_pbip.stage2.seg_data import random_scale

    ds, masks = dataset
    pairs = pair_masks(ds, masks)
    image, mask = np.asarray(Image.open(pairs[0].image)), read_pseudo_mask(pairs[0].mask, ds.spec)
    sides = set()
    for i in range(40):
        big, bmask = random_scale(image, mask, 0.25, np.random.default_rng(i))
        assert big.shape[:2] == bmask.shape and 24 <= bmask.shape[0] <= 40  # 32 px x 0.75 .. 1.25
        sides.add(bmask.shape[0])
        distance = np.abs(big[:, :, None].astype(int) - np.asarray(PALETTE)[None, None]).max(axis=3)
        pure = distance.min(axis=2) <= 2  # pixels not blended across a block edge
        agree = (distance.argmin(axis=2) == bmask)[pure].mean()
        assert pure.mean() > 0.5 and agree > 0.97, (pure.mean(), agree)  # the mask is on its tissue
        assert set(np.unique(bmask)) <= set(np.unique(mask))  # nearest: no invented labels
    assert len(sides) > 5  # not one size
    assert random_scale(image, mask, 0.0, np.random.default_rng(0))[0] is image
    plain = make_batch(pairs, ds.spec, 24, 0.0, seed=3, epoch=1, index=0)
    scaled = make_batch(pairs, ds.spec, 24, 0.0, seed=3, epoch=1, index=0, scale=0.25)
    assert np.array_equal(plain[0], make_batch(pairs, ds.spec, 24, 0.0, seed=3, epoch=1, index=0, scale=0)[0])
    assert not np.array_equal(plain[0], scaled[0])  # off by default, on when asked
    again = make_batch(pairs, ds.spec, 24, 0.0, seed=3, epoch=1, index=0, scale=0.25)
    assert np.array_equal(scaled[0], again[0]) and np.array_equal(scaled[1], again[1])  # resumable


def test_cutmix_pastes_a_box_of_another_image_with_its_own_mask():
    n, side = 8, 40
    images = (
        np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None], side, 1).repeat(side, 2).repeat(3, 3)
    )
    masks = images[..., 0].copy()  # pixel value = the image it came from
    before = images.copy(), masks.copy()
    out, out_masks = cutmix(images, masks, 1.0, np.random.default_rng([3, 1, 0, 3]))
    assert np.array_equal(images, before[0]) and np.array_equal(masks, before[1])  # inputs untouched
    assert np.array_equal(out[..., 0], out_masks) and (out == out[..., :1]).all()  # mask moves with its box
    mixed = 0
    for i in range(n):
        foreign = out_masks[i] != i
        if not foreign.any():
            continue
        mixed += 1
        assert len(np.unique(out_masks[i][foreign])) == 1  # one donor
        rows, cols = np.flatnonzero(foreign.any(1)), np.flatnonzero(foreign.any(0))
        assert foreign.sum() == rows.size * cols.size  # one box
        assert 0.3 * side - 1 <= rows.size <= 0.7 * side and 0.3 * side - 1 <= cols.size <= 0.7 * side
    assert mixed >= n - 2  # probability 1: all but images drawn as their own donor
    again = cutmix(images, masks, 1.0, np.random.default_rng([3, 1, 0, 3]))
    assert np.array_equal(again[0], out) and np.array_equal(again[1], out_masks)  # keyed: resumable
    assert cutmix(images, masks, 0.0, np.random.default_rng(0))[0] is images
    alone = cutmix(images[:1], masks[:1], 1.0, np.random.default_rng(0))
    assert np.array_equal(alone[0], images[:1]) and np.array_equal(alone[1], masks[:1])  # no other image


def test_cutmixed_batches_keep_every_pixel_on_its_own_label(dataset):
    ds, masks = dataset
    pairs = pair_masks(ds, masks)
    plain = make_batch(pairs, ds.spec, 24, 0.0, seed=3, epoch=1, index=0)
    mixed = make_batch(pairs, ds.spec, 24, 0.0, seed=3, epoch=1, index=0, mix=1.0)
    assert not np.array_equal(mixed[1], plain[1])  # boxes were pasted...
    assert (np.asarray(PALETTE, np.uint8)[mixed[1]] == mixed[0]).all()  # ...each with its own labels
    assert np.array_equal(make_batch(pairs, ds.spec, 24, 0.0, seed=3, epoch=1, index=0, mix=0.0)[1], plain[1])


def test_class_shares_count_labelled_pixels_and_weights_favour_rare_classes(tmp_path):
    data, masks = write_set(tmp_path, n=0)
    mask = np.full((10, 10), 0, np.uint8)
    mask[0, :4] = 1  # 4 px of class b
    mask[9] = IGNORE  # 10 px unlabelled
    Image.fromarray(np.asarray(PALETTE, np.uint8)[np.where(mask == IGNORE, 3, mask)]).save(
        data / "train" / "x-[1 1 0].png"
    )
    Image.fromarray(mask, mode="L").save(masks / "x-[1 1 0].png")  # 255 = unlabelled, as pbip pseudo marks it
    shares = class_pixel_shares(pair_masks(open_dataset(data), masks), open_dataset(data).spec)
    assert np.allclose(shares, [86 / 90, 4 / 90, 0, 0])
    assert np.allclose(class_weights(shares, 0.0), [1, 1, 0, 0])  # absent classes weigh nothing
    weights = class_weights(shares, 0.5)
    assert weights[1] / weights[0] == pytest.approx(np.sqrt(86 / 4))
    assert (weights * shares).sum() == pytest.approx(1.0)  # a labelled pixel weighs 1 on average
