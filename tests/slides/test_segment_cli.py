"""``pbip segment`` end to end: OME-Zarr, GeoJSON and area table that other programs read back."""

from __future__ import annotations

import csv
import json

import pbip_toy as toy
import pytest
import zarr

from napari_pbip.cli.main import main
from napari_pbip.export.label_values import to_values


def test_pbip_segment_writes_all_outputs_and_refuses_to_overwrite(tmp_path, capsys):
    labels = toy.blob_labels((600, 700), seed=31)
    slide = toy.write_tiff_slide(tmp_path / "s.tif", toy.render(labels, seed=31), mpp=None)
    model = toy.save_toy_model(tmp_path / "model", "colour")
    toy.register()
    out, geo, areas = tmp_path / "s.zarr", tmp_path / "s.geojson", tmp_path / "s.csv"
    args = ["segment", str(slide), "--model", str(model), "--out", str(out), "--geojson", str(geo)]
    args += ["--areas", str(areas), "--chunk", "512", "--batch", "4", "--slide-mpp", "0.5", "--json"]

    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["shape"] == [600, 700] and summary["geojson"] == str(geo)

    level0 = zarr.open_array(str(out / "labels" / "tissue" / "0"))[:]
    assert (level0 == to_values(labels, 3, toy.BACKGROUND)).mean() > 0.98  # 0 background, classes from 1
    rows = list(csv.DictReader(areas.open()))
    by_class = {r["class"]: r for r in rows}
    assert set(by_class) == {"tumor", "stroma", "lymph", "background"}
    assert int(by_class["tumor"]["pixels"]) == int((level0 == 1).sum())  # tumor is label value 1
    assert float(by_class["tumor"]["area_um2"]) == pytest.approx((level0 == 1).sum() * 0.25, abs=0.01)
    assert abs(sum(float(r["percent_of_tissue"]) for r in rows if r["percent_of_tissue"]) - 100) < 0.01
    assert by_class["background"]["percent_of_tissue"] == ""
    collection = json.loads(geo.read_text())
    names = {f["properties"]["classification"]["name"] for f in collection["features"]}
    assert names == {"tumor", "stroma", "lymph"}

    # a second run without --overwrite stops with a one-line error and exit code 1
    assert main(args) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_pbip_segment_without_slide_resolution_says_how_to_fix(tmp_path, capsys):
    slide = toy.write_tiff_slide(tmp_path / "s.tif", toy.render(toy.blob_labels((300, 300)), 0), mpp=None)
    model = toy.save_toy_model(tmp_path / "model", "colour")
    toy.register()
    assert main(["segment", str(slide), "--model", str(model), "--out", str(tmp_path / "o.zarr")]) == 1
    assert "--slide-mpp" in capsys.readouterr().err


def _segment_args(slide, model, out, *extra) -> list[str]:
    args = ["segment", slide, "--model", model, "--out", out, "--chunk", "512", "--batch", "4"]
    return [str(a) for a in [*args, "--slide-mpp", "0.5", "--json", *extra]]


def _snapshot(folder):
    """(mtime_ns, size) of every file under ``folder``, by relative path."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("where", ["inside a file", "read-only folder"])
def test_an_export_that_cannot_be_written_is_refused_before_any_chunk_runs(
    tmp_path, capsys, read_only, where
):
    slide = toy.write_tiff_slide(tmp_path / "s.tif", toy.render(toy.blob_labels((300, 300)), 0), mpp=None)
    model = toy.save_toy_model(tmp_path / "model", "colour")
    toy.register()
    if where == "inside a file":
        (tmp_path / "notes.txt").write_text("not a folder")
        bad = tmp_path / "notes.txt" / "s.geojson"
    else:
        (tmp_path / "shared").mkdir()
        bad = read_only(tmp_path / "shared") / "s.geojson"
    out = tmp_path / "s.zarr"

    assert main(_segment_args(slide, model, out, "--geojson", bad)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(bad) in err
    assert not out.exists()  # refused before the output store was created, so before any chunk


def test_rerun_on_a_finished_output_writes_the_missing_exports_without_segmenting_again(tmp_path, capsys):
    slide = toy.write_tiff_slide(tmp_path / "s.tif", toy.render(toy.blob_labels((600, 700), 3), 3), mpp=None)
    model = toy.save_toy_model(tmp_path / "model", "colour")
    toy.register()
    out, geo, areas = tmp_path / "s.zarr", tmp_path / "s.geojson", tmp_path / "s.csv"
    assert main(_segment_args(slide, model, out)) == 0
    first = json.loads(capsys.readouterr().out)
    before = _snapshot(out)

    assert main(_segment_args(slide, model, out, "--geojson", geo, "--areas", areas)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert _snapshot(out) == before  # not a chunk, attribute or tissue mask rewritten
    assert summary["finished_before"] and summary["tiles"]["run"] == 0
    assert summary["class_pixels"] == first["class_pixels"]
    level0 = zarr.open_array(str(out / "labels" / "tissue" / "0"))[:]
    by_class = {r["class"]: r for r in csv.DictReader(areas.open())}
    assert int(by_class["tumor"]["pixels"]) == int((level0 == 1).sum())  # label value 1: the first class
    names = {f["properties"]["classification"]["name"] for f in json.loads(geo.read_text())["features"]}
    assert names == {"tumor", "stroma", "lymph"}

    # nothing left to write: the finished output is refused as before, naming the way out
    assert main(_segment_args(slide, model, out)) == 1
    assert "--overwrite" in capsys.readouterr().err
    # a finished output from another model is not exported as if it were this one's
    other = toy.save_toy_model(tmp_path / "other", "conv")
    assert main(_segment_args(slide, other, out, "--geojson", tmp_path / "o.geojson")) == 1
    assert "model" in capsys.readouterr().err and not (tmp_path / "o.geojson").exists()


def _damage_tile(path, row: int, col: int) -> None:
    """Overwrite one JPEG tile of level 0 with bytes no decoder accepts."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        per_row = -(-page.imagewidth // page.tilewidth)
        i = row * per_row + col
        offset, size = page.dataoffsets[i], page.databytecounts[i]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\x00" * size)


def test_a_damaged_tile_is_named_when_read_and_segmented_as_glass_with_a_warning(tmp_path, capsys):
    from napari_pbip.errors import UnreadableRegionError
    from napari_pbip.slides import open_slide

    labels = toy.blob_labels((600, 700), seed=31)
    slide = toy.write_tiff_slide(tmp_path / "s.tif", toy.render(labels, seed=31), mpp=0.5, tile=128)
    _damage_tile(slide, 1, 2)  # level 0, pixels y 128-256, x 256-384
    opened = open_slide(slide, backend="tifffile")
    with pytest.raises(
        UnreadableRegionError, match=r"s\.tif: level 0, .*tile rows 1-1, columns 2-2 of 128 px"
    ):
        opened.read_level(0, 130, 140, 260, 270)
    bad: list = []
    pixels = opened.read_level(0, 0, 600, 0, 700, unreadable=bad)
    assert (
        bad == [(128, 256, 256, 384)] and (pixels[128:256, 256:384] == 255).all()
    )  # only that tile is glass
    assert (pixels[:128] != 255).any()

    model = toy.save_toy_model(tmp_path / "model", "colour")
    toy.register()
    out = tmp_path / "s.zarr"
    args = ["segment", str(slide), "--model", str(model), "--out", str(out), "--chunk", "512", "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert [128, 256, 256, 384] in summary["unreadable"]
    assert "could not be decoded" in captured.err and "x=256, y=128" in captured.err
    level0 = zarr.open_array(str(out / "labels" / "tissue" / "0"))[:]
    assert (level0[140:240, 270:370] == 0).all()  # the damaged tile is background (glass), not guessed
    assert (level0 == to_values(labels, 3, toy.BACKGROUND)).mean() > 0.9  # the rest is segmented


def test_a_segment_output_with_probabilities_and_bookkeeping_validates_as_ngff_05(tmp_path):
    """What `pbip segment` writes beside the labels (probabilities/, pbip/) breaks no NGFF validator."""
    image_model = pytest.importorskip("ome_zarr_models.v05.image")
    labels = toy.blob_labels((600, 700), seed=31)
    slide = toy.write_tiff_slide(tmp_path / "s.tif", toy.render(labels, seed=31), mpp=0.5)
    model = toy.save_toy_model(tmp_path / "model", "colour")
    toy.register()
    out = tmp_path / "s.zarr"
    assert main(_segment_args(slide, model, out, "--probabilities")) == 0

    image = image_model.Image.from_zarr(zarr.open_group(str(out), mode="r"))
    assert image.labels is not None and set(image.labels.members) == {"tissue"}
    assert {"probabilities", "pbip"} <= set(zarr.open_group(str(out), mode="r").group_keys())
