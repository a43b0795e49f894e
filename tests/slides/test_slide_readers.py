"""Slide readers: every format gives the same pixels and the right um/px; bad input gives clear errors."""

from __future__ import annotations

import pickle

import numpy as np
import pbip_toy as toy
import pytest

from napari_pbip.errors import SlideError
from napari_pbip.slides import open_slide


@pytest.fixture(scope="module")
def toy_image() -> np.ndarray:
    return toy.render(toy.blob_labels((700, 900), seed=3), seed=3)


@pytest.fixture(scope="module")
def tiff_slide(tmp_path_factory, toy_image):
    return toy.write_tiff_slide(tmp_path_factory.mktemp("slides") / "toy.tif", toy_image, mpp=0.5, tile=128)


@pytest.fixture(scope="module")
def decoded(tiff_slide) -> np.ndarray:
    """Level 0 as tifffile decodes the whole page (a second, independent read path)."""
    import tifffile

    return tifffile.imread(tiff_slide)


def test_tiff_pyramid_pixels_mpp_and_lazy_levels(tiff_slide, toy_image, decoded):
    slide = open_slide(tiff_slide)
    assert slide.backend == "tifffile"
    assert slide.shapes == [(700, 900), (350, 450), (175, 225)]
    assert slide.mpp == pytest.approx([0.5, 1.0, 2.0])
    level0 = slide.levels[0]
    assert level0.shape == (700, 900, 3) and level0.dtype == np.uint8
    assert np.array_equal(level0[100:300, 200:500].compute(), decoded[100:300, 200:500])
    # JPEG of a noisy image: close to what was written, not equal
    assert np.abs(decoded.astype(float) - toy_image).mean() < 10


def test_read_region_resamples_from_nearest_finer_level(tmp_path, tiff_slide, decoded):
    import tifffile

    # a lossless two-level TIFF of linear ramps, so the expected value of every resampled pixel is known
    yy, xx = np.mgrid[0:120, 0:120].astype(np.float64)
    ramp = np.stack([10 + 2 * xx, 10 + 2 * yy, np.full_like(xx, 100)], axis=2)
    half = ramp.reshape(60, 2, 60, 2, 3).mean(axis=(1, 3))  # integers again: 11 + 4 i
    path = tmp_path / "ramp.tif"
    with tifffile.TiffWriter(path) as tw:
        for i, level in enumerate((ramp, half)):
            res = 1e4 / (0.5 * 2**i)
            kw = {"resolution": (res, res), "resolutionunit": "CENTIMETER", "subfiletype": 1 if i else 0}
            tw.write(
                np.rint(level).astype(np.uint8), tile=(128, 128), compression="zlib", photometric="rgb", **kw
            )
    slide = open_slide(path)
    assert slide.level_for(0.5) == 0 and slide.level_for(0.9) == 0 and slide.level_for(1.0) == 1
    assert slide.level_for(5.0) == 1 and slide.level_for(0.1) == 0
    region = slide.read_region(3, 4, 30, 32, mpp=1.5)  # from level 1, 1.5 level-1 px per output px
    assert region.shape == (30, 32, 3)
    cy = (np.arange(3, 33) + 0.5) * 3 - 0.5  # output pixel centres in level-0 pixels
    cx = (np.arange(4, 36) + 0.5) * 3 - 0.5
    # a level-0 pixel is 2 grey values: a sixth of an output pixel off would show
    assert np.abs(region[..., 0] - (10 + 2 * cx)[None, :]).max() <= 0.75
    assert np.abs(region[..., 1] - (10 + 2 * cy)[:, None]).max() <= 0.75
    # outside the slide is white, as glass; inside, level-0 reads are the decoded pixels
    edge = open_slide(tiff_slide).read_region(-10, -10, 20, 20, mpp=0.5)
    assert (edge[:10] == 255).all() and (edge[:, :10] == 255).all()
    assert np.array_equal(edge[10:, 10:], decoded[:10, :10])


def test_tiff_and_openslide_backends_agree(tiff_slide):
    a = open_slide(tiff_slide)
    b = open_slide(tiff_slide, backend="openslide")
    assert b.backend == "openslide" and b.mpp == pytest.approx(a.mpp)
    assert np.array_equal(a.read_region(50, 60, 200, 210, 0.5), b.read_region(50, 60, 200, 210, 0.5))


def test_slide_pickles_as_its_description_and_reopens(tiff_slide):
    slide = open_slide(tiff_slide, mpp=0.25)
    data = pickle.dumps(slide)
    assert len(data) < 1000  # no pixels, no file handle
    again = pickle.loads(data)
    assert again.mpp[0] == 0.25
    assert np.array_equal(again.read_level(1, 0, 40, 0, 40), slide.levels[1][:40, :40].compute())


def test_ome_zarr_reads_channel_first_with_micrometre_scale(tmp_path, toy_image):
    import zarr

    root = zarr.open_group(str(tmp_path / "img.zarr"), mode="w", zarr_format=3)
    chw = np.moveaxis(toy_image, 2, 0)
    datasets = []
    for level in range(2):
        root.create_array(str(level), data=chw[:, :: 2**level, :: 2**level], chunks=(3, 256, 256))
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1, 0.25 * 2**level, 0.25 * 2**level]}
                ],
            }
        )
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]}
    slide = open_slide(tmp_path / "img.zarr")
    assert slide.backend == "zarr" and slide.mpp == pytest.approx([0.25, 0.5])
    assert np.array_equal(slide.read_region(5, 7, 30, 40, 0.25), toy_image[5:35, 7:47])


def test_ome_tiff_subifd_pyramid_with_physical_size(tmp_path, toy_image):
    import tifffile

    path = tmp_path / "img.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        meta = {"axes": "YXS", "PhysicalSizeX": 0.2527, "PhysicalSizeY": 0.2527}
        tw.write(toy_image, tile=(128, 128), photometric="rgb", subifds=1, metadata=meta)
        tw.write(toy_image[::2, ::2], tile=(128, 128), photometric="rgb", subfiletype=1)
    slide = open_slide(path)
    assert slide.mpp == pytest.approx([0.2527, 0.5054])
    assert np.array_equal(slide.levels[0][:64, :64].compute(), toy_image[:64, :64])


def test_png_is_one_level_and_needs_mpp(tmp_path, toy_image):
    from PIL import Image

    path = tmp_path / "patch.png"
    Image.fromarray(toy_image).save(path)
    with pytest.raises(SlideError, match="--slide-mpp"):
        open_slide(path)
    slide = open_slide(path, mpp=0.5)
    assert len(slide.levels) == 1 and np.array_equal(
        slide.read_region(0, 0, 50, 60, 0.5), toy_image[:50, :60]
    )


def test_tiff_without_resolution_asks_for_mpp(tmp_path, toy_image):
    path = toy.write_tiff_slide(tmp_path / "nores.tif", toy_image, mpp=None)
    with pytest.raises(SlideError, match="does not record its resolution"):
        open_slide(path)
    assert open_slide(path, mpp=0.3).mpp[0] == 0.3


@pytest.mark.parametrize("name,content", [("broken.svs", b"not a slide" * 100), ("notes.txt", b"hello")])
def test_corrupt_or_unsupported_files_name_file_and_formats(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SlideError) as err:
        open_slide(path)
    assert name in str(err.value) and "Supported formats" in str(err.value)


def test_missing_file_and_bad_mpp(tmp_path):
    with pytest.raises(SlideError, match="does not exist"):
        open_slide(tmp_path / "nope.svs")
    with pytest.raises(SlideError, match="plausible"):
        open_slide(tmp_path, mpp=-1)


@pytest.mark.shared_data
def test_real_svs_jpeg_tiles(shared_data):
    path = shared_data / "slides" / "CMU-1-Small-Region.svs"
    slide = open_slide(path)
    assert slide.shape == (2967, 2220) and slide.mpp[0] == pytest.approx(0.499)
    via_openslide = open_slide(path, backend="openslide")
    region = slide.read_region(1000, 800, 256, 256, 0.499)
    assert np.array_equal(region, via_openslide.read_region(1000, 800, 256, 256, 0.499))
    assert region.std() > 10  # real tissue there, not a blank read


@pytest.mark.shared_data
def test_real_svs_jpeg2000_without_mpp(shared_data):
    path = shared_data / "slides" / "tcga-cr-7395-01a-01-ts1.svs"
    with pytest.raises(SlideError, match="tcga-cr-7395.*--slide-mpp"):
        open_slide(path)
    slide = open_slide(path, mpp=0.25)
    assert slide.shapes == [(3567, 4443), (1783, 2221)]
    assert slide.mpp[1] == pytest.approx(0.5, rel=1e-3)
    assert slide.level_for(0.5) == 1
    thumb = slide.read_region(0, 0, 300, 400, 2.0)
    assert thumb.shape == (300, 400, 3) and thumb.std() > 10


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_transparent_pixels_read_as_glass_white_in_every_backend(tmp_path, suffix):
    """A transparent-black corner (as exported crops have) must not turn into dark 'tissue'."""
    import tifffile
    from PIL import Image

    from napari_pbip.data.images import read_rgb
    from napari_pbip.slides import open_slide

    rgba = np.zeros((256, 256, 4), np.uint8)
    rgba[..., :3] = (180, 90, 160)  # H&E-like pink
    rgba[..., 3] = 255
    rgba[:128, :128] = 0  # transparent black corner
    rgba[200:, 200:, 3] = 128  # half transparent: halfway to white
    path = tmp_path / f"alpha{suffix}"
    if suffix == ".png":
        Image.fromarray(rgba, "RGBA").save(path)
    else:
        tifffile.imwrite(
            path,
            rgba,
            photometric="rgb",
            extrasamples=["unassalpha"],
            resolution=(2e4, 2e4),
            resolutionunit="CENTIMETER",
        )
    slide = open_slide(path, mpp=0.5)
    pixels = np.asarray(slide.read_region(0, 0, 256, 256, 0.5))
    assert (pixels[:128, :128] == 255).all()
    assert abs(int(pixels[220, 220, 1]) - (90 + 255) // 2) <= 1
    assert (pixels[140:190, 140:190] == (180, 90, 160)).all()
    np.testing.assert_array_equal(read_rgb(path), pixels)
