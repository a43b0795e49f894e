"""Stage-1 training throughput: images/s of PBIP (ClassNet + FG/BG encoder passes) vs the plain-CAM baseline.

Makes its own synthetic data set and image bank in a temporary folder, then times optimizer steps
of the real training loop (data loading, augmentation, forward, FG/BG encoder passes, backward,
AdamW) after warm-up steps. Prints a table and one JSON line.

    python benchmarks/bench_train.py                      # CPU, defaults
    python benchmarks/bench_train.py --threads 1 --steps 8
    python benchmarks/bench_train.py --device cuda --backbone nvidia/mit-b1 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument(
        "--encoder", default="efficientnet_lite0", help="bank encoder (the FG/BG images go through it)"
    )
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument(
        "--match-size", type=int, default=None, help="FG/BG side (default: the TrainSettings default)"
    )
    p.add_argument("--steps", type=int, default=6, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per mode")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return p.parse_args()


def _data(root: Path, n: int, size: int, encoder: str, device: str) -> tuple[Path, Path]:
    from napari_pbip.bank import BankSettings, build_bank
    from napari_pbip.events import run
    from napari_pbip.synthetic.synth import write_synthetic_dataset

    ds = write_synthetic_dataset(root / "synth", n_train=n, n_val=0, n_test=0, size=size)
    bank = root / "bank"
    run(build_bank(BankSettings(encoder=encoder, k=2, per_cluster=8), ds, bank, device=device))
    return ds, bank


def _time_mode(args: argparse.Namespace, ds: Path, bank: Path, baseline: bool, root: Path) -> dict:
    from napari_pbip.data.layouts import open_dataset
    from napari_pbip.stage1 import TrainSettings
    from napari_pbip.stage1.loop import _open_bank, _Trainer

    extra = {} if args.match_size is None else {"match_size": args.match_size}
    s = TrainSettings(
        backbone=args.backbone,
        baseline=baseline,
        batch_size=args.batch_size,
        image_size=args.image_size,
        device=args.device,
        preview_every=0,
        **extra,
    )
    dataset = open_dataset(ds)
    trainer = _Trainer(s, dataset, _open_bank(str(bank), s, dataset), root / ("base" if baseline else "pbip"))
    times = []
    for i in range(args.warmup + args.steps):
        epoch, index = divmod(i, trainer.steps_per_epoch)
        _sync(args.device)
        t0 = time.perf_counter()
        trainer._train_step(epoch, index)
        _sync(args.device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {
        "mode": s.mode,
        "images_per_s": args.batch_size / med,
        "step_s_median": med,
        "step_s_min": min(times),
        "step_s_max": max(times),
        "match_size": s.match_size,
    }


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def main() -> None:
    args = _parse()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="pbip-bench-train-") as tmp:
        root = Path(tmp)
        n = args.batch_size * (args.warmup + args.steps)
        ds, bank = _data(root, n, args.image_size, args.encoder, args.device)
        rows = [_time_mode(args, ds, bank, baseline, root) for baseline in (False, True)]
    print(f"{'mode':<9} {'images/s':>9} {'step s (median)':>16} {'min':>6} {'max':>6}")
    for r in rows:
        print(
            f"{r['mode']:<9} {r['images_per_s']:>9.2f} {r['step_s_median']:>16.3f} "
            f"{r['step_s_min']:>6.3f} {r['step_s_max']:>6.3f}"
        )
    record = {
        "bench": "train",
        "device": args.device,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "load_1min": os.getloadavg()[0],
        "backbone": args.backbone,
        "encoder": args.encoder,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "steps": args.steps,
        "results": rows,
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
