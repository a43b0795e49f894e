"""The demo report: a Markdown page with the numbers, loss curves and overlay pictures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .. import _atomic
from ..data.layouts import mask_index_names


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _metric_row(name: str, m: dict[str, Any] | None) -> str:
    if not m:
        return f"| {name} | - | - | - | - |"
    return f"| {name} | {_pct(m.get('miou'))} | {_pct(m.get('fwiou'))} | {_pct(m.get('mean_biou'))} | {_pct(m.get('mean_dice'))} |"


def summary_table(summary: dict[str, Any]) -> str:
    """The results table (mIoU, FwIoU, bIoU, Dice in %), PBIP beside the plain-CAM baseline."""
    rows = [
        "| result | mIoU | FwIoU | bIoU | Dice |",
        "|---|---|---|---|---|",
        _metric_row("pseudo-masks (val, image labels given), PBIP", summary.get("pseudo_val_pbip")),
        _metric_row("pseudo-masks (val, image labels given), baseline", summary.get("pseudo_val_baseline")),
        _metric_row("masks of unlabelled val images, PBIP", summary.get("val_pbip")),
        _metric_row("masks of unlabelled val images, baseline", summary.get("val_baseline")),
        _metric_row("slide, stage 2 (trained on PBIP pseudo-masks)", summary.get("slide_stage2")),
        _metric_row("slide, stage 1 PBIP", summary.get("slide_stage1-pbip")),
        _metric_row("slide, stage 1 plain-CAM baseline", summary.get("slide_stage1-baseline")),
    ]
    return "\n".join(rows)


def training_table(summary: dict[str, Any]) -> str:
    """Steps and last losses of each training run (stage 1 PBIP and baseline, stage 2)."""
    lines = ["| run | steps | last loss | cls | fg | bg | best val mIoU |", "|---|---|---|---|---|---|---|"]

    def num(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}"

    for name in ("pbip", "baseline"):
        t = summary.get(f"train_{name}") or {}
        loss = t.get("last_losses", {})
        best = (t.get("best_val") or {}).get("miou")
        lines.append(
            f"| stage 1 {name} | {t.get('steps', '-')} | {num(loss.get('loss'))} | {num(loss.get('cls'))} "
            f"| {num(loss.get('fg'))} | {num(loss.get('bg'))} | {_pct(best)} |"
        )
    seg = summary.get("train_seg") or {}
    best = seg.get("best") or {}
    lines.append(
        f"| stage 2 {seg.get('segmenter', '')} | {seg.get('step', '-')} | | | | | {_pct(best.get('miou'))} |"
    )
    return "\n".join(lines)


def bank_table(summary: dict[str, Any]) -> str:
    """Bank members per class and sub-cluster."""
    bank = summary.get("bank", {})
    lines = ["| class | images per sub-cluster |", "|---|---|"]
    for c in bank.get("classes", []):
        sizes = [str(k.get("selected", k.get("members", "?"))) for k in c.get("clusters", [])]
        lines.append(f"| {c.get('name')} | {', '.join(sizes)} |")
    return "\n".join(lines)


def _read_log(run: Path) -> list[dict[str, Any]]:
    path = run / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_losses(out: Path) -> Path:
    """Loss parts per step of the PBIP run and the baseline's classification loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
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
    fig.tight_layout()
    path = out / "report-losses.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def _colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    return palette[np.clip(labels, 0, len(palette) - 1)]


def plot_preview(out: Path, variant: str = "pbip") -> Path | None:
    """Preview patches with their fused CAMs, FG/BG weights (eq. 5) and pseudo-masks."""
    path = out / f"run-{variant}" / "preview.npz"
    if not path.is_file():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = np.load(path)
    images, classes, palette = p["images"], [str(c) for c in p["classes"]], p["palette"]
    cols = ["image"] + [f"CAM {c}" for c in classes] + ["FG (present)", "BG (present)", "pseudo-mask"]
    n = len(images)
    fig, axes = plt.subplots(n, len(cols), figsize=(1.6 * len(cols), 1.6 * n), dpi=90, squeeze=False)
    for i in range(n):
        present = p["labels"][i].astype(bool) if "labels" in p else np.ones(len(classes), bool)
        panels = [images[i]]
        panels += [p["cams"][i, c].astype(np.float32) for c in range(len(classes))]
        if "fg" in p:
            panels.append(
                p["fg"][i][present].astype(np.float32).max(0)
                if present.any()
                else np.zeros(images.shape[1:3])
            )
            panels.append(
                p["bg"][i][present].astype(np.float32).min(0)
                if present.any()
                else np.zeros(images.shape[1:3])
            )
        else:
            panels += [np.zeros(images.shape[1:3]), np.zeros(images.shape[1:3])]
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
    fig.tight_layout()
    png = out / f"report-preview-{variant}.png"
    fig.savefig(png)
    plt.close(fig)
    return png


def plot_slide(out: Path, name: str = "stage2") -> Path | None:
    """Slide thumbnail, ground truth and the segmentation side by side."""
    zarr_path = out / f"slide-{name}.zarr"
    if not zarr_path.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import tifffile

    from ..export import open_labels
    from ..export.label_values import to_values
    from ..slide import open_slide

    labels = open_labels(zarr_path)
    level = min(len(labels.levels) - 1, 2)
    pred = np.asarray(labels.levels[level])
    slide = open_slide(out / "slide.tif")
    thumb = slide.read_all(labels.mpp[level])
    with tifffile.TiffFile(out / "slide.labels.tif") as tif:
        truth_bg = int(json.loads(tif.pages[0].description)["background_index"])
        truth = to_values(tif.asarray(), len(labels.classes), truth_bg)  # as the output: 0 background
    ys = (np.arange(pred.shape[0]) * truth.shape[0] / pred.shape[0]).astype(int)
    xs = (np.arange(pred.shape[1]) * truth.shape[1] / pred.shape[1]).astype(int)
    truth = truth[ys][:, xs]
    palette = np.asarray(labels.palette, np.uint8)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), dpi=90)
    for ax, img, title in zip(
        axes,
        (thumb, _colorize(truth, palette), _colorize(pred, palette)),
        ("slide", "ground truth", f"segmentation ({name})"),
        strict=True,
    ):
        ax.imshow(img)
        ax.set_title(title)
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=np.asarray(c) / 255) for c in labels.palette]
    names = list(mask_index_names(labels.classes, labels.background_index))
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    png = out / f"report-slide-{name}.png"
    fig.savefig(png)
    plt.close(fig)
    return png


def write_report(out: Path, summary: dict[str, Any]) -> Path:
    """Write ``report.md`` (numbers, loss curves, CAM/FG/BG previews, slide overlay)."""
    out = Path(out)
    pictures = [plot_losses(out), plot_preview(out, "pbip"), plot_preview(out, "baseline"), plot_slide(out)]
    secs = summary.get("seconds", {})
    lines = [
        "# napari-pbip demo report",
        "",
        "Synthetic H&E patches with image-level labels -> prototype bank -> stage 1 (PBIP and the plain-CAM",
        "baseline on the same backbone and epochs) -> pseudo-masks -> stage 2 -> a synthetic slide with",
        "ground truth. Metrics in % (ground-truth background excluded).",
        "",
        summary_table(summary),
        "",
        "## Training",
        "",
        training_table(summary),
        "",
        "## Image bank",
        "",
        bank_table(summary),
        "",
        "## Time per step (s)",
        "",
        "| step | seconds |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in secs.items()],
        f"| total | {summary.get('seconds_total')} |",
        "",
        "## Pictures",
        "",
    ]
    lines += [f"![{p.stem}]({p.name})" for p in pictures if p is not None]
    path = out / "report.md"
    _atomic.write_text(path, "\n".join(lines) + "\n")
    return path
