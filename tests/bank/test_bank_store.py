"""The bank on disk: reload equals what was written, damage is detected, failed writes leave it intact."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from napari_pbip.bank import open_bank, remove, undo
from napari_pbip.bank import store as store_mod
from napari_pbip.errors import BankError


def test_reopen_gives_identical_bank(dataset, build):
    bank = build(dataset)
    again = open_bank(bank.root)
    for a, b in zip(bank.prototype_tensor(), again.prototype_tensor(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert again.classes == ("red", "green", "blue")
    assert again.encoder_name == "tiny-encoder"
    assert again.version == 1 and again.content_hash == bank.content_hash
    assert again.members() == bank.members()
    manifest = json.loads((bank.root / "bank.json").read_text())  # readable by people and other programs
    member = manifest["classes"][0]["clusters"][0]["members"][0]
    assert set(member) >= {"id", "hash", "path", "distance", "selected", "locked"}
    assert manifest["encoder"]["weights_hash"] and manifest["prototype_shape"] == [3, 2, 32]


def test_not_a_bank_and_damaged_files(dataset, build, tmp_path):
    with pytest.raises(BankError, match=r"is not an image bank \(no bank.json\); build one"):
        open_bank(tmp_path)
    bank = build(dataset)
    tensors = bank.root / "versions" / "000001" / "prototypes.safetensors"
    from safetensors.numpy import load_file, save_file

    data = load_file(str(tensors))
    data["prototypes"][0, 0, 0] += 1.0
    save_file(data, str(tensors))
    with pytest.raises(BankError, match=r"prototypes do not match bank.json"):
        open_bank(bank.root)
    manifest = json.loads((bank.root / "bank.json").read_text())
    (bank.root / "bank.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(BankError, match=r"bank format 99, newer than"):
        open_bank(bank.root)
    (bank.root / "bank.json").write_text("{not json")
    with pytest.raises(BankError, match=r"not valid JSON"):
        open_bank(bank.root)


@pytest.mark.parametrize("stage", ["prototypes", "version folder", "switch"])
def test_failed_edit_leaves_previous_version_intact(dataset, build, monkeypatch, stage):
    bank = build(dataset)
    before = bank.prototype_tensor()[0]

    def boom(*args, **kwargs):
        raise OSError(f"disk full during {stage}")

    if stage == "prototypes":
        monkeypatch.setattr(store_mod, "compute_prototypes", boom)
    elif stage == "version folder":  # crash after part of the folder is written
        real = store_mod._atomic.write_json
        monkeypatch.setattr(
            store_mod._atomic, "write_json", lambda p, o: boom() if p.name == "bank.json" else real(p, o)
        )
    else:  # version folder complete, crash while switching bank.json to it
        real = store_mod._atomic.write_json
        monkeypatch.setattr(
            store_mod._atomic,
            "write_json",
            lambda p, o: boom() if p == bank.root / "bank.json" else real(p, o),
        )
    with pytest.raises(OSError, match="disk full"):
        remove(bank, [bank.members()[0].id])
    monkeypatch.undo()
    again = open_bank(bank.root)
    assert again.version == 1 and again.content_hash == bank.content_hash
    np.testing.assert_array_equal(again.prototype_tensor()[0], before)
    after = remove(again, [again.members()[0].id])  # the bank still edits normally
    assert after.version >= 2 and open_bank(bank.root).version == after.version


def test_stale_bank_object_cannot_edit(dataset, build):
    bank = build(dataset)
    remove(bank, [bank.members()[0].id])
    with pytest.raises(BankError, match=r"now at version 2, but this edit starts from version 1; reopen"):
        remove(bank, [bank.members()[1].id])


def test_versions_and_undo_chain(dataset, build):
    bank = build(dataset)
    v2 = remove(bank, [bank.members()[0].id])
    v3 = remove(v2, [v2.members()[0].id])
    back = undo(v3)
    assert back.version == 2 and back.content_hash == v2.content_hash
    v4 = remove(back, [back.members()[-1].id])  # a new branch from version 2
    assert (v4.version, v4.parent) == (4, 2)
    assert undo(undo(v4)).version == 1
    with pytest.raises(BankError, match=r"version 1, the build; there is nothing to undo"):
        undo(open_bank(bank.root))
    assert [h["version"] for h in open_bank(bank.root).history()] == [1, 2, 3, 4]


def test_importing_the_bank_is_cheap():
    code = "import sys, napari_pbip.bank, napari_pbip.cli.bank; print(sorted({'torch', 'safetensors', 'PIL', 'qtpy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
