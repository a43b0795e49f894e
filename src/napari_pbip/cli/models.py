"""``pbip models``: list the encoders, backbones and segmenters that can be named."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    """Add the ``models`` subcommand."""
    p = subparsers.add_parser(
        "models",
        help="list registered encoders, backbones and segmenters, and whether their weights are offline",
        description="List the model names --encoder, --backbone and --segmenter accept. 'offline' means the "
        "weights ship with the installed packages; hub ids and local directories are accepted as well.",
    )
    p.add_argument("--json", action="store_true", help="print the list as JSON on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the model catalogue as a table or JSON."""
    from ..models.hub import catalog
    from ._common import print_json

    cat = catalog()
    if args.json:
        print_json(cat)
        return 0
    for kind in ("encoders", "backbones", "segmenters"):
        print(f"{kind}:")
        rows = cat[kind]
        if not rows:
            print("  (none registered)")
            continue
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            weights = "offline " if r["offline"] else "download"
            print(f"  {r['name']:<{width}}  {weights}  {r['description']}")
    print("also accepted (weights from the model hub cache or a local directory):")
    for family, examples in cat["hub"].items():
        print(f"  {family:<9}  {examples}")
    return 0
