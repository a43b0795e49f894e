"""``pbip`` entry point: each subcommand lives in its own module with a ``register(subparsers)``.

A module's ``register`` adds its parser(s) and sets ``func`` to a callable taking the parsed
arguments and returning an exit code. Library errors (:class:`PbipError`) are printed as one
line without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import PbipError

# Subcommand modules under napari_pbip.cli, in the order `pbip --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "data",
    "bank",
    "evaluate",
    "models",
    "train",
    "pseudo",
    "train_seg",
    "predict",
    "segment",
)


def build_parser() -> argparse.ArgumentParser:
    """The full ``pbip`` argument parser (also used to generate the CLI reference)."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="pbip",
        description="PBIP weakly supervised tissue segmentation: data, image bank, training, whole-slide inference.",
    )
    parser.add_argument("--version", action="version", version=f"napari-pbip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``pbip`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except PbipError as exc:
        print(f"pbip {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pbip {args.command}: interrupted; finished work is kept, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
