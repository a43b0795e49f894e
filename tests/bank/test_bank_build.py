"""Building a bank: eligibility, prototypes = mean of the N_K nearest, reports, bad input, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from bank_data import CLASSES, patch, write_dataset

from napari_pbip.bank import build_bank, open_bank
from napari_pbip.bank.build import KMEANS_STAGE
from napari_pbip.bank.encode import encode
from napari_pbip.bank.kmeans import normalise
from napari_pbip.data.images import read_rgb, write_rgb
from napari_pbip.data.labels import labelled_name
from napari_pbip.errors import BankError, OutputExistsError
from napari_pbip.events import Progress


def test_bank_holds_only_single_class_tissue_patches(tmp_path, build):
    ds = write_dataset(tmp_path / "ds", multi=3, white=2)
    (ds / "train" / labelled_name("broken", [0, 1, 0], "space")).write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    bank = build(ds)
    paths = [m.path for m in bank.members()]
    assert len(paths) == 18  # 6 per class; multi-class, mostly-white and corrupt ones are out
    assert not any("mix-" in p or "white-" in p or "broken" in p for p in paths)
    report = json.loads((bank.root / "report.json").read_text())
    reasons = {s["path"].rsplit("/", 1)[-1][:6]: s["reason"] for s in report["skipped"]}
    assert reasons["white-"].startswith("mostly background: tissue fraction 0.19")
    assert reasons["broken"].startswith("unreadable")
    assert report["multi_class"] == 3
    assert report["skipped_counts"] == {"mostly background": 2, "unreadable": 1}


def test_prototypes_are_means_of_the_nearest_members(dataset, build, encoder):
    bank = build(dataset, k=2, per_cluster=2)
    protos, valid = bank.prototype_tensor()
    assert protos.shape == (3, 2, 32) and valid.all()
    for ci, cls in enumerate(bank.classes):
        for k in range(2):
            members = bank.members(cls, k)
            chosen = [m for m in members if m.selected]
            assert len(chosen) == min(2, len(members))
            others = [m.distance for m in members if not m.selected]
            assert max(m.distance for m in chosen) <= min(others, default=1.0)
            feats = encode(encoder, [read_rgb(m.path) for m in chosen])  # independent re-encoding
            np.testing.assert_allclose(protos[ci, k], feats.mean(axis=0), rtol=1e-4, atol=1e-5)
            centre = bank.centres(cls)[k]
            for m, f in zip(chosen, feats, strict=True):
                assert m.distance == pytest.approx(1 - float(normalise(f) @ centre), abs=1e-4)


def test_sub_clusters_follow_the_two_shades(dataset, build):
    bank = build(dataset, k=2, per_cluster=10)
    for cls in CLASSES:
        shade_of = {m.id: int(m.path.split(f"{cls}-")[1][:3]) % 2 for m in bank.members(cls)}
        groups = {(m.cluster, shade_of[m.id]) for m in bank.members(cls)}
        assert len(groups) == 2, f"{cls}: sub-clusters mix the two shades: {groups}"


def test_build_is_deterministic_and_reports_short_clusters(dataset, build, tmp_path):
    a = build(dataset, out=tmp_path / "a", per_cluster=100)
    b = build(dataset, out=tmp_path / "b", per_cluster=100)
    assert a.content_hash == b.content_hash
    report = json.loads((a.root / "report.json").read_text())
    assert any("fewer than per_cluster=100; all of them kept" in n for n in report["notes"])
    assert (a.root / "settings.json").is_file() and (a.root / "versions" / "000001" / "bank.json").is_file()


def test_thumbnails_written_for_selected_members(dataset, build):
    bank = build(dataset)
    for m in bank.members(selected=True):
        assert bank.thumbnail(m.id).shape == (64, 64, 3)
    unselected = bank.members(selected=False)[0]
    assert not (bank.root / "thumbs" / f"{unselected.hash}.png").exists()
    assert bank.thumbnail(unselected.id).shape == (64, 64, 3)  # made on demand


def test_class_without_eligible_images_is_named(tmp_path, build):
    ds = write_dataset(tmp_path / "ds", per_class={"red": 0, "green": 4, "blue": 4}, white=3)
    with pytest.raises(
        BankError, match=r"class 'red' has no eligible images: its 3 single-class .*mostly background"
    ):
        build(ds)
    ds2 = write_dataset(tmp_path / "ds2", per_class={"red": 4, "green": 4, "blue": 0})
    with pytest.raises(BankError, match=r"\['blue'\] have no single-class patches"):
        build(ds2)


def test_k_larger_than_a_class_is_named(tmp_path, build):
    ds = write_dataset(tmp_path / "ds", per_class={"red": 5, "green": 2, "blue": 5})
    with pytest.raises(
        BankError, match=r"class 'green' has 2 eligible image\(s\), fewer than k=3.*lower --k"
    ):
        build(ds, k=3)
    assert not (tmp_path / "bank").exists()


def test_images_of_other_sizes(tmp_path, build):
    ds = write_dataset(tmp_path / "ds")
    write_rgb(ds / "train" / labelled_name("big", [0, 0, 1], "space"), patch("blue", 0, 1, size=200))
    write_rgb(ds / "train" / labelled_name("near", [0, 0, 1], "space"), patch("blue", 0, 2, size=40))
    bank = build(ds)
    names = [m.path.rsplit("/", 1)[-1] for m in bank.members("blue")]
    assert any(n.startswith("near") for n in names) and not any(n.startswith("big") for n in names)
    report = json.loads((bank.root / "report.json").read_text())
    (big,) = [s for s in report["skipped"] if "big" in s["path"]]
    assert big["reason"].startswith("other size: 200x200 px while the bank's patches are about 32 px")


def test_existing_output_and_overwrite_reuses_features(dataset, build, encoder, tmp_path):
    build(dataset)
    with pytest.raises(OutputExistsError):
        build(dataset)
    encoded = encoder.counter.images
    bank = build(dataset, overwrite=True, k=3)
    assert encoder.counter.images == encoded  # features came from the old bank's cache
    assert bank.ks == (3, 3, 3)


def test_interrupted_build_resumes_without_re_encoding(dataset, settings, encoder, tmp_path, build):
    job = build_bank(settings, dataset, tmp_path / "bank", device="cpu", encoder=encoder)
    for event in job:
        assert isinstance(event, Progress)
        if event.stage == KMEANS_STAGE:
            job.close()  # like Ctrl-C after encoding
            break
    assert not (tmp_path / "bank").exists()
    assert any((tmp_path / ".bank.partial" / "features").glob("*.safetensors"))
    encoded = encoder.counter.images
    bank = build(dataset)
    assert encoder.counter.images == encoded
    assert not (tmp_path / ".bank.partial").exists()
    assert open_bank(bank.root).content_hash == bank.content_hash


def test_unlabelled_split_is_refused(dataset, build):
    with pytest.raises(BankError, match=r"split 'val' .* has no image-level labels"):
        build(dataset, split="val")


def test_folder_per_class_layout_builds(tmp_path, build):
    root = tmp_path / "curated"
    for ci, cls in enumerate(CLASSES):
        for i in range(3):
            write_rgb(root / cls / f"{i}.png", patch(cls, i % 2, 10 * ci + i))
    bank = build(root, k=1)
    assert bank.classes == tuple(sorted(CLASSES))  # class folders are read in name order
    assert [len(bank.members(c)) for c in CLASSES] == [3, 3, 3]
    assert all(f"/{m.class_name}/" in m.path for m in bank.members())
