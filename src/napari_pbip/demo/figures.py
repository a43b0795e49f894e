"""Pictures of the demo report: the slide with legend and scale bar, the confusion matrix, the loss
curves and the CAM grids.

The small helpers (:func:`scale_bar`, :func:`legend_handles`, :func:`row_percent`) hold the
decisions a reader sees and are tested on their own; the ``plot_*`` functions draw with matplotlib
(imported inside them, Agg backend) and return the PNG they wrote.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

LIGHT = 0.85  # relative luminance above which a swatch needs an outline on a white page
OUTLINE = "0.3"  # grey of that outline


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scale_bar(mpp: float, width_px: int, fraction: float = 0.25) -> tuple[float, float]:
    """A round scale-bar length for an image: 1, 2 or 5 x 10^k micrometres, at most ``fraction`` of its width.

    Args:
        mpp: micrometres per pixel of the image as drawn.
        width_px: image width in pixels.
        fraction: the longest the bar may be, as a share of the width.

    Returns:
        ``(length_um, length_px)``; e.g. 0.5 um/px and 1000 px give ``(100.0, 200.0)``.

    Raises:
        ValueError: ``mpp``, ``width_px`` or ``fraction`` is not positive.
    """
    if mpp <= 0 or width_px <= 0 or fraction <= 0:
        raise ValueError(
            f"scale_bar(mpp={mpp}, width_px={width_px}, fraction={fraction}): expected positive values "
            "(um/px of the image, its width in pixels, a share of the width such as 0.25)"
        )
    limit = fraction * width_px * mpp
    base = 10.0 ** math.floor(math.log10(limit))
    length = max(step * base for step in (1, 2, 5) if step * base <= limit * (1 + 1e-9))
    return length, length / mpp


def format_length(um: float) -> str:
    """``250 µm``, ``1 mm``, ``2.5 mm``: micrometres below a millimetre, millimetres above."""
    if um >= 1000:
        return f"{um / 1000:g} mm"
    return f"{um:g} µm"


def is_light(rgb: Sequence[float]) -> bool:
    """True for a colour (0-255 RGB) too pale to see on a white page without an outline."""
    r, g, b = (float(v) / 255 for v in rgb[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b > LIGHT


def legend_handles(names: Sequence[str], palette: Sequence[Sequence[int]]) -> list[Any]:
    """Legend patches, one per class; pale swatches (e.g. white background) get a grey outline.

    Args:
        names: class names in label-value order (background first).
        palette: RGB 0-255 per name.
    """
    from matplotlib.patches import Patch

    handles = []
    for name, rgb in zip(names, palette, strict=True):
        face = np.asarray(rgb[:3], float) / 255
        edge = OUTLINE if is_light(rgb) else face
        handles.append(Patch(facecolor=face, edgecolor=edge, linewidth=0.8, label=name))
    return handles


def add_scale_bar(ax: Any, mpp: float, width_px: int) -> None:
    """Draw a scale bar (black, on a white box) in the lower right of an image axis."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    um, px = scale_bar(mpp, width_px)
    bar = AnchoredSizeBar(
        ax.transData,
        px,
        format_length(um),
        "lower right",
        pad=0.3,
        sep=3,
        frameon=True,
        size_vertical=max(1.0, width_px / 150),
        fontproperties={"size": 8},
    )
    bar.patch.set_alpha(0.8)
    ax.add_artist(bar)


def _colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    return palette[np.clip(labels, 0, len(palette) - 1)]


def _thumbnail_level(shapes: Sequence[Sequence[int]], max_side: int = 1024) -> int:
    """The finest level whose longer side is at most ``max_side`` (the coarsest if none is)."""
    fits = [i for i, s in enumerate(shapes) if max(s[:2]) <= max_side]
    return fits[0] if fits else len(shapes) - 1


def _truth_values(out: Path, n_classes: int, shape: tuple[int, int]) -> np.ndarray:
    """The synthetic slide's ground truth in label values (0 background), resampled to ``shape``."""
    import tifffile

    from ..export.label_values import to_values

    with tifffile.TiffFile(out / "slide.labels.tif") as tif:
        background = int(json.loads(tif.pages[0].description)["background_index"])
        truth = to_values(tif.asarray(), n_classes, background)
    ys = (np.arange(shape[0]) * truth.shape[0] / shape[0]).astype(int)
    xs = (np.arange(shape[1]) * truth.shape[1] / shape[1]).astype(int)
    return truth[ys][:, xs]


def _slide_figsize(shape: tuple[int, ...], width: float = 12.0) -> tuple[float, float]:
    """A figure a little too short for three panels at full width, so the images shrink to the
    height left by the titles and the legend (when width-bound, constrained layout clips titles)."""
    panel = width / 3 - 0.1
    return width, 0.9 * panel * shape[0] / shape[1] + 0.8


def plot_slide(out: Path, name: str = "stage2") -> Path | None:
    """The slide, its ground truth and the segmentation side by side, with legend and scale bars."""
    zarr_path = out / f"slide-{name}.zarr"
    if not zarr_path.exists():
        return None
    from ..data.layouts import mask_index_names
    from ..export import open_labels
    from ..slides import open_slide

    plt = _pyplot()
    labels = open_labels(zarr_path)
    level = _thumbnail_level([lv.shape for lv in labels.levels])
    pred = np.asarray(labels.levels[level])
    mpp = labels.mpp[level]
    thumb = open_slide(out / "slide.tif").read_all(mpp)[: pred.shape[0], : pred.shape[1]]
    truth = _truth_values(out, len(labels.classes), pred.shape)
    palette = np.asarray(labels.palette, np.uint8)
    fig, axes = plt.subplots(1, 3, figsize=_slide_figsize(pred.shape), dpi=100, layout="constrained")
    panels = (thumb, _colorize(truth, palette), _colorize(pred, palette))
    titles = ("H&E slide", "ground truth (synthetic)", "model segmentation")
    for ax, img, title in zip(axes, panels, titles, strict=True):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
        add_scale_bar(ax, mpp, img.shape[1])
    names = list(mask_index_names(labels.classes, labels.background_index))
    fig.legend(handles=legend_handles(names, labels.palette), loc="outside lower center", ncol=len(names))
    png = out / f"report-slide-{name}.png"
    fig.savefig(png)
    plt.close(fig)
    return png


def row_percent(conf: np.ndarray) -> np.ndarray:
    """Each row of a confusion matrix as % of its total (NaN for a row without pixels)."""
    conf = np.asarray(conf, float)
    totals = conf.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, 100 * conf / totals, np.nan)


def plot_confusion(conf: Sequence[Sequence[int]], classes: Sequence[str], path: Path) -> Path:
    """The row-normalised confusion matrix: rows the true class, columns what the model called it.

    Args:
        conf: ``(N, N + 1)`` pixel counts (:func:`napari_pbip.metrics.confusion_matrix`); the
            last column counts tissue the model called background.
        classes: the N tissue class names.
        path: the PNG to write.
    """
    plt = _pyplot()
    pct = row_percent(np.asarray(conf))
    cols = [*classes, "background"][: pct.shape[1]]
    fig, ax = plt.subplots(
        figsize=(1.1 * len(cols) + 2.4, 0.8 * len(classes) + 1.6), dpi=100, layout="constrained"
    )
    im = ax.imshow(np.nan_to_num(pct), cmap="Blues", vmin=0, vmax=100)
    for (i, j), v in np.ndenumerate(pct):
        text = "-" if np.isnan(v) else f"{v:.1f}"
        ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if v > 60 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("model's class")
    ax.set_ylabel("true class")
    ax.set_title("% of each true class's pixels", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8, label="% of row")
    fig.savefig(path)
    plt.close(fig)
    return path


def _read_log(run: Path) -> list[dict[str, Any]]:
    path = run / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_losses(out: Path) -> Path:
    """Loss parts per step of the PBIP run and the baseline's classification loss."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100, layout="constrained")
    # The baseline has no SIM module: its loss is its classification loss.
    for variant, style, parts in (("pbip", "-", ("loss", "cls", "fg", "bg")), ("baseline", ":", ("cls",))):
        log = [r for r in _read_log(out / f"run-{variant}") if "loss" in r and "step" in r]
        for part in parts:
            pts = [(r["step"], r[part]) for r in log if r.get(part) is not None]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, y, style, label=f"{variant} {part}", lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Stage-1 losses (PBIP: solid, plain-CAM baseline: dotted)")
    path = out / "report-losses.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def _weight_panels(p: Any, i: int, present: np.ndarray, shape: tuple[int, int]) -> list[np.ndarray]:
    """Foreground weight (max over the image's classes) and background weight (min) of eq. 5."""
    if "fg" not in p or not present.any():
        return [np.zeros(shape), np.zeros(shape)]
    return [
        p["fg"][i][present].astype(np.float32).max(0),
        p["bg"][i][present].astype(np.float32).min(0),
    ]


def plot_preview(out: Path, variant: str = "pbip") -> Path | None:
    """Preview patches with their CAMs, foreground/background weights (eq. 5) and pseudo-masks."""
    path = out / f"run-{variant}" / "preview.npz"
    if not path.is_file():
        return None
    plt = _pyplot()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    p = np.load(path)
    images, classes, palette = p["images"], [str(c) for c in p["classes"]], p["palette"]
    cols = [
        "image",
        *(f"CAM\n{c}" for c in classes),
        "foreground\nweight",
        "background\nweight",
        "pseudo-\nmask",
    ]
    n = len(images)
    fig, axes = plt.subplots(
        n,
        len(cols),
        figsize=(1.4 * len(cols) + 1, 1.4 * n + 0.6),
        dpi=90,
        squeeze=False,
        layout="constrained",
    )
    for i in range(n):
        present = p["labels"][i].astype(bool) if "labels" in p else np.ones(len(classes), bool)
        panels = [images[i], *(p["cams"][i, c].astype(np.float32) for c in range(len(classes)))]
        panels += _weight_panels(p, i, present, images.shape[1:3])
        panels.append(_colorize(p["masks"][i], palette) if "masks" in p else np.zeros_like(images[i]))
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            if panel.ndim == 2:
                ax.imshow(images[i])
                ax.imshow(panel, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            else:
                ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=7)
        axes[i, 0].set_ylabel(" ".join(c for c, on in zip(classes, present, strict=True) if on), fontsize=6)
    bar = ScalarMappable(Normalize(0, 1), "jet")
    fig.colorbar(bar, ax=axes, shrink=0.5, aspect=30, label="CAM or weight (0 low, 1 high)")
    png = out / f"report-preview-{variant}.png"
    fig.savefig(png)
    plt.close(fig)
    return png
