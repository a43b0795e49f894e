"""CAM -> mask rules on hand-made CAMs with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_pbip.errors import SettingsError  # noqa: E402
from napari_pbip.stage1.background import white_mask  # noqa: E402
from napari_pbip.stage1.pseudo import (  # noqa: E402
    CamSettings,
    class_scores,
    decide_presence,
    label_map,
    mask_channels,
    probabilities,
)

PINK = (200, 120, 170)  # stained tissue: bright but saturated


def _cams():
    """Three classes on a 16x16 image, two levels (strides 4 and 8).

    Class 0 fires on the left half, class 1 on the right half, class 2 (absent from the label)
    fires everywhere and strongest.
    """
    fine = torch.zeros(1, 3, 4, 4)
    fine[0, 0, :, :2], fine[0, 1, :, 2:] = 5.0, 5.0
    fine[0, 2] = 9.0
    fine[0, 2, 0, 0] = 0.0  # not constant, so its min-max is defined
    coarse = torch.nn.functional.avg_pool2d(fine, 2)
    return [fine, coarse]


def _image(white_block: bool = False) -> np.ndarray:
    img = np.empty((16, 16, 3), np.uint8)
    img[:] = PINK
    if white_block:
        img[:8, :8] = 245
    return img


def test_label_gated_fusion_gives_the_known_mask_and_never_an_absent_class():
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    scores = class_scores(_cams(), (16, 16), labels, (0.5, 0.5))[0].numpy()
    mask = label_map(mask_channels(scores, _image(), 4, 3, CamSettings(background="none")))
    assert (mask[:, :6] == 0).all() and (mask[:, 10:] == 1).all()
    assert not (mask == 2).any()


def test_white_region_prior_marks_background_but_not_pale_stained_tissue():
    labels = torch.tensor([[1.0, 1.0, 0.0]])
    scores = class_scores(_cams(), (16, 16), labels, (0.5, 0.5))[0].numpy()
    mask = label_map(mask_channels(scores, _image(white_block=True), 4, 3, CamSettings(min_white_size=16)))
    assert (mask[:8, :8] == 3).all()
    assert (mask[8:, :6] == 0).all() and (mask[:, 10:] == 1).all()


def test_white_mask_keeps_small_specks_and_saturated_pixels_as_tissue():
    img = np.empty((40, 40, 3), np.uint8)
    img[:] = PINK
    img[2:5, 2:5] = 250  # 9-pixel lumen: tissue
    img[20:40, 20:40] = 240  # 400-pixel glass: background
    img[0:10, 30:40] = (235, 200, 225)  # bright but pink (saturation 35): tissue
    bg = white_mask(img, level=200, max_saturation=30, min_size=64)
    assert bg[20:, 20:].all() and not bg[2:5, 2:5].any() and not bg[:10, 30:].any()
    assert bg.sum() == 400


def test_power_background_wins_where_no_class_is_active():
    scores = np.zeros((2, 1, 3), np.float32)
    scores[0, 0] = [1.0, 0.2, 0.0]
    channels = mask_channels(
        scores, np.zeros((1, 3, 3), np.uint8), 3, 2, CamSettings(background="power", bg_power=1)
    )
    assert label_map(channels).tolist() == [[0, 2, 2]]


def test_probabilities_sum_to_one_and_keep_the_argmax():
    rng = np.random.default_rng(0)
    channels = rng.random((5, 6, 7)).astype(np.float32)
    p = probabilities(channels)
    assert p.dtype == np.float32 and np.allclose(p.sum(0), 1, atol=1e-5)
    assert (p.argmax(0) == label_map(channels)).all()


def test_presence_keeps_the_top_class_even_below_threshold():
    probs = torch.tensor([[0.2, 0.3, 0.1], [0.9, 0.6, 0.1]])
    assert decide_presence(probs, 0.5).tolist() == [[0, 1, 0], [1, 1, 0]]


@pytest.mark.parametrize(
    "field,value",
    [("background", "grey"), ("white_level", 300), ("presence_threshold", 1.5), ("bg_power", 0)],
)
def test_invalid_cam_settings_name_the_field(field, value):
    with pytest.raises(SettingsError, match=field):
        CamSettings(**{field: value})
