"""The stage-1 training job: a generator of :class:`~napari_pbip.events.Progress` events.

One event per optimizer step (stage :data:`TRAIN_STAGE`) with a
:class:`~napari_pbip.events.StepMetrics` payload: the loss, its parts :data:`.losses.CLS`,
:data:`.losses.FG` and :data:`.losses.BG`, lr, images/s and the fractional epoch, plus val mIoU
after a validation; every ``preview_every`` steps (and at the last step) one with a
:class:`~napari_pbip.events.Preview` (see :func:`.preview.preview_payload`) of the CAMs and FG/BG
maps of a fixed set of training images. A GUI pauses the job by not asking for the
next event and stops it by closing the generator: the last completed step is checkpointed, and
``resume=True`` continues exactly where it stopped (batch order, augmentation and per-step seeds
are functions of ``(seed, step)``, so a resumed run equals an uninterrupted one).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import _atomic
from ..data.layouts import dataset_mpp
from ..engine import augment
from ..engine.resume import resolve_settings, saved_settings
from ..engine.trainer import VAL_FIELDS, TrainingStage, TrainResult, masked_val_samples, run_training
from ..errors import BankError, CheckpointError, DatasetError, SettingsError, TrainingDivergedError
from ..events import LOSS, Job
from .preview import preview_payload, shown_mpp
from .region_preview import RegionPixels, region_maps
from .run_folder import FORMAT_VERSION, MODEL_KIND
from .settings import RESUMABLE_FIELDS, TrainSettings

OUTPUT_KIND = "train"  # the command named in the run folder's output marker
TRAIN_STAGE = "train"  # the Progress stage of the training events (then calibrate.CALIBRATE_STAGE)


def train(
    settings: TrainSettings | None,
    dataset,
    bank,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    view: Callable[[float, int], RegionPixels | None] | None = None,
) -> Job[TrainResult]:
    """Train ClassNet + ImgMatchNet (or the plain-CAM baseline) on a data set's ``train`` split.

    Args:
        settings: the run's settings; with ``resume`` None means the saved ones (only
            :data:`~napari_pbip.stage1.settings.RESUMABLE_FIELDS` may differ from them).
        dataset: data set folder or opened ``Dataset`` (train split with image labels; a val split
            with masks enables best-checkpoint selection by val mIoU).
        bank: image-bank folder or opened ``Bank`` (None for the baseline).
        out: the run folder.
        resume: continue the run in ``out`` from ``out/last``.
        overwrite: replace an existing ``out`` that is a previous run (ignored with ``resume``).
        view: at each preview, ``view(mpp, tile)`` gives the pixels of a region to preview too (the
            part of a slide in view) at ``mpp`` um/px, the training images' resolution as the model
            sees them, at most :data:`~.region_preview.MAX_TILES` tiles of ``tile`` px; or None
            for none this time. It is called in the job's thread. Its maps
            (:func:`~.region_preview.region_maps`) are the preview's ``"region"``; when it cannot
            be made, ``"region_note"`` says why (a preview never stops training).

    Returns:
        A job yielding ``Progress(TRAIN_STAGE, ...)`` events (see
        :func:`~napari_pbip.engine.trainer.run_training`) and returning a :class:`TrainResult`;
        then ``Progress(calibrate.CALIBRATE_STAGE, ...)`` while the presence thresholds for
        unlabelled images are fitted on the training labels (``RUN/presence.json``, see :mod:`napari_pbip.stage1.calibrate`).

    Raises:
        BankError: the bank's classes differ from the data set's.
        CheckpointError: resuming a run made for other classes or settings.
        OutputConflictError: ``out`` is, contains or lies inside the data set or the bank.
        OutputExistsError: ``out`` exists and is not a previous run to resume or overwrite.
        TrainingDivergedError: the loss became NaN/inf (the last good checkpoint is named).
    """
    from ..data.layouts import Dataset, open_dataset

    out = Path(out)
    inputs = {"data set": dataset, "bank": bank}
    _atomic.check_output(out, OUTPUT_KIND, inputs, overwrite=overwrite, resume=resume)
    settings = _resolve_settings(settings, out, resume)
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    trainer = _Trainer(settings, ds, _open_bank(bank, settings, ds), out)
    trainer.view = view
    result = yield from run_training(trainer, resume)
    if (out / "model.json").is_file():
        from .calibrate import calibrate_presence

        # per-class presence thresholds for unlabelled images, fitted on the training labels
        yield from calibrate_presence(out, ds, device=settings.device)
    return result


def resume_settings(out: str | os.PathLike, **changes: Any) -> TrainSettings:
    """The saved settings of the run in ``out`` with ``changes`` applied (for ``train(..., resume=True)``).

    Raises:
        CheckpointError: ``out`` holds no run.
    """
    return saved_settings(TrainSettings, out, changes, "run", "start it without --resume")


def _resolve_settings(settings: TrainSettings | None, out: Path, resume: bool) -> TrainSettings:
    saved = resume_settings(out) if resume else None
    return resolve_settings(TrainSettings, settings, out, RESUMABLE_FIELDS, saved)


def _open_bank(bank, settings: TrainSettings, ds):
    if settings.baseline:
        return None
    if bank is None:
        raise BankError(
            "PBIP training needs an image bank (--bank BANK, built with `pbip bank build`); or train the baseline"
        )
    if isinstance(bank, (str, os.PathLike)):
        from ..bank import open_bank

        bank = open_bank(bank)
    if tuple(bank.classes) != tuple(ds.spec.classes):
        raise BankError(
            f"the bank has classes {list(bank.classes)} but the data set {ds.root} has classes "
            f"{list(ds.spec.classes)}; build the bank from this data set (`pbip bank build --dataset {ds.root}`)"
        )
    return bank


class _Trainer(TrainingStage):
    """Stage 1 on the training engine: ClassNet (+ ImgMatchNet with a bank) on image labels."""

    event = TRAIN_STAGE
    output_kind = OUTPUT_KIND
    model_kind = MODEL_KIND
    view: Callable[[float, int], RegionPixels | None] | None = None  # a region to preview too (train's view)

    def __init__(self, s: TrainSettings, ds, bank, out: Path):
        import torch

        from .._device import resolve_device
        from .classnet import build_classnet

        super().__init__()
        self.settings, self.ds, self.bank, self.out = s, ds, bank, out
        self.spec = ds.spec
        self.classes = tuple(self.spec.classes)
        self.device = resolve_device(s.device)
        self.samples, self.labels = _train_samples(ds)
        self.val = masked_val_samples(ds)
        self.steps_per_epoch = augment.steps_per_epoch(len(self.samples), s.batch_size)
        self.preview_every = s.preview_every
        protos = valid = None
        self.encoder = None
        self.match_size = s.match_size
        if bank is not None:
            protos, valid = bank.prototype_tensor()
            # through the bank: refuses an encoder whose weights differ from those it was built with
            self.encoder = bank.encoder(device=str(self.device))
            self.match_size = s.match_size or int(self.encoder.input_size)
        self.model = build_classnet(s, len(self.classes), protos, valid).to(self.device)
        self.cuda = self.device.type == "cuda"
        if self.cuda and s.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(self.model.param_groups(s.lr, s.head_lr_mult, s.weight_decay))
        self.images_per_pass = s.batch_size
        self.preview_idx = np.unique(
            np.linspace(0, len(self.samples) - 1, min(s.n_preview, len(self.samples))).astype(int)
        )
        self.preview_mpp = shown_mpp(
            dataset_mpp(ds.root), [self.samples[i].image for i in self.preview_idx], s.image_size
        )
        self.meta = self._meta()

    def _seen_mpp(self) -> float | None:
        """um/px of the training images as the network sees them (resized to ``image_size``): the
        resolution a slide is read at to show it the same tissue. Read from the preview images
        (spread over the data set; every image is not opened, so an unreadable one fails at its
        step, after the steps before it are kept); the data set's um/px when they differ in size
        (each is scaled differently) or are not square."""
        return self.preview_mpp if self.preview_mpp is not None else dataset_mpp(self.ds.root)

    # -- what the engine asks ------------------------------------------------------------------

    def inputs(self) -> dict[str, Any]:
        return {"data set": self.ds, "bank": self.bank}

    def describe(self) -> str:
        return f"{self.settings.mode} on {len(self.samples)} images"

    def train_step(self, step: int) -> tuple[dict[str, float], int]:
        return self._train_step(*divmod(step, self.steps_per_epoch))

    def extra_state(self) -> dict[str, Any]:
        return {"micro_batch": self.images_per_pass}

    def load_state(self, state: dict[str, Any], saved_meta: dict[str, Any]) -> None:
        if saved_meta.get("bank_hash") != self.meta.get("bank_hash"):
            raise CheckpointError(
                f"cannot resume {self.out}: it was trained with bank hash {saved_meta.get('bank_hash')} but the "
                f"given bank has {self.meta.get('bank_hash')}; pass the same bank or start a new run"
            )
        self.images_per_pass = int(state.get("micro_batch", self.settings.batch_size))

    # -- one step ----------------------------------------------------------------------------------

    def _train_step(self, epoch: int, index: int) -> tuple[dict[str, float], int]:
        import torch

        idx = augment.batch_indices(
            len(self.samples), self.settings.batch_size, self.settings.seed, epoch, index
        )
        images = augment.augment_batch([self._image(i) for i in idx], self.settings.seed, epoch, index)
        x = self._to_tensor(np.stack(images))
        y = torch.as_tensor(self.labels[idx], device=self.device)
        torch.manual_seed(
            self.settings.seed * 1_000_003 + self.step
        )  # any stochastic layer: keyed by the step
        self.begin_update()  # the forward pass updates BatchNorm statistics
        parts = self._forward_backward(x, y)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return parts, len(idx)

    def _forward_backward(self, x, y) -> dict[str, float]:
        """Forward and backward the batch; on out-of-memory halve the images per pass and retry."""
        import torch

        while True:
            try:
                return self._accumulate(x, y)
            except torch.OutOfMemoryError:
                self.optimizer.zero_grad(set_to_none=True)
                if self.images_per_pass == 1:
                    raise SettingsError(
                        f"out of memory at batch_size={self.settings.batch_size} even one image at a time; lower "
                        f"image_size={self.settings.image_size} or match_size={self.match_size}, or use --device cpu"
                    ) from None
                if self.cuda:
                    torch.cuda.empty_cache()
                old, self.images_per_pass = self.images_per_pass, max(1, self.images_per_pass // 2)
                self.notes.append(
                    f"{self.device.type.upper()} out of memory with {old} images per pass: continuing with "
                    f"{self.images_per_pass} per pass (gradients accumulated, the batch stays {self.settings.batch_size})"
                )

    def _accumulate(self, x, y) -> dict[str, float]:
        import torch

        from .losses import BG, CLS, FG, pbip_loss
        from .matching import encode_pairs, fg_bg_images

        totals = dict.fromkeys((LOSS, CLS, FG, BG), 0.0)
        n = x.shape[0]
        for lo in range(0, n, self.images_per_pass):
            xc, yc = x[lo : lo + self.images_per_pass], y[lo : lo + self.images_per_pass]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and self.settings.amp):
                out = self.model(xc)
                if self.encoder is None:
                    parts = pbip_loss(out["logits"], yc, self.settings)
                else:
                    mb = fg_bg_images(
                        xc,
                        out["cams"],
                        yc,
                        self.match_size,
                        self.settings.delta,
                        self.settings.threshold_mode,
                        self.settings.fg_bg_fill,
                        self.settings.fusion_weights,
                    )
                    fg, bg = encode_pairs(self.encoder, mb)
                    parts = pbip_loss(out["logits"], yc, self.settings, fg, bg, mb.class_index, self.model)
            values = {k: float(v.detach()) for k, v in parts.items()}
            if not all(math.isfinite(v) for v in values.values()):
                self.optimizer.zero_grad(set_to_none=True)
                raise TrainingDivergedError(self._nan_message(values))
            (parts[LOSS] * (xc.shape[0] / n)).backward()
            for k, v in values.items():
                totals[k] += v * xc.shape[0] / n
        return totals

    def _nan_message(self, values: dict[str, float]) -> str:
        last = f"{self.out / 'last'} (step {self.saved_step})" if self.saved_step >= 0 else "none yet"
        parts = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        return (
            f"loss is not finite at step {self.step + 1} ({parts}); the last good checkpoint is {last}. "
            f"Lower lr={self.settings.lr} (or head_lr_mult={self.settings.head_lr_mult}) and resume, or check the images"
        )

    # -- data ------------------------------------------------------------------------------------

    def _image(self, i: int) -> np.ndarray:
        return _load_image(self.samples[i].image, self.settings.image_size)

    def _to_tensor(self, batch: np.ndarray):
        import torch

        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        if self.cuda and self.settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    # -- previews and validation -----------------------------------------------------------------

    def preview(self) -> dict[str, Any]:
        """The preview payload of the fixed preview images (see :func:`.preview.preview_payload`),
        with the maps of the view's region (:meth:`_region_preview`) when a view is given."""
        images = np.stack([self._image(i) for i in self.preview_idx])
        self.model.eval()
        try:
            x = self._to_tensor(images)
            labels = self.labels[self.preview_idx]
            maps = preview_payload(
                self.model, x, images, labels, self.settings, self.spec, self.step, self.preview_mpp
            )
            if self.view is not None:
                maps.update(self._region_preview())
            return maps
        finally:
            self.model.train()

    def _region_preview(self) -> dict[str, Any]:
        """``{"region": maps}`` of the view's pixels, ``{"region_note": why}``, or ``{}`` (nothing in view)."""
        mpp = self.preview_mpp
        if mpp is None:
            return {
                "region_note": f"the data set {self.ds.root} records no um/px (or its images differ in size), so "
                "the slide cannot be read at the training resolution; add mpp to its dataset.json"
            }
        try:
            pixels = self.view(mpp, self.settings.image_size)
            if pixels is None:
                return {}
            maps = region_maps(
                self.model, pixels.image, self.settings, self.spec, self.device, self.step, mpp
            )
        except Exception as exc:  # a view (an unreadable slide region...) must not stop training
            return {"region_note": f"no slide preview at step {self.step}: {exc}"}
        return {"region": {**maps, "where": pixels.where}}

    def validate(self) -> dict[str, Any] | None:
        """Predict the val images (classifier decides presence, no oracle) and score them (no bIoU)."""
        if not self.val:
            return None
        from ..data.images import read_mask, read_rgb
        from ..metrics import MetricAccumulator
        from .predict import Stage1Predictor

        predictor = Stage1Predictor(self.model, self.meta, self.device)
        acc = MetricAccumulator(len(self.classes), self.spec.background_index, self.classes, boundary=False)
        self.model.eval()
        for sample in self.val:
            pred = predictor.predict_masks(read_rgb(sample.image)[None])[0]
            acc.update(read_mask(sample.mask, self.spec), pred)
        self.model.train()
        res = acc.result()
        return {k: res[k] for k in VAL_FIELDS}

    def _meta(self) -> dict[str, Any]:
        backbone = self.model.backbone
        meta = {
            "kind": MODEL_KIND,
            "format_version": FORMAT_VERSION,
            "mode": self.settings.mode,
            "classes": list(self.classes),
            "palette": [list(c) for c in self.spec.palette],
            "background_index": self.spec.background_index,
            "backbone": self.settings.backbone,
            "backbone_weights_id": getattr(backbone, "weights_id", None),
            "levels": list(self.model.levels),
            "encoder": None,
            "bank_hash": None,
            "bank_version": None,
            "mpp": self._seen_mpp(),
            "dataset": str(self.ds.root),
            "settings": self.settings.to_dict(),
        }
        if self.bank is not None:
            meta.update(
                encoder=self.bank.encoder_name,
                encoder_weights_id=getattr(self.encoder, "weights_id", None),
                bank_hash=self.bank.content_hash,
                bank_version=self.bank.version,
                n_prototypes=list(self.model.prototypes.shape),
            )
        return meta


def _train_samples(ds) -> tuple[list, np.ndarray]:
    samples = ds.samples("train")
    if not samples:
        raise DatasetError(
            f"the train split of {ds.root} has no images; give a data set with training patches"
        )
    missing = [s.image.name for s in samples if s.labels is None]
    if missing:
        raise DatasetError(
            f"{len(missing)} training images of {ds.root} have no image-level label (e.g. {missing[0]}); "
            "stage 1 learns from image labels in the file names"
        )
    return samples, np.asarray([s.labels for s in samples], dtype=np.float32)


def _load_image(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    from ..data.images import read_rgb

    img = read_rgb(path)
    if img.shape[:2] != (size, size):
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
    return img
