"""bank info: counts per sub-cluster and prototype cosine similarities against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pbip.bank import bank_info, format_info, remove
from napari_pbip.bank.info import ABSOLUTE_LIMIT, prototype_similarity, too_alike


def test_similarity_matches_hand_computation():
    s = np.sqrt(0.5)
    protos = np.array(
        [
            [[1, 0, 0], [s, s, 0]],  # class a: cos between its two prototypes = s
            [[0, 0, 2], [0, 0, 0]],  # class b: one valid prototype (the second slot is padding)
        ],
        dtype=np.float32,
    )
    valid = np.array([[True, True], [True, False]])
    sim = prototype_similarity(protos, valid, ("a", "b"))
    assert sim["intra"] == {"a": pytest.approx(s, abs=1e-4), "b": None}
    assert sim["inter"] == {"a": pytest.approx(0.0, abs=1e-6), "b": pytest.approx(0.0, abs=1e-6)}
    assert sim["matrix"][0][0] == pytest.approx(s, abs=1e-4) and sim["matrix"][1][1] is None
    assert sim["mean_intra"] == pytest.approx(s, abs=1e-4) and sim["mean_inter"] == pytest.approx(
        0.0, abs=1e-6
    )


def test_info_counts_and_table(dataset, build):
    bank = build(dataset)
    bank = remove(bank, [bank.members("red")[0].id])
    info = bank_info(bank)
    assert info["prototype_shape"] == [3, 2, 32] and info["version"] == 2
    red = info["classes"][0]
    assert (red["name"], red["k"], red["members"]) == ("red", 2, 5)
    assert sum(c["members"] for c in red["clusters"]) == 5
    assert (
        red["selected"]
        == sum(c["selected"] for c in red["clusters"])
        == sum(m.selected for m in bank.members("red"))
    )
    assert all(-1 <= v <= 1 for v in info["similarity"]["intra"].values())
    text = format_info(info)
    assert "prototypes (3, 2, 32)" in text and "v2 (parent 1) remove: removed 1 member(s)  <- current" in text
    assert all(name in text for name in ("red", "green", "blue"))


def test_too_alike_names_classes_as_alike_as_their_own_subclusters():
    sim = {
        "matrix": [[0.90, 0.93, 0.20], [0.93, 0.95, 0.30], [0.20, 0.30, None]],
        "intra": {"a": 0.90, "b": 0.95, "c": None},
    }
    assert too_alike(sim, ("a", "b", "c")) == [("a", "b", 0.93, 0.90)]
    sim["intra"]["a"] = None  # a and c have one prototype each: the absolute limit applies
    assert too_alike(sim, ("a", "b", "c")) == []
    sim["matrix"][2][0] = sim["matrix"][0][2] = ABSOLUTE_LIMIT
    assert too_alike(sim, ("a", "b", "c")) == [("a", "c", ABSOLUTE_LIMIT, ABSOLUTE_LIMIT)]


def test_the_report_warns_about_classes_too_alike(dataset, build):
    info = bank_info(build(dataset))
    assert "WARNING" not in format_info({**info, "too_alike": []})
    text = format_info({**info, "too_alike": [["red", "green", 0.97, 0.91]]})
    assert "WARNING: prototypes of red and green are too alike (cosine 0.970 >= 0.910)" in text
    # what bank_info reports is what the rule finds on its similarities
    assert info["too_alike"] == [
        list(p) for p in too_alike(info["similarity"], tuple(info["similarity"]["intra"]))
    ]
