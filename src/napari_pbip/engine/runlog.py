"""The ``log.jsonl`` of a training run (stage 1 and stage 2 share it): one JSON line per logged step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import _atomic


def append_log(run: Path, entry: dict[str, Any]) -> None:
    """Append ``entry`` as one JSON line to ``run/log.jsonl``."""
    with open(Path(run) / "log.jsonl", "a") as f:
        f.write(json.dumps(entry, default=_atomic.json_default) + "\n")


def truncate_log(run: Path, step: int) -> None:
    """Drop log lines after ``step`` (the checkpoint being resumed), so the log reads like one run."""
    path = Path(run) / "log.jsonl"
    if path.is_file():
        keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= step]
        _atomic.write_text(path, "".join(ln + "\n" for ln in keep))
