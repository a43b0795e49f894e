"""bank info: counts per sub-cluster and prototype cosine similarities against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pbip.bank import bank_info, format_info, remove
from napari_pbip.bank.info import prototype_similarity


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
