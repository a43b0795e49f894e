"""napari sample data made offline by the package: a synthetic slide and a synthetic patch set."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

SAMPLE_SLIDE_SIZE = 4096


def _cache_dir() -> Path:
    d = Path(tempfile.gettempdir()) / "napari-pbip-samples"
    d.mkdir(parents=True, exist_ok=True)
    return d


def synthetic_slide() -> list[tuple[Any, dict[str, Any], str]]:
    """A synthetic pyramidal H&E slide (4096 px, 0.5 um/px) with its ground-truth labels."""
    import numpy as np
    import tifffile

    from ..data.synth_slide import write_synthetic_slide
    from .reader import slide_layer_data

    out = _cache_dir() / f"synthetic-slide-{SAMPLE_SLIDE_SIZE}.tif"
    if not out.exists():
        write_synthetic_slide(out, size=SAMPLE_SLIDE_SIZE, seed=0)
    info = _labels_path(out)
    image = slide_layer_data(out)
    labels = np.asarray(tifffile.imread(info["labels"]))
    palette, classes = info["palette"], info["classes"]
    colors = {i: np.array([*c, 255]) / 255.0 for i, c in enumerate(palette)}
    colors[None] = np.zeros(4)
    mpp = image[1]["scale"]
    label_kwargs = {
        "name": "ground truth",
        "scale": mpp,
        "units": ("um", "um"),
        "opacity": 0.4,
        "colormap": colors,
        "metadata": {"pbip_classes": classes, "pbip_palette": palette},
        "features": {"class": [*classes, "background"]},
    }
    return [image, (labels, label_kwargs, "labels")]


def _labels_path(slide: Path) -> dict[str, Any]:
    from ..data.synth_slide import DEFAULT_CLASSES, labels_path_for, palette_for_classes

    return {
        "labels": labels_path_for(slide),
        "classes": list(DEFAULT_CLASSES),
        "palette": [tuple(c) for c in palette_for_classes(DEFAULT_CLASSES)],
    }


def synthetic_patches() -> list[tuple[Any, dict[str, Any], str]]:
    """A stack of synthetic 224-px H&E patches (one per slice) with their exact masks."""
    import numpy as np

    from ..data.synth import demo_image

    images, masks = zip(*(demo_image(size=224, seed=s) for s in range(16)), strict=True)
    return [
        (np.stack(images), {"name": "synthetic patches", "rgb": True}, "image"),
        (np.stack(masks).astype(np.uint8), {"name": "patch masks", "opacity": 0.4}, "labels"),
    ]
