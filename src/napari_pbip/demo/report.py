"""The demo report: a Markdown page with the numbers; the pictures are drawn by :mod:`.figures`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import _atomic
from .figures import plot_losses, plot_preview, plot_slide


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
