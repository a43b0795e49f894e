"""``pbip bank``: build, inspect, evaluate and edit a prototype image bank."""

from __future__ import annotations

import argparse

from ._common import add_device, add_json_out, add_quiet


def register(subparsers) -> None:
    """Add the ``bank`` command group and its subcommands."""
    parser = subparsers.add_parser(
        "bank",
        help="prototype image bank: build, info, eval, members, add/remove/move/lock/recluster, undo, repair",
        description="The PBIP image bank: per class, K sub-clusters of single-class patches whose mean encoder "
        "features are the prototypes. Every edit writes a new version; `pbip bank undo` goes back one.",
    )
    parser.set_defaults(func=lambda args: _usage(parser))
    sub = parser.add_subparsers(dest="bank_command", metavar="BANK_COMMAND")
    for add in (_add_build, _add_info, _add_eval, _add_members, _add_add, _add_remove, _add_move, _add_lock):
        add(sub)
    _add_recluster(sub)
    _add_undo(sub)
    _add_repair(sub)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _add_build(sub) -> None:
    p = sub.add_parser(
        "build",
        help="build a bank from the single-class patches of a weakly labelled data set",
        description="Keep the training patches labelled with exactly one class and at least --min-tissue tissue "
        "(tissue = not near-white), encode them, cluster each class with spherical K-Means and keep the "
        "--per-cluster images nearest each centre. Skipped images are listed in BANK/report.json.",
    )
    p.add_argument("--dataset", required=True, help="data set folder (any layout `pbip data info` reads)")
    p.add_argument("--out", required=True, help="bank folder to write")
    p.add_argument("--encoder", default="efficientnet_lite0", help="encoder name (see `pbip models`)")
    p.add_argument("--k", type=int, default=3, help="sub-clusters per class (paper: 3)")
    p.add_argument(
        "--per-cluster", type=int, default=100, help="images kept per sub-cluster, N_K (paper: 100)"
    )
    p.add_argument("--min-tissue", type=float, default=0.5, help="least tissue fraction of an eligible patch")
    p.add_argument("--split", default="train", help="split to build from (default: train)")
    p.add_argument("--batch-size", type=int, default=32, help="images per encoder batch")
    p.add_argument("--seed", type=int, default=0, help="K-Means seed")
    add_device(p)
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing bank (its features are reused)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    """Build the bank and print what it kept and skipped."""
    import json

    from ..bank import BankSettings, bank_info, build_bank, format_info
    from ._common import drain

    settings = BankSettings(
        encoder=args.encoder,
        k=args.k,
        per_cluster=args.per_cluster,
        min_tissue=args.min_tissue,
        split=args.split,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    bank = drain(build_bank(settings, args.dataset, args.out, args.device, args.overwrite), quiet=args.quiet)
    report = json.loads((bank.root / "report.json").read_text())
    print(format_info(bank_info(bank)))
    print()
    rate = report["images_per_second"]
    print(
        f"encoded {report['encoded']} image(s) ({report['from_cache']} from cache)"
        + (f" at {rate:.1f} images/s" if rate else "")
        + f"; K-Means {report['kmeans_seconds']:.2f} s; patch size {report['patch_size']} px"
    )
    for name, c in report["classes"].items():
        print(
            f"  {name}: {c['single_class']} single-class, {c['eligible']} eligible, sub-clusters {c['sizes']}"
        )
    for note in report["notes"]:
        print(f"  note: {note}")
    if report["skipped"]:
        print(f"skipped {len(report['skipped'])} image(s) {report['skipped_counts']}, e.g.:")
        for s in report["skipped"][:5]:
            print(f"  {s['path']}: {s['reason']}")
        print(f"full list: {bank.root / 'report.json'}")
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser(
        "info",
        help="classes, K and members per sub-cluster, prototype shape, intra/inter-class cosine, history",
        description="Summarise a bank: per class and sub-cluster the selected/total members, the prototype "
        "tensor shape, the mean cosine similarity of prototypes within and between classes, and the versions.",
    )
    p.add_argument("bank", help="bank folder")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    """Print the bank summary."""
    from ..bank import bank_info, format_info, open_bank
    from ._common import print_json

    info = bank_info(open_bank(args.bank))
    if args.json:
        print_json(info)
    else:
        print(format_info(info))
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="nearest-prototype classification of single-class patches: per-class precision/recall/F1",
        description="Cut the masked images of a split into patches, keep those where one class holds at least "
        "--purity of the tissue, and classify each by its most similar prototype (cosine). Scores in %.",
    )
    p.add_argument("bank", help="bank folder")
    p.add_argument("--dataset", required=True, help="data set folder with a masked split")
    p.add_argument("--split", default="val", help="split with masks (default: val)")
    p.add_argument("--tile", type=int, default=224, help="patch side in pixels")
    p.add_argument("--stride", type=int, default=112, help="step between patches in pixels")
    p.add_argument("--purity", type=float, default=0.9, help="share of tissue the patch's class must hold")
    p.add_argument("--min-tissue", type=float, default=0.5, help="least tissue fraction of a patch")
    add_json_out(p, "the result")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json-out file")
    add_device(p)
    add_quiet(p)
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate the bank and print the table."""
    from .. import _atomic
    from ..bank import EvalSettings, evaluate_bank, format_eval, open_bank
    from ._common import drain, emit, json_targets

    show_json, json_file = json_targets(args)
    if json_file:
        _atomic.check_writable(json_file, args.overwrite, {"bank": args.bank, "data set": args.dataset})
    settings = EvalSettings(
        tile=args.tile, stride=args.stride, purity=args.purity, min_tissue=args.min_tissue
    )
    job = evaluate_bank(open_bank(args.bank), args.dataset, args.split, settings, args.device)
    result = drain(job, quiet=args.quiet or show_json)
    emit(result, format_eval(result), show_json, json_file)
    return 0


def _add_members(sub) -> None:
    p = sub.add_parser("members", help="list member ids, sub-clusters, distances and flags")
    p.add_argument("bank", help="bank folder")
    p.add_argument("--class", dest="class_name", help="only this class")
    p.add_argument("--selected", action="store_true", help="only members that make the prototypes")
    p.add_argument("--json", action="store_true", help="print as JSON on stdout")
    p.set_defaults(func=run_members)


def run_members(args: argparse.Namespace) -> int:
    """Print the members of the current version."""
    import dataclasses

    from ..bank import open_bank
    from ._common import print_json

    bank = open_bank(args.bank)
    members = bank.members(args.class_name, selected=True if args.selected else None)
    if args.json:
        print_json([dataclasses.asdict(m) for m in members])
        return 0
    print(f"{'id':>6}  {'class':<14}{'sub':>4}{'distance':>10}  flags  image")
    for m in members:
        flags = ("S" if m.selected else "-") + ("L" if m.locked else "-")
        print(f"{m.id:>6}  {m.class_name:<14}{m.cluster:>4}{m.distance:>10.4f}  {flags:<5}  {m.path}")
    print(f"{len(members)} member(s); flags: S selected (in the prototype), L locked")
    return 0


def _add_add(sub) -> None:
    p = sub.add_parser("add", help="add image files to a class (only new images are encoded)")
    p.add_argument("bank", help="bank folder")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--class", dest="class_name", required=True, help="class to add to")
    p.add_argument("--cluster", type=int, help="sub-cluster to join (default: nearest centre)")
    add_device(p)
    p.set_defaults(func=run_add)


def run_add(args: argparse.Namespace) -> int:
    """Add images and report what was skipped."""
    from ..bank import add_images, open_bank

    bank = add_images(
        open_bank(args.bank), args.class_name, args.images, cluster=args.cluster, device=args.device
    )
    for s in bank.last_edit.get("skipped", []):
        print(f"skipped {s['item']}: {s['reason']}")
    return _done(bank)


def _ids_parser(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text)
    p.add_argument("bank", help="bank folder")
    p.add_argument("ids", nargs="+", type=int, help="member ids (see `pbip bank members`)")
    return p


def _add_remove(sub) -> None:
    _ids_parser(sub, "remove", "remove members (unlock locked ones first)").set_defaults(func=run_remove)


def run_remove(args: argparse.Namespace) -> int:
    """Remove members."""
    from ..bank import open_bank, remove

    return _done(remove(open_bank(args.bank), args.ids))


def _add_move(sub) -> None:
    p = _ids_parser(sub, "move", "move members to another class and/or sub-cluster")
    p.add_argument("--to", required=True, help="target class")
    p.add_argument("--cluster", type=int, help="target sub-cluster (default: nearest centre)")
    p.set_defaults(func=run_move)


def run_move(args: argparse.Namespace) -> int:
    """Move members."""
    from ..bank import move, open_bank

    return _done(move(open_bank(args.bank), args.ids, args.to, args.cluster))


def _add_lock(sub) -> None:
    p = _ids_parser(sub, "lock", "lock members (kept through re-clustering, protected from removal)")
    p.add_argument("--unlock", action="store_true", help="unlock instead")
    p.set_defaults(func=run_lock)


def run_lock(args: argparse.Namespace) -> int:
    """Lock or unlock members."""
    from ..bank import lock, open_bank

    return _done(lock(open_bank(args.bank), args.ids, locked=not args.unlock))


def _add_recluster(sub) -> None:
    p = sub.add_parser("recluster", help="re-cluster one class with a new K, keeping locked members")
    p.add_argument("bank", help="bank folder")
    p.add_argument("--class", dest="class_name", required=True, help="class to re-cluster")
    p.add_argument("--k", type=int, required=True, help="new number of sub-clusters")
    p.add_argument("--per-cluster", type=int, help="images kept per sub-cluster (default: the bank's)")
    p.set_defaults(func=run_recluster)


def run_recluster(args: argparse.Namespace) -> int:
    """Re-cluster a class."""
    from ..bank import open_bank, recluster

    return _done(recluster(open_bank(args.bank), args.class_name, args.k, args.per_cluster))


def _add_undo(sub) -> None:
    p = sub.add_parser("undo", help="go back to the previous version")
    p.add_argument("bank", help="bank folder")
    p.set_defaults(func=run_undo)


def run_undo(args: argparse.Namespace) -> int:
    """Undo the last edit."""
    from ..bank import open_bank, undo

    return _done(undo(open_bank(args.bank)))


def _add_repair(sub) -> None:
    p = sub.add_parser(
        "repair",
        help="restore the newest intact version when bank.json (or its version's files) is damaged",
        description="When the bank cannot be opened because bank.json is damaged, cut off or edited by hand "
        "(or its version's prototypes are), make the newest version under BANK/versions whose files check "
        "out current again. The damaged bank.json is kept as bank.json.damaged-<UTC time>. An intact bank is "
        "left as it is; to go back one edit on an intact bank use `pbip bank undo`.",
    )
    p.add_argument("bank", help="bank folder")
    p.set_defaults(func=run_repair)


def run_repair(args: argparse.Namespace) -> int:
    """Repair the bank, or say it is intact."""
    from ..bank.edit import repair

    bank, repaired, kept = repair(args.bank)
    if not repaired:
        print(f"{bank.root}: intact at version {bank.version}; nothing to repair")
        return 0
    where = f"; the damaged bank.json is kept as {kept}" if kept else " (bank.json was missing)"
    print(f"{bank.root}: restored version {bank.version}{where}")
    return _done(bank)


def _done(bank) -> int:
    summary = bank.last_edit.get("summary", "")
    print(
        f"{bank.root}: now at version {bank.version}, made by: {summary}; content hash {bank.content_hash[:16]}"
    )
    return 0
