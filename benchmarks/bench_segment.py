"""Whole-slide segmentation speed: ``segment_slide`` vs the naive per-tile loop vs TIAToolbox.

All methods run in this one process, on the same synthetic slide, with the same torch model (an
EfficientNet-Lite0 backbone with ImageNet weights plus a small segmentation head), the same tile
size and resolution, and produce a label map of the whole slide:

* ``pbip``: :func:`napari_pbip.slides.segment.segment_slide` (chunks as dask tasks, batched tiles,
  glass skipped, OME-Zarr written), with its default overlap and with no overlap;
* ``naive``: what a researcher writes first: OpenSlide ``read_region`` per tile, the model on one
  tile at a time, argmax into a numpy canvas;
* ``tiatoolbox``: ``SemanticSegmentor.run(..., patch_mode=False)`` with the same model wrapped as a
  TIAToolbox ``ModelABC`` (tiatoolbox is imported from ``--tia``, a separate install location).

Throughput is reported as *slide tiles per second*: the number of ``tile`` x ``tile`` tiles that
cover the whole slide divided by the wall time, so methods that skip glass or add overlap are
compared on the same work to be done. Medians over ``--repeats`` runs.

    python benchmarks/bench_segment.py --size 4096 --repeats 3 --tia /tmp/tia
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_model(folder: Path, classes, palette, background_index: int, mpp: float, tile: int) -> Path:
    """A ``pbip train-seg``-format folder holding ``lite0-seg`` (ImageNet EfficientNet-Lite0 + FPN head).

    The head keeps its seeded initial weights: speed does not depend on training, and the folder
    is loaded by the same code ``pbip segment`` uses.
    """
    import torch

    from napari_pbip import _atomic
    from napari_pbip.engine import checkpoint
    from napari_pbip.models import create_segmenter
    from napari_pbip.stage2.segmenter_predictor import FORMAT_VERSION, MODEL_KIND

    torch.manual_seed(0)
    net = create_segmenter("lite0-seg", len(palette), pretrained=True)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint.save_tensors(folder / "model.safetensors", net.state_dict(), {"kind": MODEL_KIND})
    meta = {
        "kind": MODEL_KIND,
        "format_version": FORMAT_VERSION,
        "classes": list(classes),
        "palette": [list(c) for c in palette],
        "background_index": background_index,
        "segmenter": "lite0-seg",
        "config": net.config,
        "mpp": mpp,
        "tile": tile,
    }
    _atomic.write_json(folder / "model.json", meta)
    return folder


class ModulePredictor:
    """What the naive loop calls: the plain torch module, as a researcher runs it (NCHW, one tile)."""

    def __init__(self, module):
        self.module = module
        self.device = next(module.parameters()).device

    def predict(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            x = x.permute(0, 3, 1, 2).float().div_(255)
            return torch.softmax(self.module(x), 1).cpu().numpy()


class ColourPredictor:
    """A per-pixel colour-prototype model (torch): class = nearest class colour, softly.

    The colours are measured on the synthetic slide against its ground truth, so this is the
    "simple colour-based predictor" used for the mIoU against ground truth and the memory runs
    (cheap enough to run over a 40k x 40k slide on two cores).
    """

    def __init__(
        self, colours: np.ndarray, classes, palette, background_index, mpp, tile=512, sigma=25.0, smooth=31
    ):
        self.colours = np.asarray(colours, np.float32)
        self.smooth = smooth  # mean colour over this window: stain density tells the synthetic classes apart
        self.classes, self.palette, self.background_index = tuple(classes), tuple(palette), background_index
        self.mpp, self.tile, self.sigma = mpp, tile, sigma

    def predict(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).float()  # B, H, W, 3
            x = _local_mean(x, self.smooth)
            c = torch.from_numpy(self.colours)
            d2 = (x * x).sum(-1, keepdim=True) - 2 * x @ c.T + (c * c).sum(-1)
            return torch.softmax(-d2 / (2 * self.sigma**2), -1).permute(0, 3, 1, 2).contiguous().numpy()


def _local_mean(x, size: int):
    import torch

    if size <= 1:
        return x
    pool = torch.nn.functional.avg_pool2d
    y = pool(x.permute(0, 3, 1, 2), (size, 1), 1, (size // 2, 0), count_include_pad=False)
    y = pool(
        y, (1, size), 1, (0, size // 2), count_include_pad=False
    )  # separable box: 2 x size ops per pixel
    return y.permute(0, 2, 3, 1)


def colour_predictor(slide_path: Path, labels_path: Path, smooth: int = 31) -> ColourPredictor:
    """Median (local mean) colour per class from a central 2048 px region of the slide and its label image."""
    import tifffile
    import zarr

    from napari_pbip.slides import open_slide

    slide = open_slide(slide_path)
    h, w = slide.shape
    y, x = max(0, h // 2 - 1024), max(0, w // 2 - 1024)
    rgb = slide.read_region(y, x, min(2048, h), min(2048, w), slide.mpp[0])
    import torch

    rgb = _local_mean(torch.from_numpy(rgb)[None].float(), smooth)[0].numpy()
    with tifffile.TiffFile(labels_path) as tif:
        meta = json.loads(tif.pages[0].description)
        lab = zarr.open(tif.pages[0].aszarr(), mode="r")[
            y : y + rgb.shape[0], x : x + rgb.shape[1]
        ]  # region only
    n = len(meta["palette"])
    colours = np.array(
        [np.median(rgb[lab == k], axis=0) if (lab == k).any() else (255, 255, 255) for k in range(n)]
    )
    return ColourPredictor(
        colours, meta["classes"], meta["palette"], meta["background_index"], slide.mpp[0], smooth=smooth
    )


def memory_child(slide_path: Path, out: Path, smooth: int) -> dict:
    """Segment one slide with the colour model in this process; peak RSS, time and mIoU vs ground truth."""
    import resource

    import tifffile
    import zarr

    from napari_pbip.events import run
    from napari_pbip.metrics import confusion_matrix, scores
    from napari_pbip.slides.segment import SegmentSettings, segment_slide

    labels_path = slide_path.with_name(slide_path.stem + ".labels.tif")
    model = colour_predictor(slide_path, labels_path, smooth)
    t = time.perf_counter()
    result = run(segment_slide(slide_path, model, out, SegmentSettings(tile=512, overlap=32), overwrite=True))
    seconds = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pred = zarr.open_array(str(out / "0"), mode="r")
    truth = zarr.open(tifffile.imread(labels_path, aszarr=True), mode="r")
    n = len(model.classes)
    conf = np.zeros((n, n + 1), np.int64)
    for y in range(0, pred.shape[0], 4096):  # blockwise: the check itself stays small
        for x in range(0, pred.shape[1], 4096):
            conf += confusion_matrix(
                truth[y : y + 4096, x : x + 4096], pred[y : y + 4096, x : x + 4096], n, model.background_index
            )
    sc = scores(conf)
    return {
        "slide": slide_path.name,
        "shape": list(result.shape),
        "colour_window": smooth,
        "peak_rss_mb": round(peak_mb, 1),
        "seconds": round(seconds, 1),
        "miou_vs_truth": round(sc["miou"], 4),
        "iou": [round(float(v), 4) for v in sc["iou"]],
        "tiles": result.tiles,
        "chunks": result.chunks,
    }


def memory_runs(slides: list[Path], workdir: Path, smooth: int) -> list[dict]:
    """One fresh subprocess per slide, so each peak RSS is that slide's alone."""
    import subprocess

    rows = []
    for slide in slides:
        cmd = [
            sys.executable,
            __file__,
            "--memory-child",
            str(slide),
            str(workdir / f"{slide.stem}.mem.zarr"),
        ]
        cmd += ["--smooth", str(smooth)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def slide_tiles(shape: tuple[int, int], tile: int) -> int:
    return math.ceil(shape[0] / tile) * math.ceil(shape[1] / tile)


def run_pbip(slide: Path, predictor, out: Path, settings, slide_mpp: float | None):
    """``segment_slide`` as ``pbip segment`` runs it (the model already loaded, as in a long-lived worker)."""
    from napari_pbip.events import run
    from napari_pbip.slides import open_slide
    from napari_pbip.slides.segment import segment_slide

    t = time.perf_counter()
    result = run(segment_slide(slide, predictor, out, settings, overwrite=True, slide_mpp=slide_mpp))
    seconds = time.perf_counter() - t
    import zarr

    labels = zarr.open_array(str(out / "0"), mode="r")[:]
    assert labels.shape == open_slide(slide, mpp=slide_mpp).size_at(result.mpp)
    return seconds, labels, result


def single_pass_check(
    slide: Path, predictor, labels: np.ndarray, mpp: float, side: int = 1536, margin: int = 128
):
    """Fraction of pixels where tiled output differs from one model pass over a central region.

    The single pass sees the region plus ``margin`` px of context on each side (cropped after), so
    only tile-border effects (and glass tiles the tiled run skipped) can differ.
    """
    import torch

    from napari_pbip.slides import open_slide

    sl = open_slide(slide, mpp=mpp)
    h, w = sl.size_at(mpp)
    side = min(side, h - 2 * margin, w - 2 * margin)
    y, x = (h - side) // 2, (w - side) // 2
    rgb = sl.read_region(y - margin, x - margin, side + 2 * margin, side + 2 * margin, mpp)
    with torch.inference_mode():
        single = predictor.predict(rgb[None])[0].argmax(0)[margin:-margin, margin:-margin]
    tiled = labels[y : y + side, x : x + side]
    tissue = single != predictor.background_index
    return {
        "region": [int(y), int(x), int(side)],
        "differ": round(float((tiled != single).mean()), 5),
        "differ_where_single_pass_sees_tissue": round(float((tiled != single)[tissue].mean()), 5),
    }


def run_naive(slide: Path, predictor, tile: int):
    import openslide

    osr = openslide.OpenSlide(str(slide))
    w, h = osr.dimensions
    t = time.perf_counter()
    canvas = np.zeros((h, w), np.uint8)
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            rgba = np.asarray(osr.read_region((x, y), 0, (tile, tile)))
            probs = predictor.predict(rgba[None, :, :, :3])
            hh, ww = min(tile, h - y), min(tile, w - x)
            canvas[y : y + hh, x : x + ww] = probs[0].argmax(0)[:hh, :ww]
    return time.perf_counter() - t, canvas


def run_tiatoolbox(slide: Path, module, tile: int, batch: int, mpp: float, workdir: Path, device: str):
    import torch
    from tiatoolbox.models.engine.io_config import IOSegmentorConfig
    from tiatoolbox.models.engine.semantic_segmentor import SemanticSegmentor
    from tiatoolbox.models.models_abc import ModelABC

    class TiaModel(ModelABC):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

        @staticmethod
        def postproc(image):
            return image.argmax(-1).astype(np.uint8)  # labels, as TIAToolbox's own segmentation models do

        @staticmethod
        def infer_batch(model, batch_data, *, device):
            with torch.inference_mode():
                x = torch.as_tensor(batch_data).to(device).permute(0, 3, 1, 2).float().div_(255)
                return torch.softmax(model(x), 1).permute(0, 2, 3, 1).cpu().numpy()

    io = IOSegmentorConfig(
        input_resolutions=[{"units": "mpp", "resolution": mpp}],
        output_resolutions=[{"units": "mpp", "resolution": mpp}],
        patch_input_shape=(tile, tile),
        patch_output_shape=(tile, tile),
        stride_shape=(tile, tile),
        save_resolution={"units": "mpp", "resolution": mpp},
    )
    engine = SemanticSegmentor(
        model=TiaModel(module), batch_size=batch, num_workers=0, device=device, verbose=False
    )
    save_dir = workdir / "tia-out"
    t = time.perf_counter()
    out = engine.run(
        [slide], patch_mode=False, ioconfig=io, save_dir=save_dir, overwrite=True, output_type="zarr"
    )
    seconds = time.perf_counter() - t
    labels = _tia_labels(out)
    return seconds, labels


def _tia_labels(out) -> np.ndarray | None:
    import zarr

    path = out[0] if isinstance(out, list) else (next(iter(out.values())) if isinstance(out, dict) else out)
    root = zarr.open(str(path), mode="r")
    for key in ("predictions", "probabilities"):
        if key in root:
            arr = np.asarray(root[key])
            return arr if arr.ndim == 2 else arr.argmax(-1)
    return None


def agreement(a: np.ndarray | None, b: np.ndarray) -> float | None:
    if a is None:
        return None
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    return float((a[:h, :w] == b[:h, :w]).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slide", type=Path, help="slide to use (default: a synthetic one of --size px)")
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "pbip-bench-segment")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--slide-mpp", type=float, help="level-0 um/px for slides that do not record it")
    p.add_argument(
        "--model", type=Path, help="a pbip train-seg folder (default: lite0-seg with a seeded head)"
    )
    p.add_argument(
        "--single-pass",
        action="store_true",
        help="also compare each pbip run with one model pass over a region",
    )
    p.add_argument("--tile", type=int, default=224, help="the naive loop's and TIAToolbox's tile")
    p.add_argument(
        "--pbip",
        nargs="*",
        default=[],
        metavar="TILE:OVERLAP[:BATCH]",
        help="extra pbip runs with these tile:overlap (and tiles per model call, default --batch)",
    )
    p.add_argument(
        "--batch", type=int, help="tiles per model call (default: pbip segment's, by device and tile)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (all methods use it)")
    p.add_argument("--workers", type=int, default=1, help="pbip chunks in parallel (pbip segment --workers)")
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--tia", type=Path, help="folder where tiatoolbox was pip-installed with --target")
    p.add_argument(
        "--compile",
        action="store_true",
        help="also run pbip with the torch.compile'd model (pbip segment --compile)",
    )
    p.add_argument("--skip", nargs="*", default=[], help="methods to leave out: pbip naive tiatoolbox")
    p.add_argument(
        "--memory", nargs="+", type=Path, help="instead: peak RSS / mIoU of segmenting these synthetic slides"
    )
    p.add_argument(
        "--smooth", type=int, default=31, help="colour model window for --memory (1: per pixel, fastest)"
    )
    p.add_argument("--memory-child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(*args.memory_child, args.smooth)))
        return 0
    if args.memory:
        args.workdir.mkdir(parents=True, exist_ok=True)
        rows = memory_runs(args.memory, args.workdir, args.smooth)
        if len(rows) > 1:
            a, b = rows[0]["peak_rss_mb"], rows[-1]["peak_rss_mb"]
            print(json.dumps({"memory": rows, "peak_ratio_last_vs_first": round(b / a, 3)}))
        return 0
    import torch

    from napari_pbip.slides import open_slide
    from napari_pbip.slides.segment import SegmentSettings, default_batch
    from napari_pbip.stage2.segmenter_predictor import load_segmenter, load_segmenter_predictor
    from napari_pbip.synthetic.synth_slide import write_synthetic_slide

    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.slide is None:
        args.slide = args.workdir / f"synth{args.size}.tif"
        if not args.slide.exists():
            write_synthetic_slide(args.slide, size=args.size, seed=0)
    meta = open_slide(args.slide, mpp=args.slide_mpp)
    mpp = meta.mpp[0]
    classes = ("tumor", "stroma", "lymphocyte", "necrosis")
    palette = ((205, 51, 51), (0, 255, 0), (65, 105, 225), (153, 0, 255), (255, 255, 255))
    folder = args.model or write_model(args.workdir / "lite0-seg", classes, palette, 4, mpp, args.tile)
    predictor = load_segmenter_predictor(folder, device=args.device)  # what `pbip segment` loads
    module, _ = load_segmenter(folder, device=args.device)  # the same weights, as a plain module
    naive_model = ModulePredictor(module)
    device_name = str(predictor.device)
    if predictor.device.type == "cuda":
        device_name += f" ({torch.cuda.get_device_name(predictor.device)})"
    tiles = slide_tiles(meta.shape, args.tile)
    for warm in (predictor, naive_model):
        warm.predict(np.zeros((2, args.tile, args.tile, 3), np.uint8))

    base = SegmentSettings(
        mpp=mpp, batch=args.batch, chunk=args.chunk, device=args.device, num_workers=args.workers
    )
    variants = {"pbip": (base, predictor)}  # the defaults of `pbip segment`
    for spec in args.pbip:
        t, o, *b = (int(v) for v in spec.split(":"))
        variants[f"pbip-{spec}"] = (
            base.replace(tile=t, overlap=o, batch=b[0] if b else args.batch),
            predictor,
        )
    compile_s = None
    if args.compile:  # `pbip segment --compile`: compiled once per process, before the first chunk
        t = time.perf_counter()
        resolved = base.resolve(predictor)
        variants["pbip-compiled"] = (base, predictor.compiled(resolved.batch, resolved.tile))
        compile_s = time.perf_counter() - t
    methods = {
        name: (
            lambda st=st, pr=pr, name=name: run_pbip(
                args.slide, pr, args.workdir / f"{name}.zarr", st, args.slide_mpp
            )
        )
        for name, (st, pr) in variants.items()
    }
    methods["naive"] = lambda: run_naive(args.slide, naive_model, args.tile)
    tia_note = None
    if args.tia is not None:
        sys.path.append(str(args.tia))  # after the venv: its torch/numpy/zarr win
    try:
        import tiatoolbox

        tia_note = f"tiatoolbox {tiatoolbox.__version__}"
        methods["tiatoolbox"] = lambda: run_tiatoolbox(
            args.slide,
            module,
            args.tile,
            args.batch or default_batch(args.tile, predictor.device),
            mpp,
            args.workdir,
            str(predictor.device),
        )
    except Exception as exc:  # reported, not hidden
        tia_note = f"tiatoolbox unavailable: {type(exc).__name__}: {exc}"
    for name in args.skip:
        methods.pop(name, None)

    times: dict[str, list[float]] = {m: [] for m in methods}
    labels: dict[str, np.ndarray | None] = {}
    extra: dict[str, dict] = {}
    errors: dict[str, str] = {}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            if name in errors:
                continue
            try:
                out = fn()
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"[:500]
                continue
            times[name].append(out[0])
            labels[name] = out[1]
            if name.startswith("pbip"):
                r = out[2]
                extra[name] = {
                    "tile": r.settings.tile,
                    "overlap": r.settings.overlap,
                    "batch": r.settings.batch,
                    "tiles_run": r.tiles.get("run"),
                    "seconds_split": {k: round(v, 2) for k, v in r.seconds.items()},
                    "tissue_fraction": r.tissue_fraction,
                }
                if args.single_pass:
                    extra[name]["single_pass"] = single_pass_check(args.slide, predictor, out[1], mpp)

    naive = statistics.median(times["naive"]) if times.get("naive") else None
    rows = []
    for name, ts in times.items():
        if not ts:
            continue
        med = statistics.median(ts)
        rows.append(
            {
                "method": name,
                "seconds": round(med, 2),
                "tiles_per_s": round(tiles / med, 2),
                "vs_naive": round(naive / med, 2) if naive else None,
                "agree_with_naive": agreement(labels.get(name), labels["naive"])
                if "naive" in labels
                else None,
                **extra.get(name, {}),
            }
        )
    print(
        f"slide {args.slide.name}: {meta.shape[1]}x{meta.shape[0]} px at {mpp:g} um/px, {tiles} tiles of {args.tile} px"
    )
    print(
        f"device {device_name}, torch threads {torch.get_num_threads()}, batch {base.resolve(predictor).batch} (pbip defaults), "
        f"chunk workers {args.workers}, repeats {args.repeats}"
    )
    print(
        f"{'method':<16}{'tile:ovl':>9}{'median s':>10}{'tiles/s':>10}{'x naive':>9}{'agree':>8}{'vs 1 pass':>10}"
    )
    for r in rows:
        agree = "" if r["agree_with_naive"] is None else f"{r['agree_with_naive']:.3f}"
        geom = f"{r['tile']}:{r['overlap']}" if "tile" in r else ""
        one = f"{r['single_pass']['differ']:.2%}" if "single_pass" in r else ""
        print(
            f"{r['method']:<16}{geom:>9}{r['seconds']:>10.2f}{r['tiles_per_s']:>10.2f}{(r['vs_naive'] or 0):>9.2f}"
            f"{agree:>8}{one:>10}"
        )
    if compile_s is not None:
        print(f"pbip-compiled: torch.compile took {compile_s:.1f} s once, before the timed runs")
    if tia_note:
        print(tia_note)
    for name, err in errors.items():
        print(f"{name} failed: {err}")
    summary = {
        "slide": str(args.slide),
        "shape": list(meta.shape),
        "mpp": mpp,
        "tile": args.tile,
        "tiles": tiles,
        "compile_seconds": None if compile_s is None else round(compile_s, 1),
    }
    summary.update(
        rows=rows,
        tiatoolbox=tia_note,
        errors=errors,
        device=device_name,
        torch_threads=torch.get_num_threads(),
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
