"""``pbip data synth`` and ``pbip data synth-slide``: synthetic H&E data for tests, demos, benchmarks."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    """Add ``synth`` and ``synth-slide`` to the ``pbip data`` subcommands."""
    _add_synth(subparsers)
    _add_synth_slide(subparsers)


def _add_synth(sub) -> None:
    p = sub.add_parser(
        "synth",
        help="write a deterministic synthetic H&E-like data set (generic layout)",
        description="Write OUT/dataset.json, OUT/train/synth-train-NNNN-[1 0 1 0].png (about 40% single-class "
        "patches) and OUT/val|test/{img,mask}/ with exact palette masks. Classes: tumor, stroma, lymphocyte, "
        "necrosis; mask index 4 is background. The same seed always gives the same bytes.",
    )
    p.add_argument("--out", required=True, help="output data set folder")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--n-train", type=int, default=300, help="training patches (default 300)")
    p.add_argument("--n-val", type=int, default=40, help="validation patches with masks (default 40)")
    p.add_argument("--n-test", type=int, default=40, help="test patches with masks (default 40)")
    p.add_argument("--size", type=int, default=224, help="patch side in pixels (default 224)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    """Run :func:`napari_pbip.synthetic.synth.synthetic_dataset_job` and say what was written."""
    from ..synthetic.synth import synthetic_dataset_job
    from ._common import drain

    job = synthetic_dataset_job(
        args.out, args.seed, args.n_train, args.n_val, args.n_test, args.size, overwrite=args.overwrite
    )
    out = drain(job, quiet=args.quiet)
    print(
        f"synthetic data set in {out}: {args.n_train} train, {args.n_val} val, {args.n_test} test patches "
        f"of {args.size} px (seed {args.seed})"
    )
    return 0


def _add_synth_slide(sub) -> None:
    p = sub.add_parser(
        "synth-slide",
        help="write a synthetic pyramidal H&E slide (tiled TIFF) with a ground-truth label image",
        description="Write a SIZE x SIZE pyramidal tiled BigTIFF that OpenSlide and tifffile read (um/px in its "
        "resolution tags), and <stem>.labels.tif beside it: uint8 labels 0-3 (tumor, stroma, lymphocyte, "
        "necrosis), 4 for glass. Rendered one row of tiles at a time, so memory stays bounded.",
    )
    p.add_argument("--out", required=True, help="slide path, e.g. slide.tif")
    p.add_argument("--size", type=int, default=20000, help="side of level 0 in pixels (default 20000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--mpp", type=float, default=0.5, help="micrometres per pixel at level 0 (default 0.5)")
    p.add_argument("--tile", type=int, default=512, help="TIFF tile side, a multiple of 16 (default 512)")
    p.add_argument(
        "--compression",
        choices=("jpeg", "deflate"),
        default="jpeg",
        help="slide tile compression (default jpeg)",
    )
    p.add_argument("--labels-out", help="label image path (default: <stem>.labels.tif beside the slide)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_synth_slide)


def run_synth_slide(args: argparse.Namespace) -> int:
    """Run :func:`napari_pbip.synthetic.synth_slide.synthetic_slide_job` and say what was written."""
    from ..synthetic.synth_slide import synthetic_slide_job
    from ._common import drain

    job = synthetic_slide_job(
        args.out, args.size, args.seed, args.mpp, args.tile, args.compression, args.overwrite, args.labels_out
    )
    slide = drain(job, quiet=args.quiet)
    levels = ", ".join(f"{w}x{h}" for h, w in slide.levels)
    print(
        f"slide {slide.slide}: {len(slide.levels)} levels ({levels}), {slide.mpp} um/px, {args.compression}"
    )
    print(f"labels {slide.labels}: {', '.join(slide.classes)}, background {slide.background_index}")
    return 0
