"""The report's picture helpers and tables, checked against hand-computed values (no demo run)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pbip.demo.figures import (
    format_length,
    is_light,
    legend_handles,
    plot_confusion,
    row_percent,
    scale_bar,
)
from napari_pbip.demo.report import agreement_table, area_table


@pytest.mark.parametrize(
    ("mpp", "width", "um", "px"),
    [
        (0.5, 1000, 100.0, 200.0),
        (2.0, 512, 200.0, 100.0),
        (8.0, 300, 500.0, 62.5),
        (0.25, 4096, 200.0, 800.0),
    ],
)
def test_scale_bar_is_a_round_length_drawn_at_the_right_pixel_count(mpp, width, um, px):
    assert scale_bar(mpp, width) == pytest.approx((um, px))


@pytest.mark.parametrize("mpp", [0.1, 0.37, 0.5, 1.3, 4.0, 16.0])
def test_scale_bar_fits_a_quarter_of_the_width_and_is_never_tiny(mpp):
    um, px = scale_bar(mpp, 777)
    assert 777 / 10 <= px <= 777 / 4
    assert um == pytest.approx(px * mpp)
    assert float(f"{um:.0e}") == pytest.approx(um)  # 1, 2 or 5 x 10^k
    assert str(um).lstrip("0.")[0] in "125"


def test_scale_bar_rejects_an_unknown_resolution():
    with pytest.raises(ValueError, match="mpp=0"):
        scale_bar(0, 100)


def test_lengths_read_in_micrometres_then_millimetres():
    assert format_length(250) == "250 µm"
    assert format_length(1000) == "1 mm"
    assert format_length(2500) == "2.5 mm"


def test_white_swatches_are_outlined_and_coloured_ones_are_not():
    white, tumor = legend_handles(["background", "tumor"], [(255, 255, 255), (200, 40, 40)])
    assert is_light((255, 255, 255)) and not is_light((200, 40, 40))
    assert not np.allclose(white.get_edgecolor()[:3], white.get_facecolor()[:3])  # visible on white
    assert np.allclose(white.get_edgecolor()[:3], 0.3)
    assert np.allclose(tumor.get_edgecolor(), tumor.get_facecolor())
    assert [h.get_label() for h in (white, tumor)] == ["background", "tumor"]


def test_confusion_rows_are_percent_of_each_true_class(tmp_path):
    conf = np.array([[90, 5, 5], [0, 0, 0]])
    pct = row_percent(conf)
    assert pct[0].tolist() == [90.0, 5.0, 5.0]
    assert np.isnan(pct[1]).all()  # a class absent from the truth has no row to normalise
    png = plot_confusion(conf, ["tumor", "stroma"], tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_areas_are_in_square_millimetres_and_percent_of_tissue():
    # 1000 x 1000 px at 0.5 um/px = 500 x 500 um = 0.25 mm²
    counts = {"tumor": 1_000_000, "stroma": 3_000_000, "background": 4_000_000}
    truth = {"per_class": {"tumor": {"gt_pixels": 1}, "stroma": {"gt_pixels": 1}}}
    table = area_table(counts, 0.5, truth)
    assert "| tumor | 0.250 | 25.0 | 50.0 |" in table
    assert "| stroma | 0.750 | 75.0 | 50.0 |" in table
    assert "| background (no tissue) | 1.000 | - | - |" in table
    assert "| **all tissue** | **1.000** |" in table


def test_agreement_table_names_each_class_with_its_iou_and_dice():
    metrics = {
        "miou": 0.7,
        "mean_dice": 0.8,
        "per_class": {"tumor": {"iou": 0.894, "dice": 0.944}, "stroma": {"iou": None, "dice": None}},
    }
    table = agreement_table(metrics)
    assert "| tumor | 89.4 | 94.4 |" in table
    assert "| stroma | - | - |" in table
    assert "| **mean** | **70.0** | **80.0** |" in table
