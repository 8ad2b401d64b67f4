"""Planted vectors for archive tests and ``make bench-archive``: clustered image vectors, text-like queries apart.

CLIP image embeddings share a large common direction and fall into clusters of similar looks; text
embeddings share another direction (the "modality gap") and a text query such as "farmland" matches
several looks at once. As in the million-tile issue's planted data, an image vector is
``common·image + cluster centre + noise`` and a text query ``common·text + the mean of ``mix`` cluster
centres + noise``: its best images spread over several clusters (and inverted lists) and score low,
as real text queries do. Random-weight models show none of this, so tests and the bench plant it.
Generation is deterministic per (seed, start row), so a build can be regenerated shard by shard.
"""
from __future__ import annotations

import numpy as np

UTM14 = ('PROJCS["NAD83 / UTM zone 14N",GEOGCS["NAD83",DATUM["North_American_Datum_1983",SPHEROID["GRS 1980",'
         '6378137,298.257222101]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],'
         'PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",-99],PARAMETER["scale_factor",0.9996],'
         'PARAMETER["false_easting",500000],PARAMETER["false_northing",0],UNIT["metre",1],AUTHORITY["EPSG","26914"]]')
#: Rows generated per block: a block is the unit of regeneration, so any range of rows costs at most two extra.
BLOCK = 65536


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class ModalityWorld:
    def __init__(self, dim: int = 512, clusters: int = 2000, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.dim, self.seed = dim, seed
        basis = np.linalg.qr(rng.standard_normal((dim, 2)))[0].T
        self.image_dir, self.text_dir = basis[0], basis[1]
        centres = rng.standard_normal((clusters, dim))
        centres -= (centres @ basis.T) @ basis
        self.centres = unit(centres)

    def _block(self, b: int) -> np.ndarray:
        if getattr(self, "_last", (None,))[0] == b:
            return self._last[1]  # consecutive ranges read the same block: make it once
        self._last = (b, self._make_block(b))
        return self._last[1]

    def _make_block(self, b: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, 1, b))
        k = rng.integers(0, len(self.centres), BLOCK)
        x = self.image_dir + 0.9 * self.centres[k] + 0.8 * rng.standard_normal((BLOCK, self.dim)) / np.sqrt(self.dim)
        return unit(x)

    def images(self, start: int, n: int) -> np.ndarray:
        """Image vectors ``start`` … ``start + n - 1`` (the same rows whatever range asks for them)."""
        out = np.empty((n, self.dim), dtype=np.float32)
        row = start
        while row < start + n:
            b, off = divmod(row, BLOCK)
            take = min(BLOCK - off, start + n - row)
            out[row - start:row - start + take] = self._block(b)[off:off + take]
            row += take
        return out

    def texts(self, n: int, seed: int, mix: int = 8) -> np.ndarray:
        """``n`` unit text-like queries, each matching ``mix`` clusters at once, off the images' cone."""
        rng = np.random.default_rng((self.seed, 2, seed))
        k = rng.integers(0, len(self.centres), (n, mix))
        x = 1.2 * self.text_dir + 0.5 * unit(self.centres[k].sum(axis=1)) \
            + 0.5 * rng.standard_normal((n, self.dim)) / np.sqrt(self.dim)
        return unit(x)

    def chunks(self, n: int, first_id: int = 1, start: int = 0, size: int = BLOCK):
        """(ids, vectors) chunks of ``n`` image vectors from row ``start`` on, ids from ``first_id``."""
        for at in range(0, n, size):
            m = min(size, n - at)
            yield np.arange(first_id + at, first_id + at + m, dtype=np.int64), self.images(start + at, m)


def image_queries(vectors: np.ndarray, n: int, seed: int, cosine: float = 0.5) -> np.ndarray:
    """Unit queries at ``cosine`` to random given vectors (like the mean of example tiles, not a copy)."""
    from engine.vectors import perturbed_queries

    return perturbed_queries(vectors, np.random.default_rng(seed), n, cosine)


def exact_top(queries: np.ndarray, chunks, k: int = 10) -> np.ndarray:
    """The right answer: ids of the exact top-``k`` per query over (ids, vectors) chunks."""
    best_ids = np.full((len(queries), k), -1, np.int64)
    best = np.full((len(queries), k), -np.inf, np.float32)
    for ids, vecs in chunks:
        scores = queries @ vecs.T
        all_s = np.concatenate([best, scores], axis=1)
        all_i = np.concatenate([best_ids, np.broadcast_to(ids, scores.shape)], axis=1)
        part = np.argpartition(-all_s, k - 1, axis=1)[:, :k]
        best, best_ids = np.take_along_axis(all_s, part, 1), np.take_along_axis(all_i, part, 1)
    order = np.argsort(-best, axis=1, kind="stable")
    return np.take_along_axis(best_ids, order, 1)


def recall(got, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(np.asarray(g)[:k].tolist()) & set(t.tolist())) / k for g, t in zip(got, truth)]))


#: The planted rasters' geotransform: 1 m pixels in UTM 14N (tiles of 10 px are 10 m squares).
PLANTED_TRANSFORM = (500000.0, 1.0, 0.0, 5200000.0, 0.0, -1.0)


def planted_tiles(n: int, first: int = 0, per_row: int = 1000, size: int = 10) -> list:
    """Pixel windows (as the tiler makes them) of ``n`` tiles of a planted raster, from tile ``first`` on."""
    from engine.tiling import TileWindow

    return [TileWindow((i % per_row) * size, (i // per_row) * size, size, size) for i in range(first, first + n)]


def add_planted_raster(idx, path: str, vectors: np.ndarray, batch: int = 4096, after_batch=None,
                       finish: bool = True) -> int:
    """Add a planted raster's tiles (one per vector) to an open, locked index, batch by batch; returns its id."""
    n = len(vectors)
    side = int(np.ceil(np.sqrt(n)))
    rid, _ = idx.begin_raster(path, f"fp-{path}", UTM14, side * 10, side * 10, (1, 2, 3), n,
                              transform=PLANTED_TRANSFORM)
    for start in range(0, n, batch):
        idx.add_tiles(rid, planted_tiles(min(batch, n - start), start, per_row=side), vectors[start:start + batch])
        if after_batch is not None:
            after_batch(idx)
    if finish:
        idx.finish_raster(rid)
    return rid


def planted_model_index(folder, tiny_model, query: str = "airport runway", n: int = 12_000, twin: int = 777):
    """An index of ``n`` random tiles of the tiny model's width, tile ``twin + 1`` being the query's own embedding
    (through the engine's query path), moved to the archive layout by the `archive` job; returns the twin's id."""
    from engine import jobs
    from engine.index import TileIndex
    from engine.search import embed_query

    model = jobs.resolve_model(folder, arch=str(tiny_model.config), checkpoint=str(tiny_model.checkpoint))
    vector = embed_query(jobs.get_encoder(model), query)
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n, vector.shape[1])).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs[twin] = vector[0]
    idx = TileIndex.create(folder, model, {"size": 10}, vector.shape[1])
    with idx.writing():
        add_planted_raster(idx, "/planted/runways.tif", vecs)
    idx.close()
    return twin + 1
