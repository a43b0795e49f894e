"""`pbip demo` end to end on a small configuration: every output is there, and the same seed gives
the same numbers (the full default run is timed by hand, see docs/index.md)."""

from __future__ import annotations

import json

import pytest

from napari_pbip.demo import DemoSettings, run_demo
from napari_pbip.demo.report import bank_table, rebuild_report, summary_table, training_table
from napari_pbip.errors import OutputExistsError
from napari_pbip.events import run

SMALL = DemoSettings(
    n_train=24,
    n_val=8,
    n_test=0,
    patch=128,
    bank_k=2,
    bank_per_cluster=3,
    epochs=1,
    seg_epochs=1,
    slide_size=1024,
)
METRICS = ("miou", "fwiou", "mean_biou", "mean_dice")
RESULTS = (
    "pseudo_val_pbip",
    "pseudo_val_baseline",
    "val_pbip",
    "val_baseline",
    "slide_stage2",
    "slide_stage1-pbip",
    "slide_stage1-baseline",
)


@pytest.fixture(scope="module")
def demo_twice(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return [run(run_demo(root / name, SMALL)) for name in ("a", "b")]


@pytest.mark.slow
def test_demo_writes_every_output_and_scores_each_stage(demo_twice):
    result = demo_twice[0]
    out = result.out
    for name in (
        "report.md",
        "report-losses.png",
        "report-preview-pbip.png",
        "report-slide-stage2.png",
        "slide-stage2.geojson",
        "slide-stage2-areas.csv",
        "slide-stage2.zarr/zarr.json",
        "seg/model.json",
        "run-pbip/model.json",
        "bank",
    ):
        assert (out / name).exists(), name
    for key in RESULTS:
        for m in METRICS:
            assert 0.0 <= result.summary[key][m] <= 1.0, (key, m)
    assert json.loads((out / "summary.json").read_text())["seconds_total"] > 0
    # the models record the resolution of the synthetic patches, so the slide needs no --mpp
    assert json.loads((out / "seg" / "model.json").read_text())["mpp"] == 0.5
    for masks in ("pseudo-masks", "val-pseudo-pbip"):  # one pass each: the demo's 10-minute budget
        assert json.loads((out / masks / "cam_settings.json").read_text())["tta"] is False, masks
    table = summary_table(result.summary)
    assert "pseudo-masks (val, image labels given), PBIP" in table and "slide, stage 2" in table
    assert "stage 1 pbip" in training_table(result.summary)
    assert "| tumor |" in bank_table(result.summary)


@pytest.mark.slow
def test_report_speaks_to_a_pathologist_first(demo_twice):
    out = demo_twice[0].out
    text = (out / "report.md").read_text()
    assert "research use only, not for diagnosis" in text.lower()
    # what was segmented: the slide's resolution and size, and the model
    assert "0.5 um/px" in text and "1024 x 1024 px = 0.51 x 0.51 mm" in text
    assert "lite0-seg" in text
    # per-class agreement with the ground truth, by class name, as recorded in the summary
    slide = demo_twice[0].summary["slide_stage2"]
    assert "| class | IoU (%) | Dice (%) |" in text
    for cls, m in slide["per_class"].items():
        iou = "-" if m["iou"] is None else f"{100 * m['iou']:.1f}"
        assert f"| {cls} | {iou} |" in text, cls
    assert "area (mm²)" in text and "% of tissue" in text
    # the pictures: slide with legend and scale bar, a confusion matrix, referenced from the page
    assert (out / "report-confusion-stage2.png").is_file()
    assert "](report-confusion-stage2.png)" in text and "](report-slide-stage2.png)" in text
    # the pathologist's part comes first, the developer's (losses, timings, CAM grids) last
    developer = text.index("# For developers")
    for part in ("## What was segmented", "report-slide-stage2.png", "## Tissue areas", "confusion-stage2"):
        assert text.index(part) < developer, part
    for part in ("report-losses.png", "report-preview-pbip.png", "## Time per step"):
        assert text.index(part) > developer, part
    # the page can be written again from the folder alone, identically
    assert rebuild_report(out).read_text() == text


@pytest.mark.slow
def test_same_seed_gives_the_same_numbers(demo_twice):
    a, b = (r.summary for r in demo_twice)
    for key in RESULTS:
        assert [a[key][m] for m in METRICS] == [b[key][m] for m in METRICS], key
    assert a["train_pbip"]["last_losses"] == b["train_pbip"]["last_losses"]
    assert a["bank"] == b["bank"]


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("user data")
    with pytest.raises(OutputExistsError):
        run(run_demo(tmp_path / "out", SMALL))
    assert (tmp_path / "out" / "mine.txt").read_text() == "user data"
