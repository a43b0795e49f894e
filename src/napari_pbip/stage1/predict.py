"""Run a trained stage-1 model: dense predictor, pseudo-masks for labelled images, masks for unlabelled ones.

* :func:`load_stage1_predictor` is the ``"pbip-stage1"`` loader of
  :func:`napari_pbip.predict.predictor.load_predictor` (slide inference, widgets).
* :func:`make_pseudo_masks` gates the CAMs with each training image's own labels (the weak labels
  the method is trained on).
* :func:`predict_folder` decides class presence with the classifier; ground-truth masks are never
  used, so its output can be scored honestly with ``pbip evaluate``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _atomic
from ..errors import CheckpointError, DatasetError, PbipError
from ..events import Job, Progress
from .presence import DEFAULT_THRESHOLD, read_thresholds
from .pseudo import (
    CamSettings,
    class_scores,
    decide_presence,
    label_map,
    mask_channels,
    presence_probabilities,
)
from .pseudo import probabilities as normalise

if TYPE_CHECKING:
    from ..data.layouts import DatasetSpec

PSEUDO = "pseudo"  # make_pseudo_masks' command: the kind of its output marker, the stage of its events
PREDICT = "predict"  # predict_folder's command, likewise
SETTINGS_FILE = "cam_settings.json"  # written beside the masks so any mask folder can be reproduced


class Stage1Predictor:
    """A trained stage-1 run as a :class:`~napari_pbip.predict.predictor.DensePredictor`.

    Attributes:
        classes: tissue class names in class order (mask indices: see
            :func:`~napari_pbip.data.layouts.tissue_mask_indices`).
        palette: RGB per mask index.
        background_index: mask index of background.
        mpp: um/px of the training patches when known, else None.
        tile: the side the model was trained at.
        settings: the :class:`CamSettings` in use.
        presence_thresholds: class presence threshold(s) for unlabelled images: the settings' value,
            else the run's calibrated per-class ones, else 0.5.
        meta: the run's ``model.json``.
    """

    def __init__(
        self,
        model,
        meta: dict[str, Any],
        device,
        settings: CamSettings | None = None,
        thresholds: tuple[float, ...] | None = None,
    ):
        self.model = model
        self.meta = meta
        self.device = device
        self.settings = settings or CamSettings()
        self.classes = tuple(meta["classes"])
        self.palette = tuple(tuple(int(c) for c in rgb) for rgb in meta["palette"])
        self.background_index = int(meta["background_index"])
        self.mpp = meta.get("mpp")
        self.tile = int(meta["settings"]["image_size"])
        self.weights = tuple(self.settings.fusion_weights or meta["settings"]["fusion_weights"])
        given = self.settings.presence_threshold
        self.presence_thresholds: float | tuple[float, ...] = (
            given if given is not None else (thresholds or DEFAULT_THRESHOLD)
        )

    def scores(self, batch: np.ndarray, presence: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Class scores and classifier probabilities for a batch of same-size images.

        Args:
            batch: RGB ``uint8 (B, H, W, 3)``.
            presence: ``(B, N)`` image labels to gate with (training images); None: the classifier decides.

        Returns:
            ``(scores float32 (B, N, H, W), probs float32 (B, N))``.
        """
        import torch

        out, size = run_cams(self.model, batch, self.device)
        probs = presence_probabilities(out["logits"], self.weights)
        if presence is None:
            gate = decide_presence(probs, self.presence_thresholds)
        else:
            gate = torch.as_tensor(np.asarray(presence), dtype=torch.float32, device=probs.device)
        scores = class_scores(out["cams"], size, gate, self.weights, crop=batch.shape[1:3])
        return scores.cpu().numpy(), probs.cpu().numpy()

    def channels(self, batch: np.ndarray, presence: np.ndarray | None = None) -> np.ndarray:
        """Scores per mask index (background included) -> ``float32 (B, C, H, W)``."""
        scores, _ = self.scores(batch, presence)
        n = len(self.palette)
        return np.stack(
            [
                mask_channels(s, img, n, self.background_index, self.settings)
                for s, img in zip(scores, batch, strict=True)
            ]
        )

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """``uint8 (B, H, W, 3)`` -> probabilities ``float32 (B, C, H, W)`` over mask indices."""
        return np.stack([normalise(c) for c in self.channels(np.asarray(batch))])

    def predict_masks(self, batch: np.ndarray, presence: np.ndarray | None = None) -> np.ndarray:
        """Label maps ``uint8 (B, H, W)``; ``presence`` gates with known image labels."""
        return np.stack([label_map(c) for c in self.channels(np.asarray(batch), presence)])


def run_cams(model, batch: np.ndarray, device) -> tuple[dict[str, Any], tuple[int, int]]:
    """Forward a uint8 batch (padded by reflection to a multiple of 32) -> (model output, padded size)."""
    import torch
    import torch.nn.functional as F

    x = torch.tensor(np.asarray(batch, dtype=np.uint8), device=device).permute(0, 3, 1, 2).float().div_(255.0)
    h, w = x.shape[-2:]
    ph, pw = (-h) % 32, (-w) % 32
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
    with torch.no_grad():
        out = model(x)
    return out, (h + ph, w + pw)


def load_stage1_predictor(
    path: str | os.PathLike,
    device: str = "auto",
    settings: CamSettings | None = None,
    calibrated: bool = True,
) -> Stage1Predictor:
    """Load a ``pbip train`` run folder as a dense predictor (see the module docstring).

    ``calibrated=False`` ignores the run's fitted presence thresholds (used while refitting them).
    """
    from .run_folder import load_classnet

    model, meta = load_classnet(path, device=device)
    thresholds = read_thresholds(path, tuple(meta["classes"])) if calibrated else None
    return Stage1Predictor(model, meta, next(model.parameters()).device, settings, thresholds)


def _write_masks(
    predictor: Stage1Predictor,
    paths: Sequence[Path],
    labels: Sequence[Sequence[int]] | None,
    out: Path,
    overwrite: bool,
    batch_size: int,
    stage: str,
    inputs: dict[str, Any],
) -> Job[Path]:
    from ..data.images import mask_file_names, read_rgb, same_size_runs, with_ignore_colour, write_mask
    from ..engine.tta import channel_scores

    names = mask_file_names(paths)
    total = len(paths)
    margin = predictor.settings.ignore_margin if stage == PSEUDO else 0.0
    palette = with_ignore_colour(predictor.palette) if margin > 0 else predictor.palette
    with _atomic.atomic_dir(out, overwrite=overwrite, kind=stage, inputs=inputs) as tmp:
        predictor.settings.save(tmp / SETTINGS_FILE)
        done = 0
        chunk = max(1, batch_size)
        for start in range(0, total, chunk * 4):
            idx = list(range(start, min(total, start + chunk * 4)))
            images = [read_rgb(paths[i]) for i in idx]
            for run in same_size_runs([im.shape for im in images], chunk):
                batch = np.stack([images[j] for j in run])
                gate = None if labels is None else np.asarray([labels[idx[j]] for j in run], dtype=np.float32)
                if margin > 0:  # pseudo-masks with unsure pixels left out
                    masks = [label_map(c, margin) for c in channel_scores(predictor, batch, gate)]
                else:
                    masks = predictor.predict_masks(batch, gate)
                for j, mask in zip(run, masks, strict=True):
                    write_mask(tmp / names[idx[j]], mask, palette)
                done += len(run)
                yield Progress(stage, done, total, f"{done}/{total} masks")
    return Path(out)


def make_pseudo_masks(
    run: str | os.PathLike,
    dataset,
    out: str | os.PathLike,
    *,
    split: str = "train",
    settings: CamSettings | None = None,
    device: str = "auto",
    overwrite: bool = False,
    batch_size: int = 8,
    labels_from_masks: bool = False,
) -> Job[Path]:
    """Pseudo-masks for the labelled images of ``split``, gated by each image's own labels.

    Args:
        run: a stage-1 run folder (``pbip train --out``).
        dataset: a data set folder or an opened ``Dataset``.
        out: output folder of palette PNGs named like the images (written whole, atomically).
        split: the split to label (its images need image-level labels).
        settings: background and fusion options (default :class:`CamSettings`; ``tta`` None: on,
            :data:`PSEUDO_TTA`).
        device: torch device.
        overwrite: replace an existing ``out`` that a previous ``pseudo`` wrote.
        batch_size: images per forward pass.
        labels_from_masks: gate images without a label in their name by the classes present in
            their mask (the label an annotator would give): measures pseudo-mask quality on a
            split that has masks but no image labels, such as the synthetic val split.

    Returns:
        A job yielding ``Progress(PSEUDO, ...)`` per batch and returning ``out``.

    Raises:
        CheckpointError: the run was trained on other classes.
        DatasetError: an image of ``split`` has no image-level label.
        OutputConflictError: ``out`` is, contains or lies inside the run or the data set.
        OutputExistsError: ``out`` exists and is not a previous ``pseudo`` output to overwrite.
    """
    from ..data.layouts import Dataset, open_dataset

    inputs = {"run": run, "data set": dataset}
    _atomic.check_output(out, PSEUDO, inputs, overwrite=overwrite)
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    predictor = _with_tta(load_stage1_predictor(run, device, settings), default=PSEUDO_TTA)
    _check_run_classes(predictor, ds.spec, run)
    samples = ds.samples(split)
    if labels_from_masks:
        samples = [_labelled_by_mask(s, ds.spec) for s in samples]
    unlabelled = [s.image.name for s in samples if s.labels is None]
    if unlabelled:
        raise DatasetError(
            f"{len(unlabelled)} images of split {split!r} have no image-level label (e.g. {unlabelled[0]}); "
            "pseudo-masks need labels: use `pbip predict` for unlabelled images"
        )
    paths = [s.image for s in samples]
    labels = [s.labels for s in samples]
    return (
        yield from _write_masks(predictor, paths, labels, Path(out), overwrite, batch_size, PSEUDO, inputs)
    )


# Pseudo-masks average each image's channel scores over the 8 symmetries of the square by default.
# Measured by image cross-validation on real H&E (benchmarks/stage2_variants.py --masks pseudo-tta,
# docs/benchmarks.md): the stage-2 segmenter trained on them scores higher on the held-out images.
PSEUDO_TTA = True


def pseudo_masks_current(
    out: str | os.PathLike, run: str | os.PathLike, settings: CamSettings | None = None
) -> bool:
    """Whether ``out`` holds finished pseudo-masks of ``run`` made with ``settings``, so they can be reused.

    True when ``out`` is a finished :func:`make_pseudo_masks` folder, its saved settings equal
    ``settings`` (``tta`` None resolved as :func:`make_pseudo_masks` resolves it) and it was
    written after the run's model (a run trained again since makes them stale).
    """
    import dataclasses

    out, run = Path(out), Path(run)
    if _atomic.output_kind(out) != PSEUDO:
        return False
    want = settings or CamSettings()
    if want.tta is None:
        want = dataclasses.replace(want, tta=PSEUDO_TTA)
    try:
        saved = CamSettings.load(out / SETTINGS_FILE)
        written, trained = (out / SETTINGS_FILE).stat().st_mtime, (run / "model.json").stat().st_mtime
    except (OSError, ValueError, TypeError, PbipError):  # missing, unreadable or from another version
        return False
    return saved == want and written >= trained


def _labelled_by_mask(sample, spec):
    """``sample`` with the classes present in its mask as its image-level label (when it has none)."""
    import dataclasses

    from ..data.images import read_mask

    if sample.labels is not None or sample.mask is None:
        return sample
    counts = np.bincount(read_mask(sample.mask, spec).ravel(), minlength=len(spec.palette))
    present = counts[list(spec.tissue_indices)] > 0
    return dataclasses.replace(sample, labels=tuple(int(v) for v in present))


def predict_folder(
    model: str | os.PathLike,
    images: str | os.PathLike,
    out: str | os.PathLike,
    settings: CamSettings | None = None,
    device: str = "auto",
    overwrite: bool = False,
    batch_size: int = 8,
) -> Job[Path]:
    """Masks for the images in a folder (no labels: the classifier decides which classes are present).

    Args:
        model: a stage-1 run folder.
        images: folder of RGB images (PNG, JPEG, TIFF).
        out: output folder of palette PNGs named like the images.
        settings: background, fusion, presence-threshold and test-time augmentation options
            (``tta`` None: on, 8 passes per image).
        device: torch device.
        overwrite: replace an existing ``out`` that a previous ``predict`` wrote.
        batch_size: images per forward pass (same-size images are batched together).

    Returns:
        A job yielding ``Progress(PREDICT, ...)`` per batch and returning ``out``.

    Raises:
        OutputConflictError: ``out`` is, contains or lies inside the model or the image folder.
        OutputExistsError: ``out`` exists and is not a previous ``predict`` output to overwrite.
    """
    from ..data.images import list_images

    inputs = {"model": model, "images": images}
    _atomic.check_output(out, PREDICT, inputs, overwrite=overwrite)
    paths = list_images(images)
    if not paths:
        raise DatasetError(
            f"no images (.png, .jpg, .tif, ...) in {images}; give the folder holding the images"
        )
    predictor = _with_tta(load_stage1_predictor(model, device, settings), default=True)
    return (
        yield from _write_masks(predictor, paths, None, Path(out), overwrite, batch_size, PREDICT, inputs)
    )


def _with_tta(predictor: Stage1Predictor, default: bool):
    """``predictor`` with ``settings.tta`` resolved (None -> ``default``), wrapped when it is on."""
    import dataclasses

    from ..engine.tta import with_tta

    if predictor.settings.tta is None:
        predictor.settings = dataclasses.replace(predictor.settings, tta=default)
    return with_tta(predictor, predictor.settings.tta)


def _check_run_classes(predictor: Stage1Predictor, spec: DatasetSpec, run: str | os.PathLike) -> None:
    """The run must label masks as the data set does: same classes and background index."""
    if tuple(spec.classes) != predictor.classes:
        raise CheckpointError(
            f"run {run} was trained on classes {list(predictor.classes)} but the data set has classes "
            f"{list(spec.classes)}; use a run trained on this data set"
        )
    if spec.background_index != predictor.background_index:
        raise CheckpointError(
            f"run {run} was trained with background index {predictor.background_index} but the data set has "
            f"background index {spec.background_index}; its masks would put the classes at other mask indices: "
            "use a run trained on this data set"
        )
