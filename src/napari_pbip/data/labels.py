"""Image-level labels written in file names.

Three conventions are in use by the public weakly supervised histopathology data sets:

========== =============================== ===============
format     example                         data set
========== =============================== ===============
``space``  ``1031280-2300-27920-[1 0 0 1].png``  LUAD-HistoSeg
``compact`` ``TCGA-A1-A0SK+0[1101].png``   BCSS-WSSS
``comma``  ``436219-9328-56427-[1, 1, 0].png``   WSSS4LUAD
========== =============================== ===============

Each digit is 0 or 1, one per tissue class in the data set's class order (multi-hot).
"""

from __future__ import annotations

import os
import re

from ..errors import LabelParseError

FORMATS: tuple[str, ...] = ("space", "compact", "comma")

_EXAMPLES = {"space": "-[1 0 0 1]", "compact": "[1101]", "comma": "-[1, 1, 0]"}

# The last [...] group of the name, then an optional extension such as ".png".
_LABEL_GROUP = re.compile(
    r"\A(?P<stem>.*?)(?P<dash>-?)\[(?P<body>[^\[\]]*)\](?P<ext>(?:\.[A-Za-z0-9]+)*)\Z", re.DOTALL
)
_BODIES = {
    "space": re.compile(r"\A[01](?: [01])*\Z"),
    "compact": re.compile(r"\A[01]+\Z"),
    "comma": re.compile(r"\A[01](?:, ?[01])*\Z"),
}


def _name(filename: str | os.PathLike) -> str:
    return os.path.basename(os.fspath(filename))


def _expected(fmt: str | None = None) -> str:
    if fmt is not None:
        return f"a name ending in {_EXAMPLES[fmt]} ({fmt} format) before the extension, one 0/1 per class"
    shown = ", ".join(f"{ex} ({f})" for f, ex in _EXAMPLES.items())
    return f"a name ending in one of {shown} before the extension, one 0/1 per class"


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise LabelParseError(f"label format {fmt!r} is unknown; expected one of {list(FORMATS)}")


def _split(filename: str | os.PathLike) -> tuple[str, re.Match[str]]:
    name = _name(filename)
    match = _LABEL_GROUP.match(name)
    if match is None:
        raise LabelParseError(
            f"cannot read image-level labels from file name {name!r}: expected {_expected()}"
        )
    return name, match


def _format_of(body: str, dash: str) -> str | None:
    if len(body) == 1 and body in "01":  # one class: all formats look alike; the dash decides
        return "space" if dash else "compact"
    for fmt in ("comma", "space", "compact"):
        if _BODIES[fmt].match(body):
            return fmt
    return None


def detect_label_format(filename: str | os.PathLike) -> str:
    """The label format (``"space"``, ``"compact"`` or ``"comma"``) a file name is written in.

    Args:
        filename: a file name or path; only its last component is read.

    Returns:
        The format name.

    Raises:
        LabelParseError: the name carries no label in any of the three formats.
    """
    name, match = _split(filename)
    fmt = _format_of(match["body"], match["dash"])
    if fmt is None:
        raise LabelParseError(
            f"cannot read image-level labels from file name {name!r}: the bracket holds {match['body']!r}; "
            f"expected {_expected()}"
        )
    return fmt


def parse_labels(
    filename: str | os.PathLike, n_classes: int | None = None, fmt: str | None = None
) -> tuple[int, ...]:
    """Read the multi-hot image-level label from a file name.

    Args:
        filename: a file name or path, e.g. ``"x-[1 0 0 1].png"``.
        n_classes: when given, the label must have exactly this many entries.
        fmt: when given, the name must be written in this format; otherwise it is detected.

    Returns:
        One 0/1 int per class, in the data set's class order.

    Raises:
        LabelParseError: the name is malformed, in another format than ``fmt``, or has the
            wrong number of classes. The message names the file and the expected pattern.
    """
    if fmt is not None:
        _check_format(fmt)
    name, match = _split(filename)
    found = _format_of(match["body"], match["dash"])
    if fmt is not None and len(match["body"]) == 1 and found is not None:
        found = fmt  # a one-class label reads the same in every format
    if found is None or (fmt is not None and found != fmt):
        raise LabelParseError(
            f"cannot read image-level labels from file name {name!r}: the label part "
            f"{match['dash']}[{match['body']}] does not match; expected {_expected(fmt)}"
        )
    labels = tuple(int(c) for c in match["body"] if c in "01")
    if n_classes is not None and len(labels) != n_classes:
        raise LabelParseError(
            f"file name {name!r} has {len(labels)} label entries but the data set has {n_classes} classes; "
            f"expected {_expected(found)} with {n_classes} entries"
        )
    return labels


def label_stem(filename: str | os.PathLike) -> str:
    """The part of a labelled file name before its label, e.g. ``"x"`` for ``"x-[1 0].png"``.

    Raises:
        LabelParseError: the name carries no label.
    """
    name, match = _split(filename)
    fmt = detect_label_format(name)
    return match["stem"] + (match["dash"] if fmt == "compact" else "")


def format_labels(labels: tuple[int, ...] | list[int], fmt: str) -> str:
    """The label part of a file name, to append to a stem before the extension.

    ``format_labels((1, 0, 1), "space")`` gives ``"-[1 0 1]"``, ``"compact"`` gives
    ``"[101]"`` and ``"comma"`` gives ``"-[1, 0, 1]"``.

    Raises:
        LabelParseError: ``fmt`` is unknown, ``labels`` is empty or holds values other than 0/1.
    """
    _check_format(fmt)
    values = [int(v) for v in labels]
    if not values or any(v not in (0, 1) for v in values):
        raise LabelParseError(f"labels {list(labels)!r} are invalid: expected a non-empty sequence of 0/1")
    digits = [str(v) for v in values]
    if fmt == "space":
        return "-[" + " ".join(digits) + "]"
    if fmt == "comma":
        return "-[" + ", ".join(digits) + "]"
    return "[" + "".join(digits) + "]"


def labelled_name(stem: str, labels: tuple[int, ...] | list[int], fmt: str, suffix: str = ".png") -> str:
    """A file name carrying ``labels``: ``labelled_name("a", (1, 0), "space")`` is ``"a-[1 0].png"``."""
    return f"{stem}{format_labels(labels, fmt)}{suffix}"
