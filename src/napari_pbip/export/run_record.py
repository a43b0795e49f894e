"""The run record in an output store: the ``"pbip"`` attributes of its label image, and its levels.

``pbip segment`` keeps its run's state (status, resume fingerprint, tissue fraction, ...) under
``"pbip"`` in the label image's attributes, beside the NGFF metadata under ``"ome"``
(:mod:`.ome_zarr` writes both). An earlier napari-pbip wrote a bare label image with the record on
the store's root group; it reads back with ``layout: "bare"`` added. Slide inference reads and
updates the record here rather than parsing the store's attributes itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .ome_zarr import label_group_path


def read_run_record(out: str | os.PathLike) -> dict[str, Any]:
    """The run record of an existing output store, ``{}`` when it has none or is not a store."""
    import zarr

    try:
        return dict(zarr.open_group(str(label_group_path(out)), mode="r").attrs.get("pbip") or {})
    except Exception:
        pass
    try:
        old = dict(zarr.open_group(str(out), mode="r").attrs.asdict().get("pbip") or {})
    except Exception:
        return {}
    return {**old, "layout": "bare"} if old else {}


def update_run_record(out: str | os.PathLike, **values: Any) -> None:
    """Set ``values`` in the run record of the output store ``out`` (the other keys are kept)."""
    import zarr

    group = zarr.open_group(str(label_group_path(out)), mode="r+")
    group.attrs["pbip"] = {**dict(group.attrs["pbip"]), **values}


def label_levels(out: str | os.PathLike) -> int:
    """How many resolution levels the label image of the output store ``out`` has (NGFF 0.5)."""
    import zarr

    ome = zarr.open_group(str(label_group_path(Path(out))), mode="r").attrs["ome"]
    return len(ome["multiscales"][0]["datasets"])
