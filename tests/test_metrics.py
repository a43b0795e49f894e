"""Metrics against hand-computed values and an independent loop/sklearn implementation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_pbip.errors import DatasetError
from napari_pbip.metrics import (
    MetricAccumulator,
    boundary_iou,
    boundary_width,
    confusion_matrix,
    scores,
)

# Two tissue classes (0, 1), background 2.
GT = np.array(
    [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [2, 2, 2, 2],
        [2, 2, 2, 2],
    ]
)
PRED = np.array(
    [
        [0, 1, 1, 1],
        [0, 0, 1, 2],
        [2, 2, 0, 2],
        [2, 2, 1, 1],
    ]
)
# class 0: GT pixels (0,0) (0,1) (1,0) (1,1); predicted 0 at three of them -> TP 3, FN 1 (called 1).
#          Predicted 0 at (2,2), but its GT is background: not counted, so FP 0. IoU 3/4, Dice 6/7.
# class 1: GT pixels (0,2) (0,3) (1,2) (1,3); predicted 1, 1, 1, background -> TP 3, FN 1 (the miss).
#          Predicted 1 at (0,1) whose GT is 0 -> FP 1; (3,2) (3,3) are GT background. IoU 3/5, Dice 6/8.


def test_confusion_matrix_by_hand() -> None:
    conf = confusion_matrix(GT, PRED, n_classes=2, ignore_index=2)
    # rows: true 0, 1; columns: predicted 0, 1, background
    assert conf.tolist() == [[3, 1, 0], [0, 3, 1]]
    assert conf.dtype == np.int64


def test_scores_by_hand() -> None:
    s = scores(confusion_matrix(GT, PRED, 2, 2))
    assert s["iou"] == pytest.approx([3 / 4, 3 / 5])
    assert s["dice"] == pytest.approx([6 / 7, 6 / 8])
    assert s["miou"] == pytest.approx((3 / 4 + 3 / 5) / 2)
    assert s["mean_dice"] == pytest.approx((6 / 7 + 6 / 8) / 2)
    assert s["fwiou"] == pytest.approx(0.5 * 3 / 4 + 0.5 * 3 / 5)  # 4 GT px each
    assert s["pixel_accuracy"] == pytest.approx(6 / 8)


def test_fwiou_weights_by_ground_truth_share() -> None:
    gt = np.zeros((4, 4), int)
    gt[3] = 1  # class 0: 12 px, class 1: 4 px, no background (index 2)
    pred = gt.copy()
    pred[3, :2] = 0  # two class-1 pixels called 0
    # class 0: TP 12, FP 2 -> IoU 12/14; class 1: TP 2, FN 2 -> IoU 1/2
    s = scores(confusion_matrix(gt, pred, 2, 2))
    assert s["iou"] == pytest.approx([12 / 14, 1 / 2])
    assert s["miou"] == pytest.approx((12 / 14 + 1 / 2) / 2)
    assert s["fwiou"] == pytest.approx(12 / 16 * 12 / 14 + 4 / 16 * 1 / 2)


def test_ground_truth_background_is_ignored_but_predicted_background_is_a_miss() -> None:
    base = confusion_matrix(GT, PRED, 2, 2)
    anything_on_background = PRED.copy()
    anything_on_background[2:] = np.array([[0, 1, 0, 1], [1, 1, 0, 0]])
    assert (confusion_matrix(GT, anything_on_background, 2, 2) == base).all()

    all_background = np.full_like(GT, 2)
    s = scores(confusion_matrix(GT, all_background, 2, 2))
    assert s["iou"].tolist() == [0.0, 0.0]
    assert s["miou"] == 0.0


def test_absent_classes() -> None:
    gt = np.array([[0, 0], [3, 3]])  # 3 tissue classes, background 3; class 1 and 2 absent from GT
    pred = np.array([[0, 1], [2, 3]])  # class 1 predicted on a class-0 pixel, class 2 only on background
    s = scores(confusion_matrix(gt, pred, 3, 3))
    assert s["iou"][:2].tolist() == [0.5, 0.0]
    assert np.isnan(s["iou"][2])  # absent from GT and not predicted on tissue: no score
    assert s["miou"] == 0.5  # mean over classes present in the ground truth only
    acc = MetricAccumulator(3, 3, ["a", "b", "c"])
    acc.update(gt, pred)
    out = acc.result()
    assert out["per_class"]["c"] == {"iou": None, "dice": None, "biou": None, "gt_pixels": 0}
    assert out["per_class"]["b"]["iou"] == 0.0


def test_background_index_other_than_last() -> None:
    # Background 0: tissue classes are mask indices 1 and 2.
    shifted = confusion_matrix((GT + 1) % 3, (PRED + 1) % 3, n_classes=2, ignore_index=0)
    assert shifted.tolist() == confusion_matrix(GT, PRED, 2, 2).tolist()


def test_counts_accumulate_over_images() -> None:
    other_gt, other_pred = np.zeros((3, 5), np.uint8), np.ones((3, 5), np.uint8)
    both = confusion_matrix([GT, other_gt], [PRED, other_pred], 2, 2)
    assert (both == confusion_matrix(GT, PRED, 2, 2) + confusion_matrix(other_gt, other_pred, 2, 2)).all()
    # pooled counts: class 0 TP 3, FN 1 + 15; FP 0 -> IoU 3/19 (not the mean of per-image IoUs)
    assert scores(both)["iou"][0] == pytest.approx(3 / 19)


def test_bad_input_names_the_problem() -> None:
    with pytest.raises(DatasetError, match=r"\[7\].*expected values in \[0, 1, 2\]"):
        confusion_matrix(GT, np.where(PRED == 1, 7, PRED), 2, 2)
    with pytest.raises(DatasetError, match=r"\(4, 4\).*\(4, 3\)"):
        confusion_matrix(GT, PRED[:, :3], 2, 2)
    with pytest.raises(DatasetError, match="class_names"):
        MetricAccumulator(2, 2, ["only-one"])


def test_boundary_width() -> None:
    assert boundary_width((224, 224)) == 6  # 0.02 * 316.8 = 6.3
    assert boundary_width((30, 30)) == 1
    assert boundary_width((5, 5)) == 1  # never below one pixel
    assert boundary_width((500, 400)) == 13  # 0.02 * 640.3 = 12.8


def _square_and_shifted(field: int) -> tuple[np.ndarray, np.ndarray]:
    """30x30 (d = 1): class 0 square rows/cols 10..15; prediction shifted one column right."""
    gt = np.full((30, 30), field)
    pred = gt.copy()
    gt[10:16, 10:16] = 0
    pred[10:16, 11:17] = 0
    return gt, pred


def test_boundary_iou_square_vs_shifted_square_by_hand() -> None:
    # Square class 0 in a class-1 field, no background (index 2); d = 1.
    # Class 0: each boundary is the square's 20-px outer ring. Shared: rows 10 and 15, cols 11..15
    # (10 px); in the interior rows GT's ring is cols 10/15, the prediction's 11/16: none shared.
    # bIoU = 10 / (20 + 20 - 10) = 1/3 (plain IoU would be 30/42).
    # Class 1: the image border is contour too, so each boundary is the 116-px frame plus the
    # 28-px ring around the hole. The rings share rows 9 and 16, cols 10..16 (14 px).
    # bIoU = (116 + 14) / (144 + 144 - 130) = 130/158.
    gt, pred = _square_and_shifted(field=1)
    biou = boundary_iou(gt, pred, n_classes=2, ignore_index=2)
    assert biou == pytest.approx([1 / 3, 130 / 158])
    acc = MetricAccumulator(2, 2)
    acc.update(gt, pred)
    assert acc.result()["mean_biou"] == pytest.approx((1 / 3 + 130 / 158) / 2)


def test_boundary_iou_excludes_ground_truth_background() -> None:
    # Same square on background (index 1): the prediction's ring column 16 (6 px) lies on GT
    # background and is dropped, leaving 14 of its 20 px: bIoU = 10 / (20 + 14 - 10).
    gt, pred = _square_and_shifted(field=1)
    assert boundary_iou(gt, pred, n_classes=1, ignore_index=1) == pytest.approx([10 / 24])


# ---------- independent implementation: loops, sklearn, brute-force boundaries ----------


def ref_boundary(mask: np.ndarray, d: int) -> np.ndarray:
    """Mask pixels with a non-mask pixel (or the outside of the image) within chessboard distance d."""
    h, w = mask.shape
    out = np.zeros_like(mask, dtype=bool)
    for y in range(h):
        for x in range(w):
            if not mask[y, x]:
                continue
            near_edge = y < d or x < d or y >= h - d or x >= w - d
            window = mask[max(0, y - d) : y + d + 1, max(0, x - d) : x + d + 1]
            out[y, x] = near_edge or not window.all()
    return out


def reference(gts, preds, n, bg, ratio=0.02) -> dict:
    """Per-class IoU, Dice, bIoU and their means, computed independently of napari_pbip.metrics."""
    from sklearn.metrics import confusion_matrix as sk_confusion

    tissue = [i for i in range(n + 1) if i != bg][:n]
    order = [*tissue, bg]
    conf = np.zeros((n + 1, n + 1), np.int64)
    inter, union = np.zeros(n), np.zeros(n)
    for g, p in zip(gts, preds, strict=True):
        conf += sk_confusion(g.ravel(), p.ravel(), labels=order)
        d = max(1, round(ratio * np.sqrt(g.shape[0] ** 2 + g.shape[1] ** 2)))
        for k, c in enumerate(tissue):
            gb = ref_boundary(g == c, d)
            pb = ref_boundary(p == c, d) & (g != bg)
            inter[k] += (gb & pb).sum()
            union[k] += (gb | pb).sum()
    out = {"iou": [], "dice": [], "biou": [], "present": []}
    for k in range(n):
        tp = conf[k, k]
        fn = conf[k, :].sum() - tp
        fp = conf[:n, k].sum() - tp  # GT background row left out
        out["iou"].append(tp / (tp + fp + fn) if tp + fp + fn else np.nan)
        out["dice"].append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan)
        out["biou"].append(inter[k] / union[k] if union[k] else np.nan)
        out["present"].append(conf[k, :].sum() > 0)
    present = np.array(out["present"])
    freq = conf[:n].sum(axis=1) / max(1, conf[:n].sum())
    for name, key in (("miou", "iou"), ("mean_dice", "dice"), ("mean_biou", "biou")):
        out[name] = float(np.mean(np.array(out[key])[present])) if present.any() else None
    out["fwiou"] = (
        float(sum(freq[k] * out["iou"][k] for k in range(n) if present[k])) if present.any() else None
    )
    return out


def _close(a, b) -> bool:
    if a is None or b is None or (isinstance(b, float) and np.isnan(b)):
        return (a is None or np.isnan(a)) and (b is None or np.isnan(b))
    return abs(a - b) < 1e-9


@st.composite
def label_maps(draw):
    n = draw(st.integers(1, 4))
    bg = draw(st.sampled_from([n, 0]))
    images = []
    for _ in range(draw(st.integers(1, 3))):
        h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        block = draw(st.integers(1, 4))  # blocky maps have real boundaries; block 1 is noise
        small = rng.integers(0, n + 1, size=(-(-h // block), -(-w // block)))
        g = np.kron(small, np.ones((block, block), int))[:h, :w]
        p = np.where(rng.random((h, w)) < draw(st.floats(0, 1)), rng.integers(0, n + 1, (h, w)), g)
        images.append((g.astype(np.uint8), p.astype(np.uint8)))
    ratio = draw(st.sampled_from([0.02, 0.1, 0.25]))
    return n, bg, images, ratio


@settings(max_examples=80, deadline=None)
@given(label_maps())
def test_agrees_with_independent_implementation(case) -> None:
    n, bg, images, ratio = case
    gts, preds = [g for g, _ in images], [p for _, p in images]
    ref = reference(gts, preds, n, bg, ratio)
    acc = MetricAccumulator(n, bg, ratio=ratio)
    for g, p in images:
        acc.update(g, p)
    out = acc.result()
    for k, name in enumerate(out["classes"]):
        for key in ("iou", "dice", "biou"):
            assert _close(out["per_class"][name][key], ref[key][k]), (key, name)
    for key in ("miou", "mean_dice", "mean_biou", "fwiou"):
        assert _close(out[key], ref[key]), key
    assert out["n_images"] == len(images)


def test_batch_update_equals_per_image_updates() -> None:
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, size=(5, 20, 24))
    pred = rng.integers(0, 4, size=(5, 20, 24))
    batched, single = MetricAccumulator(3, 3), MetricAccumulator(3, 3)
    batched.update(gt, pred)
    for g, p in zip(gt, pred, strict=True):
        single.update(g, p)
    assert batched.result() == single.result()
    assert batched.result()["n_images"] == 5
