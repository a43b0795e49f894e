"""``pbip demo``: synthetic data -> bank -> stage 1 (PBIP and plain-CAM baseline) -> pseudo-masks
-> stage 2 -> whole-slide segmentation -> exports -> report, offline and deterministic.

The budget is set in epochs, not minutes, so the same seed gives the same numbers; the defaults
fit in about ten minutes on a 2-core CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _atomic
from ..events import Job, Progress
from ..settings import Settings, check

OUTPUT_KIND = "demo"  # the command named in the demo folder's output marker


@dataclass(frozen=True)
class DemoSettings(Settings):
    """Settings of the demo run (all stages use their own defaults otherwise).

    Attributes:
        seed: seeds data synthesis, K-Means and training.
        n_train / n_val / n_test: synthetic patches per split.
        patch: side of the synthetic patches in pixels.
        bank_k / bank_per_cluster: sub-clusters per class and images kept per sub-cluster.
        epochs: stage-1 epochs (PBIP and baseline alike).
        seg_epochs: stage-2 epochs.
        slide_size: side of the synthetic slide in pixels.
        device: torch device ("auto": CUDA when present).
    """

    seed: int = 0
    n_train: int = 300
    n_val: int = 40
    n_test: int = 40
    patch: int = 224
    bank_k: int = 3
    bank_per_cluster: int = 20
    epochs: int = 3
    seg_epochs: int = 3
    slide_size: int = 4096
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("n_train", "n_val", "epochs", "seg_epochs", "bank_k", "bank_per_cluster"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "an integer >= 1")
        check(self.n_test >= 0, "n_test", self.n_test, "an integer >= 0")
        check(64 <= self.patch <= 1024, "patch", self.patch, "a patch side between 64 and 1024 px")
        check(self.slide_size >= 1024, "slide_size", self.slide_size, "a slide side of at least 1024 px")


@dataclass
class DemoResult:
    """Where the demo wrote everything, and its numbers."""

    out: Path
    summary: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None


def run_demo(
    out: str | Path, settings: DemoSettings | None = None, overwrite: bool = False
) -> Job[DemoResult]:
    """The whole pipeline as one job (iterate it, or drain it with ``events.run``).

    Args:
        out: output folder; it holds data, bank, runs, masks, the slide, its segmentation,
            exports, ``summary.json`` and ``report.md``.
        settings: :class:`DemoSettings`.
        overwrite: replace an existing ``out`` that a previous demo wrote.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is false, or it is not a previous demo
            output (a folder the demo did not write is never emptied).
    """
    s = settings or DemoSettings()
    out = Path(out)
    _atomic.check_output(out, OUTPUT_KIND, overwrite=overwrite)
    _atomic.clear_output(out, OUTPUT_KIND)  # a previous demo's folder (the check above allows no other)
    out.mkdir(parents=True)
    _atomic.mark_output(out, OUTPUT_KIND)
    s.save(out / "demo_settings.json")
    timings: dict[str, float] = {}
    summary: dict[str, Any] = {"settings": s.to_dict(), "seconds": timings}

    def timed(name: str, job: Job) -> Job:
        t0 = time.perf_counter()
        yield Progress("demo", message=f"{name} ...")
        result = yield from job
        timings[name] = round(time.perf_counter() - t0, 1)
        return result

    from . import steps

    data = yield from timed("data", steps.make_data(out, s))
    bank = yield from timed("bank", steps.make_bank(out, data, s))
    summary["bank"] = steps.bank_summary(bank)
    for variant in ("pbip", "baseline"):
        run = yield from timed(f"train-{variant}", steps.train_stage1(out, data, bank, s, variant))
        summary[f"train_{variant}"] = steps.train_summary(run)
        pseudo = yield from timed(f"pseudo-val-{variant}", steps.pseudo_val(out, run, data, s, variant))
        summary[f"pseudo_val_{variant}"] = steps.evaluate_val(data, pseudo)
        pred = yield from timed(f"predict-{variant}", steps.predict_val(out, run, data, s, variant))
        summary[f"val_{variant}"] = steps.evaluate_val(data, pred)
    masks = yield from timed("pseudo", steps.pseudo_masks(out, data, s))
    seg = yield from timed("train-seg", steps.train_stage2(out, data, masks, s))
    summary["train_seg"] = steps.seg_summary(seg)
    slide = yield from timed("slide", steps.make_slide(out, s))
    for model, name in (
        (seg, "stage2"),
        (out / "run-pbip", "stage1-pbip"),
        (out / "run-baseline", "stage1-baseline"),
    ):
        result = yield from timed(f"segment-{name}", steps.segment(out, slide, model, name, s))
        summary[f"slide_{name}"] = steps.evaluate_slide(slide, result)
    yield from timed("exports", steps.exports(out, slide, s))
    summary["seconds_total"] = round(sum(timings.values()), 1)
    _atomic.write_json(out / "summary.json", summary)
    from .report import write_report

    report = write_report(out, summary)
    yield Progress("demo", 1, 1, f"report written to {report}")
    return DemoResult(out, summary, report)
