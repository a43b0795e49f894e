"""The report's picture helpers, checked against hand-computed values (no demo run)."""

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
