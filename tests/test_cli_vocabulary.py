"""One CLI vocabulary: an option name means the same thing in every ``pbip`` subcommand.

Walks every subcommand's parser (no command is run): ``--json`` prints JSON on stdout, ``--quiet``
silences progress bars, ``--batch-size`` counts items per model call or step, a stage-1 or stage-2
folder is ``--model``; earlier spellings are hidden aliases of the same destination; help texts
format cleanly.
"""

from __future__ import annotations

import argparse

import pytest

from napari_pbip.cli.main import build_parser


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "pbip"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subparsers(sub, f"{prefix} {name}")
            return
    yield prefix, parser


COMMANDS = dict(_subparsers(build_parser()))
# Commands that run a job with progress bars (they all take --quiet).
JOBS = tuple(
    f"pbip {c}"
    for c in (
        "demo", "data weak", "data from-slides", "bank build", "bank eval", "evaluate", "train", "pseudo", "train-seg", "predict", "segment",
    )
)  # fmt: skip


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings}


@pytest.mark.parametrize("command", sorted(COMMANDS), ids=str)
def test_shared_options_mean_the_same_thing(command):
    opts = _options(COMMANDS[command])
    if "--json" in opts:  # a switch: print JSON on stdout (a file is --json-out)
        action = opts["--json"]
        assert action.nargs in (0, "?") and action.const is True, command
        assert "stdout" in action.help, command
    if "--quiet" in opts:
        assert opts["--quiet"].nargs == 0, command
    for name in ("--batch-size", "--epochs", "--seed"):
        if name in opts:
            assert opts[name].type is int, (command, name)
    if "--batch-size" in opts or "--batch" in opts:
        assert "--batch" not in opts or opts["--batch"].help == argparse.SUPPRESS, (
            command
        )  # old spelling, hidden
    assert "--run" not in opts or opts["--run"].help == argparse.SUPPRESS, command  # a run is --model
    if "--workers" in opts:
        assert "chunks" in opts["--workers"].help or opts["--workers"].help == argparse.SUPPRESS, command
    help_text = COMMANDS[command].format_help()
    assert "%%" not in help_text, command


@pytest.mark.parametrize("command", JOBS)
def test_every_job_can_be_quiet(command):
    assert "--quiet" in _options(COMMANDS[command]), command


@pytest.mark.parametrize(
    ("argv", "dest", "value"),
    [
        (["segment", "s.tif", "--model", "m", "--out", "o", "--batch", "8"], "batch", 8),
        (["segment", "s.tif", "--model", "m", "--out", "o", "--batch-size", "8"], "batch", 8),
        (["train-seg", "--dataset", "d", "--masks", "m", "--out", "o", "--batch", "4"], "batch", 4),
        (["train-seg", "--dataset", "d", "--masks", "m", "--out", "o", "--workers", "0"], "workers", 0),
        (
            ["train-seg", "--dataset", "d", "--masks", "m", "--out", "o", "--loader-threads", "0"],
            "workers",
            0,
        ),
        (["pseudo", "--run", "r", "--dataset", "d", "--out", "o"], "run", "r"),
        (["pseudo", "--model", "r", "--dataset", "d", "--out", "o"], "run", "r"),
        (["evaluate", "--dataset", "d", "--split", "val", "--pred", "p", "--json"], "json", True),
        (
            ["evaluate", "--dataset", "d", "--split", "val", "--pred", "p", "--json", "x.json"],
            "json",
            "x.json",
        ),
    ],
)
def test_earlier_spellings_still_parse_to_the_same_setting(argv, dest, value):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value


def test_evaluate_json_prints_and_json_out_writes(tmp_path, capsys):
    import json

    from napari_pbip.cli.main import main
    from napari_pbip.data.images import write_mask
    from napari_pbip.data.layouts import open_dataset
    from napari_pbip.synthetic.synth import write_synthetic_dataset

    ds = write_synthetic_dataset(tmp_path / "ds", n_train=2, n_val=2, n_test=0, size=32)
    spec = open_dataset(ds).spec
    pred = tmp_path / "pred"
    pred.mkdir()
    for sample in open_dataset(ds).samples("val"):
        from napari_pbip.data.images import read_mask

        write_mask(pred / (sample.image.stem + ".png"), read_mask(sample.mask, spec), spec.palette)
    out = tmp_path / "scores.json"
    assert (
        main(
            [
                "evaluate",
                "--dataset",
                str(ds),
                "--split",
                "val",
                "--pred",
                str(pred),
                "--json",
                "--json-out",
                str(out),
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["miou"] == pytest.approx(1.0) and json.loads(out.read_text())["miou"] == pytest.approx(1.0)


def test_train_levels_get_the_settings_weights_for_that_many_levels():
    from napari_pbip.cli.train import settings_from_args
    from napari_pbip.stage1 import TrainSettings

    def settings(*levels: str) -> TrainSettings:
        return settings_from_args(
            build_parser().parse_args(["train", "--dataset", "d", "--out", "o", "--levels", *levels])
        )

    four = settings("-4", "-3", "-2", "-1")
    assert four.level_weights == (1.0,) * 4 and four.fusion_weights == (0.25,) * 4
    three = settings("-3", "-2", "-1")  # three levels: the reference's fusion weights, as the defaults
    assert three.fusion_weights == TrainSettings().fusion_weights == (0.3, 0.3, 0.4)
    assert three.level_weights == TrainSettings().level_weights
