"""``RUN/presence.json``: the per-class presence thresholds a stage-1 run was calibrated with.

:mod:`.calibrate` fits and writes them when training ends; :class:`~.predict.Stage1Predictor`
reads them here. Thresholds fitted for other weights than the run's current ones are not used.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

PRESENCE_FILE = "presence.json"
WEIGHTS_FILE = "model.safetensors"  # the run's inference weights the thresholds belong to
DEFAULT_THRESHOLD = 0.5


def weights_digest(run: str | os.PathLike) -> str:
    """SHA-256 (hex) of the run's inference weights."""
    with open(Path(run) / WEIGHTS_FILE, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_thresholds(run: str | os.PathLike, classes: tuple[str, ...]) -> tuple[float, ...] | None:
    """The calibrated thresholds of ``run``.

    None when it has none, when they are for other classes, or when they were fitted for other
    weights than the run's current ones (a warning says so and how to refit them).
    """
    path = Path(run) / PRESENCE_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if tuple(record.get("classes", ())) != tuple(classes):
        return None
    fitted_for = record.get("weights_sha256")  # absent in files written before it was recorded
    if fitted_for is not None and fitted_for != weights_digest(run):
        warnings.warn(
            f"{path} was fitted for earlier weights than {Path(run) / WEIGHTS_FILE} (the run was stopped "
            f"after training on); class presence on unlabelled images uses {DEFAULT_THRESHOLD} instead. "
            f"Finish the run with `pbip train --resume` to fit thresholds for these weights.",
            stacklevel=2,
        )
        return None
    return tuple(float(t) for t in record["thresholds"])
