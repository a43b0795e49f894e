"""Helpers shared by the subcommands: progress bars over job events, JSON output."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..events import Job, Progress, StepMetrics, run


@contextlib.contextmanager
def _stop_between_events() -> Iterator[dict[str, bool]]:
    """The first Ctrl-C asks the job to stop at its next event (a completed step, chunk or batch); the
    second stops at once. A job stopped between events has nothing half done to lose or mix."""
    state = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def ask(signum, frame) -> None:
        if state["stop"]:
            raise KeyboardInterrupt
        state["stop"] = True
        print("\nstopping after the current step (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    old = signal.signal(signal.SIGINT, ask)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, old)


def drain(job: Job, quiet: bool = False) -> Any:
    """Run ``job`` with one tqdm bar per stage on stderr (none when ``quiet``); return its result.

    Ctrl-C stops the job cleanly at its next event (the job checkpoints what is complete) and
    raises KeyboardInterrupt; a second Ctrl-C interrupts at once.
    """
    with _stop_between_events() as state:

        def stop_if_asked() -> None:
            if state["stop"]:
                job.close()  # GeneratorExit at a step boundary: the job saves its last completed step
                raise KeyboardInterrupt

        if quiet:
            return run(job, lambda ev: stop_if_asked())
        return _with_bars(job, stop_if_asked)


def _with_bars(job: Job, after_event: Callable[[], None]) -> Any:
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def show(ev: Progress) -> None:
        bar = bars.get(ev.stage)
        if bar is None or bar.disable:  # a new stage, or one coming back (a cohort's next slide)
            for other in bars.values():
                other.close()
            bar = bars[ev.stage] = tqdm(
                total=ev.total, desc=ev.stage, file=sys.stderr, leave=True, dynamic_ncols=True
            )
        if ev.total is not None and bar.total != ev.total:
            bar.total = ev.total
        bar.n = ev.step
        numbers = ev.payload.named() if isinstance(ev.payload, StepMetrics) else ev.metrics
        if numbers:
            bar.set_postfix({k: f"{v:.4g}" for k, v in numbers.items()}, refresh=False)
        bar.refresh()
        after_event()

    try:
        return run(job, show)
    finally:
        for bar in bars.values():
            bar.close()


def print_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout (for ``--json`` output)."""
    from .._atomic import json_default

    print(json.dumps(obj, indent=2, default=json_default))


def report_training(job: Job, args, command: str, folder_key: str, inputs_hint: str) -> int:
    """Drain a training job (either stage) and print where its folder is and how it ended.

    Args:
        job: the job of ``stage1.train`` or ``stage2.train_segmenter``.
        args: the parsed flags (``out``, ``quiet``, ``json``).
        command: ``"train"`` or ``"train-seg"``, for the messages.
        folder_key: the key of the folder in the ``--json`` output.
        inputs_hint: the input flags to repeat in the ``--resume`` hint.

    Returns:
        The exit code: 0, or 130 after Ctrl-C (the last completed step is checkpointed).
    """
    try:
        result = drain(job, quiet=args.quiet)
    except KeyboardInterrupt:
        job.close()  # checkpoints the last completed step
        print(
            f"pbip {command}: stopped; the last step is kept in {args.out}/last; continue with --resume",
            file=sys.stderr,
        )
        return 130
    if args.json:
        print_json(
            {
                folder_key: result.out,
                "step": result.step,
                "total_steps": result.total_steps,
                "stopped": result.stopped,
                "best": result.best,
            }
        )
        return 0
    print(f"{result.out}: {result.stopped} at step {result.step}/{result.total_steps}")
    if result.best:
        print(f"best val mIoU {100 * (result.best['miou'] or 0):.2f} at step {result.best['step']}")
    if result.stopped != "finished":
        print(f"continue with: pbip {command} --resume --out {result.out} {inputs_hint}")
    return 0


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


def emit(result: Any, table: str, show_json: bool, json_file: str | None) -> None:
    """Print ``table`` (or ``result`` as JSON with ``--json``) and write ``result`` to ``--json-out``."""
    from .._atomic import write_json

    if show_json:
        print_json(result)
    else:
        print(table)
    if json_file:
        write_json(json_file, result)
