"""``pbip predict``: masks for unlabelled images with a stage-1 run (the classifier decides the classes)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    """Add ``pbip predict``."""
    from .pseudo import add_cam_args

    p = subparsers.add_parser(
        "predict",
        help="masks for a folder of images without labels, from a `pbip train` run",
        description="Segment every image in IMAGES with the stage-1 run MODEL: the run's classifier decides "
        "which classes are present (probability >= --threshold; the most probable class always), their CAMs "
        "are fused and white regions become background. Writes palette PNGs named like the images into OUT; "
        "score them with `pbip evaluate`.",
    )
    p.add_argument("--model", required=True, help="stage-1 run folder (pbip train --out)")
    p.add_argument("--images", required=True, help="folder of RGB images")
    p.add_argument("--out", required=True, help="output folder of masks")
    p.add_argument(
        "--threshold",
        type=float,
        help="class presence probability threshold (default: the per-class thresholds fitted on the run's "
        "training labels, or 0.5 for runs without them)",
    )
    add_cam_args(p)
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """Write the masks and say where."""
    from ..cam import predict_folder
    from ._common import drain
    from .pseudo import cam_settings

    job = predict_folder(
        args.model, args.images, args.out, cam_settings(args), args.device, args.overwrite, args.batch_size
    )
    out = drain(job, quiet=args.quiet)
    print(f"masks written to {out}")
    return 0
