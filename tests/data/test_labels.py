"""Image-level labels in file names: the three public conventions, round trips, clear errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_pbip.data.labels import (
    detect_label_format,
    format_labels,
    label_stem,
    labelled_name,
    parse_labels,
)
from napari_pbip.errors import LabelParseError


@pytest.mark.parametrize(
    ("name", "fmt", "labels"),
    [
        ("1031280-2300-27920-[1 0 0 1].png", "space", (1, 0, 0, 1)),  # LUAD-HistoSeg
        ("TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500+0[1101].png", "compact", (1, 1, 0, 1)),  # BCSS-WSSS
        ("436219-9328-56427-[1, 1, 0].png", "comma", (1, 1, 0)),  # WSSS4LUAD
        ("/some/dir/x-[0 1].jpg", "space", (0, 1)),
    ],
)
def test_public_conventions_parse(name, fmt, labels):
    assert detect_label_format(name) == fmt
    assert parse_labels(name) == labels
    assert parse_labels(name, n_classes=len(labels), fmt=fmt) == labels


def test_format_labels_writes_each_convention():
    assert format_labels((1, 0, 1), "space") == "-[1 0 1]"
    assert format_labels([1, 0, 1], "compact") == "[101]"
    assert format_labels((1, 0, 1), "comma") == "-[1, 0, 1]"
    assert labelled_name("a-y0-x56", (0, 1), "space") == "a-y0-x56-[0 1].png"


def test_label_stem_removes_only_the_label():
    assert label_stem("1031280-2300-27920-[1 0 0 1].png") == "1031280-2300-27920"
    assert label_stem("TCGA-x+0[1101].png") == "TCGA-x+0"
    assert label_stem("tile-[1, 0].png") == "tile"


@pytest.mark.parametrize(
    "name",
    [
        "plain.png",
        "x-[1 0 2].png",
        "x-[].png",
        "x-[1 0].png.bak~",
        "x-[1  0].png",
        "x-[1,0 1].png",
        "x-[a b].png",
    ],
)
def test_malformed_names_name_the_file_and_pattern(name):
    with pytest.raises(LabelParseError) as info:
        parse_labels(name)
    assert name in str(info.value)
    assert "-[1 0 0 1]" in str(info.value)


def test_wrong_class_count_or_format_is_reported():
    with pytest.raises(LabelParseError, match="3 label entries but the data set has 4 classes"):
        parse_labels("x-[1 0 1].png", n_classes=4)
    with pytest.raises(LabelParseError, match=r"comma format"):
        parse_labels("x-[1 0 1].png", fmt="comma")
    with pytest.raises(LabelParseError, match="unknown"):
        parse_labels("x-[1 0 1].png", fmt="tabs")


def test_one_class_label_reads_in_any_format():
    assert parse_labels("x-[1].png", fmt="comma") == (1,)
    assert parse_labels("x[0].png", fmt="compact") == (0,)


def test_format_labels_rejects_non_binary():
    with pytest.raises(LabelParseError, match="0/1"):
        format_labels((1, 2), "space")
    with pytest.raises(LabelParseError):
        format_labels((), "compact")


_stems = st.text(
    alphabet=st.characters(blacklist_characters="/\\\x00", blacklist_categories=("Cs",)), max_size=20
)
_labels = st.lists(st.integers(0, 1), min_size=1, max_size=12).map(tuple)


@settings(max_examples=300, deadline=None)
@given(stem=_stems, labels=_labels, fmt=st.sampled_from(["space", "compact", "comma"]))
def test_format_then_parse_round_trips(stem, labels, fmt):
    name = labelled_name(stem, labels, fmt)
    assert parse_labels(name, n_classes=len(labels), fmt=fmt) == labels
    assert parse_labels(name) == labels  # detection agrees on the values


@settings(max_examples=500, deadline=None)
@given(name=st.text(max_size=40), n=st.one_of(st.none(), st.integers(1, 6)))
def test_junk_names_raise_label_parse_error_only(name, n):
    try:
        labels = parse_labels(name, n_classes=n)
    except LabelParseError:
        return
    assert labels and set(labels) <= {0, 1}
    assert n is None or len(labels) == n
