"""``pbip train``: stage-1 training (PBIP ClassNet + ImgMatchNet, or the plain-CAM baseline)."""

from __future__ import annotations

import argparse

# CLI flag -> TrainSettings field, for the flags that map one to one (None: not given).
_FIELDS = {
    "backbone": "backbone",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "image_size": "image_size",
    "match_size": "match_size",
    "threshold_mode": "threshold_mode",
    "delta": "delta",
    "tau_s": "tau_s",
    "fg_bg_fill": "fg_bg_fill",
    "seed": "seed",
    "device": "device",
    "max_minutes": "max_minutes",
    "preview_every": "preview_every",
}


def register(subparsers) -> None:
    """Add ``pbip train``."""
    from ..stage1.settings import FILLS, THRESHOLD_MODES, TrainSettings

    d = TrainSettings()
    p = subparsers.add_parser(
        "train",
        help="train stage 1 (PBIP ClassNet + ImgMatchNet, or --baseline-cam) on image-level labels",
        description="Train the stage-1 CAM model on the train split of DATASET with the prototypes of BANK. "
        "Writes OUT/model.json + model.safetensors (used by `pbip pseudo`, `pbip predict` and slide inference), "
        "OUT/settings.json, OUT/log.jsonl and checkpoints OUT/last, OUT/best (by val mIoU when the data set has "
        "val masks). When training ends, OUT/presence.json gets per-class presence thresholds for unlabelled "
        "images, fitted on the training labels. Ctrl-C stops cleanly and keeps the last step (thresholds fitted "
        "for earlier weights are then not used); --resume continues exactly and refits them at the end.",
    )
    p.add_argument(
        "--dataset", required=True, help="data set folder (train split with labels in the file names)"
    )
    p.add_argument("--bank", help="image bank folder (`pbip bank build`); not needed with --baseline-cam")
    p.add_argument("--out", required=True, help="run folder to create (or to continue with --resume)")
    p.add_argument("--backbone", help=f"backbone name (default {d.backbone}; see `pbip models`)")
    p.add_argument("--epochs", type=int, help=f"passes over the training images (default {d.epochs})")
    p.add_argument("--batch-size", type=int, help=f"images per step (default {d.batch_size})")
    p.add_argument(
        "--lr", type=float, help=f"backbone learning rate; heads x{d.head_lr_mult:g} (default {d.lr:g})"
    )
    p.add_argument(
        "--image-size", type=int, help=f"training image side, multiple of 32 (default {d.image_size})"
    )
    p.add_argument(
        "--match-size",
        type=int,
        help="FG/BG image side for the encoder (default: the bank encoder's input size, the prototypes' scale)",
    )
    p.add_argument(
        "--levels", type=int, nargs="+", help="backbone levels, e.g. -3 -2 -1 (paper) or -4 -3 -2 -1"
    )
    p.add_argument(
        "--output-stride",
        choices=("8", "16", "32", "none"),
        help=f"coarsest backbone stride: dilate a CNN's last stage (default {d.output_stride}); none keeps "
        "the backbone's own (MiT: use none with --levels -4 -3 -2, the paper's strides 4/8/16)",
    )
    p.add_argument(
        "--threshold-mode", choices=THRESHOLD_MODES, help="eq. 4: class (paper) or global (reference)"
    )
    p.add_argument("--delta", type=float, help="threshold fraction (default 0.15 class, 0.5 global)")
    p.add_argument(
        "--tau-s", type=float, help=f"similarity temperature (default {d.tau_s:g}; reference 0.07)"
    )
    p.add_argument(
        "--fg-bg-fill", choices=FILLS, help="masked-out pixels of FG/BG images: black (eq. 5) or white"
    )
    p.add_argument("--seed", type=int, help=f"random seed (default {d.seed})")
    p.add_argument(
        "--baseline-cam", action="store_true", help="train the plain 1x1-conv CAM baseline instead"
    )
    p.add_argument("--max-minutes", type=float, help="stop cleanly after this many minutes (resumable)")
    p.add_argument("--preview-every", type=int, help=argparse.SUPPRESS)
    p.add_argument("--resume", action="store_true", help="continue the run in OUT from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--device", help="torch device: auto (CUDA if present), cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: torch's choice; 1 can be faster on a busy machine)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.set_defaults(func=run_train)


def settings_from_args(args: argparse.Namespace):
    """TrainSettings from the flags (on top of the saved ones with ``--resume``)."""
    from ..stage1 import TrainSettings, resume_settings
    from ..stage1.settings import level_weight_defaults

    given = {field: getattr(args, flag) for flag, field in _FIELDS.items() if getattr(args, flag) is not None}
    if args.levels:
        given["levels"] = tuple(args.levels)
        for name, weights in level_weight_defaults(len(args.levels)).items():
            given.setdefault(name, weights)
    if args.output_stride is not None:
        given["output_stride"] = None if args.output_stride == "none" else int(args.output_stride)
    if args.threshold_mode and args.delta is None:
        given["delta"] = None  # re-resolve the mode's default delta
    if args.baseline_cam:
        given["baseline"] = True
    if args.resume:
        return resume_settings(args.out, **given)
    return TrainSettings(**given)


def run_train(args: argparse.Namespace) -> int:
    """Train and print where the run is and how it ended."""
    from ..stage1 import train
    from ._common import report_training

    settings = settings_from_args(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    job = train(settings, args.dataset, args.bank, args.out, resume=args.resume, overwrite=args.overwrite)
    return report_training(job, args, "train", "run", "--dataset ... [--bank ...]")
