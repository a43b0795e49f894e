"""GeoJSON for QuPath: polygons with holes that rasterise back onto the labels, in level-0 pixels."""

from __future__ import annotations

import json

import numpy as np
import pbip_toy as toy
import pytest
import shapely
from shapely.geometry import shape

from napari_pbip.errors import OutputExistsError
from napari_pbip.export import export_geojson, labels_to_features, write_geojson, write_labels_ome_zarr


def _rasterise(features, shp, scale, names):
    """Label image from features by testing pixel centres (shapely, independent of the vectoriser)."""
    yy, xx = np.mgrid[0 : shp[0], 0 : shp[1]]
    out = np.full(shp, len(names), np.uint8)
    for f in features:
        inside = shapely.contains_xy(shape(f["geometry"]), (xx + 0.5) * scale, (yy + 0.5) * scale)
        out[inside] = names.index(f["properties"]["classification"]["name"])
    return out


def test_polygons_rasterise_back_onto_the_labels():
    labels = toy.blob_labels((400, 500), seed=51)
    feats = labels_to_features(labels, toy.CLASSES, toy.PALETTE, 3, scale=4.0, min_area_px=1, simplify_px=0.5)
    back = _rasterise(feats, labels.shape, 4.0, list(toy.CLASSES))
    assert (back == labels).mean() > 0.995
    f = feats[0]
    assert f["type"] == "Feature" and f["properties"]["objectType"] == "annotation"
    assert f["properties"]["classification"]["color"] == list(
        toy.PALETTE[toy.CLASSES.index(f["properties"]["classification"]["name"])]
    )


def test_a_ring_becomes_one_polygon_with_a_hole_and_specks_are_dropped():
    labels = np.full((100, 100), 3, np.uint8)
    labels[20:80, 20:80] = 0
    labels[40:60, 40:60] = 3  # the hole
    labels[5, 5] = 1  # a one-pixel speck
    feats = labels_to_features(labels, toy.CLASSES, toy.PALETTE, 3, min_area_px=4, simplify_px=0)
    assert len(feats) == 1
    poly = shape(feats[0]["geometry"])
    assert poly.geom_type == "Polygon" and len(poly.interiors) == 1
    assert poly.area == pytest.approx(60 * 60 - 20 * 20, rel=0.01)
    assert poly.bounds == pytest.approx((20, 20, 80, 80), abs=0.6)  # pixel edges, not centres


def test_file_is_a_feature_collection_and_is_not_overwritten(tmp_path):
    labels = toy.blob_labels((200, 200), seed=52)
    path = write_geojson(labels, tmp_path / "a.geojson", toy.CLASSES, toy.PALETTE)
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) >= 3
    with pytest.raises(OutputExistsError):
        write_geojson(labels, path, toy.CLASSES, toy.PALETTE)


def test_export_from_zarr_uses_a_coarse_level_and_slide_coordinates(tmp_path):
    labels = toy.blob_labels((1200, 1600), seed=53)
    store = write_labels_ome_zarr(labels, tmp_path / "l.zarr", 0.5, toy.CLASSES, toy.PALETTE, block=512)
    path = export_geojson(store, tmp_path / "l.geojson", resolution=2.0)
    feats = json.loads(path.read_text())["features"]
    # vectorised at 2 um/px (level 2), coordinates back in level-0 pixels: the tissue ellipse spans
    # x = 0.08 .. 0.92 of 1600 px
    xs = [
        x
        for f in feats
        for g in getattr(shape(f["geometry"]), "geoms", [shape(f["geometry"])])
        for x, _ in g.exterior.coords
    ]
    assert 100 < min(xs) < 150 and 1450 < max(xs) < 1500
    back = _rasterise(feats, (300, 400), 4.0, list(toy.CLASSES))
    assert (back == labels[2::4, 2::4]).mean() > 0.98
