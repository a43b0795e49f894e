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
