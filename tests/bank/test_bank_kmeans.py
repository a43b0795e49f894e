"""Spherical K-Means finds clusters by direction (cosine), deterministically, and selection keeps the nearest."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pbip.bank.kmeans import normalise, select_nearest, spherical_kmeans
from napari_pbip.errors import BankError


def _directional_clusters(seed: int = 0, n_per: int = 40, d: int = 64, k: int = 3):
    """Points along ``k`` random directions with small angular noise and wildly different lengths."""
    rng = np.random.default_rng(seed)
    directions = normalise(rng.normal(size=(k, d)))
    truth = np.repeat(np.arange(k), n_per)
    points = directions[truth] + 0.05 * rng.normal(size=(k * n_per, d))
    scale = np.exp(rng.uniform(np.log(0.01), np.log(100.0), size=(k * n_per, 1)))
    return (points * scale).astype(np.float32), truth, directions


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_recovers_clusters_by_direction_not_length():
    x, truth, directions = _directional_clusters()
    result = spherical_kmeans(x, 3, seed=0)
    assert _same_partition(result.labels, truth)
    # each centre points along one true direction
    assert np.sort((result.centres @ directions.T).max(axis=1)).min() > 0.99
    # plain (Euclidean) K-Means on the raw vectors is fooled by the lengths: the data needs cosine
    from sklearn.cluster import KMeans

    assert not _same_partition(KMeans(3, n_init=3, random_state=0).fit_predict(x), truth)


def test_centres_unit_and_distortion_is_cosine_distance():
    x, _, _ = _directional_clusters(seed=1)
    result = spherical_kmeans(x, 3, seed=0)
    np.testing.assert_allclose(np.linalg.norm(result.centres, axis=1), 1.0, atol=1e-5)
    sims = normalise(x) @ result.centres.T
    np.testing.assert_array_equal(result.labels, sims.argmax(axis=1))
    np.testing.assert_allclose(result.similarity, sims.max(axis=1), atol=1e-5)
    assert result.distortion == pytest.approx(float((1 - sims.max(axis=1)).sum()), rel=1e-5)


def test_deterministic_given_seed():
    x, _, _ = _directional_clusters(seed=2)
    noisy = x + np.random.default_rng(0).normal(0, 5.0, x.shape).astype(np.float32)
    a = spherical_kmeans(noisy, 4, seed=7)
    b = spherical_kmeans(noisy, 4, seed=7)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centres, b.centres)


def test_k_out_of_range_names_the_counts():
    x = np.eye(3, dtype=np.float32)
    with pytest.raises(BankError, match=r"k=4 clusters from 3 images"):
        spherical_kmeans(x, 4)
    assert sorted(spherical_kmeans(x, 3).labels.tolist()) == [0, 1, 2]


def test_duplicate_points_leave_no_empty_cluster_crash():
    x = np.repeat(np.eye(2, 8, dtype=np.float32), 5, axis=0)  # only 2 distinct directions, k=3
    result = spherical_kmeans(x, 3, seed=0)
    assert np.isfinite(result.centres).all()
    assert set(result.labels.tolist()) <= {0, 1, 2}
    assert result.distortion == pytest.approx(0.0, abs=1e-5)


def test_select_nearest_keeps_the_most_similar_and_locked():
    labels = np.array([0, 0, 0, 1, 1, 0])
    sim = np.array([0.9, 0.5, 0.7, 0.2, 0.8, 0.1])
    assert select_nearest(labels, sim, 2, 2).tolist() == [True, False, True, True, True, False]
    keep = np.array([False, False, False, False, False, True])  # locked far point counts towards N_K
    assert select_nearest(labels, sim, 2, 2, keep=keep).tolist() == [True, False, False, True, True, True]
