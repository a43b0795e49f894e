"""``pbip train-seg``: stage 2, a fully supervised segmenter trained on the pseudo-masks."""

from __future__ import annotations

import argparse
import json

# CLI flag -> SegSettings field, for the flags that map one to one (None: not given).
_FIELDS = {
    "segmenter": "segmenter",
    "backbone": "backbone",
    "seg_weights": "weights",
    "epochs": "epochs",
    "batch": "batch_size",
    "lr": "lr",
    "crop_size": "crop_size",
    "cutmix": "cutmix",
    "seed": "seed",
    "device": "device",
    "max_minutes": "max_minutes",
    "workers": "num_workers",
    "mpp": "mpp",
}


def register(subparsers) -> None:
    """Add ``pbip train-seg``."""
    from ..stage2.seg_settings import SegSettings
    from ._common import add_alias, add_json, add_quiet

    d = SegSettings()
    p = subparsers.add_parser(
        "train-seg",
        help="train the stage-2 segmenter on pseudo-masks (pbip pseudo)",
        description="Train a segmenter on the training images of DATASET and their pseudo-masks in MASKS "
        "(PNGs named like the images; 255 = unlabelled, ignored). Writes OUT/model.json + model.safetensors "
        "(used by `pbip segment` and `pbip predict`), OUT/settings.json, OUT/log.jsonl and checkpoints "
        "OUT/last, OUT/best (by val mIoU when DATASET has val masks). Ctrl-C stops cleanly and keeps the last "
        "step; --resume continues exactly.",
    )
    p.add_argument("--dataset", required=True, help="data set folder (its train split, and val masks if any)")
    p.add_argument("--masks", required=True, help="pseudo-mask folder (`pbip pseudo --out`)")
    p.add_argument("--out", required=True, help="segmenter folder to create (or to continue with --resume)")
    p.add_argument(
        "--segmenter",
        help=f"lite0-seg (offline), deeplabv2, segformer (default {d.segmenter}; `pbip models`)",
    )
    p.add_argument(
        "--backbone",
        help="the segmenter's backbone: a registered backbone (lite0-seg), a timm ResNet (deeplabv2, default "
        "resnet101), an MiT id or folder (segformer, default nvidia/mit-b1)",
    )
    p.add_argument(
        "--seg-weights", help="deeplabv2: ImageNet weights of the ResNet (.safetensors or a folder)"
    )
    p.add_argument(
        "--config", help="further segmenter arguments as JSON, e.g. '{\"width\": 96}' (lite0-seg head width)"
    )
    p.add_argument("--no-pretrained", action="store_true", help="start from random weights")
    p.add_argument("--epochs", type=int, help=f"passes over the training images (default {d.epochs})")
    p.add_argument("--batch-size", dest="batch", type=int, help=f"images per step (default {d.batch_size})")
    add_alias(p, "--batch", "batch", type=int)
    p.add_argument(
        "--lr", type=float, help=f"backbone learning rate; head x{d.head_lr_mult:g} (default {d.lr:g})"
    )
    p.add_argument("--crop-size", type=int, help=f"training crop side in px (default {d.crop_size})")
    p.add_argument(
        "--cutmix",
        type=float,
        help="probability that a training image gets a box of another image with its mask (CutMix; "
        f"default {d.cutmix:g}, 0: off)",
    )
    p.add_argument("--seed", type=int, help=f"random seed (default {d.seed})")
    p.add_argument("--mpp", type=float, help="um/px of the training patches (recorded for slide inference)")
    p.add_argument("--max-minutes", type=float, help="stop cleanly after this many minutes (resumable)")
    p.add_argument(
        "--loader-threads", dest="workers", type=int, help=f"data loading threads (default {d.num_workers})"
    )
    add_alias(p, "--workers", "workers", type=int)
    p.add_argument("--resume", action="store_true", help="continue the run in OUT from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--device", help="torch device: auto (CUDA if present), cpu, cuda, cuda:1, ...")
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=run_train_seg)


def settings_from_args(args: argparse.Namespace):
    """SegSettings from the flags (on top of the saved ones with ``--resume``)."""
    from ..errors import SettingsError
    from ..stage2.seg_settings import SegSettings
    from ..stage2.seg_train import resume_seg_settings

    given = {field: getattr(args, flag) for flag, field in _FIELDS.items() if getattr(args, flag) is not None}
    if args.config:
        try:
            given["segmenter_config"] = json.loads(args.config)
        except json.JSONDecodeError as exc:
            raise SettingsError(
                f"--config {args.config!r} is not JSON ({exc}); e.g. '{{\"width\": 96}}'"
            ) from None
    if args.no_pretrained:
        given["pretrained"] = False
    if args.resume:
        return resume_seg_settings(args.out, **given)
    return SegSettings(**given)


def run_train_seg(args: argparse.Namespace) -> int:
    """Train and print where the segmenter is and how the run ended."""
    from ..stage2.seg_train import train_segmenter
    from ._common import report_training

    settings = settings_from_args(args)
    job = train_segmenter(
        settings, args.dataset, args.masks, args.out, resume=args.resume, overwrite=args.overwrite
    )
    return report_training(job, args, "train-seg", "out", "--dataset ... --masks ...")
