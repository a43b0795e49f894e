"""Benchmark the image bank: feature extraction (images/s) and spherical K-Means on 20,000 x 1280 features.

Usage::

    python benchmarks/bench_bank.py                        # both, CPU or CUDA (auto)
    python benchmarks/bench_bank.py --only kmeans --repeat 3
    python benchmarks/bench_bank.py --only encode --device cuda --images 1024 --batch-size 64
    python benchmarks/bench_bank.py --tiles /tmp/wsss-weak/train   # encode real tiles instead of noise

K-Means runs with the bank's defaults (``BankSettings``: n_init=3, max_iter=100) on features with a
planted structure (non-negative like pooled CNN features), once as one class with K=3 and once
split over four classes of 5,000 with K=3 each. The target is under 5 s on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np


def planted_features(n: int, d: int, groups: int, seed: int = 0) -> np.ndarray:
    """``n x d`` non-negative float32 features around ``groups`` random directions."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(groups, d)).astype(np.float32)
    x = means[rng.integers(0, groups, n)] + 3.0 * rng.normal(size=(n, d)).astype(np.float32)
    return np.maximum(x, 0.0)


def bench_kmeans(n: int, d: int, repeat: int) -> dict:
    """Seconds for one class of ``n`` with K=3, and for four classes of ``n / 4`` with K=3 each."""
    from napari_pbip.bank import BankSettings, spherical_kmeans

    s = BankSettings()
    x = planted_features(n, d, groups=12)
    one, four = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = spherical_kmeans(x, 3, s.seed, s.n_init, s.max_iter)
        one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for part in np.array_split(x, 4):
            spherical_kmeans(part, 3, s.seed, s.n_init, s.max_iter)
        four.append(time.perf_counter() - t0)
    return {
        "features": [n, d],
        "n_init": s.n_init,
        "one_class_k3_seconds": round(statistics.median(one), 3),
        "four_classes_k3_seconds": round(statistics.median(four), 3),
        "one_class_iterations": result.n_iter,
        "runs": repeat,
    }


def _images(n: int, tiles: str | None, size: int) -> list[np.ndarray]:
    if tiles:
        from napari_pbip.data.images import list_images, read_rgb

        paths = list_images(tiles)[:n]
        return [read_rgb(p) for p in paths]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def bench_encode(encoder_name: str, device: str, n: int, batch_size: int, tiles: str | None) -> dict:
    """Images/s of the frozen encoder over ``n`` images in batches (after one warm-up batch)."""
    import torch

    from napari_pbip.bank.encode import encode, load_encoder

    enc = load_encoder(encoder_name, device)
    dev = next(iter(enc.parameters())).device
    images = _images(n, tiles, int(enc.input_size))
    encode(enc, images[:batch_size])
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for start in range(0, len(images), batch_size):
        encode(enc, images[start : start + batch_size])
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {
        "encoder": encoder_name,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "images": len(images),
        "image_size": list(images[0].shape),
        "batch_size": batch_size,
        "seconds": round(seconds, 3),
        "images_per_second": round(len(images) / seconds, 1),
        "source": tiles or "random noise",
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print (and optionally write) a JSON summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("kmeans", "encode"), help="run one benchmark")
    p.add_argument("--n", type=int, default=20_000, help="K-Means features (rows)")
    p.add_argument("--d", type=int, default=1280, help="K-Means feature dim")
    p.add_argument("--repeat", type=int, default=3, help="K-Means runs (median reported)")
    p.add_argument("--encoder", default="efficientnet_lite0")
    p.add_argument("--device", default="auto")
    p.add_argument("--images", type=int, default=256, help="images to encode")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--tiles", help="folder of real tiles to encode instead of random noise")
    p.add_argument("--json", help="write the result to this file")
    args = p.parse_args(argv)
    out: dict = {"machine": platform.node(), "python": platform.python_version()}
    if args.only in (None, "kmeans"):
        out["kmeans"] = bench_kmeans(args.n, args.d, args.repeat)
        print(json.dumps(out["kmeans"]), flush=True)
    if args.only in (None, "encode"):
        out["encode"] = bench_encode(args.encoder, args.device, args.images, args.batch_size, args.tiles)
        print(json.dumps(out["encode"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
