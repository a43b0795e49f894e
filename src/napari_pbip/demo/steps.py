"""The demo's steps, each a small job over the library functions the CLI also calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.model_meta import read_model_json
from ..events import Job, Preview, Progress
from .pipeline import DemoSettings


def make_data(out: Path, s: DemoSettings) -> Job[Path]:
    """The synthetic patch data set (train with image labels, val/test with exact masks)."""
    from ..synthetic.synth import synthetic_dataset_job

    return (
        yield from synthetic_dataset_job(
            out / "data", seed=s.seed, n_train=s.n_train, n_val=s.n_val, n_test=s.n_test, size=s.patch
        )
    )


def make_bank(out: Path, data: Path, s: DemoSettings) -> Job[Any]:
    """The prototype bank with the offline EfficientNet-Lite0 encoder."""
    from ..bank import BankSettings, build_bank

    settings = BankSettings(k=s.bank_k, per_cluster=s.bank_per_cluster, seed=s.seed)
    return (yield from build_bank(settings, data, out / "bank", device=s.device))


def bank_summary(bank: Any) -> dict[str, Any]:
    """Members per class and sub-cluster, prototype shape, prototype similarities."""
    from ..bank import bank_info

    info = bank_info(bank)
    return {k: info[k] for k in ("classes", "prototype_shape", "similarity") if k in info}


def train_stage1(out: Path, data: Path, bank: Any, s: DemoSettings, variant: str) -> Job[Any]:
    """Stage 1: PBIP (ClassNet + ImgMatchNet) or the plain-CAM baseline, same backbone and epochs."""
    from ..stage1 import TrainSettings, train

    settings = TrainSettings(
        baseline=variant == "baseline",
        epochs=s.epochs,
        seed=s.seed,
        device=s.device,
        image_size=s.patch,
        preview_every=10,
    )
    job = train(settings, data, None if variant == "baseline" else bank, out / f"run-{variant}")
    last_preview = None
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            result = stop.value
            break
        if isinstance(event.payload, Preview):
            last_preview = event.payload.maps
        yield event
    if last_preview is not None:
        save_preview(out / f"run-{variant}" / "preview.npz", last_preview)
    return result


def save_preview(path: Path, preview: dict[str, Any]) -> None:
    """Keep the last training preview (images, CAMs, FG/BG maps, masks) for the report."""
    from .. import _atomic

    arrays = {
        k: np.asarray(v) for k, v in preview.items() if isinstance(v, np.ndarray) or hasattr(v, "numpy")
    }
    arrays["classes"] = np.asarray(preview["classes"])
    arrays["palette"] = np.asarray(preview["palette"], np.uint8)
    with _atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def train_summary(result: Any) -> dict[str, Any]:
    """Steps, stop reason, best val metrics and the last logged losses of a stage-1 run."""
    log = [json.loads(line) for line in (Path(result.out) / "log.jsonl").read_text().splitlines() if line]
    steps = [r for r in log if "loss" in r]
    last = steps[-1] if steps else {}
    return {
        "run": str(result.out),
        "steps": result.step,
        "stopped": result.stopped,
        "best_val": result.best,
        "last_losses": {k: last[k] for k in ("loss", "cls", "fg", "bg") if k in last},
    }


def predict_val(out: Path, run: Any, data: Path, s: DemoSettings, variant: str) -> Job[Path]:
    """Masks for the val images without their labels (no oracle): what a user gets on new images.

    One pass per image, not ``pbip predict``'s default 8 (test-time augmentation): on the 40 val
    images of one variant the 8 passes took 79-95 s against 10-19 s on the 2-core development
    machine under load, which would push the demo past its 10-minute budget.
    """
    from ..stage1.predict import CamSettings, predict_folder

    val, pred = data / "val" / "img", out / f"val-pred-{variant}"
    return (yield from predict_folder(run.out, val, pred, CamSettings(tta=False), device=s.device))


def evaluate_val(data: Path, pred: Path) -> dict[str, Any]:
    """mIoU, FwIoU, bIoU and Dice of predicted val masks."""
    from ..evaluate import evaluate_folder

    r = evaluate_folder(data, "val", pred)
    return {k: r[k] for k in ("miou", "fwiou", "mean_biou", "mean_dice", "per_class")}


def pseudo_masks(out: Path, data: Path, s: DemoSettings) -> Job[Path]:
    """Pseudo-masks of the training patches from the PBIP run, gated by their image labels.

    One pass per image, not ``pbip pseudo``'s default 8 (test-time augmentation), to keep the
    demo within its 10-minute budget (see :func:`predict_val`); the demo's figures are one-pass.
    """
    from ..stage1.predict import CamSettings, make_pseudo_masks

    return (
        yield from make_pseudo_masks(
            out / "run-pbip", data, out / "pseudo-masks", settings=CamSettings(tta=False), device=s.device
        )
    )


def pseudo_val(out: Path, run: Any, data: Path, s: DemoSettings, variant: str) -> Job[Path]:
    """Pseudo-masks of the val patches, made exactly as the training ones (gated by image labels,
    here the classes present in each val mask), so their quality can be scored: train has no masks."""
    from ..stage1.predict import CamSettings, make_pseudo_masks

    return (
        yield from make_pseudo_masks(
            run.out,
            data,
            out / f"val-pseudo-{variant}",
            split="val",
            settings=CamSettings(tta=False),
            device=s.device,
            labels_from_masks=True,
        )
    )


def train_stage2(out: Path, data: Path, masks: Path, s: DemoSettings) -> Job[Path]:
    """Stage 2: the offline default segmenter trained on the pseudo-masks."""
    from ..stage2.seg_settings import SegSettings
    from ..stage2.seg_train import train_segmenter

    settings = SegSettings(epochs=s.seg_epochs, seed=s.seed, device=s.device)
    result = yield from train_segmenter(settings, data, masks, out / "seg")
    return Path(getattr(result, "out", out / "seg"))


def seg_summary(seg: Path) -> dict[str, Any]:
    """The stage-2 model's saved description."""
    meta = read_model_json(seg)
    return {k: meta[k] for k in ("segmenter", "classes", "step", "best") if k in meta}


def make_slide(out: Path, s: DemoSettings) -> Job[Any]:
    """A synthetic pyramidal slide with ground truth."""
    from ..synthetic.synth_slide import synthetic_slide_job

    return (yield from synthetic_slide_job(out / "slide.tif", size=s.slide_size, seed=s.seed))


def segment(out: Path, slide: Any, model: Path, name: str, s: DemoSettings) -> Job[Any]:
    """Whole-slide segmentation into OME-Zarr."""
    from ..slides.segment import SegmentSettings, segment_slide

    # Synthetic patches and the synthetic slide are both drawn at 0.5 um/px (data.synth_slide default).
    settings = SegmentSettings(device=s.device)  # at the models' recorded 0.5 um/px
    return (yield from segment_slide(slide.slide, model, out / f"slide-{name}.zarr", settings))


def evaluate_slide(slide: Any, result: Any) -> dict[str, Any]:
    """Slide metrics against the synthetic ground truth, at the segmentation's resolution, with the
    confusion matrix (rows: true class; columns: predicted class, then background) for the report."""
    import tifffile

    from ..export import open_labels
    from ..export.label_values import BACKGROUND_VALUE, to_values
    from ..metrics import MetricAccumulator

    pred = np.asarray(open_labels(result.out).levels[0])
    truth = tifffile.imread(slide.labels)
    if truth.shape != pred.shape:  # nearest-neighbour resample of the truth to the prediction grid
        ys = (np.arange(pred.shape[0]) * truth.shape[0] / pred.shape[0]).astype(int)
        xs = (np.arange(pred.shape[1]) * truth.shape[1] / pred.shape[1]).astype(int)
        truth = truth[ys][:, xs]
    truth = to_values(truth, len(slide.classes), slide.background_index)  # as the output: 0 background
    acc = MetricAccumulator(len(slide.classes), BACKGROUND_VALUE, list(slide.classes))
    acc.update(truth, pred)
    r = acc.result()
    keep = ("miou", "fwiou", "mean_biou", "mean_dice", "pixel_accuracy", "per_class", "confusion")
    return {
        **{k: r[k] for k in keep},
        "tiles_per_s": _tiles_per_s(result),
        "seconds": result.seconds,
    }


def _tiles_per_s(result: Any) -> float | None:
    run = result.tiles.get("run") if isinstance(result.tiles, dict) else None
    secs = result.seconds.get("total") if isinstance(result.seconds, dict) else None
    return round(run / secs, 1) if run and secs else None


def exports(out: Path, slide: Any, s: DemoSettings) -> Job[None]:
    """GeoJSON (QuPath) and the per-class area table of the stage-2 slide segmentation."""
    from ..export import export_areas, export_geojson

    labels = out / "slide-stage2.zarr"
    yield Progress("exports", 0, 2, "GeoJSON")
    export_geojson(labels, out / "slide-stage2.geojson")
    yield Progress("exports", 1, 2, "area table")
    export_areas(labels, out / "slide-stage2-areas.csv")
    yield Progress("exports", 2, 2, "done")
