"""Exports of segmentations: OME-Zarr images with labels, QuPath GeoJSON, per-class area tables."""

from .areas import area_rows, export_areas, write_area_table
from .geojson import export_geojson, labels_to_features, write_geojson
from .labels_reader import LabelsImage, open_labels
from .ome_zarr import NGFF_VERSION, write_labels_ome_zarr

__all__ = [
    "NGFF_VERSION",
    "LabelsImage",
    "area_rows",
    "export_areas",
    "export_geojson",
    "labels_to_features",
    "open_labels",
    "write_area_table",
    "write_geojson",
    "write_labels_ome_zarr",
]
