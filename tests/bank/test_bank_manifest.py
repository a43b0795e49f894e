"""bank.json is checked against its schema on load (issue 14 section 6).

A bank folder may come from a colleague or a download. Whatever its manifest holds, opening and
browsing the bank either works or stops with one :class:`BankError` line naming the key and the fix,
and nothing is ever written outside the bank folder (member hashes name the thumbnail files).
``pbip bank repair`` restores the newest intact version when bank.json itself is damaged.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from napari_pbip.bank import bank_info, open_bank, remove
from napari_pbip.cli.main import main
from napari_pbip.errors import BankError

HEX64 = re.compile(r"[0-9a-f]{64}")
SENTINEL = "escaped_thumb"  # the file name a hostile hash tries to write outside the bank


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A bank of the colour data set (tiny encoder, K=2, 2 per sub-cluster), built once."""
    from bank_data import write_dataset

    from napari_pbip.bank import BankSettings, build_bank
    from napari_pbip.events import run
    from napari_pbip.models.tiny import build_tiny_encoder

    root = tmp_path_factory.mktemp("manifest")
    ds = write_dataset(root / "ds")
    settings = BankSettings(encoder="tiny-encoder", k=2, per_cluster=2, batch_size=4)
    run(build_bank(settings, ds, root / "bank", device="cpu", encoder=build_tiny_encoder().eval()))
    return root / "bank"


def _files(top: Path, skip: Path) -> set[str]:
    return {str(p) for p in top.rglob("*") if p.is_file() and skip not in p.parents}


def _browse(root: Path) -> None:
    """What the Image bank widget and `pbip bank info` do with a bank: open, list, draw thumbnails."""
    bank = open_bank(root)
    bank_info(bank)
    for m in bank.members():
        assert bank.thumbnail_path(m.id).resolve().is_relative_to(root.resolve())


def _check_hostile(built: Path, edit) -> None:
    """Copy the bank 3 folders deep into a sandbox, let ``edit`` change its manifest, browse it.

    Browsing must work or raise one BankError line; no file may appear outside the bank copy.
    """
    sandbox = Path(tempfile.mkdtemp(prefix="pbip-hostile-"))
    try:
        root = sandbox / "a" / "b" / "bank"
        shutil.copytree(built, root)
        shutil.rmtree(root / "thumbs")  # thumbnails are written again while browsing
        manifest = json.loads((root / "bank.json").read_text())
        edit(manifest, sandbox)
        (root / "bank.json").write_text(json.dumps(manifest))
        before = _files(sandbox, root)
        try:
            _browse(root)
        except BankError as exc:
            assert len(str(exc).splitlines()) == 1, str(exc)
        assert _files(sandbox, root) == before
    finally:
        shutil.rmtree(sandbox)


def _first_member(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["classes"][0]["clusters"][0]["members"][0]


# Strings a member hash could hold: any text without "/" (so an unchecked one stays in the
# sandbox), hex of the wrong length or case, and climbs out of the bank ("../" * n).
_hashes = st.one_of(
    st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), max_size=80),
    st.from_regex(r"[0-9a-fA-F]{0,70}", fullmatch=True),
    st.integers(1, 4).map(lambda n: "../" * n + SENTINEL),
    st.just("{sandbox}/" + SENTINEL),  # an absolute path into the sandbox
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=_hashes)
def test_a_member_hash_that_is_not_a_sha256_is_refused_on_open(built, bad):
    assume(not HEX64.fullmatch(bad))

    def edit(manifest, sandbox):
        _first_member(manifest)["hash"] = bad.replace("{sandbox}", str(sandbox))

    _check_hostile(built, edit)
    # and it is refused by name, not merely harmless
    root = Path(tempfile.mkdtemp(prefix="pbip-hash-")) / "bank"
    try:
        shutil.copytree(built, root)
        manifest = json.loads((root / "bank.json").read_text())
        _first_member(manifest)["hash"] = bad
        (root / "bank.json").write_text(json.dumps(manifest))
        with pytest.raises(BankError, match=r"classes\[0\]\.clusters\[0\]\.members\[0\]\.hash") as info:
            open_bank(root)
        assert len(str(info.value).splitlines()) == 1
    finally:
        shutil.rmtree(root.parent)


def _json_values():
    leaves = (
        st.none()
        | st.booleans()
        | st.integers(-3, 10**6)
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), max_size=12)
    )
    return st.recursive(
        leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=6,
    )  # fmt: skip


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a JSON document (dict keys and list indices), the root excluded."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        out.append((*prefix, key))
        out += _paths(value, (*prefix, key))
    return out


@pytest.fixture(scope="module")
def field_paths(built) -> list[tuple]:
    return _paths(json.loads((built / "bank.json").read_text()))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), action=st.sampled_from(["delete", "replace"]), value=_json_values())
def test_any_damaged_manifest_field_opens_or_raises_one_bank_error_line(
    built, field_paths, data, action, value
):
    where = data.draw(st.sampled_from(field_paths))

    def edit(manifest, sandbox):
        parent = manifest
        for key in where[:-1]:
            parent = parent[key]
        if action == "delete":
            del parent[where[-1]]
        else:
            parent[where[-1]] = value

    _check_hostile(built, edit)


def test_member_image_paths_inside_the_bank_stay_inside_and_outside_sources_still_open(built, tmp_path):
    root = Path(shutil.copytree(built, tmp_path / "bank"))
    manifest = json.loads((root / "bank.json").read_text())
    member = _first_member(manifest)
    assert Path(member["path"]).is_absolute()  # `bank build` records the data set's files as they are
    open_bank(root)  # ... and such a bank opens

    member["path"] = "images/../../outside.png"
    (root / "bank.json").write_text(json.dumps(manifest))
    with pytest.raises(BankError, match=r"members\[0\]\.path .*inside the bank"):
        open_bank(root)


def test_a_missing_key_names_the_key_and_the_fix(built, tmp_path):
    root = Path(shutil.copytree(built, tmp_path / "bank"))
    manifest = json.loads((root / "bank.json").read_text())
    del manifest["encoder"]
    (root / "bank.json").write_text(json.dumps(manifest))
    with pytest.raises(BankError, match=r"lacks the key 'encoder'.*pbip bank repair") as info:
        open_bank(root)
    assert len(str(info.value).splitlines()) == 1


def test_bank_repair_restores_the_newest_intact_version(built, tmp_path, capsys):
    root = Path(shutil.copytree(built, tmp_path / "bank"))
    v2 = remove(open_bank(root), [open_bank(root).members()[0].id])
    good = (root / "bank.json").read_bytes()
    (root / "bank.json").write_text(good.decode()[:200])  # cut off, as by a full disk

    assert main(["bank", "info", str(root)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"pbip bank repair {root}" in err
    assert main(["bank", "undo", str(root)]) == 1  # undo needs a readable current version
    capsys.readouterr()

    assert main(["bank", "repair", str(root)]) == 0
    out = capsys.readouterr().out
    assert "version 2" in out
    assert json.loads((root / "bank.json").read_text()) == json.loads(good)
    assert open_bank(root).content_hash == v2.content_hash
    damaged = list(root.glob("bank.json.damaged-*"))  # the damaged file is kept, not lost
    assert len(damaged) == 1 and damaged[0].read_text() == good.decode()[:200]

    # the newest version itself damaged too: back to the build
    (root / "versions" / "000002" / "prototypes.safetensors").write_bytes(b"garbage")
    (root / "bank.json").write_text("{")
    assert main(["bank", "repair", str(root)]) == 0
    assert open_bank(root).version == 1 and "version 1" in capsys.readouterr().out

    # an intact bank is left alone
    assert main(["bank", "repair", str(root)]) == 0
    assert "intact" in capsys.readouterr().out and len(list(root.glob("bank.json.damaged-*"))) == 2
