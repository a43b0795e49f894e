"""Stage-1 losses and FG/BG images against hand computation on tiny tensors."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from napari_pbip.stage1.losses import classification_loss, pbip_loss, similarity_losses  # noqa: E402
from napari_pbip.stage1.matching import fg_bg_images, normalise_cams, threshold_masks  # noqa: E402
from napari_pbip.stage1.settings import TrainSettings  # noqa: E402


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_classification_loss_is_weighted_sum_of_level_bce():
    labels = torch.tensor([[1.0, 0.0]])
    logits = [torch.tensor([[0.0, 2.0]]), torch.tensor([[3.0, -1.0]])]
    # BCE(z, 1) = log(1 + e^-z); BCE(z, 0) = log(1 + e^z); mean over the 2 classes
    level0 = (_softplus(-0.0) + _softplus(2.0)) / 2
    level1 = (_softplus(-3.0) + _softplus(-1.0)) / 2
    got = classification_loss(logits, labels, (0.1, 1.0))
    assert float(got) == pytest.approx(0.1 * level0 + 1.0 * level1, rel=1e-6)


# Two classes, two prototype slots each, in 2-D: class 0 along +x, class 1 along +y.
PROTOS = torch.tensor([[[1.0, 0.0], [1.0, 1.0]], [[0.0, 1.0], [-1.0, 1.0]]])
R2 = 1 / math.sqrt(2)


def test_fg_and_bg_losses_match_equations_9_to_13():
    valid = torch.ones(2, 2, dtype=torch.bool)
    fg = torch.tensor([[2.0, 0.0]])  # cos with P: class0 (1, R2), class1 (0, -R2)
    bg = torch.tensor([[0.0, 3.0]])  # cos with P: class0 (0, R2), class1 (1, R2)
    tau = 0.5
    l_fg, l_bg = similarity_losses(fg, bg, torch.tensor([0]), PROTOS, valid, tau)
    s_ff, s_fb = (1 + R2) / 2, (0 - R2) / 2  # means over the slots (like with like)
    s_bf, s_bb = (0 + R2) / 2, (1 + R2) / 2  # means over the slots
    assert float(l_fg) == pytest.approx(
        -math.log(math.exp(s_ff / tau) / (math.exp(s_ff / tau) + math.exp(s_fb / tau)))
    )
    assert float(l_bg) == pytest.approx(
        -math.log(math.exp(s_bb / tau) / (math.exp(s_bf / tau) + math.exp(s_bb / tau)))
    )


def test_invalid_prototype_slots_do_not_count():
    valid = torch.tensor([[True, False], [True, True]])
    fg = torch.tensor([[2.0, 0.0]])
    bg = torch.tensor([[0.0, 3.0]])
    l_fg, l_bg = similarity_losses(fg, bg, torch.tensor([0]), PROTOS, valid, 1.0)
    assert float(l_fg) == pytest.approx(_softplus((0 - R2) / 2 - 1.0))  # s_FF = 1 only
    assert float(l_bg) == pytest.approx(_softplus(0.0 - (1 + R2) / 2))  # s_BF = 0 (one valid slot)


def test_no_present_class_gives_zero_similarity_loss():
    empty = torch.zeros(0, 2)
    l_fg, l_bg = similarity_losses(
        empty, empty, torch.zeros(0, dtype=torch.long), PROTOS, torch.ones(2, 2, dtype=torch.bool), 1
    )
    assert float(l_fg) == 0 and float(l_bg) == 0


def test_total_loss_weights_parts_as_the_paper():
    s = TrainSettings(backbone="tiny-backbone", alpha=1.0, beta=0.5, theta1=1.0, theta2=0.5, tau_s=1.0)
    model = type("M", (), {"prototypes": PROTOS, "proto_valid": torch.ones(2, 2, dtype=torch.bool)})()
    logits = [torch.tensor([[0.5, -0.5]])] * 3
    labels = torch.tensor([[1.0, 0.0]])
    parts = pbip_loss(
        logits, labels, s, torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 3.0]]), torch.tensor([0]), model
    )
    assert set(parts) == {"loss", "cls", "fg", "bg"}
    expected = 1.0 * parts["cls"] + 0.5 * (1.0 * parts["fg"] + 0.5 * parts["bg"])
    assert float(parts["loss"]) == pytest.approx(float(expected))
    base = pbip_loss(logits, labels, s.replace(baseline=True))
    assert float(base["loss"]) == pytest.approx(float(parts["cls"])) and float(base["fg"]) == 0


def test_fg_bg_images_follow_equation_5():
    x = torch.full((1, 3, 4, 4), 0.5)
    cam = torch.zeros(1, 2, 4, 4)
    cam[0, 0, :, :2] = 4.0  # class 0 active on the left
    cam[0, 0, :, 2:] = torch.tensor([1.0, 0.0])  # weak tail: normalised 0.25, 0
    cam[0, 1] = 1.0
    labels = torch.tensor([[1.0, 0.0]])  # only class 0 present: one pair
    mb = fg_bg_images(x, [cam], labels, size=4, delta=0.15)
    assert mb.fg.shape == (1, 3, 4, 4) and mb.class_index.tolist() == [0]
    m = torch.tensor([1.0, 1.0, 0.25, 0.0])  # min-max per class
    b = (m >= 0.15).float()
    assert torch.allclose(mb.fg[0, 0, 0], b * m * 0.5)
    assert torch.allclose(mb.bg[0, 0, 0], (1 - b) * (1 - m) * 0.5)
    white = fg_bg_images(x, [cam], labels, size=4, delta=0.15, fill="white")
    assert torch.allclose(white.fg[0, 0, 0], b * m * 0.5 + (1 - b * m))  # masked-out share shows glass


def test_global_threshold_uses_the_max_over_present_classes():
    fused = torch.zeros(1, 2, 1, 4)
    fused[0, 0, 0] = torch.tensor([0.0, 1.0, 2.0, 4.0])
    fused[0, 1, 0] = torch.tensor([0.0, 0.5, 1.0, 2.0])
    labels = torch.tensor([[1.0, 1.0]])
    per_class = threshold_masks(normalise_cams(fused, labels, "class"), labels, 0.5, "class")
    joint = threshold_masks(normalise_cams(fused, labels, "global"), labels, 0.5, "global")
    assert per_class[0, 1, 0].tolist() == [0, 0, 1, 1]  # class 1 scaled to its own max
    assert joint[0, 1, 0].tolist() == [0, 0, 0, 1]  # class 1 against the max of class 0
    assert joint[0, 0, 0].tolist() == [0, 0, 1, 1]
