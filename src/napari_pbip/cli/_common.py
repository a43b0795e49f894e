"""Helpers shared by the subcommands: progress bars over job events, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any

from ..events import Job, Progress, run


def drain(job: Job, quiet: bool = False) -> Any:
    """Run ``job`` with one tqdm bar per stage on stderr; return its result."""
    if quiet:
        return run(job)
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def show(ev: Progress) -> None:
        bar = bars.get(ev.stage)
        if bar is None:
            for other in bars.values():
                other.close()
            bar = bars[ev.stage] = tqdm(
                total=ev.total, desc=ev.stage, file=sys.stderr, leave=True, dynamic_ncols=True
            )
        if ev.total is not None and bar.total != ev.total:
            bar.total = ev.total
        bar.n = ev.step
        if ev.metrics:
            bar.set_postfix({k: f"{v:.4g}" for k, v in ev.metrics.items()}, refresh=False)
        bar.refresh()

    try:
        return run(job, show)
    finally:
        for bar in bars.values():
            bar.close()


def print_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout (for ``--json`` output)."""
    from .._atomic import _json_default

    print(json.dumps(obj, indent=2, default=_json_default))


def add_device(parser) -> None:
    """Add ``--device`` (auto: CUDA when present, else CPU)."""
    parser.add_argument(
        "--device", default="auto", help="torch device: auto (CUDA if present), cpu, cuda, cuda:1, ..."
    )


def add_alias(parser, old: str, dest: str, **kwargs: Any) -> None:
    """Accept the earlier spelling ``old`` of an option (hidden from the help) for ``dest``."""
    import argparse

    parser.add_argument(old, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)


def add_quiet(parser) -> None:
    """Add ``--quiet``: no progress bars on stderr."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_json(parser, what: str = "the result") -> None:
    """Add ``--json``: print ``what`` as JSON on stdout (the one meaning of ``--json`` in every command)."""
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout")


def add_json_out(parser, what: str = "the full result") -> None:
    """Add ``--json`` (print on stdout) and ``--json-out FILE`` (write a file, atomically).

    ``--json FILE``, the earlier spelling of ``--json-out FILE``, is still read.
    """
    parser.add_argument(
        "--json", nargs="?", const=True, default=False, metavar="", help=f"print {what} as JSON on stdout"
    )
    parser.add_argument(
        "--json-out", metavar="OUT.json", help=f"also write {what} as JSON to this file (atomically)"
    )


def json_targets(args) -> tuple[bool, str | None]:
    """``(print on stdout, file to write)`` from :func:`add_json_out`'s options."""
    if isinstance(args.json, str):  # the earlier `--json FILE`
        return False, args.json_out or args.json
    return bool(args.json), args.json_out
