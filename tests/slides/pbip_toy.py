"""Small slides with known ground truth and tiny DensePredictors for the slide/inference/export tests.

Importable by dask worker processes too (pytest puts this folder on ``sys.path``; spawned
workers inherit it), so the loader registered for kind ``"toy"`` works on a LocalCluster.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CLASSES = ("tumor", "stroma", "lymph")
COLOURS = np.array([(190, 60, 120), (235, 140, 175), (90, 50, 150), (244, 244, 244)], np.float32)
PALETTE = ((205, 51, 51), (0, 255, 0), (65, 105, 225), (255, 255, 255))
BACKGROUND = 3


def blob_labels(shape: tuple[int, int], seed: int = 0, cell: int = 96) -> np.ndarray:
    """Smooth irregular regions of the 3 classes inside an ellipse of tissue, background outside."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    h, w = shape
    small = rng.normal(size=(3, max(2, h // cell + 2), max(2, w // cell + 2)))
    fields = np.stack(
        [ndi.zoom(f, (h / (f.shape[0] - 1), w / (f.shape[1] - 1)), order=1)[:h, :w] for f in small]
    )
    labels = fields.argmax(0).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((yy - h / 2) / (0.42 * h)) ** 2 + ((xx - w / 2) / (0.42 * w)) ** 2 <= 1
    labels[~inside] = BACKGROUND
    return labels


def render(labels: np.ndarray, seed: int = 0, noise: float = 12.0) -> np.ndarray:
    """RGB image of ``labels``: each class its colour plus pixel noise."""
    rng = np.random.default_rng(seed + 1)
    rgb = COLOURS[labels] + rng.normal(0, noise, labels.shape + (3,))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def write_tiff_slide(
    path: Path, rgb: np.ndarray, mpp: float | None = 0.5, tile: int = 256, levels: int = 3
) -> Path:
    """A pyramidal JPEG-tiled TIFF (separate pages, as OpenSlide's generic TIFF expects)."""
    import tifffile

    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        level = rgb
        for i in range(levels):
            kw = {}
            if mpp is not None:
                res = 1e4 / (mpp * 2**i)
                kw = {"resolution": (res, res), "resolutionunit": "CENTIMETER"}
            tw.write(
                level,
                tile=(tile, tile),
                compression="jpeg",
                compressionargs={"level": 95},
                photometric="rgb",
                subfiletype=1 if i else 0,
                **kw,
            )
            level = level[::2, ::2]
    return path


class ColourPredictor:
    """Per-pixel class probabilities from the distance to each class colour (no spatial context)."""

    classes = CLASSES
    palette = PALETTE
    background_index = BACKGROUND
    mpp = 0.5
    tile = 64

    def __init__(self, sigma: float = 30.0):
        self.sigma = sigma
        self.calls = 0

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        x = batch.astype(np.float32)
        d2 = ((x[:, :, :, None, :] - COLOURS[None, None, None]) ** 2).sum(-1)
        logits = -d2 / (2 * self.sigma**2)
        logits -= logits.max(-1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(-1, keepdims=True)
        return np.ascontiguousarray(p.transpose(0, 3, 1, 2), dtype=np.float32)


class ConvPredictor:
    """A small random conv net (receptive field 13 px, zero padding): real spatial context."""

    classes = CLASSES
    palette = PALETTE
    background_index = BACKGROUND
    mpp = 0.5
    tile = 64

    def __init__(self, seed: int = 0, device: str = "cpu"):
        import torch

        g = torch.Generator().manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 5, padding=2),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 8, 5, padding=2),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 4, 5, padding=2),
        ).eval()
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255 - 0.5
            return torch.softmax(self.net(x), 1).numpy()


def save_toy_model(folder: Path, which: str = "colour", seed: int = 0) -> Path:
    """A model folder (model.json kind "toy") that :func:`load_toy` turns into a predictor.

    ``"conv"`` also writes the :class:`ConvPredictor` weights of ``seed`` to ``model.safetensors``
    (saving another seed into the same folder is a retrained model).
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps({"kind": "toy", "which": which}))
    if which == "conv":
        from safetensors.torch import save_file

        save_file(ConvPredictor(seed).net.state_dict(), str(folder / "model.safetensors"))
    return folder


def load_toy(path, device: str = "auto"):
    """Loader for kind "toy" (registered with ``register_predictor_kind``)."""
    which = json.loads((Path(path) / "model.json").read_text())["which"]
    if which == "colour":
        return ColourPredictor()
    from safetensors.torch import load_file

    model = ConvPredictor()
    model.net.load_state_dict(load_file(str(Path(path) / "model.safetensors")))
    return model


def register() -> None:
    """Register kind "toy" in this process."""
    from napari_pbip.predict.predictor import register_predictor_kind

    register_predictor_kind("toy", load_toy)
