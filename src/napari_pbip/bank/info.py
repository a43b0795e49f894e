"""What a bank holds, as a JSON-able dict and a table: counts per sub-cluster and prototype similarity.

Intra-class similarity is the mean cosine between the distinct prototypes of one class; inter-class
similarity is the mean cosine between a class's prototypes and the other classes' prototypes. A
bank whose inter-class similarity is close to its intra-class similarity gives ClassNet little to
tell the classes apart with (the inter-class homogeneity the paper discusses).

Two classes' prototypes are *too alike* (:func:`too_alike`) when the mean cosine between them
reaches the mean cosine between sub-cluster prototypes within either class (the classes are as
alike as one class's own sub-clusters), or, for classes with a single prototype, when it reaches
:data:`ABSOLUTE_LIMIT`. The report and the "Image bank" widget warn about such pairs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .kmeans import normalise
from .store import Bank

ABSOLUTE_LIMIT = 0.95  # too alike, for classes with a single prototype each


def bank_info(bank: Bank) -> dict[str, Any]:
    """Summary of ``bank``: version, encoder, classes with per-sub-cluster counts, similarities, history."""
    protos, valid = bank.prototype_tensor()
    return {
        "path": str(bank.root),
        "version": bank.version,
        "parent": bank.parent,
        "encoder": bank.encoder_record,
        "content_hash": bank.content_hash,
        "prototype_shape": list(protos.shape),
        "valid_prototypes": int(valid.sum()),
        "patch_size": bank.patch_size,
        "classes": [_class_info(bank, name, valid[i]) for i, name in enumerate(bank.classes)],
        "similarity": (similarity := prototype_similarity(protos, valid, bank.classes)),
        "too_alike": [list(pair) for pair in too_alike(similarity, bank.classes)],
        "history": bank.history(),
    }


def too_alike(similarity: dict[str, Any], classes: tuple[str, ...]) -> list[tuple[str, str, float, float]]:
    """Class pairs whose prototypes are too alike: ``(a, b, cosine between them, limit it reached)``."""
    out = []
    matrix, intra = similarity["matrix"], similarity["intra"]
    for i, a in enumerate(classes):
        for j in range(i + 1, len(classes)):
            b, cos = classes[j], matrix[i][j]
            if cos is None:
                continue
            own = [v for v in (intra.get(a), intra.get(b)) if v is not None]
            limit = min(own) if own else ABSOLUTE_LIMIT
            if cos >= limit:
                out.append((a, b, float(cos), float(limit)))
    return out


def _class_info(bank: Bank, name: str, valid: np.ndarray) -> dict[str, Any]:
    members = bank.members(name)
    clusters = []
    for k in range(bank.ks[bank.class_index(name)]):
        ms = [m for m in members if m.cluster == k]
        sel = [m.distance for m in ms if m.selected]
        clusters.append(
            {
                "index": k,
                "members": len(ms),
                "selected": len(sel),
                "locked": sum(m.locked for m in ms),
                "valid": bool(valid[k]),
                "mean_distance": round(float(np.mean(sel)), 4) if sel else None,
            }
        )
    return {
        "name": name,
        "k": len(clusters),
        "members": len(members),
        "selected": sum(m.selected for m in members),
        "locked": sum(m.locked for m in members),
        "clusters": clusters,
    }


def prototype_similarity(
    prototypes: np.ndarray, valid: np.ndarray, classes: tuple[str, ...]
) -> dict[str, Any]:
    """Cosine similarities of the valid prototypes: per class intra/inter means and a class x class matrix.

    Returns:
        ``intra`` and ``inter`` (class -> mean cosine, None where undefined), ``matrix`` (mean
        cosine over prototype pairs of each class pair, self-pairs excluded on the diagonal),
        ``mean_intra`` and ``mean_inter`` (over all such pairs in the bank).
    """
    owner = np.nonzero(valid)[0]
    flat = normalise(prototypes[valid.astype(bool)])
    sims = flat @ flat.T
    n = len(classes)
    same = owner[:, None] == owner[None, :]
    off_diag = ~np.eye(len(owner), dtype=bool)
    matrix = [[_mean(sims[np.ix_(owner == a, owner == b)], a == b) for b in range(n)] for a in range(n)]
    return {
        "intra": {c: matrix[i][i] for i, c in enumerate(classes)},
        "inter": {c: _mean(sims[np.ix_(owner == i, owner != i)], False) for i, c in enumerate(classes)},
        "matrix": matrix,
        "mean_intra": _mean_of(sims[same & off_diag]),
        "mean_inter": _mean_of(sims[~same]),
    }


def _mean(block: np.ndarray, diagonal: bool) -> float | None:
    if diagonal:
        block = block[~np.eye(block.shape[0], dtype=bool)] if block.shape[0] == block.shape[1] else block
    return _mean_of(block)


def _mean_of(values: np.ndarray) -> float | None:
    return round(float(values.mean()), 4) if values.size else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_info(info: dict[str, Any]) -> str:
    """The summary of :func:`bank_info` as a plain-text report."""
    enc = info["encoder"]
    lines = [
        f"bank {info['path']}: version {info['version']} (parent {info['parent']}), "
        f"encoder {enc['name']} (weights {enc['weights_id']}, sha256 {enc['weights_hash'][:12]})",
        f"prototypes {tuple(info['prototype_shape'])} (N classes, K max, d), {info['valid_prototypes']} valid; "
        f"patch size {info['patch_size']} px; content hash {info['content_hash'][:16]}",
        "",
        f"{'class':<14}{'k':>3}{'members':>9}{'selected':>10}{'locked':>8}  {'selected/members per sub-cluster':<36}"
        f"{'intra cos':>10}{'inter cos':>10}",
    ]
    sim = info["similarity"]
    for c in info["classes"]:
        per = " ".join(f"{x['selected']}/{x['members']}" + ("" if x["valid"] else "!") for x in c["clusters"])
        lines.append(
            f"{c['name']:<14}{c['k']:>3}{c['members']:>9}{c['selected']:>10}{c['locked']:>8}  {per:<36}"
            f"{_fmt(sim['intra'][c['name']]):>10}{_fmt(sim['inter'][c['name']]):>10}"
        )
    lines.append(
        f"mean intra-class cosine {_fmt(sim['mean_intra'])}, mean inter-class cosine {_fmt(sim['mean_inter'])}"
    )
    lines += ["", "prototype cosine similarity, mean over pairs (class x class):"]
    names = [c["name"] for c in info["classes"]]
    lines.append(" " * 14 + "".join(f"{n[:9]:>10}" for n in names))
    for name, row in zip(names, sim["matrix"], strict=True):
        lines.append(f"{name:<14}" + "".join(f"{_fmt(v):>10}" for v in row))
    for a, b, cos, limit in info["too_alike"]:
        lines.append(
            f"WARNING: prototypes of {a} and {b} are too alike (cosine {cos:.3f} >= {limit:.3f}): ClassNet will "
            "find them hard to tell apart; remove ambiguous images, add distinct ones, or re-cluster"
        )
    lines += ["", "history:"]
    for h in info["history"]:
        mark = "  <- current" if h["current"] else ""
        lines.append(f"  v{h['version']} (parent {h['parent']}) {h['op']}: {h['summary']}{mark}")
    return "\n".join(lines)
