"""``pbip segment``: segment a whole slide into OME-Zarr labels, optionally GeoJSON and an area table;
or a cohort (several slides, a folder, a glob) into one folder with a table of all slides' areas."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import add_alias, add_device, add_json, add_quiet, drain, print_json


def register(subparsers) -> None:
    """Add the ``segment`` subcommand."""
    p = subparsers.add_parser(
        "segment",
        help="segment a whole slide (tiled, resumable) into an OME-Zarr label pyramid",
        description=(
            "Segment SLIDE with a trained model at a physical resolution. Chunks of --chunk pixels run as dask tasks "
            "(threads here, or a dask.distributed cluster with --scheduler); chunks without tissue are skipped. "
            "An interrupted run resumes when rerun with the same arguments. Several slides, a folder of slides "
            "or a quoted glob pattern make a cohort: --out is then a folder that gets NAME.zarr, NAME.csv and "
            "NAME.geojson per slide, cohort.csv (slide, class, area_mm2, percent_of_tissue) and cohort.json "
            "(each slide's status); a slide that fails does not stop the others, and a rerun skips finished "
            "slides (see docs/exports.md)."
        ),
    )
    p.add_argument(
        "slide",
        nargs="+",
        metavar="SLIDE",
        help="slide file (SVS, NDPI, MRXS, SCN, (OME-)TIFF, OME-Zarr, PNG/JPEG); several, a folder of slides "
        "or a quoted glob pattern ('slides/*.svs') for a cohort",
    )
    p.add_argument(
        "--model", required=True, type=Path, help="trained model folder (pbip train-seg or pbip train --out)"
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output OME-Zarr folder (e.g. slide.zarr); for a cohort, the folder of all slides' outputs",
    )
    p.add_argument(
        "--geojson",
        type=Path,
        help="also write QuPath GeoJSON polygons per class here (one slide; a cohort writes NAME.geojson per slide)",
    )
    p.add_argument(
        "--areas",
        type=Path,
        help="also write a per-class area table (CSV) here (one slide; a cohort writes NAME.csv per slide)",
    )
    p.add_argument("--mpp", type=float, help="inference resolution in um/px (default: the model's)")
    p.add_argument("--slide-mpp", type=float, help="the slide's own um/px, for files that do not record it")
    p.add_argument(
        "--tile",
        type=int,
        help="tile side in pixels (default: the model's: twice a segmenter's training tile, a stage-1 run's own)",
    )
    p.add_argument(
        "--overlap", type=int, help="overlap between tiles in pixels, blended (default: 32, at most tile/4)"
    )
    p.add_argument(
        "--batch-size",
        dest="batch",
        type=int,
        help="tiles per model call (default: about 200,000 pixels per call on a CPU, 16 tiles on a GPU)",
    )
    add_alias(p, "--batch", "batch", type=int)
    p.add_argument(
        "--chunk", type=int, default=4096, help="pixels per dask task side, multiple of 256 (default: 4096)"
    )
    p.add_argument(
        "--workers", type=int, default=1, help="chunks in parallel with the threads scheduler (default: 1)"
    )
    add_device(p)
    p.add_argument(
        "--scheduler",
        default="threads",
        help="'threads' (default), 'sync', or a dask.distributed scheduler address such as tcp://10.0.0.5:8786",
    )
    p.add_argument("--probabilities", action="store_true", help="also store per-class probabilities (uint8)")
    p.add_argument("--no-tissue-skip", action="store_true", help="run the model on glass too")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile a stage-2 segmenter first (up to a minute once, then about 1.2x faster model "
        "calls on CPU; for large slides; needs a C++ compiler)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs instead of refusing/resuming"
    )
    add_quiet(p)
    add_json(p)
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace):
    from ..slides.segment import SegmentSettings

    return SegmentSettings(
        mpp=args.mpp,
        tile=args.tile,
        overlap=args.overlap,
        batch=args.batch,
        chunk=args.chunk,
        device=args.device,
        probabilities=args.probabilities,
        scheduler=args.scheduler,
        num_workers=args.workers,
        skip_background=not args.no_tissue_skip,
        compile=args.compile,
    )


def run(args: argparse.Namespace) -> int:
    """Run ``pbip segment``: one slide, or a cohort (:func:`run_cohort`)."""
    from ..slides.cohort import is_cohort

    if is_cohort(args.slide):
        return run_cohort(args)
    return run_one(args, Path(args.slide[0]))


def run_one(args: argparse.Namespace, slide: Path) -> int:
    """Segment one slide into ``--out`` (a ``.zarr``), with the exports asked for."""
    from .._atomic import check_writable
    from ..export import export_areas, export_geojson
    from ..slides.segment import segment_slide

    args.slide = slide
    reads = {"slide": args.slide, "model": args.model, "segmentation (--out)": args.out}
    for extra, other in ((args.geojson, args.areas), (args.areas, args.geojson)):
        if extra is not None:  # fail before hours of work, not after
            check_writable(extra, args.overwrite, {**reads, "other export": other})
    settings = _settings(args)
    exports = args.geojson is not None or args.areas is not None
    job = segment_slide(
        args.slide,
        args.model,
        args.out,
        settings,
        overwrite=args.overwrite,
        slide_mpp=args.slide_mpp,
        reuse_finished=exports,  # a finished output only needs the exports it lacks (checked above)
    )
    result = drain(job, quiet=args.quiet or args.json)
    summary = result.to_dict()
    if args.geojson is not None:
        summary["geojson"] = str(export_geojson(result.out, args.geojson, overwrite=args.overwrite))
    if args.areas is not None:
        summary["areas"] = str(export_areas(result.out, args.areas, overwrite=args.overwrite))
    if result.unreadable:  # damaged tiles were segmented as glass: say where, whatever the output format
        (y0, x0, _, _), n = result.unreadable[0], len(result.unreadable)
        print(
            f"pbip segment: warning: {n} slide tile(s) of {args.slide} could not be decoded (a damaged file) and "
            f"were labelled background; the first at level-0 x={x0}, y={y0}; all are listed under "
            "'unreadable' in --json",
            file=sys.stderr,
        )
    if args.json:
        print_json(summary)
    else:
        tissue = sum(v for k, v in result.class_pixels.items() if k != "background") or 1
        shares = ", ".join(
            f"{k} {100 * v / tissue:.1f}%" for k, v in result.class_pixels.items() if k != "background"
        )
        verb = "exported the finished segmentation" if result.finished_before else "wrote"
        print(
            f"{verb} {result.out} ({result.shape[1]}x{result.shape[0]} px at {result.mpp:g} um/px): {shares}; "
            f"{result.tiles} tiles in {result.chunks} chunks, {result.seconds['wall']:.1f} s"
        )
    return 0


def run_cohort(args: argparse.Namespace) -> int:
    """Segment several slides into the folder ``--out``; exit 1 when any slide failed."""
    from ..errors import SettingsError
    from ..slides.cohort import segment_cohort

    for option, value in (("--geojson", args.geojson), ("--areas", args.areas)):
        if value is not None:
            raise SettingsError(
                f"{option} {value} names one file, but a cohort writes each slide's GeoJSON and area table "
                f"into --out {args.out} (NAME.geojson, NAME.csv) and all areas into cohort.csv: drop {option}"
            )
    job = segment_cohort(
        args.slide, args.model, args.out, _settings(args), overwrite=args.overwrite, slide_mpp=args.slide_mpp
    )
    quiet = args.quiet or args.json
    result = drain(_with_slide_lines(job, quiet), quiet=quiet)
    failed = result.failed
    for status in failed:
        print(f"pbip segment: {status.slide}: error: {status.error}", file=sys.stderr)
    if args.json:
        print_json(result.to_dict())
    else:
        done = [s for s in result.slides if s.status == "done"]
        skipped = sum(s.finished_before for s in done)
        print(
            f"segmented {len(done)} of {len(result.slides)} slides into {result.out_dir} "
            f"({skipped} finished before); areas of all in {result.out_dir / 'cohort.csv'}"
        )
    if failed:
        names = ", ".join(Path(s.slide).name for s in failed)
        print(
            f"pbip segment: {len(failed)} of {len(result.slides)} slides failed ({names}); fix them and rerun "
            "the same command: finished slides are skipped, the failed ones retried",
            file=sys.stderr,
        )
        return 1
    return 0


def _with_slide_lines(job, quiet: bool):
    """``job`` with a line on stderr as each slide starts and ends, instead of a bar (the slide's own
    stages have theirs)."""
    from ..events import relay
    from ..slides.cohort import SLIDE_STAGE

    def line(event) -> bool:
        if event.stage != SLIDE_STAGE:
            return False
        if not quiet:
            from tqdm import tqdm

            tqdm.write(event.message, file=sys.stderr)  # above the open bar, not glued to it
        return True

    return relay(job, line)
