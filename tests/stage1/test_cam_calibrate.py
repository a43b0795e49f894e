"""Presence thresholds for unlabelled images, fitted per class on the run's training labels."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from napari_pbip.stage1 import CamSettings, load_stage1_predictor  # noqa: E402
from napari_pbip.stage1.calibrate import best_threshold  # noqa: E402
from napari_pbip.stage1.presence import PRESENCE_FILE, read_thresholds  # noqa: E402


def test_threshold_separates_a_well_ranked_but_low_scored_class():
    # the rare-class case: present images score 0.40-0.48, absent ones 0.05-0.2; 0.5 would find none
    probs = np.array([0.40, 0.45, 0.48, 0.05, 0.10, 0.20, 0.15])
    labels = np.array([1, 1, 1, 0, 0, 0, 0])
    t, f1 = best_threshold(probs, labels)
    assert 0.2 < t <= 0.40 and f1 == 1.0
    assert best_threshold(probs, np.ones(7))[0] == 0.5  # nothing to separate: the default stays
    # equal F1 on a wide gap: the candidate nearest 0.5 is taken
    t, _ = best_threshold(np.array([0.9, 0.1]), np.array([1, 0]))
    assert t == 0.5


def test_training_writes_thresholds_the_predictor_uses(tiny_run):
    record = json.loads((tiny_run / PRESENCE_FILE).read_text())
    assert record["classes"] == ["tumor", "stroma", "lymphocyte", "necrosis"] and record["images"] > 0
    assert all(0 < t < 1 for t in record["thresholds"])
    thresholds = read_thresholds(tiny_run, tuple(record["classes"]))
    assert load_stage1_predictor(tiny_run, "cpu").presence_thresholds == thresholds
    # a threshold given by the user wins; a run of other classes has none that apply
    given = load_stage1_predictor(tiny_run, "cpu", CamSettings(presence_threshold=0.3))
    assert given.presence_thresholds == 0.3
    assert read_thresholds(tiny_run, ("a", "b")) is None
