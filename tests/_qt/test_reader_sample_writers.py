"""Reader, sample data and writers in a real viewer: what a user opens, sees and saves."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_reader_opens_a_slide_lazily_with_its_physical_scale(make_napari_viewer, small_slide):
    import dask.array as da
    import tifffile

    viewer = make_napari_viewer()
    layers = viewer.open(str(small_slide.slide), plugin="napari-pbip")
    assert len(layers) == 1
    layer = layers[0]
    assert layer.multiscale and layer.rgb
    assert [tuple(level.shape[:2]) for level in layer.data] == [tuple(s) for s in small_slide.levels]
    assert all(isinstance(level, da.Array) for level in layer.data)  # nothing read whole
    assert tuple(layer.scale) == (0.5, 0.5) and [str(u) for u in layer.units] == ["micrometer", "micrometer"]
    assert layer.metadata["pbip_slide"] == str(small_slide.slide) and layer.metadata["pbip_mpp"] == 0.5
    with tifffile.TiffFile(small_slide.slide) as tif:
        truth = tif.series[0].levels[1].asarray()[100:164, 200:264]
    np.testing.assert_array_equal(np.asarray(layer.data[1][100:164, 200:264]), truth)


def test_reader_shows_a_slide_without_resolution_in_pixels(make_napari_viewer, tmp_path):
    import tifffile

    rgb = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    path = tmp_path / "no-mpp.tif"
    tifffile.imwrite(path, rgb, tile=(64, 64))
    layer = make_napari_viewer().open(str(path), plugin="napari-pbip")[0]
    assert tuple(layer.scale) == (1.0, 1.0) and layer.metadata["pbip_mpp"] is None
    assert "no um/px" in layer.metadata["pbip_note"]
    np.testing.assert_array_equal(np.asarray(layer.data), rgb)


def test_reader_leaves_other_files_to_other_readers(tmp_path):
    from napari_pbip._widgets.reader import get_reader, read_labels, read_slide

    assert get_reader(str(tmp_path / "image.png")) is None
    assert get_reader(str(tmp_path / "not-a-folder.zarr")) is None  # a .zarr must be a folder
    assert get_reader(str(tmp_path / "a.svs")) is read_slide
    labels = np.zeros((64, 64), np.uint8)
    from napari_pbip.export import write_labels_ome_zarr

    write_labels_ome_zarr(
        labels, tmp_path / "seg.zarr", 2.0, ["a", "b"], [(255, 0, 0), (0, 255, 0), (255, 255, 255)]
    )
    assert get_reader(str(tmp_path / "seg.zarr")) is read_labels


def test_reader_opens_tiffs_as_what_they_are_and_label_tiffs_as_labels(make_napari_viewer, tmp_path):
    import tifffile

    from napari_pbip._widgets.reader import get_reader, read_label_tiff, read_slide, read_tiff_image

    grey = tmp_path / "grey.tif"
    tifffile.imwrite(grey, np.zeros((64, 64), np.uint8))
    planes = tmp_path / "planes.tif"
    tifffile.imwrite(planes, np.zeros((5, 64, 64), np.uint16))
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((64, 64, 3), np.uint8))
    labels = tmp_path / "slide.labels.tif"
    truth = np.arange(64 * 64).reshape(64, 64).astype(np.uint8) % 4
    tifffile.imwrite(labels, truth, resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    not_tiff = tmp_path / "notes.tif"
    not_tiff.write_text("not a TIFF")
    assert get_reader(str(grey)) is read_tiff_image  # greyscale: shown as it is, not as fake RGB
    assert get_reader(str(planes)) is read_tiff_image  # 16-bit, 5 planes: an image, not a slide
    assert get_reader(str(not_tiff)) is None
    assert get_reader(str(rgb)) is read_slide
    assert get_reader(str(labels)) is read_label_tiff
    layer = make_napari_viewer().open(str(labels), plugin="napari-pbip")[0]
    assert layer._type_string == "labels" and tuple(layer.scale) == (0.5, 0.5)
    np.testing.assert_array_equal(np.asarray(layer.data), truth)


def test_sample_slide_with_ground_truth_is_made_once_and_reused(make_napari_viewer, tmp_path, monkeypatch):
    from napari_pbip._widgets import sample_data

    monkeypatch.setenv("PBIP_SAMPLE_DIR", str(tmp_path))
    monkeypatch.setattr(sample_data, "SAMPLE_SLIDE_SIZE", 1024)
    monkeypatch.setattr(sample_data.cached_slide, "__defaults__", (1024, 0))
    viewer = make_napari_viewer()
    viewer.open_sample("napari-pbip", "synthetic_slide")
    image, truth = viewer.layers
    assert image.multiscale and tuple(image.scale) == (0.5, 0.5)
    assert truth.data.shape == image.data[0].shape[:2] and tuple(truth.scale) == (0.5, 0.5)
    assert truth.metadata["pbip_classes"] == ["tumor", "stroma", "lymphocyte", "necrosis"]
    assert set(np.unique(truth.data)) <= {0, 1, 2, 3, 4} and len(np.unique(truth.data)) >= 3
    slide = tmp_path / "synthetic-slide-1024-seed0.tif"
    stamp = slide.stat().st_mtime_ns
    viewer.open_sample("napari-pbip", "synthetic_slide")
    assert slide.stat().st_mtime_ns == stamp  # the cached slide was reused, not rewritten
    slide.with_suffix(".json").write_text("{}")  # a stale sidecar makes it be written again
    viewer.open_sample("napari-pbip", "synthetic_slide")
    assert json.loads(slide.with_suffix(".json").read_text())["mpp"] == 0.5


def test_sample_patch_set_names_its_data_set_folder(make_napari_viewer, tmp_path, monkeypatch):
    from napari_pbip._widgets import sample_data
    from napari_pbip.data.layouts import open_dataset

    monkeypatch.setenv("PBIP_SAMPLE_DIR", str(tmp_path))
    monkeypatch.setattr(sample_data, "PATCHES", {"n_train": 10, "n_val": 3, "n_test": 0, "size": 64})
    viewer = make_napari_viewer()
    viewer.open_sample("napari-pbip", "synthetic_patches")
    images, masks = viewer.layers
    assert images.data.shape == (3, 64, 64, 3) and masks.data.shape == (3, 64, 64)
    ds = open_dataset(images.metadata["pbip_dataset"])
    assert len(ds.samples("train")) == 10 and all(s.labels is not None for s in ds.samples("train"))


def _labels_layer(viewer):
    """A labels layer as the plugin makes them: 2 classes + background at 2 um/px of a 0.5 um/px slide."""
    from napari_pbip._widgets._labels import ClassMap, layer_kwargs

    labels = np.full((60, 80), 2, np.uint8)
    labels[10:30, 10:40] = 0
    labels[35:55, 45:75] = 1
    cm = ClassMap(("tumor", "stroma"), ((200, 0, 0), (0, 200, 0), (255, 255, 255)), 2)
    return viewer.add_labels(labels, **layer_kwargs(cm, 2.0, 0.5, "seg")), labels


def test_ome_zarr_writer_output_reads_back_with_zarr(make_napari_viewer, tmp_path):
    import zarr

    viewer = make_napari_viewer()
    layer, labels = _labels_layer(viewer)
    written = viewer.layers.save(str(tmp_path / "seg.zarr"), selected=False, plugin="napari-pbip")
    assert written == [str(tmp_path / "seg.zarr")]
    group = zarr.open_group(str(tmp_path / "seg.zarr" / "labels" / "tissue"), mode="r")  # plain zarr
    ome = group.attrs["ome"]
    props = {p["label-value"]: p["class"] for p in ome["image-label"]["properties"]}
    assert props == {0: "background", 1: "tumor", 2: "stroma"}  # napari's 0 = background
    scale = ome["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale[-1] == 2.0
    np.testing.assert_array_equal(group["0"][:], np.where(labels == 2, 0, labels + 1))


def test_open_paint_save_reopen_loses_no_pixel(make_napari_viewer, tmp_path):
    """Issue 15 section 2: napari's eraser paints background, a class painted stays that class."""
    from napari_pbip._widgets.reader import get_reader
    from napari_pbip.export import write_labels_ome_zarr

    truth = np.full((60, 80), 2, np.uint8)  # mask indices: tumor 0, stroma 1, background 2
    truth[10:30, 10:40] = 0
    truth[35:55, 45:75] = 1
    palette = ((200, 0, 0), (0, 200, 0), (255, 255, 255))
    write_labels_ome_zarr(truth, tmp_path / "seg.zarr", 2.0, ("tumor", "stroma"), palette)

    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "seg.zarr"), plugin="napari-pbip")
    assert layer.colormap.background_value == 0  # the eraser paints 0: background
    assert int(layer.data[20, 20]) == 1 and int(layer.data[0, 0]) == 0  # tumor 1, background 0
    layer.brush_size = 5
    layer.paint((20, 20), layer.colormap.background_value)  # erase a bit of tumor
    layer.paint((45, 50), 1)  # paint tumor into stroma
    painted = np.asarray(layer.data).copy()
    assert (painted == 0).sum() > (truth == 2).sum() and (painted == 1).sum() > 0

    viewer.layers.save(str(tmp_path / "fixed.zarr"), selected=False, plugin="napari-pbip")
    reopened = get_reader(str(tmp_path / "fixed.zarr"))(str(tmp_path / "fixed.zarr"))[0]
    np.testing.assert_array_equal(np.asarray(reopened[0]), painted)  # no pixel lost or moved class
    assert reopened[1]["metadata"]["pbip_classes"] == ["tumor", "stroma"]

    pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    labels = [n for n in Reader(parse_url(str(tmp_path / "fixed.zarr")))() if n.load(Label)]
    np.testing.assert_array_equal(np.asarray(labels[0].data[0]), painted)


def test_geojson_writer_output_reads_back_as_class_polygons(make_napari_viewer, tmp_path):
    from shapely.geometry import shape

    viewer = make_napari_viewer()
    layer, labels = _labels_layer(viewer)
    viewer.layers.select_all()
    viewer.layers.selection = {layer}
    viewer.layers.save(str(tmp_path / "seg.geojson"), selected=True, plugin="napari-pbip")
    features = json.loads((tmp_path / "seg.geojson").read_text())["features"]
    by_class = {f["properties"]["classification"]["name"]: shape(f["geometry"]) for f in features}
    assert set(by_class) == {"tumor", "stroma"}
    assert features[0]["properties"]["classification"]["color"] in ([200, 0, 0], [0, 200, 0])
    # 2 um/px labels of a 0.5 um/px slide: coordinates are slide pixels, 4 per label pixel
    # (polygons follow pixel edges up to the vectoriser's simplification: within one label pixel)
    assert by_class["tumor"].bounds == pytest.approx((40, 40, 160, 120), abs=4)
    assert by_class["stroma"].area == pytest.approx(20 * 30 * 16, rel=0.05)


def test_writers_refuse_to_replace_a_folder_that_is_not_zarr(tmp_path):
    from napari_pbip._widgets.writers import write_labels_zarr
    from napari_pbip.errors import OutputExistsError

    (tmp_path / "keep.zarr").mkdir()
    (tmp_path / "keep.zarr" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError):
        write_labels_zarr(str(tmp_path / "keep.zarr"), np.zeros((4, 4), np.uint8), {"metadata": {}})
    assert (tmp_path / "keep.zarr" / "notes.txt").read_text() == "mine"


def test_plain_label_layers_follow_napari_convention(tmp_path):
    from napari_pbip._widgets._labels import from_layer

    cm, out = from_layer(np.array([[0, 1], [2, 2]]), {})
    assert cm.classes == ("label 1", "label 2") and cm.background_index == 0
    np.testing.assert_array_equal(out, [[0, 1], [2, 2]])  # written as they are: 0 stays background
