"""bank eval: single-class patch labels, scores against hand-computed values, end to end on colour classes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pbip.bank import EvalSettings, evaluate_bank, format_eval
from napari_pbip.bank.evaluate import patch_label, scores
from napari_pbip.errors import BankError
from napari_pbip.events import run


def test_patch_label_purity_and_tissue():
    settings = EvalSettings(purity=0.9, min_tissue=0.5)
    mask = np.zeros((10, 10), np.uint8)
    tissue = np.ones((10, 10), bool)
    mask[0, :5] = 1  # 5% class 1
    assert patch_label(mask, tissue, 3, settings) == 0
    mask[:2] = 1  # 20% class 1
    assert patch_label(mask, tissue, 3, settings) == "mixed"
    tissue[:6] = False  # 40% tissue, all class 0
    assert patch_label(mask, tissue, 3, settings) == "background"


def test_patch_label_counts_tissue_classes_when_background_is_mask_index_0():
    settings = EvalSettings(purity=0.9, min_tissue=0.5)
    mask = np.full((10, 10), 2, np.uint8)  # tissue class 1 (background 0, class 0 at 1, class 1 at 2)
    mask[:, 8:] = 0
    tissue = mask != 0
    assert patch_label(mask, tissue, 2, settings, background_index=0) == 1
    mask[:, :8] = 1
    assert patch_label(mask, tissue, 2, settings, background_index=0) == 0


def test_scores_hand_computed():
    truth = np.array([0, 0, 0, 1, 1, 2])
    preds = np.array([0, 0, 1, 1, 1, 1])
    r = scores(truth, preds, ("a", "b", "c"))
    assert r["classes"]["a"] == {
        "support": 3,
        "precision": 1.0,
        "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(0.8),
    }
    assert r["classes"]["b"]["precision"] == pytest.approx(0.5) and r["classes"]["b"]["f1"] == pytest.approx(
        2 / 3
    )
    assert r["classes"]["c"] == {"support": 1, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["macro_f1"] == pytest.approx((0.8 + 2 / 3 + 0) / 3)
    assert r["confusion"] == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]


def test_eval_on_colour_classes(dataset, build, encoder):
    bank = build(dataset)
    result = run(evaluate_bank(bank, dataset, "val", EvalSettings(tile=32, stride=32), encoder=encoder))
    # 3 val images of 2 single-class halves each: red|green, green|blue, blue|red
    assert result["patches"] == 6
    assert [v["support"] for v in result["classes"].values()] == [2, 2, 2]
    assert result["accuracy"] == 1.0 and result["macro_f1"] == 1.0
    text = format_eval(result)
    assert "6 single-class patches" in text and "macro F1 100.0%" in text


def test_eval_without_single_class_patches(dataset, build, encoder):
    bank = build(dataset)
    with pytest.raises(BankError, match=r"gave no single-class patches \(skipped: \{'mixed': 3\}\)"):
        run(evaluate_bank(bank, dataset, "val", EvalSettings(tile=64, stride=64), encoder=encoder))
