"""Edits: add/remove/move/lock/recluster/undo persist, recompute prototypes and never re-encode seen images."""

from __future__ import annotations

import numpy as np
import pytest
from bank_data import patch

from napari_pbip.bank import add_images, lock, move, open_bank, recluster, remove, undo
from napari_pbip.bank.encode import encode
from napari_pbip.data.images import read_rgb, write_rgb
from napari_pbip.errors import BankError


def _prototypes_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a.prototype_tensor(), b.prototype_tensor(), strict=True))


def test_round_trip_add_remove_recluster_undo_persists(dataset, build, encoder, tmp_path):
    bank = build(dataset)
    write_rgb(tmp_path / "extra.png", patch("red", 1, 4242))
    region = patch("red", 0, 4343)
    v2 = add_images(
        bank, "red", [tmp_path / "extra.png", region], sources=[None, {"slide": "s.svs", "x": 64, "y": 96}]
    )
    assert v2.version == 2 and len(v2.members("red")) == len(bank.members("red")) + 2
    v3 = remove(v2, [v2.members("green")[0].id])
    v4 = recluster(v3, "blue", 3)
    assert v4.ks == (2, 2, 3) and v4.prototype_tensor()[0].shape == (3, 3, 32)
    assert v4.prototype_tensor()[1].tolist() == [[True, True, False], [True, True, False], [True, True, True]]
    for version in (v2, v3, v4):
        assert not _prototypes_equal(version, bank)
    reopened = open_bank(bank.root)
    assert reopened.version == 4 and _prototypes_equal(reopened, v4) and reopened.members() == v4.members()
    back = undo(reopened)
    assert back.version == 3 and _prototypes_equal(back, v3) and _prototypes_equal(open_bank(bank.root), v3)
    array_member = [m for m in back.members("red") if m.source is not None][0]
    assert array_member.source == {"slide": "s.svs", "x": 64, "y": 96}
    np.testing.assert_array_equal(back.image(array_member.id), region)  # pixels kept in the bank


def test_edits_never_re_encode_seen_images(dataset, build, encoder, tmp_path):
    bank = build(dataset)
    first = bank.members("red")[0]
    seen = encoder.counter.images
    v2 = remove(bank, [first.id])
    v3 = recluster(v2, "red", 1)
    v4 = move(v3, [v3.members("green")[0].id], "blue")
    v5 = lock(v4, [v4.members("blue")[0].id])
    v6 = add_images(v5, "red", [first.path], encoder=encoder)  # removed earlier: features still cached
    assert encoder.counter.images == seen
    add_images(v6, "red", [patch("red", 0, 777)], encoder=encoder)
    assert encoder.counter.images == seen + 1


def test_added_member_joins_nearest_sub_cluster_and_prototype(dataset, build, encoder):
    bank = build(dataset, per_cluster=10)
    image = patch("green", 1, 31337)
    new = add_images(bank, "green", [image], encoder=encoder)
    (member,) = [m for m in new.members("green") if m.id not in {x.id for x in bank.members()}]
    assert member.selected
    # the new image is shade 1 like the sub-cluster that holds the other shade-1 patches
    shade1 = {m.cluster for m in bank.members("green") if int(m.path.split("green-")[1][:3]) % 2 == 1}
    assert shade1 == {member.cluster}
    chosen = [read_rgb(m.path) for m in bank.members("green", member.cluster, selected=True)] + [image]
    expected = encode(encoder, chosen).mean(axis=0)
    np.testing.assert_allclose(new.prototype_tensor()[0][1, member.cluster], expected, rtol=1e-4, atol=1e-5)


def test_bad_images_are_skipped_and_listed(dataset, build, encoder, tmp_path):
    bank = build(dataset)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    items = [
        broken,
        patch("red", 0, 5, size=200),
        np.zeros((32, 32), np.uint8),
        bank.image(bank.members("blue")[0].id),
    ]
    good = patch("red", 0, 6)
    new = add_images(bank, "red", [*items, good], encoder=encoder)
    assert len(new.members("red")) == len(bank.members("red")) + 1
    reasons = [s["reason"].split(":")[0] for s in new.last_edit["skipped"]]
    assert reasons == ["unreadable", "other size", "unreadable", "duplicate"]
    assert (
        "already member" in new.last_edit["skipped"][3]["reason"]
        and "'blue'" in new.last_edit["skipped"][3]["reason"]
    )
    with pytest.raises(
        BankError, match=r"none of the 2 image\(s\) could be added to 'red'.*broken.png: unreadable"
    ):
        add_images(new, "red", [broken, np.full((32, 32, 3), 250, np.uint8)], encoder=encoder)
    assert open_bank(bank.root).version == new.version


def test_move_lock_and_recluster_keep_locked(dataset, build):
    bank = build(dataset, per_cluster=1)
    far = max(bank.members("red"), key=lambda m: m.distance)
    assert not far.selected
    locked = lock(bank, [far.id])
    assert locked.member(far.id).locked and locked.member(far.id).selected
    with pytest.raises(BankError, match=rf"member\(s\) \[{far.id}\] are locked; unlock them first"):
        remove(locked, [far.id])
    re = recluster(locked, "red", 2)
    assert re.member(far.id).selected and re.member(far.id).locked
    # the locked member counts towards N_K=1: it is the only selected one of its sub-cluster
    assert [m.id for m in re.members("red", re.member(far.id).cluster, selected=True)] == [far.id]
    assert sum(m.selected for m in re.members("red")) == 2
    moved = move(re, [far.id], "green", to_cluster=0)
    assert (moved.member(far.id).class_name, moved.member(far.id).cluster) == ("green", 0)
    assert far.id not in {m.id for m in moved.members("red")}


def test_bad_edit_requests_name_the_problem(dataset, build, encoder):
    bank = build(dataset)
    with pytest.raises(
        BankError, match=r"class 'purple' is not in this bank; its classes are \['red', 'green', 'blue'\]"
    ):
        add_images(bank, "purple", [patch("red", 0, 1)], encoder=encoder)
    with pytest.raises(BankError, match=r"member id 999 is not in bank"):
        remove(bank, [999])
    with pytest.raises(BankError, match=r"sub-cluster 5 does not exist in class 'green', which has k=2"):
        move(bank, [bank.members("red")[0].id], "green", to_cluster=5)
    with pytest.raises(BankError, match=r"re-cluster class 'red' into k=7 .* it has 6 image\(s\)"):
        recluster(bank, "red", 7)
    with pytest.raises(BankError, match=r"leave class\(es\) \['red'\] without any selected image"):
        remove(bank, [m.id for m in bank.members("red")])
    assert open_bank(bank.root).version == 1


def test_different_encoder_is_refused(dataset, build):
    from napari_pbip.models.tiny import build_tiny_encoder

    bank = build(dataset)
    other = build_tiny_encoder({"seed": 1})
    with pytest.raises(
        BankError, match=r"differs from the one this bank was built with .*'tiny-encoder'.*cannot be mixed"
    ):
        add_images(bank, "red", [patch("red", 0, 1)], encoder=other)
    assert open_bank(bank.root).version == 1
