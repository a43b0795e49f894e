"""``pbip evaluate``: score predicted masks against a data set split."""

from __future__ import annotations

import argparse

from ._common import add_json_out, add_quiet


def register(subparsers) -> None:
    """Add the ``evaluate`` subcommand."""
    p = subparsers.add_parser(
        "evaluate",
        help="score predicted masks: mIoU, FwIoU, Dice, Boundary IoU (ground-truth background excluded)",
        description="Score a folder of predicted masks (index or palette PNGs named like the images) against "
        "the masks of a data set split. Prints a table (scores in %); --json prints and --json-out writes every number as fractions.",
    )
    p.add_argument("--dataset", required=True, help="data set folder (any layout `pbip` reads)")
    p.add_argument(
        "--split", required=True, choices=("val", "test"), help="split with masks to score against"
    )
    p.add_argument(
        "--pred", required=True, help="folder of predicted masks, one per image, named like the images"
    )
    add_json_out(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json-out file")
    add_quiet(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table and write the JSON."""
    from .. import _atomic
    from ..evaluate import evaluate_folder_job, format_table
    from ._common import drain, emit, json_targets

    show_json, json_file = json_targets(args)
    if json_file:
        _atomic.check_writable(
            json_file, args.overwrite, {"data set": args.dataset, "predictions": args.pred}
        )
    result = drain(evaluate_folder_job(args.dataset, args.split, args.pred), quiet=args.quiet or show_json)
    emit(result, format_table(result), show_json, json_file)
    return 0
