"""Data set layouts: detect how a folder of patches is organised and list its samples.

Supported layouts (:func:`open_dataset` detects them in this order):

* **generic** (``dataset.json`` at the root; written by ``pbip data synth`` and ``pbip data weak``):
  ``train/<stem><label>.png``, ``val|test/img/*.png`` with ``val|test/mask/*.png``. The JSON holds
  ``name``, ``classes``, ``palette`` (one colour per mask index, background included),
  ``background_index`` and ``label_format`` (``space``, ``comma``, ``compact``), optionally
  ``"layout": "folder"`` for a folder-per-class set.
* **luad-histoseg**, **bcss-wsss**, **wsss4luad**: the public data sets as distributed, recognised by
  how the labels in ``train/`` are written (or, without ``train/``, by the palette of the masks).
* **folder**: ``root/<class>/*.png`` (two or more class folders), every image belonging to its
  folder's class only.

Mask indices: background may sit at any index ``0..N``; tissue class ``k`` is the ``k``-th mask
index other than the background (:func:`tissue_mask_indices`, :func:`tissue_class_index`). Every
part of the package (pseudo-masks, stage-2 targets, predictions, metrics, exports) goes through
these helpers, so they agree for any background index.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import _atomic
from ..errors import DatasetError, LabelParseError
from .images import IMAGE_SUFFIXES, list_images
from .labels import FORMATS, detect_label_format, parse_labels

SPLITS: tuple[str, ...] = ("train", "val", "test")
LABEL_FORMATS: tuple[str, ...] = (*FORMATS, "folder")
WHITE = (255, 255, 255)
_RESERVED_FOLDERS = frozenset({*SPLITS, "img", "mask", "background-mask"})

# Distinct colours for class folders without a dataset.json (background gets white).
_FOLDER_COLOURS = (
    (205, 51, 51), (0, 170, 0), (65, 105, 225), (255, 165, 0), (153, 0, 255), (0, 190, 190),
    (230, 0, 126), (128, 96, 0), (96, 96, 96), (0, 0, 128), (128, 0, 0), (0, 128, 96),
)  # fmt: skip


def _check_background(background_index: int) -> None:
    if background_index < 0:
        raise DatasetError(
            f"background_index={background_index} is invalid: expected a mask index >= 0 "
            "(usually the number of tissue classes)"
        )


def tissue_mask_index(k: int, background_index: int) -> int:
    """Mask index of tissue class ``k``: the ``k``-th index other than ``background_index``.

    Raises:
        DatasetError: ``k`` or ``background_index`` is negative.
    """
    _check_background(background_index)
    if k < 0:
        raise DatasetError(f"tissue class {k} is invalid: expected a class number >= 0")
    return k + int(k >= background_index)


def tissue_mask_indices(n_classes: int, background_index: int) -> tuple[int, ...]:
    """Mask index of each of ``n_classes`` tissue classes, in class order.

    Example: 3 classes with background 0 -> ``(1, 2, 3)``; with background 3 -> ``(0, 1, 2)``.
    """
    _check_background(background_index)
    return tuple(k + int(k >= background_index) for k in range(n_classes))


def tissue_class_index(mask_index: int, background_index: int) -> int | None:
    """Tissue class number of ``mask_index`` (inverse of :func:`tissue_mask_index`); None for background."""
    _check_background(background_index)
    if mask_index < 0:
        raise DatasetError(f"mask index {mask_index} is invalid: expected an index >= 0")
    if mask_index == background_index:
        return None
    return mask_index - int(mask_index > background_index)


def mask_index_names(classes: Sequence[str], background_index: int) -> tuple[str, ...]:
    """Name of each mask index: the tissue classes with ``"background"`` at ``background_index``."""
    _check_background(background_index)
    names = list(classes)
    names.insert(background_index, "background")
    return tuple(names)


@dataclass(frozen=True)
class DatasetSpec:
    """What a data set's labels mean.

    Attributes:
        layout: ``generic``, ``luad-histoseg``, ``bcss-wsss``, ``wsss4luad`` or ``folder``.
        classes: tissue class names in label order; class ``k`` has mask index
            ``tissue_indices[k]``, the ``k``-th index other than ``background_index``.
        palette: one RGB colour per mask index (background's at ``background_index``).
        background_index: the mask index of background (excluded from metrics), ``0..N``.
        label_format: how ``train/`` names carry labels: ``space``, ``comma``, ``compact``, or
            ``folder`` when the folder name is the label.
    """

    layout: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    background_index: int
    label_format: str

    def __post_init__(self) -> None:
        n = len(self.classes)
        if n == 0 or len(set(self.classes)) != n or not all(isinstance(c, str) and c for c in self.classes):
            raise DatasetError(
                f"classes {list(self.classes)!r} are invalid: expected distinct non-empty names"
            )
        if len(self.palette) != n + 1 or any(
            len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in self.palette
        ):
            raise DatasetError(
                f"palette {[list(c) for c in self.palette]} is invalid: expected {n + 1} RGB triples "
                f"(one per class {list(self.classes)} plus background), values 0..255"
            )
        if not 0 <= self.background_index <= n:
            raise DatasetError(
                f"background_index={self.background_index} is invalid: expected 0..{n} (usually {n})"
            )
        if self.label_format not in LABEL_FORMATS:
            raise DatasetError(
                f"label_format={self.label_format!r} is invalid: expected one of {list(LABEL_FORMATS)}"
            )

    @property
    def n_classes(self) -> int:
        """Number of tissue classes."""
        return len(self.classes)

    @property
    def tissue_indices(self) -> tuple[int, ...]:
        """Mask index of each tissue class (see :func:`tissue_mask_indices`)."""
        return tissue_mask_indices(self.n_classes, self.background_index)

    @property
    def mask_names(self) -> tuple[str, ...]:
        """Name of each mask index, ``"background"`` included (see :func:`mask_index_names`)."""
        return mask_index_names(self.classes, self.background_index)

    def to_json(self, name: str = "") -> dict[str, Any]:
        """The ``dataset.json`` contents describing this spec."""
        out: dict[str, Any] = {
            "name": name,
            "classes": list(self.classes),
            "palette": [list(c) for c in self.palette],
            "background_index": self.background_index,
            "label_format": self.label_format,
        }
        if self.label_format == "folder":
            out["layout"] = "folder"
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "dataset.json") -> DatasetSpec:
        """Build a spec from ``dataset.json`` contents; ``source`` names the file in errors."""
        missing = [k for k in ("classes", "palette", "background_index") if k not in data]
        if missing:
            raise DatasetError(
                f"{source} lacks {missing}; expected keys name, classes, palette, background_index, label_format"
            )
        folder = data.get("layout") == "folder"
        try:
            return cls(
                layout="folder" if folder else "generic",
                classes=tuple(str(c) for c in data["classes"]),
                palette=tuple(tuple(int(v) for v in c) for c in data["palette"]),
                background_index=int(data["background_index"]),
                label_format="folder" if folder else str(data.get("label_format", "space")),
            )
        except DatasetError as exc:
            raise DatasetError(f"{source}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise DatasetError(
                f"{source} is malformed ({exc}); expected keys name, classes, palette, background_index, label_format"
            ) from None


LUAD_HISTOSEG = DatasetSpec(
    "luad-histoseg",
    ("TE", "NEC", "LYM", "TAS"),
    ((205, 51, 51), (0, 255, 0), (65, 105, 225), (255, 165, 0), WHITE),
    4,
    "space",
)
BCSS_WSSS = DatasetSpec(
    "bcss-wsss",
    ("TUM", "STR", "LYM", "NEC"),
    ((255, 0, 0), (0, 255, 0), (0, 0, 255), (153, 0, 255), WHITE),
    4,
    "compact",
)
WSSS4LUAD = DatasetSpec(
    "wsss4luad",
    ("tumor", "stroma", "normal"),
    ((0, 64, 128), (64, 128, 0), (243, 152, 0), WHITE),
    3,
    "comma",
)
KNOWN_SPECS: tuple[DatasetSpec, ...] = (LUAD_HISTOSEG, BCSS_WSSS, WSSS4LUAD)


@dataclass(frozen=True)
class Sample:
    """One image of a data set.

    Attributes:
        image: the image file.
        labels: multi-hot image-level label over the tissue classes, or None when unknown.
        mask: the pixel mask (palette PNG of mask indices), or None when there is none.
    """

    image: Path
    labels: tuple[int, ...] | None
    mask: Path | None


@dataclass(frozen=True)
class Dataset:
    """A data set folder and the spec that explains its labels."""

    root: Path
    spec: DatasetSpec

    def splits(self) -> list[str]:
        """The splits present, in the order train, val, test (``["train"]`` for class folders)."""
        if self.spec.layout == "folder":
            return ["train"]
        return [s for s in SPLITS if _split_images_dir(self.root, s) is not None]

    def samples(self, split: str) -> list[Sample]:
        """The samples of ``split``, sorted by file name.

        Raises:
            DatasetError: the split is absent, a name carries a malformed label, or a mask is missing.
        """
        if split not in self.splits():
            raise DatasetError(
                f"split {split!r} is not in data set {self.root}; available splits: {self.splits()}"
            )
        if self.spec.layout == "folder":
            return _folder_samples(self.root, self.spec)
        images_dir = _split_images_dir(self.root, split)
        assert images_dir is not None
        if images_dir.name == split:  # train/: labels in the names, no masks
            return [Sample(p, _labels(p, self.spec), None) for p in list_images(images_dir)]
        return _masked_samples(images_dir, self.root / split / "mask", self.spec)


def describe(dataset: Dataset) -> dict[str, Any]:
    """A JSON-able summary: layout, classes, palette, background and per-split counts."""
    splits = {}
    for split in dataset.splits():
        samples = dataset.samples(split)
        counts = [0] * dataset.spec.n_classes
        for s in samples:
            for i, on in enumerate(s.labels or ()):
                counts[i] += on
        splits[split] = {
            "images": len(samples),
            "labelled": sum(s.labels is not None for s in samples),
            "masks": sum(s.mask is not None for s in samples),
            "class_counts": dict(zip(dataset.spec.classes, counts, strict=True)),
        }
    return {
        "root": str(dataset.root),
        **dataset.spec.to_json(dataset.root.name),
        "layout": dataset.spec.layout,
        "splits": splits,
    }


def _split_images_dir(root: Path, split: str) -> Path | None:
    candidates = (root / split, root / split / "img") if split == "train" else (root / split / "img",)
    for candidate in candidates:
        if candidate.is_dir() and any(_is_image(p) for p in candidate.iterdir()):
            return candidate
    return None


def _is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def _labels(path: Path, spec: DatasetSpec) -> tuple[int, ...]:
    try:
        return parse_labels(path.name, n_classes=spec.n_classes, fmt=spec.label_format)
    except LabelParseError as exc:
        raise LabelParseError(f"{exc} (in {path.parent}, data set layout {spec.layout})") from None


def _masked_samples(images_dir: Path, mask_dir: Path, spec: DatasetSpec) -> list[Sample]:
    images = list_images(images_dir)
    if not mask_dir.is_dir():
        return [Sample(p, _try_labels(p, spec), None) for p in images]
    masks = {p.stem: p for p in list_images(mask_dir)}
    missing = [p.name for p in images if p.stem not in masks]
    if missing:
        raise DatasetError(
            f"{len(missing)} image(s) in {images_dir} have no mask in {mask_dir}, e.g. {missing[:3]}; "
            "masks must be named like their images"
        )
    return [Sample(p, _try_labels(p, spec), masks[p.stem]) for p in images]


def _try_labels(path: Path, spec: DatasetSpec) -> tuple[int, ...] | None:
    if spec.label_format == "folder":
        return None
    try:
        return parse_labels(path.name, n_classes=spec.n_classes, fmt=spec.label_format)
    except LabelParseError:
        return None


def _folder_samples(root: Path, spec: DatasetSpec) -> list[Sample]:
    out = []
    for index, name in enumerate(spec.classes):
        folder = root / name
        if not folder.is_dir():
            continue
        onehot = tuple(int(i == index) for i in range(spec.n_classes))
        out.extend(Sample(p, onehot, None) for p in list_images(folder))
    return out


def read_spec(path: str | os.PathLike) -> DatasetSpec:
    """Read a ``dataset.json`` file into a :class:`DatasetSpec`.

    Raises:
        DatasetError: the file is missing, not JSON, or lacks the required keys.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist; expected a dataset.json file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path} holds a {type(data).__name__}; expected a JSON object")
    return DatasetSpec.from_json(data, source=str(path))


def dataset_mpp(root: str | os.PathLike) -> float | None:
    """The ``"mpp"`` (um/px of the patches) that a data set's ``dataset.json`` records, else None.

    Trained models store it, so slides are later segmented at the resolution they were trained at.
    """
    path = Path(root) / "dataset.json"
    if path.is_file():
        value = json.loads(path.read_text()).get("mpp")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def write_spec(root: str | os.PathLike, spec: DatasetSpec, name: str = "", mpp: float | None = None) -> Path:
    """Write ``root/dataset.json`` for ``spec`` atomically and return its path.

    ``mpp``: the um/px of the patches, recorded as ``"mpp"`` (see :func:`dataset_mpp`) when given.
    """
    path = Path(root) / "dataset.json"
    data = spec.to_json(name or Path(root).name)
    if mpp is not None:
        data["mpp"] = float(mpp)
    _atomic.write_json(path, data)
    return path


def open_dataset(root: str | os.PathLike) -> Dataset:
    """Open a data set folder, detecting its layout.

    Detection: ``dataset.json`` wins; else the label format and length of the ``train/`` file
    names (4 space-separated: LUAD-HistoSeg; compact: BCSS-WSSS; 3 comma-separated: WSSS4LUAD);
    else, without ``train/``, the palette of the ``val|test`` masks; else one folder per class.

    Raises:
        DatasetError: ``root`` is missing or matches no layout; the message lists what was looked for.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data set folder {root} does not exist or is not a folder")
    if (root / "dataset.json").is_file():
        return Dataset(root, read_spec(root / "dataset.json"))
    train = root / "train"
    if train.is_dir() and any(_is_image(p) for p in train.iterdir()):
        return Dataset(root, _spec_from_train_names(train))
    spec = _spec_from_masks(root)
    if spec is not None:
        return Dataset(root, spec)
    classes = _class_folders(root)
    if len(classes) >= 2:
        return Dataset(root, folder_spec(classes))
    raise DatasetError(
        f"no data set layout recognised in {root}: looked for dataset.json; train/ images with labels in "
        "their names (-[1 0 0 1] LUAD-HistoSeg, [1101] BCSS-WSSS, -[1, 1, 0] WSSS4LUAD); val|test/img with "
        "val|test/mask palette PNGs of a known data set; one folder of images per class (at least 2). Found: "
        f"{sorted(p.name for p in root.iterdir())[:12]}. Add a dataset.json (keys: name, classes, palette, background_index, label_format) to describe it"
    )


def _spec_from_train_names(train: Path) -> DatasetSpec:
    images = list_images(train)
    first = images[0]
    fmt = detect_label_format(first.name)
    length = len(parse_labels(first.name, fmt=fmt))
    for spec in KNOWN_SPECS:
        if spec.label_format == fmt and spec.n_classes == length:
            for path in images:  # every name must agree with the first
                _labels(path, spec)
            return spec
    raise DatasetError(
        f"train/ names in {train.parent} carry {length} labels in {fmt} format (e.g. {first.name!r}), which "
        "matches no known data set (LUAD-HistoSeg: 4 space, BCSS-WSSS: 4 compact, WSSS4LUAD: 3 comma); "
        "add a dataset.json naming the classes"
    )


def _spec_from_masks(root: Path) -> DatasetSpec | None:
    from PIL import Image

    for split in ("val", "test"):
        mask_dir = root / split / "mask"
        if not mask_dir.is_dir():
            continue
        for path in list_images(mask_dir)[:1]:
            with Image.open(path) as image:
                colours = image.getpalette() if image.mode == "P" else None
            if colours:
                for spec in KNOWN_SPECS:
                    flat = [v for c in spec.palette for v in c]
                    if colours[: len(flat)] == flat:
                        return spec
    return None


def _class_folders(root: Path) -> tuple[str, ...]:
    names = []
    for sub in sorted(root.iterdir()):
        if sub.is_dir() and not sub.name.startswith(".") and sub.name not in _RESERVED_FOLDERS:
            if any(_is_image(p) for p in sub.iterdir()):
                names.append(sub.name)
    return tuple(names)


def folder_spec(classes: tuple[str, ...] | list[str]) -> DatasetSpec:
    """A spec for one folder per class: distinct colours per class, white background last."""
    classes = tuple(classes)
    palette = tuple(_FOLDER_COLOURS[i % len(_FOLDER_COLOURS)] for i in range(len(classes))) + (WHITE,)
    return DatasetSpec("folder", classes, palette, len(classes), "folder")
