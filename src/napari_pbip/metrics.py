"""Segmentation metrics as the peer methods compute them: mIoU, FwIoU, Dice and Boundary IoU.

Label maps hold mask indices: ``n_classes`` tissue classes and one background index
(``ignore_index``, the data set's ``background_index``). Tissue class ``k`` is the ``k``-th mask
index other than the background (:func:`napari_pbip.data.layouts.tissue_mask_indices`, the one
mapping pseudo-masks, predictions and exports use too), so with the usual
``ignore_index == n_classes`` the tissue classes are ``0..n_classes-1``.

How background is treated (DESIGN.md section 4):

* Pixels whose **ground truth** is background are excluded from every count.
* A tissue pixel **predicted** as background is a miss: a false negative of its true class and
  a false positive of no tissue class. The confusion matrix therefore has one extra column,
  ``conf[c, n_classes]``, counting tissue pixels of class ``c`` predicted as background.
* Boundary regions (Cheng et al., CVPR 2021) are computed from each class's full binary masks,
  so a class's edge against background is part of its contour; afterwards only pixels whose
  ground truth is tissue enter the intersection and union, as in the confusion matrix.

Means (mIoU, mean Dice, mean Boundary IoU) average over the tissue classes that have
ground-truth pixels in the evaluated images. A class predicted but absent from the ground truth
keeps a per-class score of 0 (its false positives also lower the true classes' scores); a class
absent from both has no score (NaN in arrays, None in :meth:`MetricAccumulator.result`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .data.layouts import tissue_mask_indices
from .errors import DatasetError

BOUNDARY_RATIO = 0.02  # boundary width as a share of the image diagonal (Cheng et al.)


def _lookup(n_classes: int, ignore_index: int) -> np.ndarray:
    """Table from mask index to class position: tissue 0..N-1, background N, invalid the dtype's max.

    Positions are ``uint8`` for up to 254 classes (cheapest to filter), else ``int16``.
    """
    if n_classes < 1 or ignore_index < 0:
        raise DatasetError(
            f"n_classes={n_classes}, ignore_index={ignore_index} are invalid: expected at least one tissue "
            "class and a non-negative background index"
        )
    dtype = np.uint8 if n_classes < 254 else np.int16
    if n_classes >= np.iinfo(np.int16).max - 1:
        raise DatasetError(f"n_classes={n_classes} is invalid: expected fewer than 32766 classes")
    lut = np.full(max(n_classes + 1, ignore_index + 1), np.iinfo(dtype).max, dtype=dtype)
    lut[list(tissue_mask_indices(n_classes, ignore_index))] = np.arange(n_classes)
    lut[ignore_index] = n_classes
    return lut


def _positions(labels: np.ndarray, lut: np.ndarray, what: str) -> np.ndarray:
    """Map a label map's mask indices to class positions, rejecting indices of no class."""
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise DatasetError(f"{what} has dtype {labels.dtype}; expected integer mask indices")
    if labels.dtype == np.bool_:
        labels = labels.view(np.uint8)  # a bool array would index as a mask
    if labels.size == 0:
        return labels.astype(lut.dtype)
    invalid = np.iinfo(lut.dtype).max
    if int(labels.min()) >= 0 and int(labels.max()) < len(lut):
        pos = lut[labels]
        if int(pos.max()) < invalid:
            return pos
    values = [int(v) for v in np.unique(labels) if not 0 <= v < len(lut) or lut[v] == invalid]
    valid = np.flatnonzero(lut < invalid)
    background = int(np.flatnonzero(lut == len(valid) - 1)[0])
    raise DatasetError(
        f"{what} holds mask indices {values[:8]} that are neither a tissue class nor background; expected "
        f"values in {valid.tolist()} (background {background}); check the number of classes and the background index"
    )


def _pairs(gt: Any, pred: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """One (gt, pred) pair per image from single maps, batches (B, H, W) or sequences."""
    if isinstance(gt, np.ndarray) or not isinstance(gt, Sequence):
        gt, pred = np.asarray(gt), np.asarray(pred)
        if gt.shape != pred.shape:
            raise DatasetError(
                f"ground truth has shape {gt.shape} but prediction {pred.shape}; expected equal shapes"
            )
        if gt.ndim == 3:
            return list(zip(gt, pred, strict=True))
        if gt.ndim != 2:
            raise DatasetError(f"label map has shape {gt.shape}; expected (H, W) or a batch (B, H, W)")
        return [(gt, pred)]
    if len(gt) != len(pred):
        raise DatasetError(f"{len(gt)} ground-truth maps but {len(pred)} predictions; expected one per image")
    return [p for g, q in zip(gt, pred, strict=True) for p in _pairs(np.asarray(g), np.asarray(q))]


def confusion_matrix(gt: Any, pred: Any, n_classes: int, ignore_index: int) -> np.ndarray:
    """Count pixels by (true class, predicted class) over one or many images.

    Args:
        gt: ground-truth mask indices: an ``(H, W)`` map, a ``(B, H, W)`` batch or a sequence of maps.
        pred: predicted mask indices, shaped like ``gt``.
        n_classes: number of tissue classes N.
        ignore_index: mask index of background.

    Returns:
        ``int64 (N, N + 1)``: ``conf[t, p]`` counts pixels of tissue class ``t`` predicted as class
        ``p``; column ``N`` counts those predicted as background (misses). Ground-truth background
        pixels are not counted.

    Raises:
        DatasetError: shapes differ or a map holds an index that is neither tissue nor background.
    """
    lut = _lookup(n_classes, ignore_index)
    conf = np.zeros((n_classes, n_classes + 1), dtype=np.int64)
    for g, p in _pairs(gt, pred):
        conf += _confusion(_positions(g, lut, "ground truth"), _positions(p, lut, "prediction"), n_classes)
    return conf


def _confusion(t: np.ndarray, q: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion counts ``(N, N + 1)`` of one image from class positions."""
    n = n_classes + 1
    counts = np.bincount((t.astype(np.intp) * n + q).ravel(), minlength=n * n)
    return counts.reshape(n, n)[:n_classes]


def scores(conf: np.ndarray) -> dict[str, Any]:
    """IoU, Dice, mIoU, FwIoU and pixel accuracy from a confusion matrix.

    Args:
        conf: ``(N, N + 1)`` from :func:`confusion_matrix` (or ``(N, N)`` without a background column).

    Returns:
        ``iou``, ``dice`` (float arrays, NaN for a class absent from both ground truth and
        prediction), ``gt_pixels`` (int array), ``present`` (bool array: class has ground-truth
        pixels), ``miou``, ``mean_dice`` (means over present classes), ``fwiou`` (IoU weighted by
        each class's share of ground-truth tissue pixels) and ``pixel_accuracy``; the scalars are
        NaN when no class is present.
    """
    conf = np.asarray(conf, dtype=np.int64)
    n = conf.shape[0]
    if conf.ndim != 2 or conf.shape[1] not in (n, n + 1):
        raise DatasetError(f"confusion matrix has shape {conf.shape}; expected (N, N + 1) or (N, N)")
    tp = np.diag(conf[:, :n]).astype(np.float64)
    gt_pixels = conf.sum(axis=1)
    pred_pixels = conf[:, :n].sum(axis=0)
    union = gt_pixels + pred_pixels - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        dice = np.where(union > 0, 2 * tp / (union + tp), np.nan)
    present = gt_pixels > 0
    total = gt_pixels.sum()
    out: dict[str, Any] = {
        "iou": iou,
        "dice": dice,
        "gt_pixels": gt_pixels,
        "present": present,
        "miou": float(iou[present].mean()) if present.any() else float("nan"),
        "mean_dice": float(dice[present].mean()) if present.any() else float("nan"),
        "fwiou": float((gt_pixels[present] / total * iou[present]).sum()) if total else float("nan"),
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
    }
    return out


def boundary_width(shape: tuple[int, ...], ratio: float = BOUNDARY_RATIO) -> int:
    """Boundary width d in pixels: ``ratio`` times the image diagonal, rounded, at least 1."""
    h, w = shape[-2:]
    return max(1, int(round(ratio * float(np.hypot(h, w)))))


def _contour_band(pos: np.ndarray, width: int) -> np.ndarray:
    """Pixels of a label map within ``width`` (chessboard) of another label or of the image edge.

    For the pixels of class ``c`` this is exactly the boundary region of the binary mask
    ``pos == c`` as the Boundary IoU reference code defines it (the mask minus its erosion by a
    ``(2 width + 1)`` square, pixels outside the image counted as outside the mask, so the image
    border is part of the contour); one min and one max filter serve every class at once.
    """
    from scipy import ndimage

    size = 2 * width + 1
    outside = np.iinfo(pos.dtype).max  # larger than any class position
    hi = ndimage.maximum_filter(pos, size=size, mode="constant", cval=outside)
    lo = ndimage.minimum_filter(pos, size=size, mode="nearest")
    return (hi != pos) | (lo != pos)


def boundary_counts(
    gt: np.ndarray, pred: np.ndarray, n_classes: int, ignore_index: int, ratio: float = BOUNDARY_RATIO
) -> np.ndarray:
    """Per-class boundary intersection and union of one image.

    Args:
        gt: ground-truth mask indices ``(H, W)``.
        pred: predicted mask indices ``(H, W)``.
        n_classes: number of tissue classes N.
        ignore_index: mask index of background.
        ratio: boundary width as a share of the image diagonal.

    Returns:
        ``int64 (2, N)``: row 0 the pixel count of ``G_d & P_d``, row 1 of ``G_d | P_d``, counted
        on pixels whose ground truth is tissue (see the module docstring).
    """
    lut = _lookup(n_classes, ignore_index)
    (g, p), *rest = _pairs(gt, pred)
    if rest:
        raise DatasetError(f"boundary_counts takes one (H, W) image; got {1 + len(rest)} images")
    t, q = _positions(g, lut, "ground truth"), _positions(p, lut, "prediction")
    return _boundary_counts(t, q, n_classes, boundary_width(t.shape, ratio))


def _boundary_counts(t: np.ndarray, q: np.ndarray, n_classes: int, width: int) -> np.ndarray:
    """Boundary intersection and union ``(2, N)`` of one image from class positions."""
    n = n_classes + 1
    if t.size == 0:
        return np.zeros((2, n_classes), dtype=np.int64)
    gt_band = _contour_band(t, width) & (t < n_classes)  # G_d of each tissue class, by t
    pred_band = _contour_band(q, width) & (q < n_classes) & (t < n_classes)  # P_d on GT tissue, by q
    g_size = np.bincount(t[gt_band], minlength=n)[:n_classes]
    p_size = np.bincount(q[pred_band], minlength=n)[:n_classes]
    inter = np.bincount(t[gt_band & pred_band & (t == q)], minlength=n)[:n_classes]
    return np.stack([inter, g_size + p_size - inter]).astype(np.int64)


def boundary_iou(
    gt: Any, pred: Any, n_classes: int, ignore_index: int, ratio: float = BOUNDARY_RATIO
) -> np.ndarray:
    """Per-class Boundary IoU over one or many images (intersections and unions summed first).

    Args:
        gt: an ``(H, W)`` map, a ``(B, H, W)`` batch or a sequence of maps (sizes may differ).
        pred: predictions shaped like ``gt``.
        n_classes: number of tissue classes N.
        ignore_index: mask index of background.
        ratio: boundary width d as a share of each image's diagonal (at least 1 px).

    Returns:
        float ``(N,)``; NaN for a class with an empty union (absent from ground truth and from the
        prediction on tissue pixels).
    """
    counts = np.zeros((2, n_classes), dtype=np.int64)
    for g, p in _pairs(gt, pred):
        counts += boundary_counts(g, p, n_classes, ignore_index, ratio)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts[1] > 0, counts[0] / np.maximum(counts[1], 1), np.nan)


def _none_if_nan(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


class MetricAccumulator:
    """Stream metrics over many images: ``update(gt, pred)`` per image or batch, then ``result()``.

    Args:
        n_classes: number of tissue classes N.
        background_index: mask index of background (excluded, see the module docstring).
        class_names: names of the tissue classes (default ``class_0`` ...).
        boundary: also compute Boundary IoU (a min and a max filter per label map; turn off for
            the fastest validation mIoU in a training loop).
        ratio: boundary width as a share of the image diagonal.
    """

    def __init__(
        self,
        n_classes: int,
        background_index: int,
        class_names: Sequence[str] | None = None,
        boundary: bool = True,
        ratio: float = BOUNDARY_RATIO,
    ) -> None:
        self._lut = _lookup(n_classes, background_index)
        names = (
            tuple(class_names) if class_names is not None else tuple(f"class_{i}" for i in range(n_classes))
        )
        if len(names) != n_classes:
            raise DatasetError(
                f"class_names {list(names)} has {len(names)} names; expected n_classes={n_classes}"
            )
        self.n_classes, self.background_index, self.class_names = n_classes, background_index, names
        self.boundary, self.ratio = boundary, ratio
        self.conf = np.zeros((n_classes, n_classes + 1), dtype=np.int64)
        self.boundary_sums = np.zeros((2, n_classes), dtype=np.int64)
        self.n_images = 0

    def update(self, gt: Any, pred: Any) -> None:
        """Add one ``(H, W)`` image, a ``(B, H, W)`` batch or a sequence of maps."""
        for g, p in _pairs(gt, pred):
            t, q = _positions(g, self._lut, "ground truth"), _positions(p, self._lut, "prediction")
            self.conf += _confusion(t, q, self.n_classes)
            if self.boundary:
                self.boundary_sums += _boundary_counts(
                    t, q, self.n_classes, boundary_width(t.shape, self.ratio)
                )
            self.n_images += 1

    def miou(self) -> float:
        """mIoU so far (NaN before any tissue pixel was seen)."""
        return scores(self.conf)["miou"]

    def result(self) -> dict[str, Any]:
        """All metrics so far as JSON-ready values (None where a score is undefined).

        Returns:
            ``per_class`` (name -> ``iou``, ``dice``, ``biou``, ``gt_pixels``), ``miou``,
            ``fwiou``, ``mean_dice``, ``mean_biou`` (None without ``boundary``),
            ``pixel_accuracy``, ``n_images``, ``classes``, ``background_index`` and
            ``confusion`` (rows: true class; columns: predicted class, then background).
        """
        s = scores(self.conf)
        inter, union = self.boundary_sums
        with np.errstate(invalid="ignore", divide="ignore"):
            biou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
        present = s["present"]
        mean_biou = float(biou[present].mean()) if self.boundary and present.any() else float("nan")
        per_class = {
            name: {
                "iou": _none_if_nan(s["iou"][i]),
                "dice": _none_if_nan(s["dice"][i]),
                "biou": _none_if_nan(biou[i]) if self.boundary else None,
                "gt_pixels": int(s["gt_pixels"][i]),
            }
            for i, name in enumerate(self.class_names)
        }
        return {
            "classes": list(self.class_names),
            "background_index": self.background_index,
            "n_images": self.n_images,
            "miou": _none_if_nan(s["miou"]),
            "fwiou": _none_if_nan(s["fwiou"]),
            "mean_dice": _none_if_nan(s["mean_dice"]),
            "mean_biou": _none_if_nan(mean_biou),
            "pixel_accuracy": _none_if_nan(s["pixel_accuracy"]),
            "per_class": per_class,
            "confusion": self.conf.tolist(),
        }
