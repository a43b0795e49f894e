"""Shared machinery for the frozen settings dataclasses of each stage.

Each stage defines ``@dataclass(frozen=True) class XSettings(Settings)`` and validates its
fields in ``__post_init__`` with :func:`check`; the resolved settings are saved next to every
artifact with :meth:`Settings.save` so any result can be reproduced.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, TypeVar

from . import _atomic
from .errors import SettingsError

S = TypeVar("S", bound="Settings")


def check(ok: bool, field: str, value: Any, expected: str, fix: str = "") -> None:
    """Raise :class:`SettingsError` naming ``field``, its ``value`` and what is expected."""
    if not ok:
        msg = f"{field}={value!r} is invalid: expected {expected}"
        raise SettingsError(msg + (f"; {fix}" if fix else ""))


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base of the per-stage settings dataclasses: JSON round trip and saving."""

    def to_dict(self) -> dict[str, Any]:
        """Settings as plain JSON-able values (tuples become lists, paths strings)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, os.PathLike):
                v = os.fspath(v)
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls: type[S], data: dict[str, Any]) -> S:
        """Build settings from a dict, rejecting unknown keys by name."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise SettingsError(f"unknown {cls.__name__} field(s) {unknown}; valid fields: {sorted(names)}")
        kwargs = {}
        for k, v in data.items():
            if isinstance(v, list):
                v = tuple(v)
            kwargs[k] = v
        return cls(**kwargs)

    def replace(self: S, **changes: Any) -> S:
        """A copy with ``changes`` applied (and validated again)."""
        return dataclasses.replace(self, **changes)

    def save(self, path: str | os.PathLike) -> None:
        """Write the settings as JSON atomically, with the class name for reading back."""
        _atomic.write_json(path, {"settings": type(self).__name__, **self.to_dict()})

    @classmethod
    def load(cls: type[S], path: str | os.PathLike) -> S:
        """Read settings written by :meth:`save`."""
        data = json.loads(Path(path).read_text())
        data.pop("settings", None)
        return cls.from_dict(data)
