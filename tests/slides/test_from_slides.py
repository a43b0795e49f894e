"""Training data from slides: class regions (QuPath GeoJSON) -> weakly labelled tiles with provenance.

The hand-made slide is 1024 x 1024 px at 0.5 um/px, tissue everywhere except the glass strip
x >= 768; tiles are 64 px at 1 um/px, so each tile is a 128 px square of level 0 on a grid from
the origin, and every expected label below is counted by hand from the region coordinates.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pbip_toy as toy
import pytest

from napari_pbip.cli.main import main
from napari_pbip.data.images import read_mask, read_rgb
from napari_pbip.data.labels import parse_labels
from napari_pbip.data.layouts import dataset_mpp, open_dataset
from napari_pbip.errors import DatasetError, OutputConflictError, OutputExistsError
from napari_pbip.events import run
from napari_pbip.slides import open_slide
from napari_pbip.slides.annotations import SlideRegions, load_regions, read_geojson, regions_from_features
from napari_pbip.slides.training_data import (
    FromSlidesSettings,
    read_provenance,
    spec_for_classes,
    training_data_from_slides,
)

CLASSES = ["tumor", "stroma"]
SETTINGS = FromSlidesSettings(mpp=1.0, tile=64)


def _square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _feature(name, geometry, object_type="annotation"):
    props = {"objectType": object_type}
    if name is not None:
        props["classification"] = {"name": name, "color": [200, 0, 0]}
    return {"type": "Feature", "geometry": geometry, "properties": props}


def _features(with_second_part=True, stroma=(448, 0, 672, 128)):
    """A tumour MultiPolygon (a 512 px square with a 256 px hole, and a 256 px square), a stroma
    rectangle overlapping the tumour ring, a val area with stroma inside it, and three features that
    are no annotated areas (a point, a detection, a QuPath 0.2 cell) to be skipped."""
    parts = [[_square(0, 0, 512, 512), _square(128, 128, 384, 384)]]
    if with_second_part:
        parts.append([_square(640, 640, 896, 896)])
    return [
        _feature("Tumor", {"type": "MultiPolygon", "coordinates": parts}),  # case differs from the class list
        _feature("stroma", {"type": "Polygon", "coordinates": [_square(*stroma)]}),
        _feature("val", {"type": "Polygon", "coordinates": [_square(0, 768, 256, 1024)]}),
        _feature("stroma", {"type": "Polygon", "coordinates": [_square(0, 768, 160, 1024)]}),
        _feature("tumor", {"type": "Point", "coordinates": [10, 10]}),
        _feature("tumor", {"type": "Polygon", "coordinates": [_square(0, 0, 600, 600)]}, "detection"),
        {
            "type": "Feature",
            "id": "PathCellObject",
            "geometry": {"type": "Polygon", "coordinates": [_square(0, 0, 600, 600)]},
            "properties": {"classification": {"name": "tumor"}},
        },  # QuPath 0.2: the kind in "id"  # fmt: skip
    ]


def _geojson(path: Path, features) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


@pytest.fixture(scope="module")
def slide_file(tmp_path_factory) -> Path:
    labels = np.zeros((1024, 1024), np.int64)
    labels[:, 768:] = toy.BACKGROUND  # glass
    folder = tmp_path_factory.mktemp("from-slides")
    return toy.write_tiff_slide(folder / "case-1.tif", toy.render(labels), mpp=0.5)


@pytest.fixture
def slide(slide_file, tmp_path) -> Path:
    """The test's own copy of the slide, with its GeoJSON beside it."""
    copy = tmp_path / "slides" / "case-1.tif"
    copy.parent.mkdir()
    copy.write_bytes(slide_file.read_bytes())
    _geojson(copy.with_suffix(".geojson"), _features())
    return copy


def _build(slide: Path, out: Path, features=None, **kw):
    geojson = (
        _geojson(slide.with_suffix(".geojson"), features)
        if features is not None
        else slide.with_suffix(".geojson")
    )
    item = load_regions(slide, geojson, CLASSES)
    return run(training_data_from_slides([item], out, spec_for_classes(CLASSES), SETTINGS, **kw))


def _names(out: Path) -> dict[str, tuple[int, ...]]:
    return {p.name: tuple(parse_labels(p.name)) for p in sorted((out / "train").iterdir())}


EXPECTED = {  # level-0 (y, x) -> label; see _features
    **{(y, x): (1, 0) for y in (0, 128, 256, 384) for x in (0, 128, 256, 384)
       if not (y in (128, 256) and x in (128, 256))},  # the tumour ring, not its hole
    (0, 384): (1, 1),  # the stroma rectangle covers this ring tile's right half
    (0, 512): (0, 1),  # fully stroma; (0, 640) has 32 of 128 px stroma: background 75%, dropped
    (640, 640): (1, 0), (768, 640): (1, 0),  # the second tumour square; its x >= 768 half is on glass
}  # fmt: skip


def test_tiles_carry_the_classes_of_the_regions_and_only_tissue(slide, tmp_path):
    summary = _build(slide, tmp_path / "ds")

    names = _names(tmp_path / "ds")
    assert names == {
        f"case-1-y{y}-x{x}-[{' '.join(map(str, lab))}].png": lab for (y, x), lab in EXPECTED.items()
    }
    assert summary["tiles"] == len(EXPECTED) == 15
    assert summary["class_counts"] == {"tumor": 14, "stroma": 2}
    assert summary["dropped"]["background"] >= 3  # (0, 640) and the two glass tiles at x 768


def test_the_output_is_a_data_set_the_bank_and_training_read(slide, tmp_path):
    _build(slide, tmp_path / "ds")

    ds = open_dataset(tmp_path / "ds")
    assert ds.spec.classes == tuple(CLASSES) and ds.spec.layout == "generic"
    assert dataset_mpp(tmp_path / "ds") == 1.0
    samples = ds.samples("train")
    assert len(samples) == 15 and all(read_rgb(s.image).shape == (64, 64, 3) for s in samples)
    assert {s.image.name: s.labels for s in samples} == _names(tmp_path / "ds")


def test_val_areas_become_images_with_masks_and_give_no_training_tiles(slide, tmp_path):
    summary = _build(slide, tmp_path / "ds")

    ds = open_dataset(tmp_path / "ds")
    val = {s.image.name: s for s in ds.samples("val")}
    assert sorted(val) == [
        "case-1-y768-x0.png",
        "case-1-y768-x128.png",
        "case-1-y896-x0.png",
        "case-1-y896-x128.png",
    ]
    assert summary["val_images"] == 4
    stroma, background = ds.spec.tissue_indices[1], ds.spec.background_index
    full = read_mask(val["case-1-y768-x0.png"].mask, ds.spec)
    assert (full == stroma).all()
    part = read_mask(val["case-1-y768-x128.png"].mask, ds.spec)  # stroma to level-0 x 160: 16 of 64 columns
    assert (part[:, :15] == stroma).all() and (part[:, 17:] == background).all()
    in_val = [
        n
        for n in _names(tmp_path / "ds")
        if n.startswith(("case-1-y768-x0-", "case-1-y768-x128-", "case-1-y896-"))
    ]
    assert in_val == []


def test_provenance_names_slide_and_level0_box_of_every_file(slide, tmp_path):
    _build(slide, tmp_path / "ds")

    rows = read_provenance(tmp_path / "ds")
    train = [r for r in rows if r["split"] == "train"]
    assert len(train) == 15 and len([r for r in rows if r["split"] == "val"]) == 4
    s = open_slide(slide)
    for row in train:
        assert row["slide"] == str(slide) and row["size"] == "128" and row["mpp"] == "1"
        assert row["file"].startswith(f"case-1-y{row['y']}-x{row['x']}-")
        pixels = read_rgb(tmp_path / "ds" / "train" / row["file"])
        assert np.array_equal(pixels, s.read_region(int(row["y"]) // 2, int(row["x"]) // 2, 64, 64, 1.0))
    assert next(r for r in train if r["file"].startswith("case-1-y0-x384-"))["labels"] == "tumor;stroma"
    saved = json.loads((tmp_path / "ds" / "from_slides_settings.json").read_text())
    assert saved["settings"] == "FromSlidesSettings" and saved["tile"] == 64 and saved["mpp"] == 1.0


def test_a_rerun_after_an_edit_touches_only_the_tiles_that_changed(slide, tmp_path):
    out = tmp_path / "ds"
    _build(slide, out)
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in out.rglob("*.png")}

    # drop the second tumour square, and widen the stroma rectangle by one tile to the left
    summary = _build(slide, out, _features(with_second_part=False, stroma=(320, 0, 672, 128)))

    after = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in out.rglob("*.png")}
    gone = {"case-1-y640-x640-[1 0].png", "case-1-y768-x640-[1 0].png"}
    relabelled = {"case-1-y0-x256-[1 0].png": "case-1-y0-x256-[1 1].png",  # stroma now covers its right half
                  "case-1-y0-x384-[1 1].png": "case-1-y0-x384-[0 1].png"}  # and all of this one  # fmt: skip
    assert set(before) - set(after) == gone | set(relabelled)
    assert set(after) - set(before) == set(relabelled.values())
    assert all(after[n] == before[n] for n in set(before) & set(after)), "an unchanged tile was rewritten"
    assert (summary["added"], summary["removed"], summary["updated"]) == (2, 4, True)
    assert {r["file"] for r in read_provenance(out)} == set(after)


def test_a_rerun_without_edits_writes_nothing(slide, tmp_path):
    _build(slide, tmp_path / "ds")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "ds").rglob("*.png")}
    summary = _build(slide, tmp_path / "ds")
    assert summary["added"] == 0 and summary["unchanged"] == 19
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ds").rglob("*.png")} == before


def test_geojson_list_of_features_and_holes(slide, tmp_path):
    path = tmp_path / "list.geojson"
    path.write_text(json.dumps(_features()))  # a bare list, as some exporters write
    regions, skipped = regions_from_features(read_geojson(path), CLASSES, "list.geojson")
    assert skipped == 3 and [r.name for r in regions] == ["tumor", "stroma", "val", "stroma"]
    tumour = regions[0].geometry
    assert tumour.geom_type == "MultiPolygon" and tumour.area == 512 * 512 - 256 * 256 + 256 * 256
    assert not tumour.contains(__import__("shapely").geometry.Point(200, 200))  # in the hole


@pytest.mark.parametrize(
    ("features", "words"),
    [
        (
            [_feature("Fat", {"type": "Polygon", "coordinates": [_square(0, 0, 512, 512)]})],
            ["'Fat'", "['tumor', 'stroma']"],
        ),
        (
            [_feature(None, {"type": "Polygon", "coordinates": [_square(0, 0, 512, 512)]})],
            ["no classification"],
        ),
        (
            [_feature("tumor", {"type": "Polygon", "coordinates": [_square(5000, 5000, 6000, 6000)]})],
            ["outside the slide", "5000"],
        ),
        (
            [_feature("tumor", {"type": "Polygon", "coordinates": [_square(0, 0, 100, 600)]})],
            ["smaller than one tile", "50 x 300 um"],
        ),
    ],
    ids=["unknown class", "unclassified", "outside the slide", "too small"],
)
def test_regions_that_cannot_give_tiles_are_refused_before_any_output(slide, tmp_path, features, words):
    with pytest.raises(DatasetError) as err:
        _build(slide, tmp_path / "ds", features)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert not (tmp_path / "ds").exists()


def test_an_existing_folder_this_command_did_not_write_is_refused(slide, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    for overwrite in (False, True):
        with pytest.raises(OutputExistsError):
            _build(slide, out, overwrite=overwrite)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_overwrite_never_deletes_the_annotations_it_reads(slide, tmp_path):
    """A user keeps the GeoJSON inside the data set folder it built; rebuilding with --overwrite
    would replace the folder and the annotations with it."""
    out = tmp_path / "ds"
    _build(slide, out)
    kept = out / "case-1.geojson"
    kept.write_bytes(slide.with_suffix(".geojson").read_bytes())
    item = load_regions(slide, kept, CLASSES)
    for overwrite in (False, True):
        with pytest.raises(OutputConflictError, match="annotations"):
            run(
                training_data_from_slides(
                    [item], out, spec_for_classes(CLASSES), SETTINGS, overwrite=overwrite
                )
            )
    assert kept.read_bytes() == slide.with_suffix(".geojson").read_bytes()


def test_overwrite_rebuilds_a_previous_output(slide, tmp_path):
    _build(slide, tmp_path / "ds")
    (tmp_path / "ds" / "train" / "stray.png").write_bytes(b"x")
    summary = _build(slide, tmp_path / "ds", overwrite=True)
    assert summary["added"] == 19 and not summary["updated"]
    assert not (tmp_path / "ds" / "train" / "stray.png").exists()


def _one_line_error(capsys, argv, bad, inputs=(), absent=()):
    before = {p: p.read_bytes() for p in inputs}
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code not in (0, None)
    assert "Traceback" not in captured.err + captured.out
    assert len(lines) == 1 and lines[0].startswith("pbip data: error: "), captured.err
    assert str(bad) in lines[0], lines[0]
    assert {p: p.read_bytes() for p in inputs} == before
    assert not any(Path(p).exists() for p in absent)
    return lines[0]


def _cli(slide, out, *extra):
    return [
        "data",
        "from-slides",
        "--slides",
        slide,
        "--classes",
        *CLASSES,
        "--out",
        out,
        "--tile",
        "64",
        "--quiet",
        *extra,
    ]


def test_cli_folder_of_slides_with_geojson_beside_them_then_an_update(slide, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main([str(a) for a in _cli(slide.parent, out, "--json")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tiles"] == 15 and summary["class_counts"] == {"tumor": 14, "stroma": 2}
    assert main([str(a) for a in _cli(slide, out, "--annotations", slide.with_suffix(".geojson"))]) == 0
    assert "0 written, 0 removed, 19 unchanged" in capsys.readouterr().out


def test_cli_dataset_json_gives_the_classes_and_colours(slide, tmp_path, capsys):
    spec = tmp_path / "dataset.json"
    spec.write_text(json.dumps({"classes": ["stroma", "tumor"], "palette": [[0, 9, 0], [9, 0, 0], [255, 255, 255]],
                                "background_index": 2}))  # fmt: skip
    argv = [
        "data",
        "from-slides",
        "--slides",
        slide,
        "--dataset-json",
        spec,
        "--out",
        tmp_path / "ds",
        "--tile",
        "64",
    ]
    assert main([str(a) for a in [*argv, "--quiet"]]) == 0
    ds = open_dataset(tmp_path / "ds")
    assert ds.spec.classes == ("stroma", "tumor") and ds.spec.palette[0] == (0, 9, 0)
    assert "case-1-y0-x512-[1 0].png" in {s.image.name for s in ds.samples("train")}


@pytest.mark.parametrize(
    "case",
    ["unknown class", "outside", "too small", "not ours", "no mpp", "no geojson", "out is the geojson"],
)
def test_cli_bad_input_is_one_line_and_leaves_nothing(slide, tmp_path, capsys, case):
    out, geojson = tmp_path / "ds", slide.with_suffix(".geojson")
    argv, bad = _cli(slide, out), None
    if case == "unknown class":
        argv, bad = (
            ["data", "from-slides", "--slides", slide, "--classes", "tumor", "--out", out, "--quiet"],
            "'stroma'",
        )
    elif case == "outside":
        _geojson(
            geojson, [_feature("tumor", {"type": "Polygon", "coordinates": [_square(0, 2000, 512, 2512)]})]
        )
        bad = "outside the slide case-1.tif"
    elif case == "too small":
        argv, bad = _cli(slide, out, "--mpp", "4"), "smaller than one tile"  # 64 px at 4 um/px = 256 um
    elif case == "not ours":
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
        bad = out
    elif case == "no mpp":
        bare = toy.write_tiff_slide(
            tmp_path / "bare.tif", toy.render(np.zeros((512, 512), np.int64)), mpp=None
        )
        _geojson(tmp_path / "bare.geojson", _features()[:1])
        argv, bad = _cli(bare, out), "--slide-mpp"
    elif case == "no geojson":
        geojson.unlink()
        argv, bad = _cli(slide, out), "case-1.geojson"
    elif case == "out is the geojson":
        argv, bad = _cli(slide, geojson, "--overwrite"), geojson
    inputs = [slide] + ([geojson] if geojson.exists() else [])
    _one_line_error(capsys, argv, bad, inputs, [] if case == "not ours" else [out])
    if case == "not ours":
        assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_slide_mpp_given_for_a_slide_that_records_none(tmp_path, capsys):
    bare = toy.write_tiff_slide(tmp_path / "bare.tif", toy.render(np.zeros((1024, 1024), np.int64)), mpp=None)
    _geojson(tmp_path / "bare.geojson", _features()[:1])
    assert main([str(a) for a in _cli(bare, tmp_path / "ds", "--slide-mpp", "0.5")]) == 0
    assert "case" not in capsys.readouterr().err
    assert (
        len(list((tmp_path / "ds" / "train").iterdir())) == 16
    )  # the ring and the second square, all tissue


def test_regions_from_the_synthetic_slides_truth_label_tiles_as_the_truth_does(tmp_path):
    """Regions traced from a synthetic slide's ground truth: each tile's labels are the classes its
    truth shows (where the outline simplification and the coarse tissue mask agree)."""
    import tifffile

    from napari_pbip.export.geojson import labels_to_features
    from napari_pbip.synthetic.synth_slide import write_synthetic_slide

    synth = write_synthetic_slide(tmp_path / "s.tif", size=2048, seed=3, mpp=0.5, compression="deflate")
    truth = tifffile.imread(synth.labels)
    coarse = truth[4::8, 4::8]  # 4 um/px
    features = labels_to_features(coarse, synth.classes, synth.palette, synth.background_index, scale=8.0)
    regions, _ = regions_from_features(features, synth.classes, "truth")
    regions = [
        r
        for r in regions
        if min(r.geometry.bounds[2] - r.geometry.bounds[0], r.geometry.bounds[3] - r.geometry.bounds[1])
        >= 256
    ]
    item = SlideRegions(open_slide(synth.slide), tuple(regions), "truth")
    spec = spec_for_classes(synth.classes)
    summary = run(
        training_data_from_slides(
            [item], tmp_path / "ds", spec, FromSlidesSettings(tile=128, min_fraction=0.1)
        )
    )
    assert summary["tiles"] >= 20
    agree = 0
    for row in read_provenance(tmp_path / "ds"):
        y, x, size = int(row["y"]), int(row["x"]), int(row["size"])
        crop = truth[y : y + size, x : x + size]
        shares = np.bincount(crop.ravel(), minlength=len(synth.palette))[: len(synth.classes)] / crop.size
        present = {c for c, s in zip(synth.classes, shares, strict=True) if s >= 0.02}
        labels = set(row["labels"].split(";"))
        assert labels <= present, (row, shares)  # never a class the truth does not show
        agree += labels == {c for c, s in zip(synth.classes, shares, strict=True) if s >= 0.1}
    assert agree >= 0.8 * summary["tiles"]
