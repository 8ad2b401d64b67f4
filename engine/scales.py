"""Several tile sizes in one index: which scale a tile is, restricting a search to one, and suppression.

An index records its scales in its tiling settings (``"scales": [1, 2, 4]``; absent means ``[1]``): with
``size`` 224 px that is 224, 448 and 896 px windows over the same rasters, each read at the tiler's
``read_size`` and embedded at the model's input size, so a large object fits whole in some tile and a
small one fills some tile. No column says which scale a tile is: tiles of every scale live in the one
tiles table (its unique key includes the window's width and height), and a tile's scale follows from
its window: the scale whose planned window for that raster has this width and height. Where several
scales plan the same window (a raster smaller than the larger tiles is one tile covering all of it, at
each of those scales) the tile is stored once and counts as the smallest of them.

Adding a scale to an index embeds only the new scale's windows: the new scale is recorded, every raster
is reopened ("partial"), and indexing resumes each raster skipping the windows already stored.

Suppression (non-maximum suppression across scales and overlaps), applied to a search over an index
with several scales: hits are taken best first; a hit is dropped when a better hit already kept lies on
the same raster and their windows' intersection covers at least ``SUPPRESS_COVER`` (half) of the smaller
of the two. So a large tile that merely contains a better small tile is dropped (the small one says
where the match is), a small tile inside a better large tile is dropped (the large one holds the whole
thing), and two tiles of one scale that overlap by half or more count once. Hits on different rasters
(two dates of one place) never suppress each other.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from .errors import EngineError

if TYPE_CHECKING:
    from .index import TileIndex
    from .tiling import TilingSpec

#: A hit is suppressed when a better kept hit covers at least this share of the smaller of the two.
SUPPRESS_COVER = 0.5
#: Largest scale: a 224 px tile × 64 is a 14,336 px window, still read at ``read_size``.
MAX_SCALE = 64


def check_scales(scales: Sequence[int]) -> tuple[int, ...]:
    """The scales as a sorted tuple, or ``EngineError`` saying what is wrong with them."""
    values = tuple(scales)
    if not values:
        raise EngineError("Give at least one tile scale, e.g. 1 or 1,2,4.")
    for s in values:
        if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or not 1 <= s <= MAX_SCALE:
            raise EngineError(f"Tile scales are whole numbers from 1 to {MAX_SCALE} (multiples of the tile size), "
                              f"not {s!r}.")
    if len(set(values)) != len(values):
        raise EngineError(f"The tile scales {', '.join(map(str, values))} name a scale twice.")
    return tuple(sorted(int(s) for s in values))


def parse_scales(text: str | None) -> tuple[int, ...] | None:
    """Scales typed by a user, e.g. "1,2,4"; empty means none given."""
    if text is None or not str(text).strip():
        return None
    try:
        values = [int(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise EngineError(f"Tile scales {text!r} must be whole numbers like 1,2,4.") from None
    return check_scales(values)


def scale_specs(tiling: "TilingSpec") -> list[tuple[int, "TilingSpec"]]:
    """(scale, tiling of that scale) for each scale of ``tiling``, smallest first."""
    return [(s, replace(tiling, size=tiling.size * s, scales=(1,))) for s in check_scales(tiling.scales)]


def merged_scales(recorded: "TilingSpec", asked: Iterable[int]) -> "TilingSpec":
    """``recorded`` holding its own scales and the ``asked`` ones too."""
    return replace(recorded, scales=check_scales(sorted(set(recorded.scales) | {int(s) for s in asked})))


def with_scales(tiling: "TilingSpec", scales: Iterable[int]) -> "TilingSpec":
    """``tiling`` with exactly these scales."""
    return replace(tiling, scales=check_scales(list(scales)))


def same_cut(a: "TilingSpec", b: "TilingSpec") -> bool:
    """Whether two tilings cut tiles alike at scale 1 (everything but the scales agrees)."""
    return replace(a, scales=(1,)).to_dict() == replace(b, scales=(1,)).to_dict()


def scale_label(scale: int | None, tiling: dict) -> str:
    """"×2 (448 px)" for a scale of an index's tiling."""
    if scale is None:
        return "all scales"
    unit = "px" if tiling.get("units", "px") == "px" else "m"
    return f"×{scale} ({float(tiling.get('size', 224)) * scale:g} {unit})"


# -- which scale a tile is --------------------------------------------------------------------
@dataclass(frozen=True)
class ScaleMap:
    """For each raster of an index, the window (width, height) each scale plans there."""

    scales: tuple[int, ...]
    windows: dict  # raster id → {(width, height): scale}

    @property
    def several(self) -> bool:
        return len(self.scales) > 1

    def scale_of(self, raster_id: int, width: int, height: int) -> int | None:
        """The tile's scale; None for a window no scale plans (cut with other settings), or a one-scale index."""
        if not self.several:
            return None
        return self.windows.get(int(raster_id), {}).get((int(width), int(height)))

    def scales_of(self, raster_ids: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """Scale per tile (0 where none fits) for arrays of raster ids and (col, row, width, height) windows."""
        out = np.zeros(len(raster_ids), np.int64)
        for rid, sizes in self.windows.items():
            mine = raster_ids == rid
            if not mine.any():
                continue
            for (w, h), s in sizes.items():
                out[mine & (windows[:, 2] == w) & (windows[:, 3] == h)] = s
        if not self.several:
            out[:] = self.scales[0]
        return out

    @classmethod
    def of(cls, idx: "TileIndex") -> "ScaleMap":
        """The scale map of an index, from its recorded tiling and its rasters (no pixels are read)."""
        from .tiling import TilingSpec

        tiling = TilingSpec.from_dict(idx.tiling)
        scales = check_scales(tiling.scales)
        windows: dict = {}
        if len(scales) > 1:
            geometries = idx.raster_geometries()
            for raster in idx.rasters():
                got = geometries.get(raster.id)
                windows[raster.id] = _planned_sizes(raster, got[2].transform if got else None, tiling)
        return cls(scales, windows)


def _planned_sizes(raster, transform, tiling: "TilingSpec") -> dict[tuple[int, int], int]:
    """{(width, height): scale} of one raster; the smallest scale wins where two plan the same window.

    ``transform`` is the raster's stored geotransform (None when the index has none for it).
    """
    from .tiling import RasterInfo, tile_size_pixels

    affine = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    if transform is not None and tiling.units == "m":
        affine = tuple(transform)
    info = RasterInfo(raster.path, raster.width, raster.height, 3, "Byte", raster.crs_wkt, affine, (1, 2, 3),
                      (None, None, None), raster.fingerprint)
    out: dict[tuple[int, int], int] = {}
    for scale, spec in reversed(scale_specs(tiling)):
        if tiling.units == "m" and transform is None:
            continue  # metres need the raster's pixel size, known from its stored geotransform
        tw, th = tile_size_pixels(info, spec)
        out[(min(tw, raster.width), min(th, raster.height))] = scale
    return out


def tiles_of_scale(idx: "TileIndex", scale: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """Ids of the index's tiles at ``scale`` (within ``allowed`` when given); an unknown scale is refused."""
    smap = ScaleMap.of(idx)
    if scale not in smap.scales:
        have = ", ".join(f"×{s}" for s in smap.scales)
        raise EngineError(f"The index at {idx.folder} holds tiles at {have} only, not at ×{scale}.")
    if not smap.several:
        ids = idx.conn.execute("SELECT id FROM tiles ORDER BY id").fetchall()
        out = np.array([r[0] for r in ids], dtype=np.int64)
    else:
        rows = np.array(idx.conn.execute("SELECT id, raster_id, col_off, row_off, width, height FROM tiles "
                                         "ORDER BY id").fetchall(), dtype=np.int64).reshape(-1, 6)
        out = rows[smap.scales_of(rows[:, 1], rows[:, 2:6]) == scale, 0]
    return out if allowed is None else np.intersect1d(out, allowed)


def tile_counts(idx: "TileIndex") -> dict[int, int]:
    """Tiles per scale of an index ({1: n} for a one-scale index)."""
    smap = ScaleMap.of(idx)
    if not smap.several:
        return {smap.scales[0]: idx.tile_count()}
    counts = {s: 0 for s in smap.scales}
    for raster_id, width, height, n in idx.conn.execute(
            "SELECT raster_id, width, height, COUNT(*) FROM tiles GROUP BY raster_id, width, height"):
        scale = smap.scale_of(raster_id, width, height)
        if scale is not None:
            counts[scale] += int(n)
    return counts


# -- suppression --------------------------------------------------------------------------------
def suppress(hits: Sequence, cover: float = SUPPRESS_COVER, tile_of: Callable = lambda hit: hit.tile) -> list:
    """The hits (best first) that survive suppression (see the module docstring); ranks are renumbered.

    ``tile_of`` gives the ``TileRecord`` whose window counts (a change between dates: the before tile).
    """
    kept: list = []
    boxes: dict[int, list[tuple[float, float, float, float]]] = {}
    for hit in hits:
        tile = tile_of(hit)
        col, row, w, h = (float(v) for v in tile.window)
        mine = boxes.setdefault(int(tile.raster_id), [])
        if mine:
            k = np.asarray(mine)
            iw = np.clip(np.minimum(k[:, 0] + k[:, 2], col + w) - np.maximum(k[:, 0], col), 0, None)
            ih = np.clip(np.minimum(k[:, 1] + k[:, 3], row + h) - np.maximum(k[:, 1], row), 0, None)
            smaller = np.minimum(k[:, 2] * k[:, 3], w * h)
            if np.any(iw * ih >= cover * smaller - 1e-9):
                continue
        mine.append((col, row, w, h))
        kept.append(hit)
    return [replace(h, rank=n + 1) for n, h in enumerate(kept)]


def hits_with_scales(idx: "TileIndex", hits: Sequence) -> list:
    """Hits saying their scale (left None on a one-scale index)."""
    smap = ScaleMap.of(idx)
    if not smap.several:
        return list(hits)
    return [replace(h, scale=smap.scale_of(h.tile.raster_id, *h.tile.window[2:])) for h in hits]


def ranked_across_scales(fetch: Callable[[int], list], k: int, do_suppress: bool, total: int,
                         tile_of: Callable = lambda hit: hit.tile) -> list:
    """The best ``k`` hits after suppression: ``fetch(n)`` returns the best ``n`` before it, and more are
    fetched until ``k`` survive or the candidates run out."""
    if not do_suppress:
        return fetch(k)
    n = max(4 * k, 32)
    while True:
        got = fetch(n)
        kept = suppress(got, tile_of=tile_of)
        if len(kept) >= k or len(got) < n or n >= total:
            return kept[:k]
        n = min(total, n * 4)

