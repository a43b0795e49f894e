"""Stage 2 alone, on the stage-1 runs ``compare_real.py`` made: what limits the held-out score.

For each fold, seed and method whose ``compare_real.py`` run is complete in ``--work``:

* ``--masks pseudo`` (default): train a segmenter on that run's own pseudo-masks with
  ``SegSettings`` defaults plus ``--seg-set`` (stage-2 changes screened without training stage 1
  again);
* ``--masks pseudo-tta``: the same with pseudo-masks made with test-time augmentation
  (``CamSettings(tta=True)``), made once per run;
* ``--masks truth``: train it on the ground-truth masks of the same weak tiles (cut from the
  images' masks): the score a segmenter trained on these tiles reaches with perfect labels, the
  ceiling of anything stage 1 can do for stage 2 here (needs the fold's tiles, not a stage-1 run);
* ``--seg-weak-set NAME=VALUE``: stage 2 trains on another tiling of the same training images
  (e.g. ``max_background=0.8``, which keeps the airy normal-lung tiles the default drops), labelled
  by the same stage-1 run, so a change of the tiling is screened at stage 2 without stage 1;
* ``--pseudo-set NAME=VALUE``: the TTA pseudo-masks made with these ``CamSettings`` changes
  (e.g. ``ignore_margin=0.1``: unsure pixels left for stage 2 to ignore), kept beside the others;
* ``--pseudo-quality``: no training; the pseudo-masks scored against the ground truth of their
  tiles (with and without test-time augmentation). These are the training images, so this
  diagnoses stage 1 and says nothing about unseen images.

Each segmenter is scored on the fold's held-out images as ``pbip predict`` does (TTA by default,
over its image scales unless ``--scales`` says others, ``--no-tta`` one pass) and the table gives mean ± sd over the runs beside the same runs' stage 2
from ``compare_real.py``. Outputs are kept in ``--work`` under ``--tag`` and reused.

    python benchmarks/compare_real.py                                  # first: the runs
    python benchmarks/stage2_variants.py --masks truth --methods pbip --seeds 0 --only-folds 0 1
    python benchmarks/stage2_variants.py --seg-set stain_jitter=0.1 --tag stain0.1 --methods pbip --seeds 0
    python benchmarks/stage2_variants.py --pseudo-quality
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_real import DEV, METHODS, parse_changes, prepare_fold, scoring_mode, split_folds  # noqa: E402

TILE = re.compile(r"(.+)-y(\d+)-x(\d+)-")  # weak tile names: SOURCE-yY-xX-[labels].png


def truth_masks(weak: Path, dev: Path, out: Path) -> Path:
    """The ground-truth mask of each weak tile, cut from its source image's mask (pad: background)."""
    import numpy as np

    from napari_pbip.data.images import read_mask, read_rgb, write_mask
    from napari_pbip.data.layouts import open_dataset

    if out.is_dir():
        return out
    spec = open_dataset(dev).spec
    # A folder of its own per call: two variants started at once on the same fold both write it.
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent))
    for tile in sorted((weak / "train").glob("*.png")):
        source, y, x = TILE.match(tile.name).groups()
        h, w = read_rgb(tile).shape[:2]
        cut = read_mask(dev / "val" / "mask" / f"{source}.png", spec)[
            int(y) : int(y) + h, int(x) : int(x) + w
        ]
        mask = np.full((h, w), spec.background_index, np.uint8)
        mask[: cut.shape[0], : cut.shape[1]] = cut
        write_mask(tmp / tile.name, mask, spec.palette)
    try:
        tmp.rename(out)
    except OSError:
        shutil.rmtree(tmp)
        if not out.is_dir():  # not another call finishing the same masks first: a real failure
            raise
    return out


def check_reuse(seg: Path, weak: Path, masks: Path) -> None:
    """Refuse to reuse a segmenter folder trained on other tiles or masks than this call's.

    A variant's folder is named by ``--tag``, ``--masks``, method and seed only, so the same tag
    with another ``--run-tag``, ``--weak`` or ``--seg-weak-set`` would otherwise score the old
    segmenter as the new variant.
    """
    meta = json.loads((seg / "model.json").read_text())
    for key, wanted in (("dataset", weak), ("masks", masks)):
        if Path(meta[key]).resolve() != wanted.resolve():
            raise SystemExit(
                f"{seg.name} was trained on {key} {meta[key]}, not {wanted}; choose another --tag "
                "for this variant"
            )


def tile_miou(masks: Path, weak: Path, dev: Path) -> float:
    """mIoU (%) of a pseudo-mask folder against the ground truth of its tiles (background excluded)."""
    import numpy as np

    from napari_pbip.data.images import read_mask
    from napari_pbip.data.layouts import open_dataset

    spec = open_dataset(dev).spec
    n = len(spec.palette)
    confusion = np.zeros((n, n), np.int64)
    for tile in sorted((weak / "train").glob("*.png")):
        source, y, x = TILE.match(tile.name).groups()
        pred = read_mask(masks / tile.name, spec)  # the tile's own size, whatever --tile made it
        truth = read_mask(dev / "val" / "mask" / f"{source}.png", spec)
        truth = truth[int(y) : int(y) + pred.shape[0], int(x) : int(x) + pred.shape[1]]
        pred = pred[: truth.shape[0], : truth.shape[1]]  # an edge tile padded past its image
        keep = truth != spec.background_index
        confusion += np.bincount(n * truth[keep].astype(int) + pred[keep], minlength=n * n).reshape(n, n)
    tissue = list(spec.tissue_indices)
    inter = np.diag(confusion)[tissue]
    union = (confusion.sum(0) + confusion.sum(1))[tissue] - inter
    return 100 * float(np.mean(inter / np.maximum(union, 1)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dev", type=Path, default=DEV)
    p.add_argument(
        "--work", type=Path, default=Path("/tmp/pbip-compare-real"), help="compare_real.py's --work"
    )
    p.add_argument("--run-tag", default="default", help="compare_real.py's --tag of the stage-1 runs")
    p.add_argument(
        "--weak", default="weak-min_fraction=0.1", help="the folds' weak tile folder (compare_real's)"
    )
    p.add_argument("--pseudo-set", nargs="*", default=[], metavar="NAME=VALUE", help="CamSettings changes")
    p.add_argument(
        "--seg-weak-set",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="stage 2 trains on another tiling of the same training images (WeakSettings changes, e.g. "
        "max_background=0.8); the stage-1 run makes their pseudo-masks",
    )
    p.add_argument("--tag", default="variant", help="name of this variant's outputs")
    p.add_argument("--masks", choices=("pseudo", "pseudo-tta", "truth"), default="pseudo")
    p.add_argument("--seg-set", nargs="*", default=[], metavar="NAME=VALUE", help="SegSettings changes")
    p.add_argument("--pseudo-quality", action="store_true", help="score the pseudo-masks on their own tiles")
    p.add_argument("--only-folds", type=int, nargs="+")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--scales", type=float, nargs="+", help="with TTA (default `pbip predict`'s; 1: symmetries only)"
    )
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if not (args.dev / "val" / "mask").is_dir():
        print(f"skipped: {args.dev} is absent (it lives in ../shared/data beside the development checkout)")
        return 0
    import torch

    from napari_pbip.engine.tta import SCALES
    from napari_pbip.evaluate import evaluate_folder
    from napari_pbip.events import run
    from napari_pbip.predict.images import predict_images
    from napari_pbip.stage1 import CamSettings
    from napari_pbip.stage1.predict import make_pseudo_masks
    from napari_pbip.stage2.seg_settings import SegSettings
    from napari_pbip.stage2.seg_train import train_segmenter

    torch.set_num_threads(args.threads)
    changes = parse_changes(args.seg_set)
    scales = tuple(SCALES if args.scales is None else args.scales) if args.tta else (1.0,)
    mode = scoring_mode(args.tta, scales)
    rows = []
    for fold_dir in sorted(args.work.glob("k*-fold*")):
        fold = int(fold_dir.name.rsplit("fold", 1)[1])
        if args.only_folds is not None and fold not in args.only_folds:
            continue
        weak = seg_weak = fold_dir / args.weak
        if args.seg_weak_set:
            n_folds = int(fold_dir.name.split("-")[0][1:])
            folds = split_folds(args.dev, n_folds)
            seg_weak = prepare_fold(args.work, args.dev, folds, fold, parse_changes(args.seg_weak_set))[
                "weak"
            ]
            print(f"fold {fold}: stage 2 on {seg_weak.name}", flush=True)
        for seed in args.seeds:
            for method in args.methods:
                name = f"{args.run_tag}-{method}-s{seed}"
                stage1, pseudo = fold_dir / name, fold_dir / f"{name}-pseudo"
                finished = (stage1 / "presence.json").is_file() and pseudo.is_dir()
                if not finished and (args.masks != "truth" or args.pseudo_quality):
                    print(f"fold {fold} {name}: no finished compare_real.py run, skipped", flush=True)
                    continue
                label = f"fold {fold} {method} s{seed}"
                tta = fold_dir / f"{name}-pseudo-tta"
                if seg_weak != weak:  # the same stage-1 run labels the other tiling's tiles
                    pseudo = fold_dir / f"{name}-pseudo-{seg_weak.name}"
                    tta = fold_dir / f"{name}-pseudo-tta-{seg_weak.name}"
                cam_changes = parse_changes(args.pseudo_set)
                if cam_changes:
                    key = ",".join(f"{k}={v}" for k, v in sorted(cam_changes.items()))
                    tta = tta.with_name(f"{tta.name}-{key}")
                    if args.masks == "pseudo" and not pseudo.is_dir():
                        run(
                            make_pseudo_masks(
                                stage1, seg_weak, pseudo, settings=CamSettings(tta=False), device="cpu"
                            )
                        )
                if (args.pseudo_quality or args.masks == "pseudo-tta") and not tta.is_dir():
                    run(
                        make_pseudo_masks(
                            stage1, seg_weak, tta, settings=CamSettings(tta=True, **cam_changes), device="cpu"
                        )
                    )
                if args.pseudo_quality:
                    plain, averaged = (
                        tile_miou(pseudo, seg_weak, args.dev),
                        tile_miou(tta, seg_weak, args.dev),
                    )
                    print(
                        f"{label}: pseudo-masks on their own tiles {plain:.1f}, with TTA {averaged:.1f}",
                        flush=True,
                    )
                    rows.append(
                        {"fold": fold, "seed": seed, "method": method, "plain": plain, "tta": averaged}
                    )
                    continue
                masks = {
                    "pseudo": pseudo,
                    "pseudo-tta": tta,
                    "truth": truth_masks(seg_weak, args.dev, fold_dir / f"truth-masks-{seg_weak.name}")
                    if args.masks == "truth"
                    else None,
                }[args.masks]
                variant = f"{args.tag}-{args.masks}-{method}-s{seed}"
                seg, pred = fold_dir / f"{variant}-seg", fold_dir / f"{variant}-pred2{mode}"
                if (seg / "model.json").is_file():
                    check_reuse(seg, seg_weak, masks)
                else:
                    settings = SegSettings(**({"device": "cpu", "seed": seed} | changes))
                    run(train_segmenter(settings, seg_weak, masks, seg, overwrite=True))
                if not pred.is_dir():
                    run(
                        predict_images(
                            seg,
                            fold_dir / "held-out" / "val" / "img",
                            pred,
                            device="cpu",
                            tta=args.tta,
                            scales=scales if args.tta else None,
                        )
                    )
                score = 100 * evaluate_folder(fold_dir / "held-out", "val", pred)["miou"]
                scores = fold_dir / f"{name}-scores{mode}.json"
                before = 100 * json.loads(scores.read_text())["stage2"]["miou"] if scores.is_file() else None
                print(f"{label}: stage 2 {score:.1f} (compare_real's: {before})", flush=True)
                rows.append({"fold": fold, "seed": seed, "method": method, "variant": score, "runs": before})
    keys = ("plain", "tta") if args.pseudo_quality else ("variant", "runs")
    for key in keys:
        values = [r[key] for r in rows if r.get(key) is not None]
        if len(values) > 1:
            print(
                f"{key}: {statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} over {len(values)} runs"
            )
    print(
        json.dumps(
            {
                "tag": args.tag,
                "masks": args.masks,
                "changes": changes,
                "seg_weak_changes": parse_changes(args.seg_weak_set),
                "pseudo_changes": parse_changes(args.pseudo_set),
                "tta": args.tta,
                "scales": list(scales),
                "rows": rows,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
