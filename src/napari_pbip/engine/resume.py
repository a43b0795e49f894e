"""Which settings a training run continues with: the saved ones, with only the resumable fields changed.

Both stages save their resolved settings as ``OUT/settings.json``; ``--resume`` continues with
those, and the caller may change only the fields that do not alter what was already trained
(its stage's ``RESUMABLE_FIELDS``: epochs, device, time limit, ...).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..errors import CheckpointError
from ..settings import Settings

S = TypeVar("S", bound=Settings)

SETTINGS_FILE = "settings.json"


def saved_settings(
    cls: type[S], out: str | os.PathLike, changes: Mapping[str, Any], what: str, fix: str
) -> S:
    """The settings saved in the run folder ``out``, with ``changes`` applied.

    Raises:
        CheckpointError: ``out`` has no ``settings.json`` (``out`` "holds no ``what``", then ``fix``).
    """
    path = Path(out) / SETTINGS_FILE
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {out} holds no {what} (no {SETTINGS_FILE}); {fix}")
    return cls.load(path).replace(**changes)


def resolve_settings(
    cls: type[S], settings: S | None, out: Path, resumable: Iterable[str], saved: S | None
) -> S:
    """The settings a run uses: for a new run (``saved`` None) ``settings`` or the defaults; when
    resuming, the ``saved`` ones with the resumable fields taken from ``settings``.

    Raises:
        CheckpointError: resuming with ``settings`` that differ from the saved run in a field that
            is not resumable (each one named with both values).
    """
    if saved is None:
        return settings or cls()
    if settings is None:
        return saved
    resumable = tuple(resumable)
    a, b = saved.to_dict(), settings.to_dict()
    differ = sorted(k for k in a if a[k] != b[k] and k not in resumable)
    if differ:
        raise CheckpointError(
            f"cannot resume {out}: settings {differ} differ from the saved run ("
            + ", ".join(f"{k}: saved {a[k]!r}, given {b[k]!r}" for k in differ)
            + f"); only {list(resumable)} may change, or start a new run"
        )
    return saved.replace(**{k: b[k] for k in resumable})
