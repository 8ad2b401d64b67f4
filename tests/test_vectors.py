"""Exact search for small indexes, a calibrated IVF index past the threshold, and the cache file."""
import numpy as np
import pytest

from engine.vectors import TARGET_RECALL, VectorStore, rerank_exact


def clustered(n, dim=64, clusters=50, seed=0):
    """Unit vectors around cluster centres, like embeddings of many similar tiles."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, dim))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_small_index_is_exact():
    vecs = clustered(500)
    ids = np.arange(1000, 1500)
    store = VectorStore.build(ids, vecs, threshold=1000)
    assert store.kind == "flat"
    scores, got = store.search(vecs[:3], 5)
    assert got[:, 0].tolist() == [1000, 1001, 1002]
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_past_threshold_an_ivf_index_is_chosen_calibrated_and_finds_planted_vectors(tmp_path):
    vecs = clustered(20_000)
    rng = np.random.default_rng(1)
    planted = rng.standard_normal((5, 64)).astype(np.float32)
    planted /= np.linalg.norm(planted, axis=1, keepdims=True)
    vecs[[17, 4242, 9999, 12345, 19999]] = planted
    ids = np.arange(20_000) + 7
    store = VectorStore.build(ids, vecs, threshold=10_000)
    assert store.kind.startswith("ivf") and "nprobe=" in store.describe()
    assert min(store.recall.values()) >= TARGET_RECALL
    _, got = store.search(planted, 10)
    assert got.shape[1] >= store.rerank >= 10, "an approximate store gives candidates to re-rank exactly"
    best = [rerank_exact(q, row, vecs[row - 7], 1)[0][1] for q, row in zip(planted, got)]
    assert best == [24, 4249, 10006, 12352, 20006], "the exact top hit of each planted vector"
    store.save(tmp_path / "v.faiss")
    again = VectorStore.load(tmp_path / "v.faiss", store.kind, {k: list(v) for k, v in store.settings.items()})
    _, got2 = again.search(planted, 10)
    np.testing.assert_array_equal(got, got2)


def test_top_k_is_capped_by_the_index_size():
    store = VectorStore.build(np.arange(3), clustered(3))
    scores, got = store.search(clustered(1, seed=5), 10)
    assert got.shape == (1, 3)
