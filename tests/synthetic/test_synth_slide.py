"""The synthetic pyramidal slide: readable by OpenSlide and tifffile, exact labels, no seams."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_pbip._atomic import sha256_file
from napari_pbip.errors import OutputExistsError, SettingsError
from napari_pbip.events import Progress
from napari_pbip.synthetic.render import render_tissue
from napari_pbip.synthetic.synth_slide import (
    LABELS_STAGE,
    SLIDE_STAGE,
    SlideField,
    pyramid_shapes,
    synthetic_slide_job,
    write_synthetic_slide,
)


@pytest.fixture(scope="module")
def jpeg_slide(tmp_path_factory):
    return write_synthetic_slide(tmp_path_factory.mktemp("slide") / "synth.tif", size=1536, seed=2, tile=256)


@pytest.fixture(scope="module")
def lossless_slide(tmp_path_factory):
    out = tmp_path_factory.mktemp("lossless") / "synth.tif"
    return write_synthetic_slide(out, size=1024, seed=5, mpp=0.25, tile=256, compression="deflate")


def test_openslide_reads_a_pyramid_with_the_right_mpp(jpeg_slide, lossless_slide):
    openslide = pytest.importorskip("openslide")
    for result, mpp in ((jpeg_slide, 0.5), (lossless_slide, 0.25)):
        slide = openslide.OpenSlide(str(result.slide))
        assert slide.level_count >= 3
        assert slide.level_dimensions[0] == result.shape[::-1]
        assert slide.level_dimensions[1] == (result.shape[1] // 2, result.shape[0] // 2)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(mpp, rel=1e-6)
        assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(mpp, rel=1e-6)
        slide.close()


def test_tifffile_sees_levels_and_labels_match_level_zero(jpeg_slide):
    with tifffile.TiffFile(jpeg_slide.slide) as tif:
        levels = [level.shape for level in tif.series[0].levels]
        assert tif.pages[0].compression == tifffile.COMPRESSION.JPEG
    assert levels == [(*s, 3) for s in jpeg_slide.levels] and len(levels) >= 3
    with tifffile.TiffFile(jpeg_slide.labels) as tif:
        labels = tif.asarray()
        meta = json.loads(tif.pages[0].description)
    assert labels.shape == jpeg_slide.shape and labels.dtype == np.uint8
    assert meta["classes"] == list(jpeg_slide.classes) and meta["background_index"] == 4
    assert meta["mpp"] == 0.5 and [tuple(c) for c in meta["palette"]] == list(jpeg_slide.palette)
    assert jpeg_slide.labels.name == "synth.labels.tif"


def test_tissue_covers_an_irregular_central_part_with_several_classes(jpeg_slide):
    labels = tifffile.imread(jpeg_slide.labels)
    counts = np.bincount(labels.ravel(), minlength=5) / labels.size
    assert 0.45 <= 1 - counts[4] <= 0.75
    assert (counts[:4] > 0.02).sum() >= 3
    centre = labels[384:1152, 384:1152] != 4
    ring = np.ones(labels.shape, bool)
    ring[192:-192, 192:-192] = False
    assert centre.mean() > (labels[ring] != 4).mean() + 0.2  # tissue gathers in the middle
    rgb = tifffile.imread(jpeg_slide.slide)
    assert rgb[labels == 4].mean() > 225
    assert rgb[labels < 4].mean() < 200


def test_level_zero_equals_rendering_any_region_at_once(lossless_slide):
    """Tiles were rendered row by row; a region across tile borders rendered in one go is identical."""
    field = SlideField(seed=5, size=1024, n_classes=4, mpp=0.25)
    origin, shape = (200, 130), (400, 600)
    expected_labels = field.labels(origin, shape)
    expected = render_tissue(expected_labels, 5, origin)
    with tifffile.TiffFile(lossless_slide.slide) as tif:
        level0 = tif.series[0].levels[0].asarray()
        level1 = tif.series[0].levels[1].asarray()
    window = (slice(200, 600), slice(130, 730))
    assert np.array_equal(tifffile.imread(lossless_slide.labels)[window], expected_labels)
    assert np.array_equal(level0[window], expected)
    quads = level0.reshape(512, 2, 512, 2, 3).astype(np.uint16).sum(axis=(1, 3))
    assert np.array_equal(level1, ((quads + 2) // 4).astype(np.uint8))


def test_same_seed_same_bytes_other_seed_other_slide(tmp_path):
    a = write_synthetic_slide(tmp_path / "a.tif", size=512, seed=1, tile=128)
    b = write_synthetic_slide(tmp_path / "b.tif", size=512, seed=1, tile=128)
    c = write_synthetic_slide(tmp_path / "c.tif", size=512, seed=2, tile=128)
    assert sha256_file(a.slide) == sha256_file(b.slide)
    assert np.array_equal(tifffile.imread(a.labels), tifffile.imread(b.labels))
    assert not np.array_equal(tifffile.imread(a.labels), tifffile.imread(c.labels))


def test_existing_outputs_are_kept_and_labels_out_is_honoured(tmp_path):
    result = write_synthetic_slide(
        tmp_path / "s.tif", size=256, tile=128, labels_out=tmp_path / "gt" / "truth.tif"
    )
    assert result.labels == tmp_path / "gt" / "truth.tif" and result.labels.is_file()
    before = sha256_file(result.slide)
    with pytest.raises(OutputExistsError, match="overwrite"):
        write_synthetic_slide(tmp_path / "s.tif", size=256, seed=9, tile=128, labels_out=tmp_path / "x.tif")
    assert sha256_file(result.slide) == before and not (tmp_path / "x.tif").exists()
    write_synthetic_slide(tmp_path / "s.tif", size=256, seed=9, tile=128, overwrite=True)
    assert sha256_file(result.slide) != before


def test_job_reports_progress_and_stopping_early_leaves_nothing(tmp_path):
    events = []
    job = synthetic_slide_job(tmp_path / "p.tif", size=512, tile=128)
    while True:
        try:
            events.append(next(job))
        except StopIteration as stop:
            result = stop.value
            break
    slide_steps = [e.step for e in events if e.stage == SLIDE_STAGE]
    assert all(isinstance(e, Progress) for e in events) and slide_steps == sorted(slide_steps)
    assert slide_steps[-1] == sum(-(-h // 128) for h, _ in result.levels)
    assert [e.stage for e in events][-1] == LABELS_STAGE

    stopped = synthetic_slide_job(tmp_path / "q.tif", size=512, tile=128)
    next(stopped)
    stopped.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.labels.tif", "p.tif"]


def test_pyramid_halves_until_small_with_at_least_three_levels():
    assert pyramid_shapes(20000, 20000) == [(20000 >> k, 20000 >> k) for k in range(5)] + [(625, 625)]
    assert len(pyramid_shapes(512, 512)) == 3


def test_bad_arguments_name_the_value(tmp_path):
    with pytest.raises(SettingsError, match="'webp'"):
        write_synthetic_slide(tmp_path / "s.tif", size=256, compression="webp")
    with pytest.raises(SettingsError, match="tile=100"):
        write_synthetic_slide(tmp_path / "s.tif", size=256, tile=100)


def test_cli_synth_slide_prints_what_it_wrote(tmp_path, capsys):
    from napari_pbip.cli.main import main

    out = tmp_path / "cli.tif"
    code = main(["data", "synth-slide", "--out", str(out), "--size", "300", "--tile", "128", "--mpp", "0.25"])
    assert code == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "cli.labels.tif" in printed and "0.25 um/px" in printed
    with tifffile.TiffFile(out) as tif:
        assert [level.shape[:2] for level in tif.series[0].levels] == [(300, 300), (150, 150), (75, 75)]
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth-slide", "--out", str(out), "--size", "300", "--compression", "png"])
    assert exit_info.value.code == 2 and "'png'" in capsys.readouterr().err
