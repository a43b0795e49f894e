"""Previews over a region of any size (the slide in view): tiles seen as training patches, stitched
back in place, capped to a few tiles, and a training job that asks its view at every preview."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_pbip.events import Preview, run  # noqa: E402
from napari_pbip.stage1 import train  # noqa: E402
from napari_pbip.stage1.classnet import build_classnet  # noqa: E402
from napari_pbip.stage1.preview import preview_payload  # noqa: E402
from napari_pbip.stage1.region_preview import MAX_TILES, RegionPixels, capped_box, region_maps  # noqa: E402

from .test_loop import CLASSES, dataset, fake_bank, tiny  # noqa: E402,F401 - the module's data set fixture


@pytest.fixture(scope="module")
def model_and_spec(dataset):  # noqa: F811 - the fixture imported above
    from napari_pbip.data.layouts import open_dataset

    spec = open_dataset(dataset).spec
    protos = np.random.default_rng(0).normal(size=(len(CLASSES), 2, 32)).astype(np.float32)
    torch.manual_seed(0)
    model = build_classnet(tiny(), len(CLASSES), protos, np.ones((len(CLASSES), 2), bool)).eval()
    return model, spec


def test_a_view_that_fits_is_kept_whole_and_a_larger_one_is_cut_to_its_centre():
    assert capped_box(100, 150, 64) == (0, 0, 100, 150)  # 2 x 3 tiles
    dy, dx, h, w = capped_box(1000, 2000, 64)
    assert (h // 64) * (w // 64) <= MAX_TILES and h % 64 == 0 and w % 64 == 0
    assert w >= h  # a landscape view stays landscape
    assert (dy + h / 2, dx + w / 2) == (500, 1000)  # the middle of the view


def test_each_tile_of_a_region_is_seen_as_the_model_sees_a_patch_and_stitched_in_place(model_and_spec):
    model, spec = model_and_spec
    s = tiny()
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    region = np.concatenate([a, b[:, :40]], axis=1)  # a whole tile and a part of one
    both = region_maps(model, region, s, spec, "cpu", step=3, mpp=0.5)
    assert both["cams"].shape == both["fg"].shape == (len(CLASSES), 64, 104)
    assert both["tiles"] == (1, 2) and both["mpp"] == 0.5 and both["step"] == 3
    b_edge = np.pad(b[:, :40], ((0, 0), (0, 24), (0, 0)), mode="edge")  # the last tile, filled out
    for tile, (image, width) in enumerate(((a, 64), (b_edge, 40))):
        present = both["present"][0, tile].astype(np.float32)
        x = torch.from_numpy(image[None]).permute(0, 3, 1, 2).float() / 255
        patch = preview_payload(model, x, image[None], present[None], s, spec, 3, 0.5)  # as a training patch
        cols = slice(64 * tile, 64 * tile + width)
        np.testing.assert_allclose(
            both["cams"][:, :, cols], patch["cams"][0, :, :, :width] * present[:, None, None], atol=2e-3
        )
        np.testing.assert_allclose(both["fg"][:, :, cols], patch["fg"][0, :, :, :width], atol=2e-3)
    np.testing.assert_array_equal(both["image"], region)
    absent = ~both["present"][0, 0]  # classes the classifier does not find in the first tile
    assert both["present"][0, 0].any()  # the most probable class is always present
    assert not both["cams"][absent, :, :64].any()  # shown nowhere in that tile


def test_training_with_a_view_previews_its_region_and_a_failing_view_does_not_stop_it(dataset, tmp_path):  # noqa: F811
    asked = []
    pixels = np.full((80, 100, 3), 200, np.uint8)

    def view(mpp, tile):
        asked.append((mpp, tile))
        return RegionPixels(pixels, where=("slide", len(asked)))

    events = []
    run(train(tiny(epochs=1), dataset, fake_bank(), tmp_path / "a", view=view), events.append)
    previews = [e.payload.maps for e in events if isinstance(e.payload, Preview)]
    assert asked == [(0.5, 64)] * len(previews)  # the patches' um/px as the model sees them, its tile
    region = previews[-1]["region"]
    assert region["where"] == ("slide", len(asked)) and region["cams"].shape == (len(CLASSES), 80, 100)

    def broken(mpp, tile):
        raise OSError("the slide file went away")

    events = []
    result = run(train(tiny(epochs=1), dataset, fake_bank(), tmp_path / "b", view=broken), events.append)
    notes = [e.payload.maps.get("region_note") for e in events if isinstance(e.payload, Preview)]
    assert result.step == result.total_steps
    assert notes and all("the slide file went away" in n for n in notes)
