"""Real H&E, cross-validated by source image: PBIP against the plain-CAM baseline, stage 1 and stage 2.

Uses ``../shared/data/wsss4luad-dev/val`` (WSSS4LUAD, 31 masked images; not part of the project).
Its images are split into ``--folds`` folds (sorted names, a fixed shuffle, and the images holding
the rarest class, "normal" in 4 images, spread over the folds first). Each fold is held out in turn:

1. ``weak_dataset`` tiles the other folds' images into weakly labelled tiles (a held-out image
   never reaches a tile: asserted), ``WeakSettings`` defaults plus ``--weak-set`` (the defaults
   were 0.05 / 0.5 for min_fraction / max_background before 2026-12-06; runs made then used
   ``--weak-set min_fraction=0.1``, tag "default", and ``min_fraction=0.1 max_background=0.8``,
   tag "mb0.8", the defaults now);
2. one image bank from those tiles (``BankSettings`` defaults plus ``--bank-set``), also scored as
   a nearest-prototype classifier of the held-out images' single-class patches (``evaluate_bank``);
3. per seed and method (pbip, baseline): stage 1 (``train``, ``TrainSettings`` defaults plus
   ``--set``), pseudo-masks of the fold's tiles gated by their image labels (``make_pseudo_masks``,
   as ``pbip pseudo``), stage 2 on them (``train_segmenter``, ``SegSettings`` plus ``--seg-set``);
4. scored on the held-out whole images only, each through ``predict_images`` as ``pbip predict``
   does: stage 1 where the classifier decides the classes (presence thresholds from
   ``RUN/presence.json``) and the stage-2 masks; both averaged over the 8 symmetries by default,
   stage 2 also over ``pbip predict``'s image scales (``--scales``; ``--no-tta``: one pass;
   predictions and scores of each mode kept apart, so changing it rescores without retraining).

Every step is reused when its output is complete, so a killed run continues where it stopped;
the folds' weak sets (one per ``--weak-set``) and banks (one per ``--bank-set`` on each) are shared
by all ``--tag``s; a tag is refused with changes other than those it was first run with. Trainings run
in ``--jobs`` worker processes with ``--threads`` torch threads each. Prints each training's wall
time, a table (mean ± sd over folds x seeds, in %; "seed sd" is the mIoU sd over seeds within a
fold, averaged over folds) and one JSON line.

    python benchmarks/compare_real.py --jobs 2 --threads 1        # 3 folds x seeds 0 1 x 2 methods
    python benchmarks/compare_real.py --set fg_bg_fill=white --tag white
    python benchmarks/compare_real.py --only-folds 0 --seeds 0 --set epochs=1 --seg-set epochs=1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "wsss4luad-dev"
METRICS = ("miou", "fwiou", "mean_biou", "mean_dice")
HEADS = ("mIoU", "FwIoU", "bIoU", "Dice")
METHODS = ("pbip", "baseline")
STAGES = ("stage1", "stage2")
STAGE_NAMES = {"stage1": "stage 1 unlabelled", "stage2": "stage 2"}
# each run's outputs (suffix of its folder or file name), and what a retrained stage makes stale
# each run's outputs (suffix of its folder or file name); the predictions and scores carry the
# scoring mode: "-tta" as `pbip predict` does by default, "-1pass" with --no-tta (bare "-pred1",
# "-pred2", "-scores.json" are older runs' single passes over whole images, no longer read)
OUTPUTS = {"stage1": "", "pseudo": "-pseudo", "stage2": "-seg", "pred1": "-pred1", "pred2": "-pred2",
           "times": "-times.json", "scores": "-scores"}  # fmt: skip
SCORING = ("pred1", "pred2", "scores")
STALE = {"stage1": ("pseudo", "stage2", "pred1", "pred2", "scores"), "stage2": ("pred2", "scores")}
FOLD_SEED = 12  # the fixed shuffle of the image names before they are dealt into folds


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_changes(items: list[str]) -> dict:
    """``NAME=VALUE`` strings -> a dict (values read as JSON where they parse)."""
    return {k: _value(v) for k, v in (item.split("=", 1) for item in items)}


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def split_folds(dev: Path, n_folds: int) -> list[list[str]]:
    """Image names per fold: shuffled with a fixed seed, the rarest class's images dealt first."""
    import numpy as np

    from napari_pbip.data.images import list_images, read_mask
    from napari_pbip.data.layouts import open_dataset

    spec = open_dataset(dev).spec
    names = sorted(p.name for p in list_images(dev / "val" / "img"))
    random.Random(FOLD_SEED).shuffle(names)
    present = {
        n: np.bincount(read_mask(dev / "val" / "mask" / n, spec).ravel(), minlength=256)[: spec.n_classes] > 0
        for n in names
    }
    rare = min(range(spec.n_classes), key=lambda c: sum(present[n][c] for n in names))
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    for i, name in enumerate(n for n in names if present[n][rare]):
        folds[i % n_folds].append(name)
    for name in (n for n in names if not present[n][rare]):
        min(folds, key=len).append(name)
    return [sorted(f) for f in folds]


def _links(folder: Path, names: list[str], source: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not (folder / name).is_symlink():
            (folder / name).symlink_to(source / name)
    extra = sorted({p.name for p in folder.iterdir()} - set(names))
    assert not extra, f"{folder} holds files of another fold split: {extra}; delete it"


def prepare_fold(work: Path, dev: Path, folds: list[list[str]], i: int, changes: dict) -> dict:
    """The fold's folders: training images, weak tiles, held-out images as a data set with a val split."""
    from napari_pbip.data.layouts import open_dataset, write_spec
    from napari_pbip.data.weak import WeakSettings, weak_dataset
    from napari_pbip.events import run

    spec = open_dataset(dev).spec
    held = folds[i]
    train = sorted(n for j, f in enumerate(folds) if j != i for n in f)
    root = work / f"k{len(folds)}-fold{i}"
    for sub, names in (("train-src", train), ("held-out/val", held)):
        for kind in ("img", "mask"):
            _links(root / sub / kind, names, dev / "val" / kind)
    if not (root / "held-out" / "dataset.json").is_file():
        write_spec(root / "held-out", spec, name=f"wsss4luad-dev val, fold {i} of {len(folds)}")
    weak, settings = root / f"weak-{_key(changes)}", WeakSettings(**changes)
    if not weak.is_dir():
        src = root / "train-src"
        run(weak_dataset(src / "img", src / "mask", weak, settings, spec=spec))
    made = WeakSettings.load(weak / "weak_settings.json")
    if made != settings:  # tiled before a package default changed
        raise SystemExit(f"{weak} was tiled with {made}, not {settings}; delete it or use another --work")
    summary = json.loads((weak / "summary.json").read_text())
    tile_sources = {p.name.split("-y")[0] for p in (weak / "train").iterdir()}
    leaked = tile_sources & {Path(n).stem for n in held}
    assert not leaked, f"held-out images {sorted(leaked)} have tiles in {weak}"
    return {"index": i, "root": root, "held": held, "train": train, "weak": weak, "summary": summary}


def _key(changes: dict) -> str:
    if not changes:
        return "default"
    return re.sub(r"[^\w.=,-]", "_", ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(changes.items())))


def fold_bank(fold: dict, changes: dict) -> tuple[Path, float]:
    """The fold's bank (built once per weak set and ``--bank-set``) and its macro F1 on the held-out images."""
    from napari_pbip.bank import BankSettings, build_bank, evaluate_bank, open_bank
    from napari_pbip.errors import BankError
    from napari_pbip.events import run

    bank = fold["weak"].with_name(f"{fold['weak'].name}-bank-{_key(changes)}")
    if not bank.is_dir():
        try:
            run(build_bank(BankSettings(**changes), fold["weak"], bank, device="cpu"))
        except BankError as exc:
            raise SystemExit(
                f"fold {fold['index']}: no bank from {fold['weak']} ({exc}); its weak tiles: "
                f"{fold['summary']['single_class_counts']} single-class. Change --weak-set or --bank-set"
            ) from None
    scores = bank.with_name(bank.name + "-eval.json")
    if not scores.is_file():
        result = run(evaluate_bank(open_bank(bank), fold["root"] / "held-out", "val", device="cpu"))
        _write_json(scores, result)
    return bank, json.loads(scores.read_text())["macro_f1"]


def scoring_mode(tta: bool, scales: tuple[float, ...] = (1.0,)) -> str:
    """Suffix of a stage-2 prediction or score: "-tta" or "-1pass", plus the segmenter's scales
    when they are more than 1 ("-tta-x0.75-1-1.25"). Stage-1 predictions take the bare mode."""
    mode = "-tta" if tta else "-1pass"
    return mode if tuple(scales) == (1.0,) else mode + "-x" + "-".join(f"{s:g}" for s in scales)


def _names(
    fold: dict, tag: str, method: str, seed: int, tta: bool, scales: tuple[float, ...]
) -> dict[str, Path]:
    names = {k: fold["root"] / f"{tag}-{method}-s{seed}{suffix}" for k, suffix in OUTPUTS.items()}
    for k in SCORING:
        mode = scoring_mode(tta) if k == "pred1" else scoring_mode(tta, scales)
        names[k] = names[k].with_name(names[k].name + mode + (".json" if k == "scores" else ""))
    return names


def _stale(paths: dict[str, Path], name: str) -> list[Path]:
    """``name``'s outputs of a run, in every scoring mode."""
    if name not in SCORING:
        return [paths[name]]
    base = paths["stage1"].name + OUTPUTS[name]
    return [p for mode in ("-tta", "-1pass") for p in paths[name].parent.glob(f"{base}{mode}*")]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _done(paths: dict[str, Path], stage: str) -> bool:
    files = ("model.json", "presence.json") if stage == "stage1" else ("model.json",)
    return all((paths[stage] / f).is_file() for f in files)


def train_run(task: dict, threads: int) -> dict:
    """Stage 1 then stage 2 of one fold/seed/method, each in a fresh process unless already done."""
    paths = task["paths"]
    times = _read_json(paths["times"]) or {}
    label = f"fold {task['fold']} {task['method']} s{task['seed']}"
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    for stage in STAGES:
        if _done(paths, stage):
            continue
        child = {k: str(v) if isinstance(v, Path) else v for k, v in task.items() if k != "paths"}
        child |= {"stage": stage, "threads": threads, "paths": {k: str(v) for k, v in paths.items()}}
        for name in STALE[stage]:  # made from a run that is trained again, in every scoring mode
            for path in _stale(paths, name):
                _remove(path)
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--child", json.dumps(child)], check=True, env=env)
        times[stage] = round(time.perf_counter() - t, 1)
        _write_json(paths["times"], times)
        print(f"{label}: stage {stage[-1]} trained in {times[stage]:.0f} s", flush=True)
    return times


def _child(task: dict) -> None:
    """One training in this process (``--child``): stage 1, or pseudo-masks plus stage 2."""
    import torch

    from napari_pbip.events import run

    torch.set_num_threads(task["threads"])
    paths = {k: Path(v) for k, v in task["paths"].items()}
    if task["stage"] == "stage1":
        from napari_pbip.stage1 import TrainSettings, train

        baseline = task["method"] == "baseline"
        given = (
            {"device": "cpu", "preview_every": 0} | task["set"] | {"seed": task["seed"], "baseline": baseline}
        )
        bank = None if baseline else task["bank"]
        run(train(TrainSettings(**given), task["weak"], bank, paths["stage1"], overwrite=True))
        return
    from napari_pbip.stage1.predict import make_pseudo_masks
    from napari_pbip.stage2.seg_settings import SegSettings
    from napari_pbip.stage2.seg_train import train_segmenter

    if not paths["pseudo"].is_dir():
        run(make_pseudo_masks(paths["stage1"], task["weak"], paths["pseudo"], split="train", device="cpu"))
    given = {"device": "cpu"} | task["seg_set"] | {"seed": task["seed"]}
    run(train_segmenter(SegSettings(**given), task["weak"], paths["pseudo"], paths["stage2"], overwrite=True))


def _metrics(result: dict) -> dict:
    iou = {c: v["iou"] if v["gt_pixels"] else None for c, v in result["per_class"].items()}
    return {m: result[m] for m in METRICS} | {"iou": iou, "n_images": result["n_images"]}


def score_run(task: dict) -> dict:
    """Stage-1 (unlabelled) and stage-2 scores of one run on the fold's held-out images (cached)."""
    from napari_pbip.evaluate import evaluate_folder
    from napari_pbip.events import run
    from napari_pbip.predict.images import predict_images

    paths = task["paths"]
    if (cached := _read_json(paths["scores"])) is not None:
        return cached
    held, t = task["held_out"], time.perf_counter()
    for stage in STAGES:  # as `pbip predict --model RUN|SEG` does, TTA by default
        model, pred = paths["stage1" if stage == "stage1" else "stage2"], paths["pred" + stage[-1]]
        if not pred.is_dir():
            scales = task["scales"] if stage == "stage2" and task["tta"] else None
            run(
                predict_images(
                    model, held / "val" / "img", pred, device="cpu", tta=task["tta"], scales=scales
                )
            )
    scores = {s: _metrics(evaluate_folder(held, "val", paths["pred" + s[-1]])) for s in STAGES}
    for s in STAGES:
        assert scores[s]["n_images"] == len(task["held"]), (s, scores[s]["n_images"], task["held"])
    _write_json(paths["scores"], scores)
    print(f"fold {task['fold']} {task['method']} s{task['seed']}: scored in {time.perf_counter() - t:.0f} s")
    return scores


def _ms(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(results: list[dict], stage: str, method: str) -> dict:
    """Mean, sd (over all folds x seeds), seed sd (within folds, averaged) and per-class IoU, in %."""
    rows = [r for r in results if r["method"] == method]
    folds = sorted({r["fold"] for r in rows})
    out: dict = {"stage": stage, "method": method}
    for m in METRICS:
        mean, sd = _ms([100 * r[stage][m] for r in rows])
        within = [[100 * r[stage][m] for r in rows if r["fold"] == f] for f in folds]
        seed_sd = statistics.mean(statistics.stdev(v) for v in within) if min(map(len, within)) > 1 else None
        out[m] = {
            "mean": round(mean, 2),
            "sd": round(sd, 2),
            "seed_sd": None if seed_sd is None else round(seed_sd, 2),
        }
    out["per_class_iou"] = {}
    for c in rows[0][stage]["iou"]:  # over the runs whose held-out images hold the class
        values = [r[stage]["iou"][c] for r in rows if r[stage]["iou"][c] is not None]
        out["per_class_iou"][c] = round(100 * statistics.mean(values), 1) if values else None
    return out


def report(args, changes: dict, folds: list[list[str]], fold_info: list[dict], results: list[dict]) -> None:
    """Print the wall times, the table and one JSON line."""
    print("\nwall time per training, s (stage 2 includes making its pseudo-masks):")
    for r in results:
        t = r["times"]
        print(
            f"  fold {r['fold']} {r['method']:<9} seed {r['seed']}: stage 1 {t.get('stage1')}, stage 2 {t.get('stage2')}"
        )
    held = sum(len(f["held"]) for f in fold_info)
    given = " ".join(
        f"--{k.replace('_', '-')} {' '.join(getattr(args, k))}" for k in changes if getattr(args, k)
    )
    print(
        f"\nWSSS4LUAD dev val, {len(folds)}-fold CV by image, folds {[f['index'] for f in fold_info]} "
        f"({held} held-out images), seeds {args.seeds}; {given or 'defaults'}; "
        f"{'TTA' if args.tta else 'one pass'}, stage 2 at scales {list(args.scales)}; "
        "% mean ± sd over folds x seeds"
    )
    print(f"{'measure':<20}{'method':<10}" + "".join(f"{h:>15}" for h in HEADS) + f"{'seed sd':>9}")
    rows = [summarise(results, stage, method) for stage in STAGES for method in args.methods]
    for row in rows:
        cells = "".join(f"{row[m]['mean']:>8.1f} ± {row[m]['sd']:<4.1f}" for m in METRICS)
        seed_sd = "-" if row["miou"]["seed_sd"] is None else f"{row['miou']['seed_sd']:.1f}"
        name = STAGE_NAMES[row["stage"]]
        print(f"{name:<20}{row['method']:<10}{cells}{seed_sd:>9}   IoU {row['per_class_iou']}")
    f1 = {f["index"]: f["bank_f1"] for f in fold_info}
    mean, sd = _ms([100 * v for v in f1.values()])
    print(
        f"bank nearest-prototype macro F1 on held-out single-class patches: {mean:.1f} ± {sd:.1f} over folds"
    )
    bank = {"mean": round(mean, 2), "sd": round(sd, 2), "per_fold": f1}
    weak = {
        f["index"]: f["summary"]["single_class_counts"] | {"tiles": f["summary"]["tiles"]} for f in fold_info
    }
    out = {"dev": str(args.dev), "folds": folds, "seeds": args.seeds, "tag": args.tag, "changes": changes}
    out["tta"], out["scales"] = args.tta, list(args.scales)
    print(json.dumps(out | {"weak_tiles": weak, "rows": rows, "bank_macro_f1": bank, "runs": results}))


def resolved(changes: dict) -> dict:
    """The settings a combination of changes gives with the package's defaults now (JSON values)."""
    from napari_pbip.bank import BankSettings
    from napari_pbip.data.weak import WeakSettings
    from napari_pbip.stage1.settings import TrainSettings
    from napari_pbip.stage2.seg_settings import SegSettings

    kinds = {"set": TrainSettings, "seg_set": SegSettings, "bank_set": BankSettings, "weak_set": WeakSettings}
    return json.loads(json.dumps({k: kinds[k](**changes[k]).to_dict() for k in kinds}))


def check_tag(work: Path, tag: str, changes: dict) -> None:
    """A tag names one set of settings: refuse to mix runs made with others, also when a package
    default has changed since the tag's runs were made. A field added since then is not a change
    (a new option's default keeps the old behaviour)."""
    path = work / f"tag-{tag}.json"
    saved, now = _read_json(path), resolved(changes)
    if saved is not None:
        then = saved.get("resolved")
        if then is None:
            raise SystemExit(f"--tag {tag} in {work} does not record its settings; pick another --tag")
        differ = {
            f"{k}.{f}": (v, now[k].get(f, "removed"))
            for k, fields in then.items()
            for f, v in fields.items()
            if now[k].get(f, "removed") != v
        }
        if differ:
            raise SystemExit(
                f"--tag {tag} was used in {work} with other settings ({differ}: then, now); pick another --tag"
            )
        now = {k: then[k] | now[k] for k in now}
    _write_json(path, changes | {"resolved": now})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dev", type=Path, default=DEV, help="the WSSS4LUAD folder with val/img and val/mask")
    p.add_argument("--work", type=Path, default=Path("/tmp/pbip-compare-real"), help="runs, kept and reused")
    p.add_argument("--folds", type=int, default=3, help="cross-validation folds (by image)")
    p.add_argument("--only-folds", type=int, nargs="+", help="hold out only these folds (a subset)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    for flag, what, default in (
        ("set", "TrainSettings", []),
        ("seg-set", "SegSettings", []),
        ("bank-set", "BankSettings", []),
        ("weak-set", "WeakSettings", []),
    ):
        p.add_argument(
            f"--{flag}", nargs="*", default=default, metavar="NAME=VALUE", help=f"{what} changes {default}"
        )
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="score as `pbip predict` does by default: masks averaged over the 8 symmetries (--no-tta: one pass)",
    )
    p.add_argument(
        "--scales",
        type=float,
        nargs="+",
        help="stage 2 with TTA: the image scales its masks are averaged over (default: `pbip predict`'s, "
        "0.75 1 1.25; --scales 1 for the symmetries only)",
    )
    p.add_argument("--tag", default="default", help="run name prefix, one per combination of changes")
    p.add_argument("--jobs", type=int, default=2, help="trainings at once (worker processes)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(json.loads(args.child))
        return 0
    if any(not 0 <= i < args.folds for i in args.only_folds or ()):
        p.error(f"--only-folds {args.only_folds}: folds are numbered 0 to {args.folds - 1}")
    if not (args.dev / "val" / "mask").is_dir():
        print(f"skipped: {args.dev} is absent (it lives in ../shared/data beside the development checkout)")
        return 0
    import torch

    from napari_pbip.engine.tta import SCALES

    torch.set_num_threads(args.jobs * args.threads)
    scales = args.scales = tuple(SCALES if args.scales is None else args.scales) if args.tta else (1.0,)
    args.work.mkdir(parents=True, exist_ok=True)
    changes = {k: parse_changes(getattr(args, k)) for k in ("set", "seg_set", "bank_set", "weak_set")}
    check_tag(args.work, args.tag, changes)
    folds = split_folds(args.dev, args.folds)
    for i, f in enumerate(folds):
        print(f"fold {i}: {len(f)} held-out images {' '.join(Path(n).stem for n in f)}", flush=True)
    fold_info, tasks = [], []
    for i in args.only_folds if args.only_folds is not None else range(args.folds):
        t = time.perf_counter()
        fold = prepare_fold(args.work, args.dev, folds, i, changes["weak_set"])
        bank, fold["bank_f1"] = fold_bank(fold, changes["bank_set"])
        print(
            f"fold {i}: {fold['summary']['tiles']} weak tiles from {len(fold['train'])} images, single-class "
            f"{fold['summary']['single_class_counts']}; bank macro F1 {100 * fold['bank_f1']:.1f} "
            f"({time.perf_counter() - t:.0f} s)",
            flush=True,
        )
        fold_info.append(fold)
        common = {"fold": i, "weak": fold["weak"], "bank": bank, "held_out": fold["root"] / "held-out"}
        common |= {"held": fold["held"], "set": changes["set"], "seg_set": changes["seg_set"]}
        for seed, method in ((s, m) for s in args.seeds for m in args.methods):
            paths = _names(fold, args.tag, method, seed, args.tta, scales)
            tasks.append(
                common | {"seed": seed, "method": method, "paths": paths, "tta": args.tta, "scales": scales}
            )
    with ThreadPoolExecutor(args.jobs) as pool:  # each thread runs its trainings in worker processes
        times = list(pool.map(lambda t: train_run(t, args.threads), tasks))
    results = [
        {k: t[k] for k in ("fold", "seed", "method")} | score_run(t) | {"times": tm}
        for t, tm in zip(tasks, times, strict=True)
    ]
    report(args, changes, folds, fold_info, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
