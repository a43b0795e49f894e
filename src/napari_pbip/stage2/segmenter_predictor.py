"""A trained stage-2 segmenter folder as a dense predictor, and the folder's files.

Layout of a segmenter folder ``SEG`` (written by :func:`~napari_pbip.stage2.seg_train.train_segmenter`)::

    SEG/model.json          kind "pbip-segmenter", classes, palette, background_index, segmenter,
                            config (rebuilds the network offline), mpp, tile, best, settings
    SEG/model.safetensors   weights for inference (best by val mIoU, else last)
    SEG/settings.json       the resolved SegSettings
    SEG/log.jsonl           one JSON line per step and per validation
    SEG/last/               model.safetensors, optimizer.safetensors, state.json (resume from here)
    SEG/best/               model.safetensors, state.json (only with val masks)

Loading builds the network with ``pretrained=False`` from ``config`` and reads every weight from
``model.safetensors``: neither the network nor the original pretrained weights are needed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.model_meta import MODEL_FILE, check_segmenter, read_model_json
from ..errors import CheckpointError, DatasetError, SettingsError

MODEL_KIND = "pbip-segmenter"
FORMAT_VERSION = 1
PAD_MULTIPLE = 32  # inputs are reflection-padded to a multiple of the coarsest stride, then cropped
INFERENCE_TILE_FACTOR = 2  # preferred slide tile = this x the training tile (see SegmenterPredictor.tile)


class SegmenterPredictor:
    """A segmenter as a :class:`~napari_pbip.predict.predictor.DensePredictor`.

    Attributes:
        classes: tissue class names.
        palette: RGB per mask index (tissue classes and background).
        background_index: mask index of background.
        mpp: um/px of the training patches when known, else None.
        tile: the preferred inference tile: twice ``train_tile``. The segmenter is fully
            convolutional, and more context per tile brings tiled output closer to one pass over
            the slide: on the demo's synthetic slide (lite0-seg), 448 px tiles differ from one pass
            over a 1536 px region on 0.48% of pixels, 224 px tiles on 0.93%, at the same mIoU
            against the ground truth (96.1 vs 96.2).
        train_tile: the side the model was trained at.
        meta: the folder's ``model.json``.
        model: the network (eval mode), on ``device``.
        device: the torch device.
    """

    def __init__(self, model, meta: dict[str, Any], device):
        self.model, self.meta, self.device = model, meta, device
        self.classes = tuple(meta["classes"])
        self.palette = tuple(tuple(int(c) for c in rgb) for rgb in meta["palette"])
        self.background_index = int(meta["background_index"])
        self.mpp = meta.get("mpp")
        self.train_tile = int(meta.get("tile") or 224)
        self.tile = INFERENCE_TILE_FACTOR * self.train_tile
        self.cuda = getattr(device, "type", str(device)) == "cuda"
        import torch

        # channels-last convolutions: about 1.7x faster on this AVX-512 CPU for EfficientNet-Lite0
        # (benchmarks/bench_segment.py), and what tensor cores want on CUDA
        self.model = self.model.to(memory_format=torch.channels_last)
        self.fixed_batch: int | None = None  # set by compiled(): every call padded to this many tiles

    def compiled(self, batch: int, tile: int) -> SegmenterPredictor:
        """A copy whose network runs through ``torch.compile`` (inductor, weights frozen).

        Compiled once for ``batch`` tiles of ``tile`` px: smaller batches (a chunk's last) are
        padded to ``batch`` so the graph is never compiled again. The compilation happens here,
        on one blank batch: on the 2-core development CPU 40-55 s with a cold inductor cache, and
        the EfficientNet-Lite0 segmenter then ran 1.66x faster on a batch of 16 alone and 1.21x
        faster inside ``segment_slide`` (benchmarks/bench_segment.py --compile). Outputs matched
        the eager model (largest difference 8e-6; identical labels on the demo slide).

        Raises:
            SettingsError: compilation failed (inductor needs a C++ compiler on CPU).
        """
        import copy

        import torch

        other = copy.copy(self)
        other.model = torch.compile(self.model, dynamic=False, options={"freezing": True})
        other.fixed_batch = batch
        try:
            other.predict(np.full((1, tile, tile, 3), 255, np.uint8))
        except Exception as exc:  # inductor raises many kinds (missing compiler, unsupported op)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SettingsError(
                f"compile=True: torch.compile failed for this model ({first[:300]}); on CPU it needs a "
                f"C++ compiler (Debian/Ubuntu: apt install g++). Segment without --compile instead"
            ) from exc
        return other

    def logits(self, x):
        """Logits ``(B, C, H, W)`` for a float tensor batch ``(B, 3, H, W)`` in [0, 1] on ``device``."""
        import torch
        import torch.nn.functional as F

        h, w = x.shape[-2:]
        ph, pw = (-h) % PAD_MULTIPLE, (-w) % PAD_MULTIPLE
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
        n = x.shape[0]
        if self.fixed_batch and n < self.fixed_batch:  # the compiled graph takes one batch size
            x = torch.cat([x, x[-1:].expand(self.fixed_batch - n, -1, -1, -1)])
        x = x.contiguous(memory_format=torch.channels_last)
        if self.cuda:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = self.model(x)
        else:
            out = self.model(x)
        return out[:n, :, :h, :w].float()

    def _tensor(self, batch: np.ndarray):
        import torch

        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise DatasetError(
                f"batch has shape {batch.shape} and dtype {batch.dtype}; expected uint8 (B, H, W, 3)"
            )
        if not batch.flags.writeable:  # images read by PIL are read-only; torch wants writable memory
            batch = batch.copy()
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
        return x.permute(0, 3, 1, 2).float().div_(255.0)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """``uint8 (B, H, W, 3)`` -> softmax probabilities ``float32 (B, C, H, W)`` over mask indices."""
        import torch

        with torch.inference_mode():
            return torch.softmax(self.logits(self._tensor(batch)), dim=1).cpu().numpy()

    def predict_masks(self, batch: np.ndarray) -> np.ndarray:
        """``uint8 (B, H, W, 3)`` -> label maps ``uint8 (B, H, W)`` (argmax mask index)."""
        import torch

        with torch.inference_mode():
            return self.logits(self._tensor(batch)).argmax(dim=1).to(torch.uint8).cpu().numpy()


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """``model.json`` of a segmenter folder.

    Raises:
        CheckpointError: missing, or not a segmenter folder.
    """
    fix = "give an intact `pbip train-seg` folder"
    meta = read_model_json(
        path,
        what="a trained segmenter",
        missing_fix="train one with `pbip train-seg`",
        fix=fix,
        required=("kind", "classes", "palette", "background_index", "segmenter", "config"),
        kind=MODEL_KIND,
        made_by="a `pbip train-seg` folder",
    )
    meta_path = Path(path) / MODEL_FILE
    check_segmenter(meta, meta_path, fix)
    return meta


def build_from_meta(meta: dict[str, Any]):
    """The untrained network described by ``meta`` (``pretrained=False``, nothing downloaded)."""
    from ..models import create_segmenter

    return create_segmenter(meta["segmenter"], len(meta["palette"]), pretrained=False, **meta["config"])


def load_segmenter(path: str | os.PathLike, device: str = "auto") -> tuple[Any, dict[str, Any]]:
    """The trained network of a segmenter folder (eval mode, on ``device``) and its ``model.json``.

    Raises:
        CheckpointError: the folder is not a segmenter or its weights do not fit ``model.json``.
    """
    from .._device import resolve_device
    from ..engine.checkpoint import load_tensors

    path = Path(path)
    meta = read_meta(path)
    model = build_from_meta(meta)
    tensors = load_tensors(path / "model.safetensors")
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}/model.safetensors does not fit the {meta['segmenter']!r} network described by model.json "
            f"({str(exc).splitlines()[0]}); the folder is inconsistent, train it again"
        ) from exc
    return model.to(resolve_device(device)).eval(), meta


def load_segmenter_predictor(path: str | os.PathLike, device: str = "auto") -> SegmenterPredictor:
    """Load a ``pbip train-seg`` folder as a dense predictor (softmax over mask indices)."""
    model, meta = load_segmenter(path, device=device)
    return SegmenterPredictor(model, meta, next(model.parameters()).device)
