"""One-line errors, never a traceback (issue 14 section 7).

Each case gives ``pbip`` (its ``main()``) an input or output a user could plausibly give by
mistake: a read-only or impossible output path, a damaged ``model.json`` or ``bank.json``, a
malformed zarr store or a 16-bit TIFF as the slide. Every one must end with a non-zero exit code,
exactly one line on stderr that names the bad value, no traceback anywhere, the inputs byte for
byte as before and no output (not even an empty folder or a stub store) left behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from napari_pbip.cli.main import main

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parent / "slides"))  # pbip_toy: a toy model kind

import pbip_toy as toy  # noqa: E402


@dataclass
class Case:
    """A command line and what it must leave alone.

    Attributes:
        argv: the ``pbip`` arguments.
        bad: the value the error line must name.
        inputs: files and folders whose bytes must not change.
        absent: outputs that must not exist afterwards.
    """

    argv: list
    bad: object
    inputs: list = field(default_factory=list)
    absent: list = field(default_factory=list)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    """A tiny data set, a bank built from it, a small slide and a toy model folder (once per module)."""
    from napari_pbip.bank import BankSettings, build_bank
    from napari_pbip.events import run
    from napari_pbip.synthetic.synth import write_synthetic_dataset

    root = tmp_path_factory.mktemp("hostile")
    ds = write_synthetic_dataset(root / "ds", n_train=16, n_val=2, n_test=0, size=64)
    settings = BankSettings(encoder="tiny-encoder", k=1, per_cluster=2, batch_size=8)
    bank = run(build_bank(settings, ds, root / "bank", device="cpu")).root
    slide = toy.write_tiff_slide(root / "slide.tif", toy.render(toy.blob_labels((256, 256)), 1), mpp=0.5)
    model = toy.save_toy_model(root / "model", "colour")
    return {"ds": ds, "bank": bank, "slide": slide, "model": model}


@pytest.fixture
def w(base, tmp_path, read_only) -> dict[str, Path]:
    """The test's own copies of the inputs (a command that wrongly writes harms no other test),
    plus ``ro`` (a read-only folder) and ``file`` (a regular file)."""
    toy.register()
    paths = {k: Path(shutil.copytree(v, tmp_path / k) if v.is_dir() else shutil.copy(v, tmp_path / v.name))
             for k, v in base.items()}  # fmt: skip
    (tmp_path / "ro").mkdir()
    paths["ro"] = read_only(tmp_path / "ro")
    paths["file"] = tmp_path / "notes.txt"
    paths["file"].write_text("a file, not a folder\n")
    paths["tmp"] = tmp_path
    return paths


def _model_json(w, text: str, kind: str = "run") -> Path:
    """A copy of the toy model folder whose model.json holds ``text``."""
    folder = w["tmp"] / f"bad-{kind}"
    folder.mkdir()
    (folder / "model.json").write_text(text)
    return folder


def _bank_without(w, key: str) -> Path:
    manifest = json.loads((w["bank"] / "bank.json").read_text())
    del manifest[key]
    (w["bank"] / "bank.json").write_text(json.dumps(manifest))
    return w["bank"]


def _zarr_slide(w, meta: str) -> Path:
    store = w["tmp"] / "bad.zarr"
    store.mkdir()
    (store / "zarr.json").write_text(meta)
    return store


def _tiff16(w) -> Path:
    import tifffile

    path = w["tmp"] / "slide16.tif"
    pixels = np.random.default_rng(0).integers(0, 65535, (256, 256, 3), dtype=np.uint16)
    tifffile.imwrite(path, pixels, photometric="rgb", tile=(128, 128), resolution=(2e4, 2e4),
                     resolutionunit="CENTIMETER")  # fmt: skip
    return path


def _segment(w, slide, out, *extra) -> list:
    return ["segment", slide, "--model", w["model"], "--out", out, "--chunk", "256", "--json", *extra]


def _train(w, out, *extra) -> list:
    return ["train", "--dataset", w["ds"], "--bank", w["bank"], "--out", out, "--backbone", "tiny-backbone",
            "--epochs", "1", "--image-size", "64", "--match-size", "32", "--batch-size", "4", "--quiet", *extra]  # fmt: skip


_NGFF_WITHOUT_ARRAYS = json.dumps(
    {"zarr_format": 3, "node_type": "group",
     "attributes": {"ome": {"version": "0.5", "multiscales": [{"datasets": [{"path": "0"}]}]}}}
)  # fmt: skip


def _cases() -> dict[str, Callable[[dict], Case]]:
    def seg_ro(w):
        out = w["ro"] / "s.zarr"
        return Case(_segment(w, w["slide"], out), w["ro"], [w["slide"], w["model"], w["ro"]], [out])

    def build_ro(w):
        out = w["ro"] / "bank"
        argv = ["bank", "build", "--dataset", w["ds"], "--out", out, "--encoder", "tiny-encoder", "--quiet"]
        return Case(argv, w["ro"], [w["ds"], w["ro"]], [out])

    def synth_ro(w):
        out = w["ro"] / "ds"
        argv = [
            "data",
            "synth",
            "--out",
            out,
            "--n-train",
            "4",
            "--n-val",
            "0",
            "--n-test",
            "0",
            "--size",
            "64",
        ]
        return Case([*argv, "--quiet"], w["ro"], [w["ro"]], [out])

    def train_ro(w):
        out = w["ro"] / "run"
        return Case(_train(w, out), w["ro"], [w["ds"], w["bank"], w["ro"]], [out])

    def train_file(w):
        return Case(_train(w, w["file"]), w["file"], [w["ds"], w["bank"], w["file"]])

    def train_resume_file(w):
        return Case(_train(w, w["file"], "--resume"), w["file"], [w["ds"], w["bank"], w["file"]])

    def train_inside_file(w):
        out = w["file"] / "run"
        return Case(_train(w, out), w["file"], [w["ds"], w["bank"], w["file"]])

    def seg_model_not_json(w):
        model = _model_json(w, "{not json")
        out = w["tmp"] / "s.zarr"
        argv = _segment(w, w["slide"], out)
        argv[argv.index(w["model"])] = model
        return Case(argv, model / "model.json", [w["slide"], model], [out])

    def seg_model_list(w):
        model = _model_json(w, "[1, 2]")
        out = w["tmp"] / "s.zarr"
        argv = _segment(w, w["slide"], out)
        argv[argv.index(w["model"])] = model
        return Case(argv, model / "model.json", [w["slide"], model], [out])

    def pseudo_model(text):
        def case(w):
            run = _model_json(w, text)
            out = w["tmp"] / "masks"
            argv = ["pseudo", "--run", run, "--dataset", w["ds"], "--out", out, "--quiet"]
            return Case(argv, run / "model.json", [run, w["ds"]], [out])

        return case

    def predict_model_list(w):
        model = _model_json(w, '["pbip-segmenter"]')
        out = w["tmp"] / "masks"
        argv = ["predict", "--model", model, "--images", w["ds"] / "val" / "img", "--out", out, "--quiet"]
        return Case(argv, model / "model.json", [model, w["ds"]], [out])

    def segmenter_model_keys(w):
        model = _model_json(w, json.dumps({"kind": "pbip-segmenter", "classes": ["a"]}), "seg")
        out = w["tmp"] / "s.zarr"
        argv = _segment(w, w["slide"], out)
        argv[argv.index(w["model"])] = model
        return Case(argv, model / "model.json", [w["slide"], model], [out])

    def bank_info_key(w):
        bank = _bank_without(w, "encoder")
        return Case(["bank", "info", bank], "'encoder'", [bank])

    def train_bank_key(w):
        bank = _bank_without(w, "classes")
        out = w["tmp"] / "run"
        return Case(_train(w, out), "'classes'", [bank, w["ds"]], [out])

    def seg_zarr_not_json(w):
        slide = _zarr_slide(w, "{broken")
        out = w["tmp"] / "s.zarr"
        return Case(_segment(w, slide, out), slide, [slide, w["model"]], [out])

    def seg_zarr_no_arrays(w):
        slide = _zarr_slide(w, _NGFF_WITHOUT_ARRAYS)
        out = w["tmp"] / "s.zarr"
        return Case(_segment(w, slide, out), slide, [slide, w["model"]], [out])

    def seg_out_malformed_zarr(w):
        out = w["tmp"] / "s.zarr"  # a damaged earlier output: it must be refused, not resumed or deleted
        out.mkdir()
        (out / "zarr.json").write_text("{broken")
        (out / ".pbip-output.json").write_text(json.dumps({"kind": "segment"}))
        return Case(_segment(w, w["slide"], out), out, [w["slide"], w["model"], out])

    def seg_16bit(w):
        slide = _tiff16(w)
        out = w["tmp"] / "s16.zarr"
        return Case(_segment(w, slide, out), slide, [slide, w["model"]], [out])

    def seg_geojson_in_file(w):
        out, geo = w["tmp"] / "s.zarr", w["file"] / "s.geojson"
        return Case(
            _segment(w, w["slide"], out, "--geojson", geo), geo, [w["slide"], w["model"], w["file"]], [out]
        )

    def seg_out_in_file(w):
        out = w["file"] / "s.zarr"
        return Case(_segment(w, w["slide"], out), w["file"], [w["slide"], w["model"], w["file"]])

    def _cohort(w, out, *slides) -> list:
        slides = slides or (w["slide"], shutil.copy(w["slide"], w["tmp"] / "slide2.tif"))
        return ["segment", *slides, "--model", w["model"], "--out", out, "--chunk", "256", "--json"]

    def _slide_folder(w) -> Path:
        folder = w["tmp"] / "slides"
        folder.mkdir()
        shutil.copy(w["slide"], folder / "case-01.tif")
        return folder

    def cohort_out_not_output(w):
        out = w["tmp"] / "results"  # someone's folder: neither written into nor deleted
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
        return Case(_cohort(w, out), out, [w["slide"], w["model"], out])

    def cohort_out_not_output_overwrite(w):
        case = cohort_out_not_output(w)
        return Case([*case.argv, "--overwrite"], case.bad, case.inputs)

    def cohort_out_a_file(w):
        return Case(_cohort(w, w["file"]), w["file"], [w["slide"], w["model"], w["file"]])

    def cohort_out_read_only(w):
        out = w["ro"] / "cohort"
        return Case(_cohort(w, out), w["ro"], [w["slide"], w["model"], w["ro"]], [out])

    def cohort_out_inside_slide_folder(w):
        folder = _slide_folder(w)
        out = folder / "seg"
        return Case(_cohort(w, out, folder), folder, [folder, w["model"]], [out])

    def cohort_folder_without_slides(w):
        folder = w["tmp"] / "empty-slides"
        folder.mkdir()
        (folder / "notes.txt").write_text("no slides here\n")
        out = w["tmp"] / "cohort"
        return Case(_cohort(w, out, folder), folder, [folder, w["model"]], [out])

    def cohort_pattern_without_match(w):
        out = w["tmp"] / "cohort"
        pattern = w["tmp"] / "*.ndpi"
        return Case(_cohort(w, out, pattern), pattern, [w["slide"], w["model"]], [out])

    def cohort_geojson(w):
        out, geo = w["tmp"] / "cohort", w["tmp"] / "all.geojson"
        return Case([*_cohort(w, out), "--geojson", geo], "--geojson", [w["slide"], w["model"]], [out, geo])

    return {
        "segment cohort: --out an existing folder that is not a cohort output": cohort_out_not_output,
        "segment cohort: --overwrite of a folder that is not a cohort output": cohort_out_not_output_overwrite,
        "segment cohort: --out a regular file": cohort_out_a_file,
        "segment cohort: read-only --out": cohort_out_read_only,
        "segment cohort: --out inside the folder of slides": cohort_out_inside_slide_folder,
        "segment cohort: a folder without slides": cohort_folder_without_slides,
        "segment cohort: a pattern without a match": cohort_pattern_without_match,
        "segment cohort: --geojson (one file) with several slides": cohort_geojson,
        "segment: read-only --out": seg_ro,
        "bank build: read-only --out": build_ro,
        "data synth: read-only --out": synth_ro,
        "train: read-only --out": train_ro,
        "train: --out a regular file": train_file,
        "train --resume: --out a regular file": train_resume_file,
        "train: --out inside a regular file": train_inside_file,
        "segment: model.json not JSON": seg_model_not_json,
        "segment: model.json a JSON list": seg_model_list,
        "segment: segmenter model.json without its keys": segmenter_model_keys,
        "pseudo: model.json not JSON": pseudo_model("{not json"),
        "pseudo: model.json a JSON list": pseudo_model("[1, 2]"),
        "predict: model.json a JSON list": predict_model_list,
        "bank info: bank.json missing a key": bank_info_key,
        "train: bank.json missing a key": train_bank_key,
        "segment: zarr slide whose zarr.json is not JSON": seg_zarr_not_json,
        "segment: OME-Zarr slide without its arrays": seg_zarr_no_arrays,
        "segment: --out a damaged zarr store": seg_out_malformed_zarr,
        "segment: 16-bit TIFF slide": seg_16bit,
        "segment: --geojson inside a regular file": seg_geojson_in_file,
        "segment: --out inside a regular file": seg_out_in_file,
    }


CASES = _cases()


def _digest(paths: list[Path]) -> dict[str, str]:
    """SHA-256 of every file under each path, and the names of folders (an added empty folder counts)."""
    out = {}
    for top in paths:
        for p in [top, *sorted(top.rglob("*"))] if top.is_dir() else [top]:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_input_is_one_line_and_changes_nothing(name, w, capsys):
    case = CASES[name](w)
    argv = [str(a) for a in case.argv]
    before = _digest(case.inputs)

    code = main(argv)

    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code not in (0, None), f"{name}: exit code {code}"
    assert "Traceback" not in captured.err + captured.out
    assert len(lines) == 1, f"{name}: stderr has {len(lines)} lines:\n{captured.err}"
    assert lines[0].startswith(f"pbip {argv[0]}: error: ")
    assert str(case.bad) in lines[0], f"{name}: {case.bad} not named in: {lines[0]}"
    assert _digest(case.inputs) == before, f"{name}: an input changed"
    for path in case.absent:
        assert not path.exists(), f"{name}: {path} was left behind"


def test_an_unexpected_error_is_one_line_and_the_traceback_is_for_developers(monkeypatch, capsys):
    from napari_pbip.cli import models

    def boom(args):
        raise RuntimeError("first line\nsecond line")

    monkeypatch.setattr(models, "run", boom)  # register() hands the parser models.run each time
    monkeypatch.delenv("PBIP_DEBUG", raising=False)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("pbip models: error: RuntimeError: first line second line")
    assert "--debug" in err  # says how to see more

    assert main(["--debug", "models"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("pbip models: error: ")
    monkeypatch.setenv("PBIP_DEBUG", "1")
    assert main(["models"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_ctrl_c_is_one_line_and_exit_code_130(monkeypatch, capsys):
    from napari_pbip.cli import models

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "run", interrupted)
    assert main(["models"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and err.startswith("pbip models: interrupted")
