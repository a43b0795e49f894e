"""napari sample data made offline by the package: a synthetic slide and a synthetic patch set.

Both are generated once and kept in a cache folder (``$PBIP_SAMPLE_DIR``, else
``<temp>/napari-pbip-samples``). The slide is described by a sidecar JSON (the
:class:`~napari_pbip.synthetic.synth_slide.SynthSlide` that wrote it); a missing or stale sidecar makes
the slide be written again.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

SAMPLE_SLIDE_SIZE = 4096  # px at 0.5 um/px: 2 x 2 mm of tissue, written in a few seconds
SAMPLE_SEED = 0
PATCHES = {"n_train": 100, "n_val": 8, "n_test": 0, "size": 224}
SIDECAR_VERSION = 1

LayerData = tuple[Any, dict[str, Any], str]


def cache_dir() -> Path:
    """The folder samples are kept in (created when missing)."""
    d = Path(os.environ.get("PBIP_SAMPLE_DIR") or Path(tempfile.gettempdir()) / "napari-pbip-samples")
    d.mkdir(parents=True, exist_ok=True)
    return d


def cached_slide(size: int = SAMPLE_SLIDE_SIZE, seed: int = SAMPLE_SEED):
    """The cached synthetic slide (written on first use); returns its ``SynthSlide``."""
    from .. import _atomic
    from ..synthetic.synth_slide import write_synthetic_slide

    path = cache_dir() / f"synthetic-slide-{size}-seed{seed}.tif"
    sidecar = path.with_suffix(".json")
    found = _read_sidecar(sidecar)
    if found is not None:
        return found
    made = write_synthetic_slide(path, size=size, seed=seed, overwrite=True)
    _atomic.write_json(sidecar, {"sidecar_version": SIDECAR_VERSION, **asdict(made)})
    return made


def _read_sidecar(sidecar: Path):
    """The SynthSlide a sidecar describes, or None when it is missing, old or its files are gone."""
    from ..synthetic.synth_slide import SynthSlide

    try:
        d = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if d.pop("sidecar_version", None) != SIDECAR_VERSION:
        return None
    try:
        made = SynthSlide(
            slide=Path(d["slide"]),
            labels=Path(d["labels"]),
            shape=tuple(d["shape"]),
            mpp=float(d["mpp"]),
            classes=tuple(d["classes"]),
            palette=tuple(tuple(c) for c in d["palette"]),
            background_index=int(d["background_index"]),
            levels=tuple(tuple(s) for s in d["levels"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    return made if made.slide.is_file() and made.labels.is_file() else None


def synthetic_slide() -> list[LayerData]:
    """A synthetic pyramidal H&E slide (4096 px at 0.5 um/px) and its ground-truth labels."""
    import tifffile

    from ._labels import ClassMap, as_label_values, layer_kwargs
    from .reader import slide_layer_data

    made = cached_slide()
    image = slide_layer_data(made.slide)
    cm = ClassMap(made.classes, made.palette, made.background_index)
    cm, labels = as_label_values(cm, tifffile.imread(made.labels))  # napari's: 0 is background
    kwargs = layer_kwargs(cm, made.mpp, made.mpp, "ground truth")
    kwargs.update(opacity=0.35, visible=False)
    return [image, (labels, kwargs, "labels")]


def cached_patches(seed: int = SAMPLE_SEED) -> Path:
    """The cached synthetic patch data set folder (written on first use)."""
    from ..synthetic.synth import write_synthetic_dataset

    path = cache_dir() / f"synthetic-patches-seed{seed}"
    if not (path / "dataset.json").is_file():
        write_synthetic_dataset(path, seed=seed, overwrite=path.exists(), **PATCHES)
    return path


def synthetic_patches() -> list[LayerData]:
    """A synthetic patch data set (weakly labelled train split, masked val split) and its val patches.

    The layers show the val images and masks as stacks; their metadata ``pbip_dataset`` names
    the data set folder, which the "Image bank" and "Train PBIP" widgets offer as their data set.
    """
    import numpy as np

    from ..data.images import read_mask, read_rgb
    from ..data.layouts import open_dataset
    from ._labels import ClassMap, as_label_values, layer_kwargs

    root = cached_patches()
    ds = open_dataset(root)
    samples = ds.samples("val")
    images = np.stack([read_rgb(s.image) for s in samples])
    masks = np.stack([read_mask(s.mask, ds.spec) for s in samples]).astype(np.uint8)
    cm = ClassMap(tuple(ds.spec.classes), tuple(tuple(c) for c in ds.spec.palette), ds.spec.background_index)
    cm, masks = as_label_values(cm, masks)  # shown with napari's 0 = background; the files keep theirs
    meta = {"pbip_dataset": str(root)}
    label_kwargs = layer_kwargs(cm, None, None, "synthetic patch masks")
    label_kwargs["metadata"].update(meta)
    return [
        (images, {"name": "synthetic patches", "rgb": True, "metadata": meta}, "image"),
        (masks, label_kwargs, "labels"),
    ]
