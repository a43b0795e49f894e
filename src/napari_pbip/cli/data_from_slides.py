"""``pbip data from-slides``: a weakly labelled training set from class regions drawn on slides."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    """Add ``from-slides`` to the ``pbip data`` subcommands."""
    from ..slides.training_data import FromSlidesSettings

    d = FromSlidesSettings()
    p = sub.add_parser(
        "from-slides",
        help="tile the class regions annotated on slides (QuPath GeoJSON) into a training set",
        description="Read tiles of --tile px at --mpp um/px under the class regions of each slide (QuPath "
        "GeoJSON annotations in level-0 pixels: Polygon or MultiPolygon, holes allowed), tissue only, and label "
        "each with the classes covering at least --min-fraction of it; tiles where background (outside every "
        "region, or glass) covers more than --max-background are dropped. Regions classified 'val' mark fully "
        "annotated areas: they become val/img + val/mask instead of training tiles. Writes OUT/dataset.json, "
        "OUT/train/<slide>-y<Y>-x<X>-[1 0 1].png (level-0 Y/X), OUT/tiles.csv (provenance) and the settings. "
        "Run again into the same OUT after editing the regions: only the tiles that changed are written or "
        "deleted.",
    )
    p.add_argument(
        "--slides",
        nargs="+",
        required=True,
        metavar="SLIDE",
        help="slide files, or folders of slides with a same-named .geojson beside each",
    )
    p.add_argument(
        "--annotations",
        nargs="+",
        metavar="GEOJSON",
        help="one QuPath GeoJSON per slide, in the same order (default: <slide>.geojson beside each slide)",
    )
    classes = p.add_mutually_exclusive_group(required=True)
    classes.add_argument("--classes", nargs="+", metavar="NAME", help="the tissue classes, in label order")
    classes.add_argument(
        "--dataset-json", metavar="FILE", help="dataset.json giving the classes and their colours"
    )
    p.add_argument("--out", required=True, help="output data set folder (a previous output is updated)")
    p.add_argument("--mpp", type=float, default=d.mpp, help=f"um/px of the tiles (default {d.mpp:g})")
    p.add_argument("--tile", type=int, default=d.tile, help=f"tile side in pixels (default {d.tile})")
    p.add_argument("--stride", type=int, help="step of the tile grid in pixels (default: the tile side)")
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
        help=f"drop tiles with a larger share outside the regions or on glass (default {d.max_background})",
    )
    p.add_argument(
        "--slide-mpp",
        type=float,
        nargs="+",
        metavar="UM",
        help="the slides' own um/px, for files that do not record it: one value for all, or one per slide",
    )
    p.add_argument("--overwrite", action="store_true", help="rebuild OUT from scratch instead of updating it")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_from_slides)


def run_from_slides(args: argparse.Namespace) -> int:
    """Run :func:`napari_pbip.slides.training_data.training_data_from_slides` and report the summary."""
    from ..data.layouts import read_spec
    from ..errors import SlideError
    from ..slides.annotations import load_regions, pair_annotations
    from ..slides.training_data import FromSlidesSettings, spec_for_classes, training_data_from_slides
    from ._common import drain, print_json

    settings = FromSlidesSettings(
        mpp=args.mpp,
        tile=args.tile,
        stride=args.stride,
        min_fraction=args.min_fraction,
        max_background=args.max_background,
    )
    spec = read_spec(args.dataset_json) if args.dataset_json else spec_for_classes(args.classes)
    pairs = pair_annotations(args.slides, args.annotations)
    mpps = args.slide_mpp or [None]
    if len(mpps) not in (1, len(pairs)):
        raise SlideError(
            f"--slide-mpp has {len(mpps)} values for {len(pairs)} slides; give one value for all or one per slide"
        )
    items = [
        load_regions(slide, geojson, spec.classes, mpps[0] if len(mpps) == 1 else mpps[i])
        for i, (slide, geojson) in enumerate(pairs)
    ]
    job = training_data_from_slides(items, args.out, spec, settings, overwrite=args.overwrite)
    summary = drain(job, quiet=args.quiet)
    if args.json:
        print_json(summary)
        return 0
    per_class = ", ".join(f"{k} {v}" for k, v in summary["class_counts"].items())
    changes = f"{summary['added']} written, {summary['removed']} removed, {summary['unchanged']} unchanged"
    print(
        f"{summary['tiles']} training tiles ({per_class}) and {summary['val_images']} validation images from "
        f"{len(items)} slide(s) in {summary['out']} ({changes})"
    )
    return 0
