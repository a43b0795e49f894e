"""A cohort: ``pbip segment`` (and ``segment_cohort``) over several slides, a folder or a glob."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pbip_toy as toy
import pytest

from napari_pbip.cli.main import main
from napari_pbip.slides.cohort import SLIDE_STAGE, output_names, segment_cohort
from napari_pbip.slides.segment import SEGMENT_STAGE, SegmentSettings


def _slide(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return toy.write_tiff_slide(path, toy.render(toy.blob_labels((600, 700), seed=seed), seed=seed), mpp=0.5)


@pytest.fixture
def model(tmp_path) -> Path:
    toy.register()
    return toy.save_toy_model(tmp_path / "model", "colour")


def _cohort(slides, model, out, *extra) -> list[str]:
    args = ["segment", *slides, "--model", model, "--out", out, "--chunk", "256", "--batch", "4"]
    return [str(a) for a in [*args, "--quiet", *extra]]


def _snapshot(*paths: Path) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every file under ``paths``."""
    files = [q for p in paths for q in ([p] if p.is_file() else sorted(p.rglob("*"))) if q.is_file()]
    return {str(q): (q.stat().st_mtime_ns, q.stat().st_size) for q in files}


def _record(out: Path) -> dict[str, dict]:
    return {s["name"]: s for s in json.loads((out / "cohort.json").read_text())["slides"]}


def test_a_broken_slide_is_reported_without_stopping_the_others_and_retried_on_rerun(tmp_path, model, capsys):
    a, b = _slide(tmp_path / "in" / "a.tif", 1), _slide(tmp_path / "in" / "b.tif", 2)
    broken = tmp_path / "in" / "c.svs"
    broken.write_bytes(b"not a slide")
    out = tmp_path / "cohort"

    assert main(_cohort([a, broken, b], model, out)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("pbip segment: 1 of 3 slides failed (c.svs)") and "rerun" in err[-1]
    assert sum(str(broken) in line for line in err) == 1  # the failure: one line, naming the slide
    assert "Traceback" not in "\n".join(err)
    record = _record(out)
    assert (record["a"]["status"], record["b"]["status"], record["c"]["status"]) == ("done", "done", "failed")
    assert str(broken) in record["c"]["error"] and "\n" not in record["c"]["error"]
    for name in ("a", "b"):
        assert (out / f"{name}.zarr" / "zarr.json").is_file() and (out / f"{name}.geojson").is_file()
    assert not (out / "c.zarr").exists()

    # the cohort table holds each finished slide's own area table (as `pbip segment SLIDE --areas`)
    table = list(csv.DictReader((out / "cohort.csv").open()))
    assert {r["slide"] for r in table} == {"a", "b"}
    for name, slide in (("a", a), ("b", b)):
        single = tmp_path / "single" / name
        args = ["segment", slide, "--model", model, "--out", f"{single}.zarr", "--areas", f"{single}.csv"]
        assert main([str(x) for x in [*args, "--chunk", "256", "--batch", "4", "--quiet"]]) == 0
        alone = {r["class"]: r for r in csv.DictReader(Path(f"{single}.csv").open())}
        assert (out / f"{name}.csv").read_text() == Path(f"{single}.csv").read_text()
        rows = {r["class"]: r for r in table if r["slide"] == name}
        assert set(rows) == set(alone) == {"tumor", "stroma", "lymph", "background"}
        for cls, row in rows.items():
            assert float(row["area_mm2"]) == pytest.approx(float(alone[cls]["area_um2"]) / 1e6, abs=1e-6)
            assert row["percent_of_tissue"] == alone[cls]["percent_of_tissue"]
        assert float(rows["tumor"]["area_mm2"]) > 0
    capsys.readouterr()

    # rerun after mending the broken slide: the finished slides are not rewritten, the failed one runs
    finished = _snapshot(*(out / f"{n}{ext}" for n in "ab" for ext in (".zarr", ".csv", ".geojson")))
    _slide(broken, 3)
    assert main(_cohort([a, broken, b], model, out)) == 0
    assert _snapshot(*(out / f"{n}{ext}" for n in "ab" for ext in (".zarr", ".csv", ".geojson"))) == finished
    record = _record(out)
    assert record["c"]["status"] == "done" and "error" not in record["c"]
    assert record["a"]["finished_before"] and not record["c"]["finished_before"]
    assert {r["slide"] for r in csv.DictReader((out / "cohort.csv").open())} == {"a", "b", "c"}
    assert "3 of 3 slides" in capsys.readouterr().out


def test_slide_events_carry_each_slides_status_for_a_progress_line_per_slide(tmp_path, model):
    from napari_pbip.slides.cohort import SlideStatus

    a = _slide(tmp_path / "in" / "a.tif", 1)
    broken = tmp_path / "in" / "c.svs"
    broken.write_bytes(b"not a slide")
    settings = SegmentSettings(chunk=256, batch=4, device="cpu")
    seen = [
        (ev.payload.name, ev.payload.status, ev.payload.error)
        for ev in segment_cohort([a, broken], model, tmp_path / "out", settings)
        if ev.stage == SLIDE_STAGE and isinstance(ev.payload, SlideStatus)
    ]
    assert [s[:2] for s in seen] == [("a", "running"), ("a", "done"), ("c", "running"), ("c", "failed")]
    assert seen[1][2] is None and str(broken) in seen[3][2]  # the failure's one line, naming the slide


@pytest.mark.parametrize("form", ["folder", "glob"])
def test_a_folder_or_a_quoted_glob_is_a_cohort_of_its_slides(tmp_path, model, form):
    folder = tmp_path / "slides"
    for i, name in enumerate(("x.tif", "y.tif")):
        _slide(folder / name, 4 + i)
    (folder / "notes.txt").write_text("not a slide\n")
    import tifffile

    tifffile.imwrite(folder / "x.labels.tif", toy.blob_labels((64, 64)))  # ground truth beside a slide
    given = folder if form == "folder" else folder / "*.tif"
    out = tmp_path / "out"

    assert main(_cohort([given], model, out)) == 0
    assert set(_record(out)) == {"x", "y"}
    assert sorted(p.name for p in out.glob("*.zarr")) == ["x.zarr", "y.zarr"]
    assert sorted(folder.iterdir()) == sorted(
        folder / n for n in ("notes.txt", "x.labels.tif", "x.tif", "y.tif")
    )


def test_slides_with_the_same_name_get_distinct_recorded_outputs(tmp_path, model):
    first, second = _slide(tmp_path / "site1" / "s.tif", 6), _slide(tmp_path / "site2" / "s.svs", 7)
    reserved = _slide(tmp_path / "site1" / "cohort.tif", 8)  # would clash with cohort.csv
    out = tmp_path / "out"

    assert main(_cohort([second, reserved, first], model, out)) == 0
    record = _record(out)
    assert {n: r["slide"] for n, r in record.items()} == {
        "s": str(first),
        "s-2": str(second),
        "cohort-2": str(reserved),
    }
    one, two = (list(csv.DictReader((out / f"{n}.csv").open())) for n in ("s", "s-2"))
    assert one != two  # each slide's own areas, neither overwritten by the other
    # the same names whatever order the slides are given in
    assert output_names([first, second, reserved]) == output_names([reserved, second, first])


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_existing_folder_that_is_not_a_cohort_output_is_refused(tmp_path, model, capsys, overwrite):
    a, b = _slide(tmp_path / "a.tif", 1), _slide(tmp_path / "b.tif", 2)
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")

    assert main(_cohort([a, b], model, out, *(["--overwrite"] if overwrite else []))) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and str(out) in err
    assert "choose another output" in err or "new or empty folder" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine\n"


def test_cohort_options_that_name_one_file_are_refused_in_one_line(tmp_path, model, capsys):
    a, b = _slide(tmp_path / "a.tif", 1), _slide(tmp_path / "b.tif", 2)
    assert main(_cohort([a, b], model, tmp_path / "out", "--geojson", tmp_path / "all.geojson")) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--geojson" in err and "drop --geojson" in err
    assert not (tmp_path / "out").exists()


def test_overwrite_replaces_a_previous_cohort(tmp_path, model):
    a, b = _slide(tmp_path / "a.tif", 1), _slide(tmp_path / "b.tif", 2)
    out = tmp_path / "out"
    assert main(_cohort([a, b], model, out)) == 0
    before = _snapshot(out / "a.zarr")
    assert main(_cohort([a, b], model, out, "--overwrite")) == 0
    assert _snapshot(out / "a.zarr") != before and _record(out)["a"]["status"] == "done"
    assert not _record(out)["a"]["finished_before"]


def test_an_interrupted_cohort_resumes_its_cut_off_slide_from_finished_chunks(tmp_path, model):
    slides = [_slide(tmp_path / f"{n}.tif", i) for i, n in enumerate("pqr")]
    out = tmp_path / "out"
    settings = SegmentSettings(chunk=256, batch=4, device="cpu")
    job = segment_cohort(slides, model, out, settings)
    lines = []
    for ev in job:
        if ev.stage == SLIDE_STAGE:
            lines.append(ev.message)
        if ev.stage == SEGMENT_STAGE and lines[-1].startswith("slide 2/3") and ev.step >= 4:
            job.close()  # stop in the middle of q
            break
    assert lines[:3] == ["slide 1/3: p.tif", "slide 1/3: p.tif done", "slide 2/3: q.tif"]
    assert _record(out)["p"]["status"] == "done" and _record(out)["q"]["status"] == "pending"

    from napari_pbip.events import run

    result = run(segment_cohort(slides, model, out, settings))
    assert [s.status for s in result.slides] == ["done"] * 3
    assert result.slides[0].finished_before and result.results["p"].tiles["run"] == 0
    assert result.results["q"].chunks["resumed"] >= 4  # q went on from its finished chunks
    assert result.results["r"].chunks["resumed"] == 0


def test_one_slide_is_still_one_zarr_output(tmp_path, model):
    a = _slide(tmp_path / "a.tif", 1)
    out = tmp_path / "a.zarr"
    assert main(_cohort([a], model, out)) == 0
    assert (out / "labels" / "tissue").is_dir() and not (out / "cohort.json").exists()
