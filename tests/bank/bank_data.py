"""Tiny colour-coded data sets for the bank tests: each class a colour in two shades (a true K=2 structure)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from napari_pbip.data.images import write_mask, write_rgb
from napari_pbip.data.labels import labelled_name

CLASSES = ("red", "green", "blue")
# Two shades per class, so K=2 has a true sub-cluster structure.
SHADES = {
    "red": ((200, 40, 40), (150, 20, 90)),
    "green": ((40, 190, 60), (110, 170, 20)),
    "blue": ((40, 60, 200), (20, 140, 190)),
}
PALETTE = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]
SIZE = 32


def patch(cls: str, shade: int, seed: int, size: int = SIZE, white: float = 0.0) -> np.ndarray:
    """A noisy patch of one class colour; the top ``white`` share of rows is glass (255)."""
    rng = np.random.default_rng(seed)
    base = np.array(SHADES[cls][shade], dtype=np.float64)
    image = np.clip(base + rng.normal(0, 12, (size, size, 3)), 0, 210).astype(np.uint8)
    image[: int(round(white * size))] = 255
    return image


def write_dataset(
    root: Path,
    per_class: dict[str, int] | None = None,
    multi: int = 2,
    white: int = 0,
    val: int = 0,
) -> Path:
    """Generic-layout data set: ``per_class[c]`` single-class patches (alternating shades), ``multi``
    two-class patches, ``white`` mostly-white red patches, ``val`` masked two-class val images."""
    per_class = per_class or {c: 6 for c in CLASSES}
    (root / "train").mkdir(parents=True)
    spec = {"name": "colours", "classes": list(CLASSES), "palette": PALETTE, "background_index": 3}
    (root / "dataset.json").write_text(json.dumps({**spec, "label_format": "space"}))
    for ci, cls in enumerate(CLASSES):
        for i in range(per_class.get(cls, 0)):
            label = [int(j == ci) for j in range(len(CLASSES))]
            write_rgb(
                root / "train" / labelled_name(f"{cls}-{i:03d}", label, "space"),
                patch(cls, i % 2, 100 * ci + i),
            )
    for i in range(multi):
        image = np.concatenate([patch("red", 0, 900 + i)[:16], patch("green", 0, 950 + i)[16:]])
        write_rgb(root / "train" / labelled_name(f"mix-{i:03d}", [1, 1, 0], "space"), image)
    for i in range(white):
        write_rgb(
            root / "train" / labelled_name(f"white-{i:03d}", [1, 0, 0], "space"),
            patch("red", 0, 800 + i, white=0.8),
        )
    for i in range(val):
        _write_val(root, i)
    return root


def _write_val(root: Path, i: int) -> None:
    """A 64 x 32 val image: left half one class, right half another (two 32 px single-class patches)."""
    a, b = CLASSES[i % 3], CLASSES[(i + 1) % 3]
    image = np.concatenate([patch(a, i % 2, 500 + i), patch(b, (i + 1) % 2, 600 + i)], axis=1)
    mask = np.zeros((SIZE, 2 * SIZE), np.uint8)
    mask[:, :SIZE], mask[:, SIZE:] = CLASSES.index(a), CLASSES.index(b)
    write_rgb(root / "val" / "img" / f"v{i:02d}.png", image)
    write_mask(root / "val" / "mask" / f"v{i:02d}.png", mask, [tuple(c) for c in PALETTE])
