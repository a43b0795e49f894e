"""Stage-2 training: a fully supervised segmenter on the stage-1 pseudo-masks.

Cross-entropy over mask indices (background is a class of its own: the model must find glass on
slides), pixels marked 255 in the pseudo-masks ignored; AdamW with a poly schedule; flips,
90-degree rotations, light colour jitter and (``cutmix``) boxes pasted between the images of a
batch. With val masks the best checkpoint by val mIoU is kept. The folder layout is described in
:mod:`napari_pbip.stage2.segmenter_predictor`.

Every random draw is keyed by the seed and the step, so a run that is stopped (Ctrl-C, closing the
job, ``max_minutes``) and resumed ends with the same weights as one that ran straight through.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import _atomic
from ..data.layouts import dataset_mpp
from ..engine.resume import resolve_settings, saved_settings
from ..engine.trainer import VAL_FIELDS, TrainingStage, TrainResult, masked_val_samples, run_training
from ..events import LOSS, Job
from .seg_data import IGNORE, BatchLoader, class_pixel_shares, class_weights, pair_masks
from .seg_settings import RESUMABLE_FIELDS, SegSettings
from .segmenter_predictor import FORMAT_VERSION, MODEL_KIND, SegmenterPredictor, build_from_meta, read_meta

OUTPUT_KIND = "train-seg"  # the command named in the segmenter folder's output marker
TRAIN_SEG_STAGE = "train-seg"  # the Progress stage of its events


SegResult = TrainResult  # the name stage-2 results had before both stages shared one type


def train_segmenter(
    settings: SegSettings | None,
    dataset,
    masks: str | os.PathLike,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> Job[TrainResult]:
    """Train a segmenter on the training images of ``dataset`` and the pseudo-masks in ``masks``.

    Args:
        settings: the run's settings; with ``resume`` None means the saved ones (only
            :data:`~napari_pbip.stage2.seg_settings.RESUMABLE_FIELDS` may differ from them).
        dataset: data set folder or opened ``Dataset`` (its val split's masks, when present, select
            the best checkpoint).
        masks: folder of pseudo-masks named like the training images (``pbip pseudo``).
        out: the segmenter folder to create (or to continue with ``resume``).
        resume: continue from ``out/last``.
        overwrite: replace an existing ``out`` that is a previous segmenter folder (ignored with
            ``resume``).

    Returns:
        A job yielding ``Progress(TRAIN_SEG_STAGE, ...)`` events (see
        :func:`~napari_pbip.engine.trainer.run_training`) and returning a
        :class:`~napari_pbip.engine.trainer.TrainResult`.

    Raises:
        DatasetError: a training image has no mask, or a mask holds a value outside the palette.
        OutputExistsError: ``out`` exists and neither ``resume`` nor ``overwrite`` is given, or
            it is not a previous segmenter folder.
        OutputConflictError: ``out`` is, contains or lies inside the data set or the masks.
        CheckpointError: resuming a folder made for other classes or settings.
        TrainingDivergedError: the loss became NaN/inf.
    """
    from ..data.layouts import Dataset, open_dataset

    out = Path(out)
    inputs = {"data set": dataset, "masks": masks}
    _atomic.check_output(out, OUTPUT_KIND, inputs, overwrite=overwrite, resume=resume)
    settings = _resolve_settings(settings, out, resume)
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    trainer = _Trainer(settings, ds, Path(masks), out, resume)
    return (yield from run_training(trainer, resume))


def resume_seg_settings(out: str | os.PathLike, **changes: Any) -> SegSettings:
    """The saved settings of the segmenter folder ``out`` with ``changes`` applied.

    Raises:
        CheckpointError: ``out`` holds no run.
    """
    return saved_settings(SegSettings, out, changes, "segmenter run", "start without --resume")


def _resolve_settings(settings: SegSettings | None, out: Path, resume: bool) -> SegSettings:
    saved = resume_seg_settings(out) if resume else None
    return resolve_settings(SegSettings, settings, out, RESUMABLE_FIELDS, saved)


def segmentation_loss(logits, target, weight=None):
    """Mean cross-entropy over the pixels that are not :data:`IGNORE` (0 when all are ignored).

    With ``weight`` (one per class) each pixel's term is weighted by its class and the mean is
    over the weights, as ``torch.nn.functional.cross_entropy`` does.
    """
    import torch.nn.functional as F

    target = target.long()
    total = F.cross_entropy(logits.float(), target, weight=weight, ignore_index=IGNORE, reduction="sum")
    labelled = target != IGNORE
    if weight is None:
        return total / labelled.sum().clamp(min=1)
    return total / weight[target[labelled]].sum().clamp(min=1e-12)


class _Trainer(TrainingStage):
    """Stage 2 on the training engine: a segmenter on pseudo-masks."""

    event = TRAIN_SEG_STAGE
    output_kind = OUTPUT_KIND
    model_kind = MODEL_KIND

    def __init__(self, s: SegSettings, ds, masks: Path, out: Path, resume: bool):
        import torch

        from .._device import resolve_device
        from ..models import create_segmenter

        super().__init__()
        self.settings, self.ds, self.masks, self.out, self.spec = s, ds, masks, out, ds.spec
        self.classes = tuple(self.spec.classes)
        self.pairs = pair_masks(ds, masks)
        self.val = masked_val_samples(ds)
        self.device = resolve_device(s.device)
        self.cuda = self.device.type == "cuda"
        self.loader = BatchLoader(
            self.pairs,
            self.spec,
            s.batch_size,
            s.crop_size,
            s.jitter,
            s.seed,
            s.num_workers,
            s.stain_jitter,
            s.scale_jitter,
            s.cutmix,
        )
        self.steps_per_epoch = self.loader.steps_per_epoch
        self.class_weight = None
        if s.class_balance > 0:
            weights = class_weights(class_pixel_shares(self.pairs, self.spec), s.class_balance)
            self.class_weight = torch.tensor(weights, dtype=torch.float32, device=self.device)
        saved = out / "model.json"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)
            if resume and saved.is_file():  # the saved config rebuilds it offline; weights come from last/
                model = build_from_meta(read_meta(out))
            else:
                model = create_segmenter(
                    s.segmenter, len(self.spec.palette), pretrained=s.pretrained, **s.factory_kwargs()
                )
        self.model = model.to(self.device)
        if self.cuda and s.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(self._param_groups(), weight_decay=s.weight_decay)
        self.meta = self._meta()

    def _param_groups(self) -> list[dict[str, Any]]:
        prefix = getattr(self.model, "encoder_prefix", None)
        encoder, head = [], []
        for name, p in self.model.named_parameters():
            (encoder if prefix and name.startswith(prefix) else head).append(p)
        lr, head_lr = self.settings.lr, self.settings.lr * self.settings.head_lr_mult
        groups = [
            {"params": encoder, "lr": lr, "base_lr": lr},
            {"params": head, "lr": head_lr, "base_lr": head_lr},
        ]
        return [g for g in groups if g["params"]]

    # -- what the engine asks ------------------------------------------------------------------

    def inputs(self) -> dict[str, Any]:
        return {"data set": self.ds, "masks": self.masks}

    def describe(self) -> str:
        return f"{self.settings.segmenter} on {len(self.pairs)} images"

    def extra_state(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state(self, state: dict[str, Any], saved_meta: dict[str, Any]) -> None:
        self.meta["weights_id"] = saved_meta.get("weights_id", self.meta["weights_id"])
        self.history = list(state.get("history", []))

    def close(self) -> None:
        self.loader.close()

    def train_step(self, step: int) -> tuple[dict[str, float], int]:
        import torch

        from ..errors import TrainingDivergedError

        images, masks = self.loader.get(step, self.total)
        x = (
            torch.from_numpy(images)
            .to(self.device, non_blocking=True)
            .permute(0, 3, 1, 2)
            .float()
            .div_(255.0)
        )
        y = torch.from_numpy(masks).to(self.device, non_blocking=True)
        if self.cuda and self.settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.begin_update()  # the forward pass updates BatchNorm statistics
        with torch.random.fork_rng(devices=[self.device] if self.cuda else []):
            torch.manual_seed(self.settings.seed * 1_000_003 + self.step)  # dropout, keyed by the step
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda and self.settings.amp):
                loss = segmentation_loss(self.model(x), y, self.class_weight)
        value = float(loss.detach())
        if not np.isfinite(value):
            raise TrainingDivergedError(
                f"the loss became {value} at step {self.step + 1}; the last good checkpoint is {self.out / 'last'} "
                f"(step {max(self.saved_step, 0)}); resume it with a lower lr than {self.settings.lr:g}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {LOSS: value}, len(images)

    def validate(self) -> dict[str, Any] | None:
        """Predict the val images and score them (mIoU, FwIoU, Dice, pixel accuracy; no bIoU)."""
        if not self.val:
            return None
        from ..data.images import read_mask, read_rgb
        from ..metrics import MetricAccumulator

        predictor = SegmenterPredictor(self.model, self.meta, self.device)
        acc = MetricAccumulator(len(self.classes), self.spec.background_index, self.classes, boundary=False)
        self.model.eval()
        group: list[tuple[np.ndarray, np.ndarray]] = []
        for i, sample in enumerate(self.val):
            group.append((read_rgb(sample.image), read_mask(sample.mask, self.spec)))
            last = i == len(self.val) - 1
            if last or len(group) == self.settings.batch_size or _shape(self.val[i + 1]) != group[0][0].shape:
                acc.update(
                    np.stack([m for _, m in group]),
                    predictor.predict_masks(np.stack([im for im, _ in group])),
                )
                group = []
        self.model.train()
        res = acc.result()
        return {k: res[k] for k in VAL_FIELDS}

    # -- files ------------------------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        return {
            "kind": MODEL_KIND,
            "format_version": FORMAT_VERSION,
            "classes": list(self.classes),
            "palette": [list(c) for c in self.spec.palette],
            "background_index": self.spec.background_index,
            "segmenter": self.settings.segmenter,
            "config": self.model.config,
            "weights_id": getattr(self.model, "weights_id", None),
            "mpp": self.settings.mpp if self.settings.mpp is not None else dataset_mpp(self.ds.root),
            "tile": self.settings.crop_size,
            "dataset": str(self.ds.root),
            "masks": str(self.masks),
            "settings": self.settings.to_dict(),
        }


def _shape(sample) -> tuple[int, ...]:
    from PIL import Image

    with Image.open(sample.image) as im:
        return (im.height, im.width, 3)
