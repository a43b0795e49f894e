"""--scheduler tcp://...: the same chunks run on a dask.distributed cluster of worker processes."""

from __future__ import annotations

import os

import numpy as np
import pbip_toy as toy
import pytest
import zarr

from napari_pbip.events import run
from napari_pbip.slides.segment import SegmentSettings, segment_slide


def _worker_facts() -> tuple[int, int]:
    """(pid, models loaded in this worker process)."""
    from napari_pbip.slides.segment import _cached_predictor

    return os.getpid(), _cached_predictor.cache_info().misses


@pytest.mark.slow
def test_local_cluster_of_two_processes_gives_the_threaded_result(tmp_path):
    from distributed import Client, LocalCluster

    labels = toy.blob_labels((700, 1100), seed=21)
    slide = toy.write_tiff_slide(tmp_path / "s.tif", toy.render(labels, seed=21), mpp=0.5)
    model = toy.save_toy_model(tmp_path / "model", "colour")
    toy.register()
    settings = SegmentSettings(chunk=256, batch=8, tissue_mpp=4.0)
    threaded = run(segment_slide(slide, model, tmp_path / "threads.zarr", settings))

    with (
        LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster,
        # not the default client: segment_slide must reach the cluster by its address alone,
        # as `pbip segment --scheduler tcp://...` does in a process that has no client
        Client(cluster, set_as_default=False) as client,
    ):
        client.run(toy.register)  # custom model kinds must be known to the workers too
        result = run(
            segment_slide(
                slide, model, tmp_path / "cluster.zarr", settings.replace(scheduler=cluster.scheduler_address)
            )
        )
        facts = client.run(_worker_facts)

    a = zarr.open_array(str(tmp_path / "threads.zarr" / "labels" / "tissue" / "0"))[:]
    b = zarr.open_array(str(tmp_path / "cluster.zarr" / "labels" / "tissue" / "0"))[:]
    assert np.array_equal(a, b)
    assert result.class_pixels == threaded.class_pixels
    assert result.chunks["total"] == 3 * 5
    # both workers took chunks, and each loaded the model once, not per task
    assert len(facts) == 2 and all(loads == 1 for _, loads in facts.values())
