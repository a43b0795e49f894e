"""The bank on real H&E (../shared/data, skipped when absent): layouts, eligibility and eval patches."""

from __future__ import annotations

import pytest

from napari_pbip.bank import EvalSettings, evaluate_bank
from napari_pbip.errors import BankError
from napari_pbip.events import run

pytestmark = pytest.mark.shared_data


def test_wsss4luad_train_builds_and_val_gives_single_class_patches(shared_data, build, encoder):
    root = shared_data / "wsss4luad-dev"
    bank = build(root, k=1, per_cluster=5)  # train/ holds one single-class patch per class (174-280 px)
    assert bank.classes == ("tumor", "stroma", "normal")
    assert [len(bank.members(c)) for c in bank.classes] == [1, 1, 1]
    result = run(evaluate_bank(bank, root, "val", EvalSettings(), encoder=encoder))
    # 224 px patches every 112 px over the 31 masked val images; >= 90% of tissue one class
    assert [v["support"] for v in result["classes"].values()] == [9, 40, 9]
    assert result["skipped_patches"] == {"mixed": 139, "background": 24}


def test_luad_histoseg_sample_names_the_classes_without_single_class_patches(shared_data, build):
    with pytest.raises(BankError, match=r"class\(es\) \['LYM', 'TAS'\] have no single-class patches"):
        build(shared_data / "luad-histoseg-sample")
