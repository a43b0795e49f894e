"""``bank eval``: nearest-prototype classification of single-class patches (paper Table 6, "image prompt").

Masked images of a split are cut into patches (:class:`~.settings.EvalSettings`); a patch is
single-class when tissue (mask pixels that are neither background nor near-white) covers at least
``min_tissue`` of it and one class holds at least ``purity`` of that tissue. Each patch is
encoded with the bank's encoder and given the class of its most similar prototype (cosine, over
every valid sub-cluster prototype); per class precision, recall and F1 say how well the bank's
prototypes alone separate the classes, before any training.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import BankError
from ..events import Job, Progress
from .eligibility import tissue_mask
from .encode import encode
from .kmeans import normalise
from .settings import EvalSettings
from .store import Bank


def patch_label(
    mask: np.ndarray,
    tissue: np.ndarray,
    n_classes: int,
    settings: EvalSettings,
    background_index: int | None = None,
) -> int | str:
    """True class of a mask patch, or why it is not single-class (``"background"`` or ``"mixed"``).

    Args:
        mask: ``(h, w)`` mask indices of the patch.
        tissue: ``(h, w)`` bool, True on tissue pixels (not background index, not near-white).
        n_classes: number of tissue classes.
        settings: purity and tissue thresholds.
        background_index: mask index of background (default ``n_classes``); tissue class ``k`` is
            the ``k``-th other index (:func:`~napari_pbip.data.layouts.tissue_mask_indices`).

    Returns:
        The tissue class number ``k`` (not its mask index), or the reason.
    """
    from ..data.layouts import tissue_mask_indices

    bg = n_classes if background_index is None else background_index
    indices = list(tissue_mask_indices(n_classes, bg))
    n_tissue = int(tissue.sum())
    if n_tissue == 0 or n_tissue < settings.min_tissue * tissue.size:
        return "background"
    counts = np.bincount(mask[tissue].ravel(), minlength=max(indices) + 1)[indices]
    top = int(counts.argmax())
    return top if counts[top] >= settings.purity * n_tissue else "mixed"


def _patches(
    ds: Any, split: str, settings: EvalSettings, skipped: dict[str, int]
) -> Iterator[tuple[np.ndarray, int]]:
    from ..data.images import read_mask, read_rgb
    from ..data.weak import tile_starts

    spec = ds.spec
    for sample in ds.samples(split):
        if sample.mask is None:
            raise BankError(
                f"{sample.image} in split {split!r} of {ds.root} has no mask; bank eval needs masks"
            )
        image, mask = read_rgb(sample.image), read_mask(sample.mask, spec)
        if image.shape[:2] != mask.shape:
            raise BankError(
                f"image {sample.image} and its mask {sample.mask} differ in size; masks must match"
            )
        tissue = (
            tissue_mask(image, settings.white_level)
            & (mask != spec.background_index)
            & (mask < len(spec.palette))
        )
        t = settings.tile
        for y in tile_starts(image.shape[0], t, settings.stride):
            for x in tile_starts(image.shape[1], t, settings.stride):
                crop = (slice(y, y + t), slice(x, x + t))
                label = patch_label(mask[crop], tissue[crop], spec.n_classes, settings, spec.background_index)
                if isinstance(label, str):
                    skipped[label] = skipped.get(label, 0) + 1
                    continue
                yield np.ascontiguousarray(image[crop]), label


def evaluate_bank(
    bank: Bank,
    dataset: Any,
    split: str = "val",
    settings: EvalSettings | None = None,
    device: str = "auto",
    encoder: Any = None,
) -> Job[dict[str, Any]]:
    """Score the bank's prototypes as a nearest-prototype classifier (a generator job).

    Args:
        bank: an opened bank.
        dataset: a data set folder or ``Dataset`` whose ``split`` has masks; its classes are
            matched to the bank's by name.
        split: the masked split to cut patches from.
        settings: patch size, stride, purity and tissue thresholds.
        device: torch device for the encoder.
        encoder: an encoder module to use (checked against the bank's weights hash).

    Yields:
        One ``Progress("eval")`` per batch of patches.

    Returns:
        Per-class precision/recall/F1/support, accuracy, macro F1, the confusion matrix (rows =
        true, columns = predicted, bank class order) and counts of patches not used.
    """
    from ..data.layouts import Dataset, open_dataset

    settings = settings or EvalSettings()
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    to_bank = _class_map(bank, ds.spec.classes)
    enc = bank.encoder(device, encoder)
    protos, valid = bank.prototype_tensor()
    flat, owner = normalise(protos[valid]), np.nonzero(valid)[0]
    skipped: dict[str, int] = {}
    truth: list[int] = []
    preds: list[int] = []
    batch: list[np.ndarray] = []
    for image, label in _patches(ds, split, settings, skipped):
        if to_bank[label] is None:
            skipped["class not in bank"] = skipped.get("class not in bank", 0) + 1
            continue
        batch.append(image)
        truth.append(to_bank[label])
        if len(batch) == settings.batch_size:
            preds.extend(_predict(encode(enc, batch), flat, owner, len(bank.classes)))
            batch = []
            yield Progress("eval", len(preds), None, f"{len(preds)} single-class patches classified")
    if batch:
        preds.extend(_predict(encode(enc, batch), flat, owner, len(bank.classes)))
        yield Progress("eval", len(preds), None, f"{len(preds)} single-class patches classified")
    if not truth:
        raise BankError(
            f"split {split!r} of {ds.root} gave no single-class patches (skipped: {skipped}); lower --purity or "
            "--tile, or evaluate on another split"
        )
    result = scores(np.array(truth), np.array(preds), bank.classes)
    result.update(bank=str(bank.root), version=bank.version, dataset=str(ds.root), split=split)
    result.update(settings=settings.to_dict(), skipped_patches=skipped)
    return result


def _class_map(bank: Bank, ds_classes: tuple[str, ...]) -> list[int | None]:
    mapping = [bank.classes.index(c) if c in bank.classes else None for c in ds_classes]
    if all(m is None for m in mapping):
        raise BankError(
            f"the data set's classes {list(ds_classes)} share no name with the bank's {list(bank.classes)}; "
            "evaluate on the data set the bank was built for"
        )
    return mapping


def _predict(features: np.ndarray, flat: np.ndarray, owner: np.ndarray, n_classes: int) -> list[int]:
    sims = normalise(features) @ flat.T
    per_class = np.full((len(features), n_classes), -np.inf, np.float32)
    for c in range(n_classes):
        if (owner == c).any():
            per_class[:, c] = sims[:, owner == c].max(axis=1)
    return per_class.argmax(axis=1).tolist()


def scores(truth: np.ndarray, preds: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    """Per-class precision, recall, F1 and support, accuracy and macro F1 (over classes with support)."""
    n = len(classes)
    conf = np.zeros((n, n), np.int64)
    np.add.at(conf, (truth, preds), 1)
    tp = np.diag(conf).astype(float)
    per = {}
    for c, name in enumerate(classes):
        p = tp[c] / conf[:, c].sum() if conf[:, c].sum() else 0.0
        r = tp[c] / conf[c].sum() if conf[c].sum() else 0.0
        per[name] = {
            "support": int(conf[c].sum()),
            "precision": float(p),
            "recall": float(r),
            "f1": float(2 * p * r / (p + r)) if p + r else 0.0,
        }
    present = [v["f1"] for v in per.values() if v["support"]]
    return {
        "classes": per,
        "patches": int(conf.sum()),
        "accuracy": float(tp.sum() / conf.sum()),
        "macro_f1": float(np.mean(present)),
        "confusion": conf.tolist(),
        "class_names": list(classes),
    }


def format_eval(result: dict[str, Any]) -> str:
    """The result of :func:`evaluate_bank` as a table (scores in %)."""
    lines = [
        f"bank {result['bank']} (version {result['version']}) on {result['dataset']} split {result['split']}: "
        f"{result['patches']} single-class patches (tile {result['settings']['tile']}, purity "
        f"{result['settings']['purity']:g}); not used: {result['skipped_patches']}",
        f"{'class':<14}{'support':>9}{'precision':>11}{'recall':>9}{'F1':>8}",
    ]
    for name, v in result["classes"].items():
        lines.append(
            f"{name:<14}{v['support']:>9}{100 * v['precision']:>11.1f}{100 * v['recall']:>9.1f}{100 * v['f1']:>8.1f}"
        )
    lines.append(
        f"accuracy {100 * result['accuracy']:.1f}%, macro F1 {100 * result['macro_f1']:.1f}% (classes with support)"
    )
    names = result["class_names"]
    lines += ["confusion (rows true, columns predicted):", " " * 14 + "".join(f"{n[:9]:>10}" for n in names)]
    for name, row in zip(names, result["confusion"], strict=True):
        lines.append(f"{name:<14}" + "".join(f"{v:>10}" for v in row))
    return "\n".join(lines)
