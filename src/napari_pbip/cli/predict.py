"""``pbip predict``: masks for a folder of images (ROIs, TMA cores, patches) with a stage-1 run or a segmenter."""

from __future__ import annotations

import argparse

# CamSettings fields given by flags; they only apply to a stage-1 run
_CAM_FIELDS = ("threshold", "background", "white_level", "bg_power")


def register(subparsers) -> None:
    """Add ``pbip predict``."""
    from .pseudo import add_cam_args

    p = subparsers.add_parser(
        "predict",
        help="masks for a folder of images, from a `pbip train` run or a `pbip train-seg` segmenter",
        description="Segment every image in IMAGES (ROIs, TMA cores, patches) with MODEL. With a stage-1 run "
        "(pbip train) the run's classifier decides which classes are present (probability >= --threshold; the "
        "most probable class always), their CAMs are fused and white regions become background. With a "
        "stage-2 segmenter (pbip train-seg) every pixel gets the segmenter's most probable class or "
        "background; images larger than its tile are predicted tile by tile with blended overlaps. Either way each "
        "mask is averaged over the 8 turns and mirrors of the image unless --no-tta, and a segmenter's also "
        "over the image at 0.75, 1 and 1.25 times its size (--scales). The CAM "
        "options (--threshold, --background, --white-level, --bg-power) are for stage-1 runs only. Writes palette "
        "PNGs named like the images into OUT; score them with `pbip evaluate`.",
    )
    p.add_argument(
        "--model",
        required=True,
        help="stage-1 run folder (pbip train --out) or segmenter folder (pbip train-seg --out)",
    )
    p.add_argument("--images", required=True, help="folder of RGB images")
    p.add_argument("--out", required=True, help="output folder of masks")
    p.add_argument(
        "--threshold",
        type=float,
        help="stage-1 runs: class presence probability threshold (default: the per-class thresholds fitted "
        "on the run's training labels, or 0.5 for runs without them)",
    )
    add_cam_args(p)
    p.add_argument(
        "--scales",
        type=float,
        nargs="+",
        metavar="S",
        help="segmenters: average the masks over the image resized by each factor (default 0.75 1 1.25 with "
        "TTA; --scales 1 for the turns and mirrors only)",
    )
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """Write the masks and say where."""
    from ..predict.images import predict_images
    from ._common import drain
    from .pseudo import cam_settings

    given = any(getattr(args, name) is not None for name in _CAM_FIELDS)
    settings = cam_settings(args) if given else None  # None: a segmenter folder accepts it
    job = predict_images(
        args.model,
        args.images,
        args.out,
        settings,
        args.device,
        args.overwrite,
        args.batch_size,
        args.tta,
        args.scales,
    )
    out = drain(job, quiet=args.quiet)
    print(f"masks written to {out}")
    return 0
