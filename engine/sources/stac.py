"""STAC: find imagery items in a STAC API (pystac-client) or a static catalogue (pystac), pick each
item's RGB asset, and index those COGs; the items' dates go into the index for change detection.

pystac and pystac-client are imported only here, so local files and web maps work without them.
An API is recognised by its landing page (an item-search conformance class or a ``search``
link); anything else is read as a static catalogue, collection, item collection or item and
filtered here by collection, bbox and datetime, exactly as an API would.
"""
from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Sequence

from ..errors import EngineError
from ..progress import CancelFn, ProgressFn, check_cancel, no_progress, scaled
from . import canonical_path
from .options import RemoteOptions, current, using

#: Asset keys that hold a true-colour picture, in order of preference (Earth Search, Planetary Computer, …).
RGB_KEYS = ("visual", "rgb", "true_color", "truecolor", "tci", "TCI", "image", "data")
#: Media types of rasters GDAL reads well by URL.
GEOTIFF_TYPES = ("image/tiff", "image/geotiff", "image/vnd.stac.geotiff", "application/geotiff")
#: The index's meta key holding {raster path: {"datetime", "item", "collection", "asset", "catalogue"}}.
DATES_KEY = "raster_dates"
ITEM_SEARCH = "item-search"


@dataclass(frozen=True)
class StacRaster:
    """One item's chosen asset, as a path the engine reads, with what the index keeps about it."""

    path: str
    item: str
    collection: str
    datetime: str
    asset: str


@dataclass(frozen=True)
class StacFound:
    rasters: list[StacRaster]
    skipped: list[tuple[str, str]]
    matched: int
    api: bool


def _require():
    try:
        import pystac  # noqa: F401
    except ImportError:
        raise EngineError("Searching STAC needs the pystac and pystac-client packages; install them "
                          "(pip install pystac pystac-client, or the plugin's Install dependencies).") from None


def parse_bbox(text: str | Sequence[float] | None) -> tuple[float, float, float, float] | None:
    """'west,south,east,north' in degrees → a tuple; None stays None."""
    if text is None or text == "":
        return None
    try:
        values = [float(v) for v in (text.replace(" ", "").split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise EngineError(f"The bbox {text!r} must be four numbers: west,south,east,north in degrees.") from None
    if len(values) != 4 or not (values[0] < values[2] and values[1] < values[3]):
        raise EngineError(f"The bbox {text!r} must be west,south,east,north with west < east and south < north.")
    return tuple(values)  # type: ignore[return-value]


def _instant(text: str, end: bool) -> datetime | None:
    """A datetime bound as STAC writes it (2016, 2016-08, 2016-08-16, or a full RFC 3339 time)."""
    text = text.strip()
    if text in ("", ".."):
        return None
    try:
        if len(text) == 4:
            start = datetime(int(text), 1, 1, tzinfo=timezone.utc)
            return start.replace(year=start.year + 1) - timedelta(microseconds=1) if end else start
        if len(text) == 7:
            year, month = int(text[:4]), int(text[5:7])
            start = datetime(year, month, 1, tzinfo=timezone.utc)
            following = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=timezone.utc)
            return following - timedelta(microseconds=1) if end else start
        if len(text) == 10:
            day = datetime.fromisoformat(text).replace(tzinfo=timezone.utc)
            return day + timedelta(days=1, microseconds=-1) if end else day
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    except ValueError:
        raise EngineError(f"{text!r} is not a date; write e.g. 2016, 2016-08, 2016-08-16 or "
                          "2016-08-16T10:00:00Z.") from None


def parse_datetime(text: str | None) -> tuple[datetime | None, datetime | None] | None:
    """'start/end' (either may be '..'), or one date meaning that whole year, month or day."""
    if not text:
        return None
    if "/" in text:
        first, _, last = text.partition("/")
        return _instant(first, False), _instant(last, True)
    return _instant(text, False), _instant(text, True)


def choose_asset(item: Any, key: str | None = None) -> tuple[str, Any]:
    """The item's true-colour asset: ``key`` if given, else a known RGB key or role, else its only GeoTIFF."""
    assets = item.assets
    if key:
        if key not in assets:
            raise EngineError(f"item {item.id} has no asset {key!r} (it has {', '.join(sorted(assets)) or 'none'}).")
        return key, assets[key]
    for name in RGB_KEYS:
        if name in assets:
            return name, assets[name]
    for name, asset in assets.items():
        if "visual" in (asset.roles or []):
            return name, asset
    tiffs = [(n, a) for n, a in assets.items()
             if any(t in (a.media_type or "") for t in GEOTIFF_TYPES) and "thumbnail" not in (a.roles or [])]
    if len(tiffs) == 1:
        return tiffs[0]
    raise EngineError(f"item {item.id} has no asset that is clearly a true-colour image "
                      f"(assets: {', '.join(sorted(assets)) or 'none'}); choose one with --asset.")


def _href(asset: Any) -> str:
    href = asset.get_absolute_href() or asset.href
    if href.startswith("file://"):
        href = urllib.parse.unquote(urllib.parse.urlparse(href).path)
    return canonical_path(href)


def _stac_io(options: RemoteOptions):
    """pystac's reader, fetching through ``PoliteClient`` (this job's user agent, headers and retries)."""
    from pystac.stac_io import DefaultStacIO

    from .http import PoliteClient

    client = PoliteClient(options)
    headers = options.headers_for("")

    class PoliteStacIO(DefaultStacIO):
        def read_text_from_href(self, href: str) -> str:
            if urllib.parse.urlparse(href).scheme in ("http", "https"):
                from .http import FetchError

                try:
                    return client.get(href, headers).data.decode("utf-8")
                except FetchError as exc:
                    raise EngineError(f"Cannot read the STAC document {href} ({exc.reason}).") from None
            return super().read_text_from_href(href)

    return PoliteStacIO()


def _item_time(item: Any) -> datetime | None:
    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _bbox_overlaps(a: Sequence[float] | None, b: Sequence[float] | None) -> bool:
    if not a or not b:
        return True
    return not (a[0] > b[2] or a[2] < b[0] or a[1] > b[3] or a[3] < b[1])


def search(url: str, collections: Sequence[str] = (), bbox: tuple[float, float, float, float] | None = None,
           datetime_range: str | None = None, asset: str | None = None, max_items: int = 50,
           options: RemoteOptions | None = None) -> StacFound:
    """Items matching the query, oldest first, at most ``max_items``, each with its chosen asset."""
    _require()
    import pystac

    options = options or current()
    window = parse_datetime(datetime_range)
    stac_io = _stac_io(options)
    try:
        landing = json.loads(stac_io.read_text(url))
    except ValueError:
        raise EngineError(f"{url} is not a STAC document (it is not JSON).") from None
    api = ITEM_SEARCH in " ".join(landing.get("conformsTo", [])) or \
        any(link.get("rel") == "search" for link in landing.get("links", []))
    if api:
        items = _api_items(url, collections, bbox, datetime_range, max_items, options)
    else:
        try:
            root = pystac.read_dict(landing, href=url, stac_io=stac_io)
        except Exception as exc:  # noqa: BLE001 - pystac raises many types for documents it cannot read
            raise EngineError(f"{url} is not a STAC catalogue, collection or item ({exc}).") from None
        items = _static_items(root, collections, bbox, window)
    items.sort(key=lambda i: (_item_time(i) or datetime.min.replace(tzinfo=timezone.utc), i.id))
    matched = len(items)
    rasters, skipped = [], []
    for item in items[:max_items]:
        try:
            key, chosen = choose_asset(item, asset)
            when = _item_time(item)
            rasters.append(StacRaster(_href(chosen), item.id, item.collection_id or "",
                                      when.isoformat().replace("+00:00", "Z") if when else "", key))
        except EngineError as exc:
            skipped.append((item.id, str(exc)))
    return StacFound(rasters, skipped, matched, api)


def _api_items(url: str, collections: Sequence[str], bbox, datetime_range: str | None, max_items: int,
               options: RemoteOptions) -> list:
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO

    headers = options.headers_for("")
    try:
        client = Client.open(url, stac_io=StacApiIO(headers=headers, max_retries=options.retries,
                                                    timeout=options.timeout_s))
        found = client.search(collections=list(collections) or None, bbox=bbox, datetime=datetime_range or None,
                              max_items=max_items + 1)
        return list(found.items())
    except EngineError:
        raise
    except Exception as exc:  # noqa: BLE001 - pystac-client surfaces HTTP and API errors as many types
        raise EngineError(f"The STAC API at {url} could not be searched ({exc}).") from None


def _static_items(root: Any, collections: Sequence[str], bbox, window) -> list:
    import pystac

    if isinstance(root, pystac.Item):
        candidates = [root]
    elif isinstance(root, pystac.ItemCollection):
        candidates = list(root.items)
    else:
        candidates = list(root.get_items(recursive=True))
    wanted = set(collections)
    out = []
    for item in candidates:
        if wanted and (item.collection_id or "") not in wanted:
            continue
        if not _bbox_overlaps(item.bbox, bbox):
            continue
        when = _item_time(item)
        if window is not None and when is not None:
            start, end = window
            if (start is not None and when < start) or (end is not None and when > end):
                continue
        out.append(item)
    return out


def record_dates(index_dir: str | Path, rasters: Sequence[StacRaster], catalogue: str) -> int:
    """Keep each indexed item's date (and id) in the index's meta table; returns how many were kept.

    A key of the existing meta table, so no schema change: ``{path: {"datetime", "item",
    "collection", "asset", "catalogue"}}``. Only rasters the index holds are recorded.
    """
    from ..index import TileIndex

    with TileIndex.open(index_dir) as idx, idx.writing():
        held = {r.path for r in idx.rasters()}
        row = idx.conn.execute("SELECT value FROM meta WHERE key=?", (DATES_KEY,)).fetchone()
        dates = json.loads(row[0]) if row else {}
        kept = 0
        for raster in rasters:
            if raster.path in held:
                dates[raster.path] = {"datetime": raster.datetime, "item": raster.item,
                                      "collection": raster.collection, "asset": raster.asset, "catalogue": catalogue}
                kept += 1
        with idx.conn:
            idx.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                             (DATES_KEY, json.dumps(dates, sort_keys=True)))
    return kept


def raster_dates(index_dir: str | Path) -> dict[str, dict]:
    """What ``record_dates`` kept: raster path → its item's date and identity (empty when none)."""
    from ..index import TileIndex

    with TileIndex.open(index_dir) as idx:
        row = idx.conn.execute("SELECT value FROM meta WHERE key=?", (DATES_KEY,)).fetchone()
    return json.loads(row[0]) if row else {}


def index_stac(index_dir: str | Path, url: str, collections: Sequence[str] = (), bbox=None,
               datetime_range: str | None = None, asset: str | None = None, max_items: int = 50,
               model: dict | None = None, tiling=None, batch_size: int = 32, runtime=None,
               options: RemoteOptions | None = None, progress: ProgressFn | None = None,
               cancel: CancelFn | None = None, dask: str | None = None):
    """Search a STAC API or catalogue and index the assets found; returns (IndexReport, StacFound).

    ``dask`` embeds on a Dask cluster, as in ``jobs.index_rasters`` (the workers read the assets by URL)."""
    from .. import jobs

    progress = progress or no_progress
    options = (options or current()).validate()
    if max_items < 1:
        raise EngineError("--max-items must be at least 1.")
    progress(0.0, f"searching {url}")
    found = search(url, collections, parse_bbox(bbox) if not isinstance(bbox, tuple) else bbox, datetime_range,
                   asset, max_items, options)
    check_cancel(cancel)
    if not found.rasters:
        reasons = "; ".join(f"{item}: {why}" for item, why in found.skipped[:3])
        raise EngineError(f"No STAC items matched at {url}" + (f" with a usable asset ({reasons})" if reasons else
                                                                 " (check the collection, bbox and datetime)") + ".")
    with using(options):
        report = jobs.index_rasters(index_dir, [r.path for r in found.rasters], model=model, tiling=tiling,
                                    batch_size=batch_size, runtime=runtime or jobs.Runtime(),
                                    progress=scaled(progress, 0.02, 1.0), cancel=cancel, dask=dask)
    record_dates(index_dir, found.rasters, url)
    return report, found
