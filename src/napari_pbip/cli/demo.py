"""``pbip demo``: the whole pipeline offline on data the package makes itself."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    """Add ``pbip demo``."""
    p = subparsers.add_parser(
        "demo",
        help="run the whole pipeline offline on built-in synthetic data and write a report",
        description=(
            "Synthetic data -> image bank -> stage-1 PBIP and plain-CAM baseline -> pseudo-masks -> stage 2 -> "
            "segmentation of a synthetic slide -> OME-Zarr, GeoJSON, area CSV, report.md. About 10 minutes on 2 CPU cores."
        ),
    )
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default: demo-out)")
    p.add_argument("--seed", type=int, default=0, help="seed for data, clustering and training (default 0)")
    p.add_argument("--epochs", type=int, default=None, help="stage-1 epochs (default: DemoSettings.epochs)")
    p.add_argument("--seg-epochs", type=int, default=None, help="stage-2 epochs")
    p.add_argument("--n-train", type=int, default=None, help="synthetic training patches")
    p.add_argument("--slide-size", type=int, default=None, help="side of the synthetic slide in pixels")
    p.add_argument("--device", default="auto", help="torch device (auto: CUDA when present)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--view", action="store_true", help="open the results in napari (runs the demo first if needed)"
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ..demo import DemoSettings, run_demo
    from ..demo.report import bank_table, summary_table, training_table
    from ._common import drain

    summary_file = args.out / "summary.json"
    if args.view and summary_file.is_file() and not args.overwrite:
        return _view(args.out)
    changes = {
        k: v
        for k, v in {
            "seed": args.seed,
            "epochs": args.epochs,
            "seg_epochs": args.seg_epochs,
            "n_train": args.n_train,
            "slide_size": args.slide_size,
            "device": args.device,
        }.items()
        if v is not None
    }
    result = drain(run_demo(args.out, DemoSettings(**changes), overwrite=args.overwrite), quiet=args.quiet)
    print(summary_table(result.summary))
    print()
    print(training_table(result.summary))
    print()
    print(bank_table(result.summary))
    print(f"\nseconds: {result.summary.get('seconds_total')}  report: {result.report}")
    if args.view:
        return _view(args.out)
    return 0


def _view(out: Path) -> int:
    """Open the demo's slide, ground truth and segmentation in napari with the plugin's widgets."""
    from .._widgets import show_demo

    show_demo(out)
    return 0
