"""``pbip`` entry point: each subcommand lives in its own module with a ``register(subparsers)``.

A module's ``register`` adds its parser(s) and sets ``func`` to a callable taking the parsed
arguments and returning an exit code. Every error a command raises ends as one line on stderr,
``pbip <command>: error: ...``, and exit code 1 (Ctrl-C: one line and 130); the traceback is
printed as well only with ``pbip --debug`` or ``PBIP_DEBUG=1``, for developers.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import traceback

from ..errors import DEBUG_ENV, one_line

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
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"on an error, also print its full traceback (for developers; or set {DEBUG_ENV}=1)",
    )
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
    except KeyboardInterrupt:
        print(f"pbip {args.command}: interrupted; finished work is kept, rerun to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
            traceback.print_exc()
        print(f"pbip {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 1


def entry(argv: list[str] | None = None) -> int:
    """The ``pbip`` command: :func:`main`, then Ctrl-C ignored while Python shuts down. Everything is
    written by then; a Ctrl-C landing in torch's exit handlers printed a traceback after a finished
    run (seen in CI)."""
    code = main(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


if __name__ == "__main__":
    sys.exit(entry())
