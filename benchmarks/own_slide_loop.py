"""A pathologist's loop on synthetic slides: rough class regions on slide A -> a segmenter -> slide B scored.

Two synthetic slides with ground truth are written (``write_synthetic_slide``, seeds
``--slide-seeds A B``, ``--size`` px at 0.5 um/px). Per ``--seeds`` value:

1. rough polygons are drawn on slide A as a pathologist would: for each class a few irregular blobs
   (7-11 vertices, radius 160-400 um), each centred where A's ground truth holds that class at
   least 160 um from its border (its outline may cross the border a little), not overlapping each
   other, until the polygons cover ``--coverage`` of A's tissue (a quarter of it per class);
   written as a QuPath-style GeoJSON file (``objectType: annotation``, ``classification.name``,
   level-0 pixels). The placement is random (the seed), the slides are the same for every seed;
2. ``training_data_from_slides`` (what ``pbip data from-slides`` runs), project defaults: 224 px
   tiles at 1.0 um/px, labels from regions covering >= 5% of a tile, tiles more than half outside
   the regions dropped;
3. ``build_bank``, stage-1 ``train`` (PBIP), ``make_pseudo_masks`` (``pbip pseudo``),
   ``train_segmenter`` (``pbip train-seg``), ``BankSettings`` / ``TrainSettings`` /
   ``SegSettings`` defaults with the seed, except ``--epochs`` / ``--seg-epochs`` when given;
4. ``segment_slide`` (``pbip segment``) of slide B with the stage-2 segmenter and with the stage-1
   run itself, both scored against B's ground truth at the segmentation's um/px
   (``napari_pbip.metrics`` through the demo's ``evaluate_slide``).

Every step's output is kept in ``--work`` and reused when complete (a step counts as complete once
its time is in ``seed<S>/times.json``; ``seed<S>-epochs<E>-seg<F>`` with ``--epochs`` /
``--seg-epochs``), so a stopped run continues where it was. Prints the
coverage achieved, the tiles per class, each step's wall time, a table of the scores (per seed and
mean) and one JSON line.

    python benchmarks/own_slide_loop.py --work /tmp/own-slide-loop            # seeds 0 and 1
    python benchmarks/own_slide_loop.py --seeds 0 --size 8192 --epochs 1 --seg-epochs 1   # a quick try
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

COARSE = 16  # the ground truth is looked at every COARSE level-0 pixels when regions are placed
R_MIN_UM, R_MAX_UM = 160.0, 400.0  # a blob's radius; its bounding box must hold one 224 um tile


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="own-slide-loop-work", help="folder of every step's outputs (reused)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="region placement and training seeds")
    p.add_argument("--slide-seeds", type=int, nargs=2, default=[1, 2], metavar=("A", "B"))
    p.add_argument("--size", type=int, default=16384, help="slide side in level-0 pixels at 0.5 um/px")
    p.add_argument(
        "--coverage", type=float, default=0.10, help="share of slide A's tissue inside the regions"
    )
    p.add_argument("--epochs", type=int, default=None, help="stage-1 epochs (default: TrainSettings')")
    p.add_argument("--seg-epochs", type=int, default=None, help="stage-2 epochs (default: SegSettings')")
    p.add_argument("--no-stage1-slide", action="store_true", help="do not segment slide B with stage 1")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return p.parse_args()


class _Steps:
    """Runs named steps once, keeping their wall times in ``times.json``."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "times.json"
        self.times: dict[str, float] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def done(self, name: str) -> bool:
        return name in self.times

    def run(self, name: str, job):
        """Drain ``job`` (a generator job, or a plain callable's result) and record its time."""
        from napari_pbip.events import run

        t0 = time.perf_counter()
        last = [t0]

        def show(event) -> None:
            if time.perf_counter() - last[0] > 30:
                last[0] = time.perf_counter()
                print(f"  {name}: {event.stage} {event.step}/{event.total} {event.message}", flush=True)

        print(f"{name} ...", flush=True)
        result = run(job, show)
        self.times[name] = round(time.perf_counter() - t0, 1)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.times, indent=1))
        tmp.replace(self.path)
        print(f"{name}: {self.times[name]} s", flush=True)
        return result


def make_slides(work: Path, size: int, seeds: list[int]) -> list[SimpleNamespace]:
    """Slides A and B with their ground truth (written once, then reused)."""
    from napari_pbip.synthetic.synth_slide import write_synthetic_slide

    slides = []
    for name, seed in zip("AB", seeds, strict=True):
        path = work / f"slide-{name}-{size}-s{seed}.tif"
        labels = path.with_name(f"{path.stem}.labels.tif")
        t0 = time.perf_counter()
        if not (path.is_file() and labels.is_file()):
            print(f"slide {name} ...", flush=True)
            write_synthetic_slide(path, size=size, seed=seed, overwrite=True)
        meta = _labels_meta(labels)
        slides.append(
            SimpleNamespace(
                name=name,
                slide=path,
                labels=labels,
                classes=tuple(meta["classes"]),
                background_index=int(meta["background_index"]),
                mpp=float(meta["mpp"]),
                seconds=round(time.perf_counter() - t0, 1),
            )
        )
    return slides


def _labels_meta(labels: Path) -> dict:
    import tifffile

    with tifffile.TiffFile(labels) as tif:
        return json.loads(tif.pages[0].description)


def _coarse_truth(slide: SimpleNamespace) -> np.ndarray:
    import tifffile

    truth = tifffile.imread(slide.labels)
    return np.ascontiguousarray(truth[COARSE // 2 :: COARSE, COARSE // 2 :: COARSE])


def _blob(rng: np.random.Generator, cy: float, cx: float, radius: float) -> list[tuple[float, float]]:
    """An irregular closed polygon (x, y) around (cy, cx): a hand-drawn outline, not a circle."""
    n = int(rng.integers(7, 12))
    angles = np.sort((np.arange(n) + rng.uniform(-0.3, 0.3, n)) * 2 * np.pi / n)
    radii = radius * rng.uniform(0.8, 1.1, n)
    ring = [
        (float(cx + r * np.cos(a)), float(cy + r * np.sin(a))) for a, r in zip(angles, radii, strict=True)
    ]
    return ring + ring[:1]


def _raster(ring: list[tuple[float, float]], shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon(
        [((x - COARSE / 2) / COARSE, (y - COARSE / 2) / COARSE) for x, y in ring], fill=1
    )
    return np.asarray(canvas, bool)


def draw_regions(slide: SimpleNamespace, coverage: float, seed: int, out: Path) -> dict:
    """Rough class polygons over ``coverage`` of the slide's tissue, as a QuPath GeoJSON at ``out``."""
    from scipy import ndimage

    from napari_pbip.synthetic.render import STYLE_COLORS

    truth = _coarse_truth(slide)
    tissue = truth != slide.background_index
    rng = np.random.default_rng(seed)
    drawn = np.zeros_like(tissue)
    um = slide.mpp * COARSE  # um per coarse pixel
    per_class = coverage * tissue.sum() / len(slide.classes)
    features, stats = [], {}
    for c, name in enumerate(slide.classes):
        got, pure, n = 0, 0, 0
        while got < per_class:
            room = ndimage.distance_transform_edt((truth == c) & ~drawn) * um
            ys, xs = np.nonzero(room >= R_MIN_UM)
            if not len(ys):
                break
            i = int(rng.integers(len(ys)))
            # a hand-drawn outline may cross the class border a little (up to 1.2x the room there),
            # and the last blob of a class is no larger than the area still wanted
            wanted = np.sqrt((per_class - got) / np.pi) * um
            top = max(R_MIN_UM, min(1.2 * room[ys[i], xs[i]], R_MAX_UM, wanted))
            radius = rng.uniform(R_MIN_UM, top) / slide.mpp  # level-0 px
            centre = ((ys[i] + 0.5) * COARSE, (xs[i] + 0.5) * COARSE)
            ring = _blob(rng, *centre, radius)
            inside = _raster(ring, truth.shape) & ~drawn
            drawn |= inside
            got += int((inside & tissue).sum())
            pure += int((inside & (truth == c)).sum())
            n += 1
            features.append(
                {
                    "type": "Feature",
                    "id": f"{name}-{n}",
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [[[round(x, 1), round(y, 1)] for x, y in ring]],
                    },
                    "properties": {
                        "objectType": "annotation",
                        "classification": {"name": name, "color": list(STYLE_COLORS.get(name, (0, 0, 0)))},
                    },
                }
            )
        stats[name] = {
            "polygons": n,
            "tissue_pct": round(100 * got / tissue.sum(), 2),
            "purity_pct": round(100 * pure / max(got, 1), 1),
        }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    tmp.replace(out)
    return {
        "coverage_pct": round(100 * (drawn & tissue).sum() / tissue.sum(), 2),
        "polygons": len(features),
        "per_class": stats,
    }


def score(slide: SimpleNamespace, result) -> dict:
    """mIoU and per-class IoU of a slide segmentation against the slide's ground truth."""
    from napari_pbip.demo.steps import evaluate_slide

    assert tuple(result.classes) == slide.classes, (result.classes, slide.classes)
    r = evaluate_slide(slide, result)
    return {
        "miou": r["miou"],
        "fwiou": r["fwiou"],
        "pixel_accuracy": r["pixel_accuracy"],
        "per_class_iou": {k: v["iou"] for k, v in r["per_class"].items()},
        "mpp": result.mpp,
    }


def one_seed(args: argparse.Namespace, work: Path, slide_a, slide_b, seed: int) -> dict:
    """The whole loop for one seed; returns its record."""
    from napari_pbip.bank import BankSettings, build_bank
    from napari_pbip.slides.annotations import load_regions
    from napari_pbip.slides.segment import SegmentSettings, segment_slide
    from napari_pbip.slides.training_data import (
        FromSlidesSettings,
        spec_for_classes,
        training_data_from_slides,
    )
    from napari_pbip.stage1 import TrainSettings, train
    from napari_pbip.stage1.predict import make_pseudo_masks
    from napari_pbip.stage2.seg_settings import SegSettings
    from napari_pbip.stage2.seg_train import train_segmenter

    folder = _seed_folder(work, args, seed)
    steps = _Steps(folder)
    geojson = folder / "A.geojson"
    regions_json = folder / "regions.json"
    if not steps.done("regions"):
        t0 = time.perf_counter()
        _write(regions_json, draw_regions(slide_a, args.coverage, seed, geojson))
        steps.times["regions"] = round(time.perf_counter() - t0, 1)
    regions = json.loads(regions_json.read_text())
    redo = {"overwrite": True}  # a step not in times.json was interrupted: replace its partial output

    data = folder / "data"
    if not steps.done("from-slides"):
        spec = spec_for_classes(slide_a.classes)
        items = [load_regions(slide_a.slide, geojson, spec.classes)]
        steps.run("from-slides", training_data_from_slides(items, data, spec, FromSlidesSettings(), **redo))
    tiles = json.loads((data / "summary.json").read_text())

    bank = folder / "bank"
    if not steps.done("bank"):
        steps.run("bank", build_bank(BankSettings(seed=seed), data, bank, device=args.device, **redo))

    run = folder / "stage1"
    extra = {} if args.epochs is None else {"epochs": args.epochs}
    if not steps.done("stage1"):
        settings = TrainSettings(seed=seed, device=args.device, preview_every=0, **extra)
        steps.run("stage1", train(settings, data, bank, run, **redo))

    masks = folder / "pseudo"
    if not steps.done("pseudo"):
        steps.run("pseudo", make_pseudo_masks(run, data, masks, device=args.device, **redo))

    seg = folder / "seg"
    seg_extra = {} if args.seg_epochs is None else {"epochs": args.seg_epochs}
    if not steps.done("stage2"):
        steps.run(
            "stage2",
            train_segmenter(
                SegSettings(seed=seed, device=args.device, **seg_extra), data, masks, seg, **redo
            ),
        )

    scores = {}
    models = [("stage2", seg)] + ([] if args.no_stage1_slide else [("stage1", run)])
    for name, model in models:
        # an unfinished segmentation is resumed, a finished one read back without work
        job = segment_slide(
            slide_b.slide,
            model,
            folder / f"B-{name}.zarr",
            SegmentSettings(device=args.device),
            reuse_finished=True,
        )
        step = f"segment-B-{name}"
        result = steps.run(step, job) if not steps.done(step) else _drain(job)
        scores[name] = score(slide_b, result)
    return {
        "seed": seed,
        "regions": regions,
        "tiles": tiles["tiles"],
        "class_tiles": tiles["class_counts"],
        "single_class_tiles": tiles["single_class_counts"],
        "dropped": tiles["dropped"],
        "seconds": steps.times,
        "scores": scores,
        "settings": {"stage1_epochs": args.epochs, "stage2_epochs": args.seg_epochs},
    }


def _seed_folder(work: Path, args: argparse.Namespace, seed: int) -> Path:
    """One folder per seed and training budget, so runs with other epochs never reuse these outputs."""
    budget = "".join(
        f"-{k}{v}" for k, v in (("epochs", args.epochs), ("seg", args.seg_epochs)) if v is not None
    )
    return work / f"seed{seed}{budget}"


def _drain(job):
    from napari_pbip.events import run

    return run(job)


def _write(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _table(records: list[dict], classes: tuple[str, ...]) -> None:
    print()
    for r in records:
        reg = r["regions"]
        per = ", ".join(
            f"{c} {v['polygons']} ({v['tissue_pct']}%, purity {v['purity_pct']}%)"
            for c, v in reg["per_class"].items()
        )
        print(
            f"seed {r['seed']}: {reg['polygons']} polygons cover {reg['coverage_pct']}% of A's tissue: {per}"
        )
        print(
            f"  {r['tiles']} training tiles; tiles per class {r['class_tiles']}; single-class {r['single_class_tiles']}; dropped {r['dropped']}"
        )
        print("  seconds: " + ", ".join(f"{k} {v}" for k, v in r["seconds"].items()))
    heads = ["seed", "model", "mIoU", "FwIoU", "pix acc"] + list(classes)
    print("\n" + " | ".join(f"{h:>10}" for h in heads))
    models = list(records[0]["scores"])
    for m in models:
        for r in records:
            s = r["scores"][m]
            row = [str(r["seed"]), m, *(f"{100 * s[k]:.1f}" for k in ("miou", "fwiou", "pixel_accuracy"))]
            row += [f"{100 * s['per_class_iou'][c]:.1f}" for c in classes]
            print(" | ".join(f"{v:>10}" for v in row))
        if len(records) > 1:
            mean = [
                statistics.mean(r["scores"][m][k] for r in records)
                for k in ("miou", "fwiou", "pixel_accuracy")
            ]
            per = [statistics.mean(r["scores"][m]["per_class_iou"][c] for r in records) for c in classes]
            print(" | ".join(f"{v:>10}" for v in ["mean", m, *(f"{100 * v:.1f}" for v in mean + per)]))


def main() -> None:
    args = _parse()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    slide_a, slide_b = make_slides(work, args.size, args.slide_seeds)
    records = []
    for seed in args.seeds:
        records.append(one_seed(args, work, slide_a, slide_b, seed))
        _write(_seed_folder(work, args, seed) / "record.json", records[-1])
    _table(records, slide_a.classes)
    print(
        json.dumps(
            {
                "bench": "own_slide_loop",
                "size": args.size,
                "slide_seeds": args.slide_seeds,
                "coverage_target": args.coverage,
                "device": args.device,
                "cpu": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(),
                "load_1min": [load0, os.getloadavg()[0]],
                "seconds_total": round(time.perf_counter() - t0, 1),
                "slides_seconds": [slide_a.seconds, slide_b.seconds],
                "records": records,
            }
        )
    )


if __name__ == "__main__":
    main()
