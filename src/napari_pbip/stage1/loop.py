"""The stage-1 training job: a generator of :class:`~napari_pbip.events.Progress` events.

One event per optimizer step (``stage="train"``): ``metrics`` holds ``loss``, ``cls``, ``fg``,
``bg``, ``lr``, ``images_per_s`` and ``epoch`` (fractional), plus ``val_miou`` after a validation;
every ``preview_every`` steps (and at the last step) ``payload`` is a preview dict (see :func:`.preview.preview_payload`) with the
CAMs and FG/BG maps of a fixed set of training images. A GUI pauses the job by not asking for the
next event and stops it by closing the generator: the last completed step is checkpointed, and
``resume=True`` continues exactly where it stopped (batch order, augmentation and per-step seeds
are functions of ``(seed, step)``, so a resumed run equals an uninterrupted one).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import _atomic
from ..data.layouts import dataset_mpp
from ..engine import augment, checkpoint
from ..engine.model_meta import MODEL_FILE, read_model_json
from ..engine.resume import resolve_settings, saved_settings
from ..engine.runlog import append_log, truncate_log
from ..errors import BankError, CheckpointError, DatasetError, SettingsError, TrainingDivergedError
from ..events import Job, Progress
from .preview import preview_payload, shown_mpp
from .run_folder import FORMAT_VERSION, MODEL_KIND
from .settings import RESUMABLE_FIELDS, TrainSettings

OUTPUT_KIND = "train"  # the command named in the run folder's output marker


@dataclass
class TrainResult:
    """What a finished (or stopped) training job leaves.

    Attributes:
        run: the run folder.
        step: optimizer steps done.
        total_steps: steps planned (``epochs * steps_per_epoch``).
        stopped: ``"finished"`` or ``"time limit"`` (resume to continue).
        best: val metrics of the best checkpoint (None without val masks).
        history: the val metrics of each validation.
    """

    run: Path
    step: int
    total_steps: int
    stopped: str
    best: dict[str, Any] | None
    history: list[dict[str, Any]]


def train(
    settings: TrainSettings | None,
    dataset,
    bank,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
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

    Returns:
        A job yielding one ``Progress("train", ...)`` per step and returning a :class:`TrainResult`;
        then ``Progress("calibrate", ...)`` while the presence thresholds for unlabelled images are
        fitted on the training labels (``RUN/presence.json``, see :mod:`napari_pbip.stage1.calibrate`).

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
    result = yield from trainer.run(resume)
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


class _Trainer:
    """State of one training run; :meth:`run` is the job."""

    def __init__(self, s: TrainSettings, ds, bank, out: Path):
        import torch

        from .._device import resolve_device
        from .classnet import build_classnet

        self.settings, self.ds, self.bank, self.out = s, ds, bank, out
        self.spec = ds.spec
        self.classes = tuple(self.spec.classes)
        self.device = resolve_device(s.device)
        self.samples, self.labels = _train_samples(ds)
        self.val = _val_samples(ds)
        self.steps_per_epoch = augment.steps_per_epoch(len(self.samples), s.batch_size)
        self.total = s.epochs * self.steps_per_epoch
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
        self.notes: list[str] = []
        self.step, self.saved_step, self.best, self.history = 0, -1, None, []
        self.dirty = False
        self.preview_idx = np.unique(
            np.linspace(0, len(self.samples) - 1, min(s.n_preview, len(self.samples))).astype(int)
        )
        self.preview_mpp = shown_mpp(
            dataset_mpp(ds.root), [self.samples[i].image for i in self.preview_idx], s.image_size
        )
        self.meta = self._meta()

    # -- the job ---------------------------------------------------------------------------------

    def run(self, resume: bool) -> Job[TrainResult]:
        """Train until the last step or the time limit; checkpoint on every exit."""
        if resume:
            self._restore()
        else:
            _atomic.clear_output(self.out, OUTPUT_KIND, {"data set": self.ds, "bank": self.bank})
            self.out.mkdir(parents=True)
            self.settings.save(self.out / "settings.json")
        _atomic.mark_output(self.out, OUTPUT_KIND)  # runs from before the marker get it when resumed
        start, stopped = time.monotonic(), "finished"
        self.dirty = False  # True from a step's forward pass until its optimizer update is done
        yield Progress("train", self.step, self.total, self._start_message(resume))
        try:
            while self.step < self.total:
                epoch, index = divmod(self.step, self.steps_per_epoch)
                t0 = time.perf_counter()
                parts, n_images = self._train_step(epoch, index)
                self.step += 1
                self.dirty = False
                metrics = {
                    **parts,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "epoch": self.step / self.steps_per_epoch,
                }
                metrics["images_per_s"] = n_images / max(time.perf_counter() - t0, 1e-9)
                self._log({"step": self.step, **metrics})
                if index == self.steps_per_epoch - 1:
                    metrics.update(self._end_epoch())
                every = self.settings.preview_every
                due = bool(every) and (self.step % every == 0 or self.step == self.total)
                payload = self.preview() if due else None  # the last step too: short runs show their end
                message = f"epoch {epoch + 1}/{self.settings.epochs}" + "".join(f"; {n}" for n in self.notes)
                self.notes.clear()
                yield Progress("train", self.step, self.total, message, metrics, payload)
                if (
                    self.settings.max_minutes
                    and time.monotonic() - start > 60 * self.settings.max_minutes
                    and self.step < self.total
                ):
                    stopped = "time limit"
                    break
        except BaseException:  # Stop, Ctrl-C, an unreadable image...: keep the last completed step
            if not self.dirty and self.step > self.saved_step:
                self._save()
            raise
        if self.step > self.saved_step:
            self._save()
        return TrainResult(self.out, self.step, self.total, stopped, self.best, self.history)

    def _start_message(self, resume: bool) -> str:
        head = f"resumed at step {self.step}: " if resume else "started: "
        what = f"{self.settings.mode} on {len(self.samples)} images, {self.steps_per_epoch} steps/epoch, {self.total} steps"
        val = f", val on {len(self.val)} masked images" if self.val else ", no val masks (best = last)"
        return head + what + val + f", device {self.device}"

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
        )  # any stochastic layer depends on the step only
        lr_scale = (1 - self.step / self.total) ** self.settings.poly_power
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_scale
        self.model.train()
        self.dirty = True  # from the forward pass on (it updates BatchNorm statistics) until the step is done
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

        from .losses import pbip_loss
        from .matching import encode_pairs, fg_bg_images

        totals = {"loss": 0.0, "cls": 0.0, "fg": 0.0, "bg": 0.0}
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
            (parts["loss"] * (xc.shape[0] / n)).backward()
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

    # -- previews, validation, checkpoints -----------------------------------------------------

    def preview(self) -> dict[str, Any]:
        """The preview payload of the fixed preview images (see :func:`.preview.preview_payload`)."""
        images = np.stack([self._image(i) for i in self.preview_idx])
        self.model.eval()
        try:
            x = self._to_tensor(images)
            labels = self.labels[self.preview_idx]
            return preview_payload(
                self.model, x, images, labels, self.settings, self.spec, self.step, self.preview_mpp
            )
        finally:
            self.model.train()

    def _end_epoch(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        result = None
        if self.val:
            result = self.validate()
            entry = {"step": self.step, "epoch": self.step // self.steps_per_epoch, "val": result}
            self.history.append(entry)
            self._log(entry)
            if result["miou"] is not None:
                metrics["val_miou"] = result["miou"]
            if self.best is None or (result["miou"] or 0) > (self.best.get("miou") or 0):
                self.best = {**result, "step": self.step}
                checkpoint.save_checkpoint(self.out / "best", self.model, self._state(), kind=MODEL_KIND)
        self._save()
        return metrics

    def validate(self) -> dict[str, Any]:
        """Predict the val images (classifier decides presence, no oracle) and score them (no bIoU)."""
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
        return {k: res[k] for k in ("miou", "fwiou", "mean_dice", "pixel_accuracy", "n_images")}

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.step / self.steps_per_epoch,
            "classes": list(self.classes),
            "best": self.best,
            "micro_batch": self.images_per_pass,
        }

    def _save(self) -> None:
        """Checkpoint ``last`` and refresh the inference weights (best with val, else last)."""
        checkpoint.save_checkpoint(
            self.out / "last", self.model, self._state(), self.optimizer, kind=MODEL_KIND
        )
        self.saved_step = self.step
        source = self.out / ("best" if self.best is not None and (self.out / "best").is_dir() else "last")
        with _atomic.atomic_path(self.out / "model.safetensors") as tmp:
            shutil.copyfile(source / "model.safetensors", tmp)
        meta = {**self.meta, "step": self.step, "weights": source.name, "best": self.best}
        _atomic.write_json(self.out / "model.json", meta)

    def _restore(self) -> None:
        state = checkpoint.load_checkpoint(self.out / "last", self.model, self.optimizer, self.classes)
        saved = read_model_json(self.out) if (self.out / MODEL_FILE).is_file() else {}
        if saved.get("bank_hash") != self.meta.get("bank_hash"):
            raise CheckpointError(
                f"cannot resume {self.out}: it was trained with bank hash {saved.get('bank_hash')} but the given bank "
                f"has {self.meta.get('bank_hash')}; pass the same bank or start a new run"
            )
        self.step = self.saved_step = int(state["step"])
        self.best = state.get("best")
        self.images_per_pass = int(state.get("micro_batch", self.settings.batch_size))
        self._truncate_log()

    def _log(self, entry: dict[str, Any]) -> None:
        append_log(self.out, entry)

    def _truncate_log(self) -> None:
        truncate_log(self.out, self.step)

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
            "mpp": dataset_mpp(self.ds.root),
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


def _val_samples(ds) -> list:
    if "val" not in ds.splits():
        return []
    return [s for s in ds.samples("val") if s.mask is not None]


def _load_image(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    from ..data.images import read_rgb

    img = read_rgb(path)
    if img.shape[:2] != (size, size):
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
    return img
