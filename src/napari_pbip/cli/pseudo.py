"""``pbip pseudo``: pseudo-masks for labelled training images from a stage-1 run."""

from __future__ import annotations

import argparse

from ._common import add_alias, add_quiet


def add_cam_args(p: argparse.ArgumentParser) -> None:
    """Flags of :class:`~napari_pbip.stage1.pseudo.CamSettings` shared by ``pseudo`` and ``predict``."""
    from ..stage1.pseudo import BACKGROUND_MODES, CamSettings

    d = CamSettings()
    p.add_argument("--background", choices=BACKGROUND_MODES, help=f"background rule (default {d.background})")
    p.add_argument(
        "--white-level",
        type=float,
        help=f"grey level above which white is background (default {d.white_level:g})",
    )
    p.add_argument(
        "--bg-power", type=float, help=f"alpha of the (1 - max)^alpha background (default {d.bg_power:g})"
    )
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        help="average each mask over the 8 turns and mirrors of the image (8 forward passes; default: on; "
        "--no-tta for one pass)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--device", default="auto", help="torch device: auto (CUDA if present), cpu, cuda, ...")
    add_quiet(p)


def cam_settings(args: argparse.Namespace):
    """CamSettings from the flags that were given."""
    from ..stage1.pseudo import CamSettings

    given = {
        "background": args.background,
        "white_level": args.white_level,
        "bg_power": args.bg_power,
        "presence_threshold": getattr(args, "threshold", None),
        "tta": args.tta,
    }
    return CamSettings(**{k: v for k, v in given.items() if v is not None})


def register(subparsers) -> None:
    """Add ``pbip pseudo``."""
    p = subparsers.add_parser(
        "pseudo",
        help="pseudo-masks for the labelled images of a data set split, from a `pbip train` run",
        description="Fuse the run's CAMs into masks for the images of SPLIT, keeping only each image's labelled "
        "classes (ReLU, min-max, label gating, level fusion, argmax; white regions become background). Writes "
        "palette PNGs named like the images into OUT (for stage-2 training).",
    )
    p.add_argument("--model", dest="run", help="stage-1 run folder (pbip train --out)")
    add_alias(p, "--run", "run")
    p.add_argument("--dataset", required=True, help="data set folder")
    p.add_argument("--split", default="train", help="split whose images get masks (default train)")
    p.add_argument("--out", required=True, help="output folder of masks")
    add_cam_args(p)
    p.set_defaults(func=run_pseudo)


def run_pseudo(args: argparse.Namespace) -> int:
    """Write the pseudo-masks and say where."""
    from ..errors import SettingsError
    from ..stage1 import make_pseudo_masks
    from ._common import drain

    if not args.run:
        raise SettingsError(
            "pbip pseudo needs the stage-1 run: --model RUN (the folder `pbip train --out` made)"
        )
    job = make_pseudo_masks(
        args.run,
        args.dataset,
        args.out,
        split=args.split,
        settings=cam_settings(args),
        device=args.device,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
    )
    out = drain(job, quiet=args.quiet)
    print(f"pseudo-masks written to {out}")
    return 0
