"""What an indexing request will do: one rule for the command line, the dock and the toolbox.

``plan_index`` decides, before anything is embedded, the model and tile settings a run uses, the
notices it gives and what it refuses. Every front end calls it: the command line and the toolbox
before they start, the dock before it queues its task, and ``jobs.index_rasters`` at its top (with
the rasters, which it then opens and sizes). Same request, same answer, wherever it is asked.

**An existing index keeps the model and the tile settings it was built with**, so that all its
vectors stay comparable and all its rasters are cut alike. A request that leaves them out gets the
index's own; a request that asks for a different model, or a different tile size, unit, overlap or
bands, is refused with one sentence naming both (a new index folder is the way to another model or
other tiles). The dock shows an existing index's settings in disabled fields, so it never asks.

**Tiles given in metres are at least ``tiling.MIN_TILE_PX`` (32) pixels a side.** One size in metres
covers rasters of any resolution: 500 m is 100 px on 5 m NAIP but 6 px on 89 m Landsat, a blur the
model cannot read. Such a raster's tiles are enlarged to 32 px (square on the ground) and the plan says
so, per raster, with the size used. A size in pixels is taken as given: the analyst chose it knowingly.
Indexes made before this rule record no minimum and keep cutting their rasters as they did (the plan
says when those tiles are that small).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import EngineError

#: The tile settings a user chooses (the others, e.g. ``read_size``, are the engine's or a test's). ``scales``
#: is not compared with an index's own: the scales asked are added to those it holds (engine/scales.py).
TILE_SETTINGS = ("size", "units", "overlap", "bands", "scales")


@dataclass(frozen=True)
class RasterPlan:
    """A raster that can be indexed: what GDAL says of it and its tile size in pixels."""

    info: Any  # tiling.RasterInfo
    tile_px: tuple[int, int]
    notice: str | None = None  # when its tiles are not what was asked (``tile_size_notice``)


@dataclass(frozen=True)
class IndexPlan:
    """What an indexing request does: the model and tiles used, its notices, the rasters it skips."""

    index_dir: str
    existing: bool
    model: dict
    tiling: Any  # tiling.TilingSpec
    #: One sentence per raster whose tiles are not what was asked (enlarged to the minimum, or tiny).
    notices: tuple[str, ...] = ()  # (``jobs.index_rasters`` reports those of the rasters it indexes)
    rasters: tuple[RasterPlan, ...] = ()
    #: (raster, why) for rasters that cannot be indexed (unreadable, no CRS, too many web requests…).
    skipped: tuple[tuple[str, str], ...] = ()
    #: An existing index's scales before this request (``tiling.scales`` holds them and the new ones).
    recorded_scales: tuple[int, ...] | None = None

    @property
    def new_scales(self) -> tuple[int, ...]:
        """Scales this request adds to an existing index (their tiles alone are embedded)."""
        if self.recorded_scales is None:
            return ()
        return tuple(s for s in self.tiling.scales if s not in self.recorded_scales)

    def describe(self) -> str:
        """One line: a new index, or adding to an existing one, with which model and tiles."""
        from .jobs import model_label

        what = f"{model_label(self.model)} and {tiling_text(self.tiling)}"
        if self.existing:
            return f"Adding to the index at {self.index_dir}, built with {what}."
        return f"A new index at {self.index_dir}, with {what}."


def tile_request(size: float | None = None, units: str | None = None, overlap: float | None = None,
                 bands: Sequence[int] | None = None, scales: Sequence[int] | None = None) -> dict:
    """The tile settings a front end was given; None means "not given" (an existing index's own, else the default)."""
    given = {"size": size, "units": units, "overlap": overlap, "bands": tuple(bands) if bands else None,
             "scales": tuple(scales) if scales else None}
    return {key: value for key, value in given.items() if value is not None}


def tiling_text(tiling: Any) -> str:
    """E.g. "500 m tiles, overlap 0.25" or "224 px tiles, overlap 0, bands 4,3,2" (a spec or its dict)."""
    spec = tiling.to_dict() if hasattr(tiling, "to_dict") else dict(tiling)
    unit = "m" if spec.get("units") == "m" else "px"
    text = f"{float(spec.get('size', 0)):g} {unit} tiles, overlap {float(spec.get('overlap') or 0):g}"
    if spec.get("bands"):
        text += ", bands " + ",".join(str(b) for b in spec["bands"])
    if spec.get("read_size", 224) != 224:
        text += f", read at {spec['read_size']} px"
    if spec.get("max_nodata", 0.5) != 0.5:
        text += f", at most {float(spec['max_nodata']):.0%} nodata"
    if spec.get("scales") and tuple(spec["scales"]) != (1,):
        text += ", scales " + ",".join(str(s) for s in spec["scales"])
    return text


def plan_index(index_dir: str | Path, model: dict | None = None, tiling: Any = None,
               rasters: Sequence[str | Path] | None = None) -> IndexPlan:
    """Plan indexing into ``index_dir``, or raise ``EngineError`` (``StorageError``) with the one sentence why not.

    ``model``: the resolved model asked for (``ModelRef.to_dict()``), None when not asked. ``tiling``: a
    ``TilingSpec`` (every setting asked) or a mapping of the settings given (see ``tile_request``), None
    when none were. Without ``rasters`` nothing but the index's own records is read, so a front end can
    call it before starting; with them each raster is opened and its tiles are sized (``rasters``,
    ``skipped``, ``notices``).
    """
    from .index import TileIndex, is_index
    from .models import DEFAULT_MODEL, resolve_model_ref
    from .scales import merged_scales, with_scales
    from .storage import check_writable_folder, read_only_error
    from .tiling import TilingSpec

    folder = Path(index_dir).expanduser().resolve()
    asked = _asked_settings(tiling)
    asked_scales = tuple(asked.pop("scales", None) or ())
    if is_index(folder):
        with TileIndex.open(folder) as idx:
            readonly, recorded_model, recorded = idx.readonly, idx.model, TilingSpec.from_dict(idx.tiling)
        if readonly:
            raise read_only_error(folder)
        check_same_settings(folder, recorded_model, recorded, model, asked)
        plan = IndexPlan(str(folder), True, recorded_model, merged_scales(recorded, asked_scales),
                         recorded_scales=recorded.scales)
    else:
        check_writable_folder(folder)
        spec = replace(tiling if isinstance(tiling, TilingSpec) else TilingSpec(), **asked)
        if asked_scales:
            spec = with_scales(spec, asked_scales)
        plan = IndexPlan(str(folder), False, model or resolve_model_ref(name=DEFAULT_MODEL).to_dict(),
                         spec.validate())
    return _plan_rasters(plan, rasters) if rasters else plan


def check_same_settings(folder: Path, recorded_model: dict, recorded: Any, model: dict | None,
                        asked: Mapping[str, Any]) -> None:
    """Refuse a model or tile settings other than an existing index's own, with one sentence naming both."""
    from .jobs import model_label, same_model

    wanted = replace(recorded, **asked).validate()  # a wrong value (size 0) gets its own sentence first
    ours, theirs = recorded.to_dict(), wanted.to_dict()
    other_tiles = any(ours[key] != theirs[key] for key in asked)
    other_model = model is not None and not same_model(model, recorded_model)
    if not (other_model or other_tiles):
        return
    built, not_ = [], []
    if other_model:
        built.append(model_label(recorded_model))
        not_.append(model_label(model or {}))
    if other_tiles:
        built.append(f"other tile settings ({tiling_text(recorded)})")
        not_.append(tiling_text(wanted))
    keeps = " and ".join((["keeps one model so that its vectors stay comparable"] if other_model else [])
                         + (["cuts all its rasters alike"] if other_tiles else []))
    new = " or ".join((["another model"] if other_model else []) + (["other tile settings"] if other_tiles else []))
    raise EngineError(f"The index at {folder} was built with {' and '.join(built)}, not {' and '.join(not_)}; an "
                      f"index {keeps}: add to it with its own settings, or use a new index folder for {new}.")


def _asked_settings(tiling: Any) -> dict[str, Any]:
    """The tile settings asked for, as ``TilingSpec`` fields: all of a spec's but ``min_px``, or a mapping's."""
    from .tiling import TilingSpec

    if tiling is None:
        return {}
    if isinstance(tiling, TilingSpec):
        asked = {key: getattr(tiling, key) for key in tiling.__dataclass_fields__ if key != "min_px"}
        if tuple(asked["scales"]) == (1,):
            del asked["scales"]  # a spec's default: no scales asked beyond an index's own
        return asked
    unknown = set(tiling) - set(TILE_SETTINGS)
    if unknown:
        raise ValueError(f"not tile settings: {sorted(unknown)}")
    asked = dict(tiling)
    for key in ("bands", "scales"):
        if asked.get(key) is not None:
            asked[key] = tuple(asked[key])
    return asked


def _plan_rasters(plan: IndexPlan, rasters: Sequence[str | Path]) -> IndexPlan:
    """Open each raster (once, by its canonical path) and size its tiles; the unusable ones are skipped."""
    from .sources import canonical_path, check_request_cap
    from .tiling import open_raster, tile_size_pixels

    usable, skipped, notices = [], [], []
    for raster in dict.fromkeys(canonical_path(r) for r in rasters):
        try:
            info = open_raster(raster, plan.tiling)
            check_request_cap(raster, plan.tiling)  # a web map needing too many requests is refused before any
            size = tile_size_pixels(info, plan.tiling)
        except EngineError as exc:
            skipped.append((raster, str(exc)))
            continue
        notice = tile_size_notice(info, plan.tiling, size)
        usable.append(RasterPlan(info, size, notice))
        if notice:
            notices.append(notice)
    return replace(plan, rasters=tuple(usable), skipped=tuple(skipped), notices=tuple(notices))


def tile_size_notice(info: Any, spec: Any, size: tuple[int, int]) -> str | None:
    """The sentence for a raster whose metre tiles are not the pixels the metres make (or are tiny), else None."""
    from .sources import display_name
    from .tiling import MIN_TILE_PX, ground_pixel_size

    if spec.units != "m":
        return None
    mx, my = ground_pixel_size(info)
    asked = (round(spec.size / mx), round(spec.size / my))
    name = display_name(info.path)
    pixels = f"{metres_text(mx)} pixels" if abs(mx - my) < 0.01 * mx else \
        f"{metres_text(mx)} × {metres_text(my)} pixels"
    if size != asked:
        return (f"{name} has {pixels}, so {spec.size:g} m tiles would be only {asked[0]} × {asked[1]} px; its tiles "
                f"are {size[0]} × {size[1]} px ({metres_text(size[0] * mx)}) instead, the least for tiles given in "
                f"metres ({MIN_TILE_PX} px a side).")
    if min(size) < MIN_TILE_PX:
        return (f"{name} has {pixels}, so its {spec.size:g} m tiles are only {size[0]} × {size[1]} px, too few for "
                "the model to see much; this index was built before such tiles were enlarged, so they are cut as "
                "before. For larger tiles, index it into a new folder.")
    return None


def metres_text(metres: float) -> str:
    """A ground distance for people: "89 m", "0.6 m", "2.85 km"."""
    return f"{metres / 1000:.3g} km" if metres >= 1000 else f"{metres:.3g} m"


@dataclass(frozen=True)
class RasterGrid:
    """How an indexed raster is cut, read back from its tiles: its CRS, pixel size and tile size."""

    crs: str  # "EPSG:4326", else the CRS's name
    pixel_m: tuple[float, float] | None  # ground metres per pixel (None: no tiles to measure)
    tile_px: tuple[int, int] | None

    def text(self) -> str:
        """E.g. "EPSG:4326, 89 × 89.4 m pixels, 32 × 32 px tiles (2.85 km)"."""
        if self.pixel_m is None or self.tile_px is None:
            return f"{self.crs}, no tiles"
        mx, my = self.pixel_m
        pixels = metres_text(mx) if abs(mx - my) < 0.01 * mx else f"{metres_text(mx)} × {metres_text(my)}"
        return (f"{self.crs}, {pixels} pixels, {self.tile_px[0]} × {self.tile_px[1]} px tiles "
                f"({metres_text(self.tile_px[0] * mx)})")


def raster_grids(idx) -> dict[str, RasterGrid]:
    """Each searchable raster's grid (path → ``RasterGrid``), from its first tile: the sizes really used.

    Read from the index alone (no raster is opened), so it works for moved files and web sources.
    """
    from .index import checked_footprint

    grids: dict[str, RasterGrid] = {}
    names: dict[str, str] = {}
    for rec in idx.rasters():
        if rec.crs_wkt not in names:
            names[rec.crs_wkt] = _crs_name(rec.crs_wkt)
        tile = idx.first_tile(rec.id)
        if tile is None:
            grids[rec.path] = RasterGrid(names[rec.crs_wkt], None, None)
            continue
        w, h = tile.window[2], tile.window[3]
        grids[rec.path] = RasterGrid(names[rec.crs_wkt], _pixel_metres(checked_footprint(tile), rec.crs_wkt, w, h),
                                     (w, h))
    return grids


def _crs_name(crs_wkt: str) -> str:
    from osgeo import osr

    srs = osr.SpatialReference()
    if srs.ImportFromWkt(crs_wkt) != 0:
        return "unknown CRS"
    srs.AutoIdentifyEPSG()
    authority, code = srs.GetAuthorityName(None), srs.GetAuthorityCode(None)
    return f"{authority}:{code}" if authority and code else (srs.GetName() or "unknown CRS")


def _pixel_metres(footprint_wkt: str, crs_wkt: str, width: int, height: int) -> tuple[float, float] | None:
    """Ground metres per pixel at a tile, from its footprint (corners clockwise from top-left) and window size."""
    from .tiling import RasterInfo, ground_pixel_size

    ring = footprint_wkt[footprint_wkt.index("((") + 2:footprint_wkt.rindex("))")].split(",")
    (x0, y0), (x1, y1), _, (x3, y3) = [tuple(float(v) for v in p.split()) for p in ring[:4]]
    transform = (x0, (x1 - x0) / width, (x3 - x0) / height, y0, (y1 - y0) / width, (y3 - y0) / height)
    tile = RasterInfo("tile", width, height, 3, "Byte", crs_wkt, transform, (1, 2, 3), (None, None, None), "")
    try:
        return ground_pixel_size(tile)
    except EngineError:
        return None
