"""Opening what pbip writes and reads in a real viewer, beside napari's builtins and napari-ome-zarr."""

from __future__ import annotations

import sys

import numpy as np
import pytest

pytestmark = pytest.mark.gui


@pytest.mark.skipif(sys.version_info < (3, 11), reason="napari-ome-zarr needs Python 3.11 or later")
def test_segment_output_opens_with_napari_ome_zarr_as_the_slide_and_its_classes(
    make_napari_viewer, segment_output
):
    out, truth = segment_output
    viewer = make_napari_viewer()
    layers = viewer.open(str(out), plugin="napari-ome-zarr")

    [labels] = [layer for layer in layers if layer._type_string == "labels"]
    images = [layer for layer in layers if layer._type_string == "image"]
    assert len(images) == 3  # the slide's picture, one layer per RGB channel
    values = np.asarray(labels.data[0] if labels.multiscale else labels.data)
    assert values.shape == truth.shape
    assert (values == truth).mean() > 0.98  # 0 background, tumor 1, stroma 2, lymph 3
    table = dict(zip(labels.properties["index"], labels.properties["class"], strict=True))
    assert table == {0: "background", 1: "tumor", 2: "stroma", 3: "lymph"}
    assert tuple(labels.scale) == (0.5, 0.5) and [str(u) for u in labels.units] == ["micrometer"] * 2
    assert labels.colormap.map(1)[:3] == pytest.approx(np.array([205, 51, 51]) / 255)  # tumor's colour
    image_extent = np.asarray(images[0].extent.world)[:, -2:]
    np.testing.assert_allclose(image_extent, np.asarray(labels.extent.world), atol=8.0)  # lie over each other


@pytest.mark.skipif(sys.version_info < (3, 11), reason="napari-ome-zarr needs Python 3.11 or later")
def test_a_napari_ome_zarr_labels_layer_saved_through_pbip_keeps_every_pixel_and_class_name(
    make_napari_viewer, segment_output, tmp_path
):
    from napari_pbip._widgets.writers import write_labels_zarr

    out, _ = segment_output
    viewer = make_napari_viewer()
    [labels] = [
        lyr for lyr in viewer.open(str(out), plugin="napari-ome-zarr") if lyr._type_string == "labels"
    ]
    assert labels.multiscale  # napari-ome-zarr gives the pyramid: the writer must take its level 0
    painted = np.array(labels.data[0])
    painted[10:20, 30:60] = 2  # a stroke of stroma, as a correction in another tool would be
    data, attributes, _ = labels.as_layer_data_tuple()
    saved = tmp_path / "corrected.zarr"
    write_labels_zarr(str(saved), [painted, *data[1:]], attributes)

    [again] = [
        lyr for lyr in viewer.open(str(saved), plugin="napari-ome-zarr") if lyr._type_string == "labels"
    ]
    assert np.array_equal(np.asarray(again.data[0] if again.multiscale else again.data), painted)
    table = dict(zip(again.properties["index"], again.properties["class"], strict=True))
    assert table == {0: "background", 1: "tumor", 2: "stroma", 3: "lymph"}  # names, not "label 1"
    assert again.colormap.map(1)[:3] == pytest.approx(np.array([205, 51, 51]) / 255)
    assert tuple(again.scale) == (0.5, 0.5)


def _tiff_kinds(folder, slide):
    """One file of each kind a user drops on napari: name -> (path, layer type pbip should give)."""
    import tifffile

    grey = np.random.default_rng(0).integers(0, 255, (64, 80), dtype=np.uint8)
    tifffile.imwrite(
        folder / "grey.tif", grey, resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER"
    )
    tifffile.imwrite(folder / "planes.tif", np.arange(5 * 32 * 48, dtype=np.uint16).reshape(5, 32, 48))
    tifffile.imwrite(folder / "slide.labels.tif", (np.arange(64 * 80) % 4).reshape(64, 80).astype(np.uint8))
    return {
        "8-bit greyscale": (folder / "grey.tif", "image"),
        "uint16 5 planes": (folder / "planes.tif", "image"),
        "uint8 labels": (folder / "slide.labels.tif", "labels"),
        "RGB pyramidal slide": (slide, "image"),
    }


def test_napari_offers_pbip_for_every_tiff_and_once_chosen_pbip_opens_each_without_an_error(
    make_napari_viewer, tmp_path, small_slide, monkeypatch
):
    """napari picks a reader by file name alone (npe2 filename patterns; every folder matches every
    reader that accepts folders); a reader's get_reader is asked only once it is chosen. So napari
    asks which reader to use for a TIFF (its builtins claim *.tif too), and after the user ticks
    *remember* for pbip, pbip is handed every TIFF: it must open each kind rather than refuse it."""
    import tifffile
    from napari.errors import MultipleReaderError
    from napari.settings import get_settings

    viewer = make_napari_viewer()
    kinds = _tiff_kinds(tmp_path, small_slide.slide)
    for path, _ in kinds.values():
        with pytest.raises(MultipleReaderError) as asked:  # the GUI shows its reader-choice dialog
            viewer.open(str(path), plugin=None)
        assert "napari-pbip" in asked.value.available_plugins

    settings = get_settings()
    monkeypatch.setattr(type(settings), "_maybe_save", lambda self: None)  # the settings file stays as is
    monkeypatch.setattr(settings.plugins, "extension2reader", {"*.tif": "napari-pbip"})  # "remember"
    for kind, (path, layer_type) in kinds.items():
        [layer] = viewer.open(str(path), plugin=None)
        assert layer._type_string == layer_type, kind
        assert layer.source.reader_plugin == "napari-pbip", kind
        if kind == "RGB pyramidal slide":
            assert layer.multiscale and layer.rgb and tuple(layer.scale) == (0.5, 0.5)
        else:
            np.testing.assert_array_equal(np.asarray(layer.data), tifffile.imread(path), err_msg=kind)
    grey = viewer.layers["grey.tif"]
    assert not grey.rgb and tuple(grey.scale) == (0.25, 0.25)  # shown as it is, in um from the file
    assert viewer.layers["planes.tif"].data.shape == (5, 32, 48)  # a plane slider, not a fake RGB


def test_a_segment_output_folder_offers_pbip_and_once_chosen_opens_as_the_segmentation(
    make_napari_viewer, segment_output, monkeypatch
):
    """A .zarr output is a folder: napari's builtins (which read the first sub-group, ``labels``, and
    find no arrays there) and every reader that accepts folders are offered; pbip's opens it as Labels."""
    import os

    from napari.errors import MultipleReaderError
    from napari.settings import get_settings

    out, truth = segment_output
    viewer = make_napari_viewer()
    with pytest.raises(MultipleReaderError) as asked:
        viewer.open(str(out), plugin=None)
    assert "napari-pbip" in asked.value.available_plugins

    settings = get_settings()
    monkeypatch.setattr(type(settings), "_maybe_save", lambda self: None)
    folder = os.path.realpath(out) + os.sep  # what the dialog's "remember" stores for a folder
    monkeypatch.setattr(settings.plugins, "extension2reader", {folder: "napari-pbip"})
    [layer] = viewer.open(str(out), plugin=None)
    assert layer._type_string == "labels" and layer.metadata["pbip_classes"] == ["tumor", "stroma", "lymph"]
    values = np.asarray(layer.data[0] if layer.multiscale else layer.data)
    assert (values == truth).mean() > 0.98 and tuple(layer.scale) == (0.5, 0.5)
