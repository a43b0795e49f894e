"""Area tables: hand-computed areas and percentages, read back with the csv module."""

from __future__ import annotations

import csv

import numpy as np
import pbip_toy as toy
import pytest

from napari_pbip.errors import OutputExistsError
from napari_pbip.export import area_rows, export_areas, write_area_table, write_labels_ome_zarr


def test_rows_by_hand():
    rows = area_rows({"tumor": 300, "stroma": 100, "background": 600}, mpp=0.5)
    assert [(r.name, r.pixels, r.area_um2, r.percent_of_tissue) for r in rows] == [
        ("tumor", 300, 75.0, 75.0),
        ("stroma", 100, 25.0, 25.0),
        ("background", 600, 150.0, None),
    ]


def test_csv_reads_back_and_is_not_overwritten(tmp_path):
    path = write_area_table(tmp_path / "a.csv", {"tumor": 3, "stroma": 1, "background": 4}, mpp=2.0)
    rows = list(csv.DictReader(path.open()))
    assert rows[0] == {"class": "tumor", "pixels": "3", "area_um2": "12.00", "percent_of_tissue": "75.000"}
    with pytest.raises(OutputExistsError):
        write_area_table(path, {"tumor": 1}, mpp=1.0)


def test_areas_counted_from_a_label_store(tmp_path):
    labels = np.full((300, 200), 3, np.uint8)
    labels[:100] = 0
    labels[100:150, :50] = 2
    store = write_labels_ome_zarr(labels, tmp_path / "l.zarr", 0.25, toy.CLASSES, toy.PALETTE)
    rows = {r["class"]: r for r in csv.DictReader(export_areas(store, tmp_path / "a.csv").open())}
    assert (
        rows["tumor"]["pixels"] == "20000"
        and rows["lymph"]["pixels"] == "2500"
        and rows["stroma"]["pixels"] == "0"
    )
    assert float(rows["tumor"]["area_um2"]) == 20000 * 0.0625
    assert float(rows["tumor"]["percent_of_tissue"]) == pytest.approx(100 * 20000 / 22500, abs=1e-3)
