"""pbip bank: the subcommands drive the library end to end and report errors as one line."""

from __future__ import annotations

import json

from bank_data import patch

from napari_pbip.bank import open_bank
from napari_pbip.cli.main import main
from napari_pbip.data.images import write_rgb


def test_build_info_edit_undo_eval(dataset, tmp_path, capsys):
    out = tmp_path / "bank"
    args = ["--encoder", "tiny-encoder", "--k", "2", "--per-cluster", "2", "--device", "cpu", "--quiet"]
    assert main(["bank", "build", "--dataset", str(dataset), "--out", str(out), *args]) == 0
    text = capsys.readouterr().out
    assert "prototypes (3, 2, 32)" in text and "encoded 18 image(s) (0 from cache)" in text

    assert main(["bank", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["prototype_shape"] == [3, 2, 32] and [c["members"] for c in info["classes"]] == [6, 6, 6]

    write_rgb(tmp_path / "new.png", patch("blue", 0, 99))
    assert (
        main(["bank", "add", str(out), str(tmp_path / "new.png"), "--class", "blue", "--device", "cpu"]) == 0
    )
    first = open_bank(out).members("red")[0].id
    assert main(["bank", "remove", str(out), str(first)]) == 0
    assert main(["bank", "recluster", str(out), "--class", "green", "--k", "3"]) == 0
    assert open_bank(out).ks == (2, 3, 2)
    assert main(["bank", "undo", str(out)]) == 0
    assert "now at version 3, made by: removed 1 member(s)" in capsys.readouterr().out.splitlines()[-1]

    assert main(["bank", "members", str(out), "--class", "blue", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 7

    result = tmp_path / "eval.json"
    eval_args = [
        "--dataset",
        str(dataset),
        "--tile",
        "32",
        "--stride",
        "32",
        "--json",
        str(result),
        "--quiet",
    ]
    assert main(["bank", "eval", str(out), *eval_args, "--device", "cpu"]) == 0
    assert "macro F1" in capsys.readouterr().out and json.loads(result.read_text())["patches"] == 6


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["bank", "info", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pbip bank: error:") and "is not an image bank" in err and "\n" not in err
