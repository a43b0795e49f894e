"""``pbip data``: inspect data sets, tile annotated images or slides into weak labels, make synthetic data."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    """Add the ``data`` command group and its subcommands (``synth*`` come from :mod:`.data_synth`)."""
    from . import data_from_slides, data_synth

    parser = subparsers.add_parser(
        "data",
        help="data sets: inspect a layout, tile annotated images into weak labels, synthesise data",
        description="Data set tools. Layouts read: LUAD-HistoSeg, BCSS-WSSS, WSSS4LUAD, one folder per class, "
        "and the generic layout described by dataset.json.",
    )
    parser.set_defaults(func=lambda args: _usage(parser))
    sub = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    _add_info(sub)
    _add_weak(sub)
    data_from_slides.register(sub)
    data_synth.register(sub)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _add_info(sub) -> None:
    p = sub.add_parser(
        "info",
        help="show a data set's detected layout, classes and per-split counts",
        description="Detect the layout of ROOT and list its classes, palette, background index and splits.",
    )
    p.add_argument("root", help="data set folder")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    """Print what :func:`open_dataset` sees in ``args.root``."""
    from ..data.layouts import describe, open_dataset
    from ._common import print_json

    info = describe(open_dataset(args.root))
    if args.json:
        print_json(info)
        return 0
    print(f"{info['root']}: layout {info['layout']}, background index {info['background_index']}")
    for index, (name, colour) in enumerate(zip(info["classes"], info["palette"], strict=False)):
        print(f"  class {index} {name:<12} colour {tuple(colour)}")
    for split, counts in info["splits"].items():
        line = (
            f"  {split:<5} {counts['images']} images, {counts['masks']} masks, {counts['labelled']} labelled"
        )
        if counts["labelled"]:
            line += " (" + ", ".join(f"{k} {v}" for k, v in counts["class_counts"].items()) + ")"
        print(line)
    return 0


def _add_weak(sub) -> None:
    from ..data.weak import WeakSettings

    d = WeakSettings()
    p = sub.add_parser(
        "weak",
        help="tile annotated images into a weakly labelled training set (generic layout)",
        description="Cut images with pixel masks into tiles labelled with the classes covering at least "
        "--min-fraction of each tile; drop tiles with more than --max-background background (mask background "
        "or near-white). Writes OUT/train/<stem>-y<y>-x<x>-[1 0 1].png and OUT/dataset.json.",
    )
    p.add_argument("--images", required=True, help="folder of RGB images")
    p.add_argument("--masks", required=True, help="folder of masks named like the images")
    p.add_argument("--out", required=True, help="output data set folder")
    p.add_argument("--tile", type=int, default=d.tile, help=f"tile side in pixels (default {d.tile})")
    p.add_argument(
        "--stride", type=int, default=d.stride, help=f"step between tiles in pixels (default {d.stride})"
    )
    p.add_argument(
        "--min-fraction",
        type=float,
        default=d.min_fraction,
        help=f"share of a tile a class must cover to label it (default {d.min_fraction})",
    )
    p.add_argument(
        "--max-background",
        type=float,
        default=d.max_background,
        help=f"drop tiles with a larger background share (default {d.max_background})",
    )
    p.add_argument(
        "--white-level",
        type=int,
        default=d.white_level,
        help=f"pixels with all channels at least this count as background (default {d.white_level})",
    )
    p.add_argument(
        "--save-masks", action="store_true", help="also write each tile's mask to OUT/train_masks/"
    )
    p.add_argument(
        "--dataset-json",
        metavar="FILE",
        help="dataset.json giving classes, palette and background index (needed unless --images is the "
        "<split>/img folder of a known data set)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_weak)


def run_weak(args: argparse.Namespace) -> int:
    """Run :func:`napari_pbip.data.weak.weak_dataset` and report the summary."""
    from ..data.layouts import read_spec
    from ..data.weak import WeakSettings, weak_dataset
    from ._common import drain, print_json

    settings = WeakSettings(
        tile=args.tile,
        stride=args.stride,
        min_fraction=args.min_fraction,
        max_background=args.max_background,
        white_level=args.white_level,
        save_masks=args.save_masks,
    )
    spec = read_spec(args.dataset_json) if args.dataset_json else None
    job = weak_dataset(args.images, args.masks, args.out, settings, spec=spec, overwrite=args.overwrite)
    summary = drain(job, quiet=args.quiet)
    if args.json:
        print_json(summary)
        return 0
    per_class = ", ".join(f"{k} {v}" for k, v in summary["class_counts"].items())
    dropped = ", ".join(f"{k} {v}" for k, v in summary["dropped"].items())
    print(
        f"{summary['tiles']} tiles from {summary['images']} images in {summary['out']} ({per_class}; dropped: {dropped})"
    )
    return 0
