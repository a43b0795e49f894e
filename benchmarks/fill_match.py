"""Which fill should the FG/BG images of eq. 5 have: black (as written) or white (glass)?

Uses ``../shared/data/wsss4luad-dev`` (WSSS4LUAD; not part of the project). For each of its 31 val
images and each tissue class covering at least ``--min-share`` of it, the ground-truth region is
cut out as eq. 5 does with a perfect CAM (``X_FG = b * X``, the rest black or white) and the rest
of the image as the matching BG image; both are encoded at the bank's patch size, and each is
given the class whose prototypes are most similar on average. A fill is better when FG images
match their own class and BG images do not. The bank is built from weak tiles of the same images
(``benchmarks/compare_real.py`` style), so this scores prototypes against regions they saw:
it compares the two fills, it is not a generalisation figure.

    python benchmarks/fill_match.py            # table and one JSON line
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "wsss4luad-dev"


def _bank(work: Path, dev: Path) -> Path:
    from napari_pbip.bank import BankSettings, build_bank
    from napari_pbip.data.weak import weak_dataset
    from napari_pbip.events import run

    weak, bank = work / "weak", work / "bank"
    if not weak.exists():
        run(weak_dataset(dev / "val" / "img", dev / "val" / "mask", weak))
    if not bank.exists():
        run(build_bank(BankSettings(), weak, bank, device="cpu"))
    return bank


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dev", type=Path, default=DEV)
    p.add_argument("--work", type=Path, default=Path("/tmp/pbip-fill-match"))
    p.add_argument("--min-share", type=float, default=0.05, help="least share of the image a class covers")
    args = p.parse_args(argv)
    if not (args.dev / "val" / "mask").is_dir():
        print(f"skipped: {args.dev} is absent (it lives in ../shared/data beside the development checkout)")
        return 0
    from napari_pbip.bank import open_bank
    from napari_pbip.bank.encode import encode
    from napari_pbip.data.images import list_images, read_mask, read_rgb
    from napari_pbip.data.layouts import open_dataset

    args.work.mkdir(parents=True, exist_ok=True)
    bank = open_bank(_bank(args.work, args.dev))
    encoder = bank.encoder(device="cpu")
    protos, valid = bank.prototype_tensor()
    unit = protos / np.maximum(np.linalg.norm(protos, axis=-1, keepdims=True), 1e-6)
    spec = open_dataset(args.work / "weak").spec
    n = len(spec.classes)
    hits = {fill: {"fg": [], "bg": []} for fill in ("black", "white")}
    for image_path in list_images(args.dev / "val" / "img"):
        image = read_rgb(image_path)
        mask = read_mask(args.dev / "val" / "mask" / image_path.name, spec)
        for c in range(n):
            b = mask == c
            if b.mean() < args.min_share:
                continue
            for fill, value in (("black", 0), ("white", 255)):
                fg = np.where(b[..., None], image, value).astype(np.uint8)
                bg = np.where(b[..., None], value, image).astype(np.uint8)
                feats = encode(encoder, [fg, bg])
                feats /= np.maximum(np.linalg.norm(feats, axis=-1, keepdims=True), 1e-6)
                sims = np.einsum("pd,nkd->pnk", feats, unit)
                means = (sims * valid).sum(-1) / np.maximum(valid.sum(-1), 1)
                hits[fill]["fg"].append(int(means[0].argmax() == c))
                hits[fill]["bg"].append(int(means[1].argmax() != c))
    rows = {
        fill: {k: round(100 * float(np.mean(v)), 1) for k, v in h.items()} | {"pairs": len(h["fg"])}
        for fill, h in hits.items()
    }
    print(f"{'fill':<8}{'FG matches own class %':>24}{'BG avoids own class %':>24}{'pairs':>8}")
    for fill, r in rows.items():
        print(f"{fill:<8}{r['fg']:>24.1f}{r['bg']:>24.1f}{r['pairs']:>8}")
    print(json.dumps({"dev": str(args.dev), "bank": bank.settings.to_dict(), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
