"""The demo report: a Markdown page for the pathologist first (what was segmented, the slide picture,
tissue areas, agreement with the ground truth, what the model is and is not for), then the
developer's numbers (all stages, losses, bank, timings, CAM grids).

The pictures are drawn by :mod:`.figures`; :func:`rebuild_report` writes the page again from a
finished demo folder without training anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import _atomic
from ..engine.model_meta import read_model_json
from . import figures

INTENDED_USE = (
    "**Intended use: research use only, not for diagnosis.** This demo model was trained on synthetic "
    "H&E-like images and has not been validated on real tissue. Its output must not be used for "
    "diagnosis, grading or treatment decisions; a pathologist reviews every result."
)
UM2_PER_MM2 = 1e6
OTHER_TISSUE = ("mucin", "fat", "vessels", "nerve", "necrosis", "normal epithelium")


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


def slide_facts(out: Path, summary: dict[str, Any], name: str = "stage2") -> dict[str, Any]:
    """What was segmented and by which model: slide size, um/px, classes, model and its resolution."""
    from ..export import open_labels
    from ..slides import open_slide

    slide = open_slide(out / "slide.tif")
    labels = open_labels(out / f"slide-{name}.zarr")
    model = read_model_json(out / "seg")
    settings = summary.get("settings", {})
    return {
        "file": slide.path.name,
        "size_px": slide.shape,
        "mpp": slide.mpp[0],
        "size_mm": tuple(n * slide.mpp[0] / 1000 for n in slide.shape),
        "classes": list(labels.classes),
        "segmenter": model.get("segmenter", "?"),
        "segmenter_about": _segmenter_description(model.get("segmenter", "")),
        "model_mpp": model.get("mpp"),
        "output_mpp": labels.mpp[0],
        "n_train": settings.get("n_train"),
    }


def _segmenter_description(name: str) -> str:
    from ..models.registry import list_segmenters

    entry = list_segmenters().get(name)
    return entry.description if entry else ""


def facts_table(facts: dict[str, Any]) -> str:
    """The slide and model facts as a two-column table."""
    h, w = facts["size_px"]
    hm, wm = facts["size_mm"]
    model = facts["segmenter"] + (f": {facts['segmenter_about']}" if facts["segmenter_about"] else "")
    rows = [
        ("slide", f"{facts['file']} (synthetic H&E-like, made by the demo)"),
        ("size", f"{w} x {h} px = {wm:.2f} x {hm:.2f} mm"),
        ("resolution", f"{facts['mpp']:.3g} um/px (about {10 / facts['mpp']:.0f}x objective)"),
        ("tissue classes", ", ".join(facts["classes"])),
        ("model", model),
        ("model trained at", f"{facts['model_mpp']} um/px" if facts["model_mpp"] else "unknown"),
        ("segmentation resolution", f"{facts['output_mpp']:.3g} um/px"),
    ]
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def class_areas(out: Path, name: str = "stage2") -> tuple[dict[str, int], float]:
    """Pixels per class name of a slide segmentation and the um/px they were counted at."""
    from ..data.layouts import mask_index_names
    from ..export import open_labels
    from ..export.areas import count_classes

    img = open_labels(out / f"slide-{name}.zarr")
    names = list(mask_index_names(img.classes, img.background_index))
    counts = img.attrs.get("pbip", {}).get("class_pixels") or count_classes(img.levels[0], names)
    return counts, img.mpp[0]


def area_table(counts: dict[str, int], mpp: float, metrics: dict[str, Any] | None) -> str:
    """Area in mm² and % of tissue per class, beside the ground truth's % of tissue when known."""
    from ..export import area_rows

    per_class = (metrics or {}).get("per_class", {})
    truth_total = sum(c.get("gt_pixels", 0) for c in per_class.values())
    lines = ["| class | area (mm²) | % of tissue | ground truth: % of tissue |", "|---|---|---|---|"]
    for r in area_rows(counts, mpp):
        if r.percent_of_tissue is None:
            lines.append(f"| {r.name} (no tissue) | {r.area_um2 / UM2_PER_MM2:.3f} | - | - |")
            continue
        gt = per_class.get(r.name, {}).get("gt_pixels")
        truth = f"{100 * gt / truth_total:.1f}" if gt is not None and truth_total else "-"
        lines.append(f"| {r.name} | {r.area_um2 / UM2_PER_MM2:.3f} | {r.percent_of_tissue:.1f} | {truth} |")
    tissue = sum(v for k, v in counts.items() if k != "background") * mpp * mpp / UM2_PER_MM2
    lines.append(f"| **all tissue** | **{tissue:.3f}** | 100 | 100 |")
    return "\n".join(lines)


def agreement_table(metrics: dict[str, Any] | None) -> str:
    """IoU and Dice per class (in %) against the ground truth, and their means."""
    if not metrics:
        return "No ground-truth comparison was recorded."
    lines = ["| class | IoU (%) | Dice (%) |", "|---|---|---|"]
    for cls, m in metrics.get("per_class", {}).items():
        lines.append(f"| {cls} | {_pct(m.get('iou'))} | {_pct(m.get('dice'))} |")
    lines.append(f"| **mean** | **{_pct(metrics.get('miou'))}** | **{_pct(metrics.get('mean_dice'))}** |")
    return "\n".join(lines)


def limits_text(facts: dict[str, Any]) -> list[str]:
    """What the model is, how it was trained, and where it should not be trusted."""
    n = facts.get("n_train") or "the"
    return [
        f"The model ({facts['segmenter']}) labels every pixel of the tissue as one of: "
        f"{', '.join(facts['classes'])}. It learnt from {n} small synthetic image patches that were labelled "
        "only with which classes each contains (no outlines were drawn): a first model found where each "
        "class is in those patches, and the segmentation model learnt from those estimated outlines.",
        "",
        "Limits:",
        "",
        f"- It knows only the classes above: any other tissue ({_others(facts['classes'])}, ...) is "
        "still called one of them.",
        "- Outlines come from weak labels, so borders between classes are approximate; small regions "
        "can be missed.",
        f"- It expects H&E at about {facts['model_mpp'] or '?'} um/px; other stains, scanners or "
        "magnifications are untested.",
        "- The numbers above are against the synthetic ground truth of this demo slide only; they say "
        "nothing about real slides.",
        "",
        INTENDED_USE,
    ]


def _others(classes: list[str]) -> str:
    """A few tissue types the model was not taught, as examples for its limits."""
    known = {c.lower() for c in classes}
    return ", ".join([t for t in OTHER_TISSUE if t not in known][:3])


def _picture(path: Path | None, alt: str) -> list[str]:
    return [f"![{alt}]({path.name})", ""] if path is not None else []


def pathologist_part(out: Path, summary: dict[str, Any], name: str = "stage2") -> list[str]:
    """The reader's part: facts, slide picture, areas, agreement with the truth, intended use."""
    facts = slide_facts(out, summary, name)
    metrics = summary.get(f"slide_{name}")
    counts, mpp = class_areas(out, name)
    slide_png = figures.plot_slide(out, name)
    conf = (metrics or {}).get("confusion")
    conf_png = None
    if conf is not None:
        conf_png = figures.plot_confusion(
            conf, list(metrics["per_class"]), out / f"report-confusion-{name}.png"
        )
    return [
        "# Tissue segmentation report (napari-pbip demo)",
        "",
        f"> {INTENDED_USE}",
        "",
        "## What was segmented",
        "",
        facts_table(facts),
        "",
        "## The slide",
        "",
        "Left: the slide; middle: the ground truth the demo drew; right: the model's segmentation.",
        "",
        *_picture(slide_png, "slide, ground truth and segmentation"),
        "## Tissue areas",
        "",
        f"Counted on the segmentation at {mpp:.3g} um/px; % of tissue excludes background.",
        "",
        area_table(counts, mpp, metrics),
        "",
        "## Agreement with the ground truth",
        "",
        "IoU: overlap / union of the model's and the true region of a class (100 = identical). "
        "Dice: 2 x overlap / (sum of both areas). Only pixels that are tissue in the ground truth count.",
        "",
        agreement_table(metrics),
        "",
        "Confusion matrix: each row is a true class and shows what the model called its pixels (% of the",
        "row; the last column is tissue the model missed). Pixels outside the true tissue are not counted",
        "here; the slide picture shows them.",
        "",
        *(
            _picture(conf_png, "confusion matrix")
            or ["(not recorded by this demo version; run `pbip demo` again)", ""]
        ),
        "## The model and its limits",
        "",
        *limits_text(facts),
        "",
    ]


def developer_part(out: Path, summary: dict[str, Any]) -> list[str]:
    """The developer's part: every stage's metrics, training, bank, timings and training pictures."""
    secs = summary.get("seconds", {})
    pictures = [
        (figures.plot_losses(out), "stage-1 losses"),
        (figures.plot_preview(out, "pbip"), "PBIP training preview"),
        (figures.plot_preview(out, "baseline"), "plain-CAM baseline training preview"),
    ]
    lines = [
        "---",
        "",
        "# For developers",
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
        "## Training pictures",
        "",
        "Preview grids: per patch its CAM per class, the foreground weight (CAM inside the region counted as",
        "the class, eq. 5, highest over the classes the patch is labelled with), the background weight",
        "(how clearly a pixel is outside that region, lowest over those classes) and the pseudo-mask; maps",
        "are drawn at 50% opacity over the patch.",
        "",
    ]
    for path, alt in pictures:
        lines += _picture(path, alt)
    return lines


def write_report(out: Path, summary: dict[str, Any]) -> Path:
    """Write ``report.md`` and its pictures: the pathologist's part first, the developer's last."""
    out = Path(out)
    lines = pathologist_part(out, summary) + developer_part(out, summary)
    path = out / "report.md"
    _atomic.write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def rebuild_report(out: str | Path) -> Path:
    """Write ``report.md`` and its pictures again from a finished demo folder (nothing is retrained)."""
    return write_report(Path(out), json.loads((Path(out) / "summary.json").read_text()))
