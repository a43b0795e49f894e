"""Per-class presence thresholds for unlabelled images, fitted on the run's own training labels.

On an unlabelled image the classifier decides which classes are present. Its probabilities rank
images well but are not calibrated, least for rare classes: on WSSS4LUAD a PBIP run gives its
rare "normal" class 0.47 on average where it is present (0.10 where it is not, a perfect
ranking), so the fixed 0.5 threshold drops it from every image. After training, each class gets
the threshold that maximises F1 on the training images' labels (which the run already has), and
``RUN/presence.json`` keeps them (:mod:`.presence` reads them back); :class:`~.predict.Stage1Predictor`
uses them unless a threshold is given.

They are fitted when training ends. A run stopped part-way (Stop, Ctrl-C) saves new weights but
cannot fit new thresholds, so ``presence.json`` records the SHA-256 of the weights it was fitted
for, and thresholds for other weights are not used (0.5 instead, with a warning) until the run is
finished with ``pbip train --resume``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import _atomic
from ..events import Job, Progress
from .presence import DEFAULT_THRESHOLD, PRESENCE_FILE, weights_digest

CALIBRATE_STAGE = "calibrate"  # the Progress stage of fitting the presence thresholds


def best_threshold(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The threshold on ``probs`` that maximises F1 against binary ``labels``, and that F1.

    Candidates are the midpoints between consecutive distinct probabilities; among equal F1 the
    one nearest 0.5 wins. Without a positive or a negative image the threshold stays 0.5.
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels, bool)
    if labels.all() or not labels.any():
        return DEFAULT_THRESHOLD, float("nan")
    values = np.unique(probs)
    candidates = np.concatenate([[values[0] / 2], (values[:-1] + values[1:]) / 2, [(values[-1] + 1) / 2]])
    predicted = probs[None, :] >= candidates[:, None]
    tp = (predicted & labels).sum(1)
    f1 = 2 * tp / (predicted.sum(1) + labels.sum())
    best = np.flatnonzero(f1 == f1.max())
    pick = best[np.argmin(np.abs(candidates[best] - DEFAULT_THRESHOLD))]
    return float(np.clip(candidates[pick], 0.01, 0.99)), float(f1[pick])


def calibrate_presence(
    run: str | os.PathLike, dataset, device: str = "auto", max_images: int = 2000, batch_size: int = 16
) -> Job[dict[str, Any]]:
    """Fit per-class presence thresholds on the labelled training images and write ``presence.json``.

    Args:
        run: a stage-1 run folder with its inference weights.
        dataset: the data set folder (or opened ``Dataset``) the run was trained on.
        device: torch device.
        max_images: at most this many training images, spread evenly over the split.
        batch_size: images per forward pass.

    Returns:
        A job yielding ``Progress(CALIBRATE_STAGE, ...)`` and returning what it wrote.
    """
    import torch

    from ..data.images import read_rgb
    from ..data.layouts import Dataset, open_dataset
    from .predict import load_stage1_predictor, run_cams
    from .pseudo import presence_probabilities

    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    samples = [s for s in ds.samples("train") if s.labels is not None]
    if not samples:
        return {}  # nothing to fit on: the fixed threshold stays
    if len(samples) > max_images:
        samples = [samples[i] for i in np.linspace(0, len(samples) - 1, max_images).astype(int)]
    digest = weights_digest(run)  # of the weights loaded just below
    predictor = load_stage1_predictor(run, device, calibrated=False)  # old thresholds are being replaced
    probs, labels, done = [], [], 0
    for start in range(0, len(samples), batch_size):
        part = samples[start : start + batch_size]
        images = [read_rgb(s.image) for s in part]
        for shape in dict.fromkeys(im.shape for im in images):  # one forward per image size
            idx = [i for i, im in enumerate(images) if im.shape == shape]
            with torch.inference_mode():
                out, _ = run_cams(predictor.model, np.stack([images[i] for i in idx]), predictor.device)
                probs.append(presence_probabilities(out["logits"], predictor.weights).cpu().numpy())
            labels += [part[i].labels for i in idx]
        done += len(part)
        yield Progress(CALIBRATE_STAGE, done, len(samples), "fitting presence thresholds on training labels")
    p, y = np.concatenate(probs), np.asarray(labels, bool)
    fitted = [best_threshold(p[:, c], y[:, c]) for c in range(p.shape[1])]
    record = {
        "classes": list(predictor.classes),
        "thresholds": [t for t, _ in fitted],
        "train_f1": [None if np.isnan(f) else round(f, 4) for _, f in fitted],
        "train_f1_at_0.5": [
            None if not y[:, c].any() else round(f1_at(p[:, c], y[:, c], DEFAULT_THRESHOLD), 4)
            for c in range(p.shape[1])
        ],
        "images": len(samples),
        "weights_sha256": digest,
    }
    _atomic.write_json(Path(run) / PRESENCE_FILE, record)
    return record


def f1_at(probs: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """F1 of ``probs >= threshold`` against ``labels``."""
    predicted = np.asarray(probs) >= threshold
    labels = np.asarray(labels, bool)
    return float(2 * (predicted & labels).sum() / max(1, predicted.sum() + labels.sum()))
