"""Stage 1 on real H&E: PBIP against the plain-CAM baseline, same backbone, epochs and seeds.

Uses ``../shared/data/wsss4luad-dev`` (WSSS4LUAD, lung adenocarcinoma; not part of the project):

1. ``pbip data weak`` tiles its 31 annotated val images into a weakly labelled training set;
2. one image bank (offline EfficientNet-Lite0 encoder, default settings) from its single-class tiles;
3. for each seed, a PBIP run and a baseline run (``TrainSettings`` defaults plus ``--set`` changes);
4. each run is scored on the 31 val images two ways:

   * **pseudo-masks**: CAMs gated by each image's classes (here the classes present in its mask),
     exactly how training pseudo-masks are made: the paper's measure of CAM quality (its Table 5);
   * **unlabelled masks**: ``pbip predict``, where the classifier also decides which classes are
     present (what a user gets on new images), with the per-class presence thresholds that
     training fits on the training labels (``RUN/presence.json``).

The images scored are those the tiles came from (this folder has no other masked images), so the
figures compare the two methods; they are not a generalisation estimate.

Runs go to ``--work`` and are reused when present (delete the folder to retrain). Runs train in
``--jobs`` worker processes with ``--threads`` torch threads each. Prints a table (mean and sample
standard deviation over seeds, in %) and one JSON line.

    python benchmarks/compare_stage1_real.py --seeds 0 1 2 --jobs 2 --threads 1
    python benchmarks/compare_stage1_real.py --set fg_bg_fill=white --tag white
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "wsss4luad-dev"
METRICS = ("miou", "fwiou", "mean_biou", "mean_dice")


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def prepare(work: Path, dev: Path) -> tuple[Path, Path]:
    """The weak training set and its bank (made once)."""
    from napari_pbip.bank import BankSettings, build_bank
    from napari_pbip.data.weak import weak_dataset
    from napari_pbip.events import run

    weak, bank = work / "weak", work / "bank"
    if not weak.exists():
        summary = run(weak_dataset(dev / "val" / "img", dev / "val" / "mask", weak))
        print(f"weak set: {summary['tiles']} tiles {summary.get('class_counts')}", flush=True)
    if not bank.exists():
        run(build_bank(BankSettings(), weak, bank, device="cpu"))
    return weak, bank


def train_one(work: Path, variant: str, seed: int, changes: dict, tag: str, threads: int) -> Path:
    """Train one run in a fresh process (so ``threads`` holds and runs do not share memory)."""
    out = work / f"{tag}-{variant}-s{seed}"
    if (out / "model.json").is_file():
        return out
    cmd = [sys.executable, __file__, "--train-one", variant, str(seed), str(out), json.dumps(changes)]
    cmd += ["--work", str(work), "--threads", str(threads)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    print(f"trained {out.name} in {time.perf_counter() - t:.0f} s", flush=True)
    return out


def _train_child(variant: str, seed: int, out: Path, changes: dict, work: Path, threads: int) -> None:
    import torch

    from napari_pbip.events import run
    from napari_pbip.training import TrainSettings, train

    torch.set_num_threads(threads)
    s = TrainSettings(device="cpu", seed=seed, baseline=variant == "baseline", preview_every=0, **changes)
    run(train(s, work / "weak", None if variant == "baseline" else work / "bank", out))


def score(run_dir: Path, dev: Path) -> dict:
    """Pseudo-mask and unlabelled-mask scores of one run on the val images."""
    from napari_pbip.cam.calibrate import PRESENCE_FILE, calibrate_presence
    from napari_pbip.cam.predict import make_pseudo_masks, predict_folder
    from napari_pbip.evaluate import evaluate_folder
    from napari_pbip.events import run

    if not (run_dir / PRESENCE_FILE).is_file():  # a run trained before presence calibration existed
        run(calibrate_presence(run_dir, run_dir.parent / "weak", device="cpu"))
    pseudo, pred = run_dir.with_name(run_dir.name + "-pseudo"), run_dir.with_name(run_dir.name + "-pred")
    run(
        make_pseudo_masks(
            run_dir, dev, pseudo, split="val", device="cpu", overwrite=True, labels_from_masks=True
        )
    )
    run(predict_folder(run_dir, dev / "val" / "img", pred, device="cpu", overwrite=True))
    out = {}
    for name, folder in (("pseudo", pseudo), ("unlabelled", pred)):
        e = evaluate_folder(dev, "val", folder)
        out[name] = {m: e[m] for m in METRICS} | {"iou": {c: v["iou"] for c, v in e["per_class"].items()}}
    return out


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dev", type=Path, default=DEV, help="the WSSS4LUAD folder with val/img and val/mask")
    p.add_argument("--work", type=Path, default=Path("/tmp/pbip-compare-stage1"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="TrainSettings changes (both)")
    p.add_argument("--tag", default="default", help="run name prefix, one per --set combination")
    p.add_argument("--jobs", type=int, default=2, help="runs trained at once")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--train-one", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.train_one:
        variant, seed, out, changes = args.train_one
        _train_child(variant, int(seed), Path(out), json.loads(changes), args.work, args.threads)
        return 0
    if not (args.dev / "val" / "mask").is_dir():
        print(f"skipped: {args.dev} is absent (it lives in ../shared/data beside the development checkout)")
        return 0
    changes = {k: _value(v) for k, v in (item.split("=", 1) for item in args.set)}
    args.work.mkdir(parents=True, exist_ok=True)
    prepare(args.work, args.dev)
    jobs = [(v, seed) for seed in args.seeds for v in ("pbip", "baseline")]
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(
            pool.map(lambda j: train_one(args.work, j[0], j[1], changes, args.tag, args.threads), jobs)
        )
    scores = {f"{v}-s{seed}": score(r, args.dev) for (v, seed), r in zip(jobs, runs, strict=True)}

    rows = []
    print(
        f"\nWSSS4LUAD dev val (31 images), seeds {args.seeds}, settings changes {changes or 'none'}; % mean ± sd"
    )
    print(f"{'measure':<12}{'method':<10}" + "".join(f"{m:>16}" for m in METRICS))
    for kind in ("pseudo", "unlabelled"):
        for v in ("pbip", "baseline"):
            per_seed = [scores[f"{v}-s{s}"][kind] for s in args.seeds]
            row = {"measure": kind, "method": v}
            cells = ""
            for m in METRICS:
                mean, sd = _stats([100 * r[m] for r in per_seed])
                row[m] = {"mean": round(mean, 2), "sd": round(sd, 2)}
                cells += f"{f'{mean:.1f} ± {sd:.1f}':>16}"
            row["per_class_iou"] = {
                c: round(100 * statistics.mean(r["iou"][c] for r in per_seed), 1) for c in per_seed[0]["iou"]
            }
            rows.append(row)
            print(f"{kind:<12}{v:<10}{cells}   IoU per class {row['per_class_iou']}")
    print(json.dumps({"dev": str(args.dev), "seeds": args.seeds, "changes": changes, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
