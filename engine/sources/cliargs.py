"""The ``index`` command's options for remote imagery: web maps, STAC, and how politely to fetch."""
from __future__ import annotations

import argparse
import re
import sys
from typing import Any, Sequence

from ..errors import EngineError
from .options import DEFAULT_USER_AGENT, RemoteOptions


def add_remote_arguments(parser: argparse.ArgumentParser) -> None:
    web = parser.add_argument_group(
        "web maps (XYZ tiles or WMS; respect each provider's terms of use)",
        "Index a web map layer over --bbox at --zoom (XYZ) or --resolution metres per pixel. The number of "
        "requests is estimated first and refused above --max-requests.")
    kind = web.add_mutually_exclusive_group()
    kind.add_argument("--xyz", metavar="URL", help="XYZ tile URL template with {z}, {x}, {y} (or {-y}, {q})")
    kind.add_argument("--wms", metavar="URL", help="WMS service URL (GetMap is requested in 512 px images)")
    web.add_argument("--layers", metavar="NAMES", help="WMS layer name(s), comma-separated")
    web.add_argument("--styles", default="", metavar="NAMES", help="WMS style name(s)")
    web.add_argument("--wms-crs", default="EPSG:3857", metavar="CRS", help="CRS to request from the WMS")
    web.add_argument("--wms-format", default="image/png", metavar="MIME", help="image format to request")
    web.add_argument("--wms-version", default="1.3.0", choices=("1.1.1", "1.3.0"))
    web.add_argument("--zoom", type=int, metavar="Z", help="XYZ zoom level")
    web.add_argument("--resolution", type=float, metavar="M", help="ground metres per pixel (XYZ: nearest zoom)")
    web.add_argument("--xyz-tile", type=int, default=256, choices=(256, 512), help="XYZ tile size in pixels")
    web.add_argument("--referer", default="", metavar="URL", help="Referer header some tile servers require")
    web.add_argument("--estimate", action="store_true", help="print what indexing would cost, request nothing")
    stac = parser.add_argument_group("STAC", "Index the COGs of a STAC API or static catalogue.")
    stac.add_argument("--stac", metavar="URL", help="STAC API landing page or static catalogue/collection/item")
    stac.add_argument("--collection", action="append", default=[], metavar="ID", help="collection id (repeatable)")
    stac.add_argument("--datetime", metavar="RANGE", help="e.g. 2016-01-01/2017-12-31, 2016, ../2020-06")
    stac.add_argument("--asset", metavar="KEY", help="asset to index (default: visual, else an RGB asset)")
    stac.add_argument("--max-items", type=int, default=50, metavar="N", help="index at most N items (oldest first)")
    both = parser.add_argument_group("remote imagery")
    both.add_argument("--bbox", metavar="W,S,E,N", help="extent, in degrees unless --bbox-crs says otherwise")
    both.add_argument("--bbox-crs", default="EPSG:4326", metavar="CRS", help="CRS of --bbox (web maps)")
    both.add_argument("--max-requests", type=int, default=RemoteOptions.max_requests, metavar="N",
                      help=f"most web map requests one source may need (default {RemoteOptions.max_requests})")
    both.add_argument("--max-connections", type=int, default=RemoteOptions.max_connections, metavar="N",
                      help=f"requests at once (default {RemoteOptions.max_connections})")
    both.add_argument("--retries", type=int, default=RemoteOptions.retries, metavar="N",
                      help="retries of a failed request, with growing delays")
    both.add_argument("--user-agent", default=DEFAULT_USER_AGENT, metavar="TEXT", help="User-Agent to send")
    both.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                      help="extra HTTP header for every request (e.g. an API key); never stored in the index")


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """``--bbox -99.2,47,…`` → ``--bbox=-99.2,47,…``: argparse would read a western longitude as an option."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        if args[i] in ("--bbox",) and i + 1 < len(args) and re.match(r"^-\d", args[i + 1]):
            out.append(f"{args[i]}={args[i + 1]}")
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out


def remote_options(args: Any) -> RemoteOptions:
    headers = []
    for line in args.header:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise EngineError(f"--header {line!r} must look like 'Name: value'.")
        headers.append((name.strip(), value.strip()))
    return RemoteOptions(user_agent=args.user_agent, max_connections=args.max_connections,
                         max_requests=args.max_requests, retries=args.retries, headers=tuple(headers)).validate()


def web_source(args: Any) -> str | None:
    """The canonical path of the web map the arguments describe, or None."""
    from .stac import parse_bbox
    from .webmap import wms_source, xyz_source

    if not (args.xyz or args.wms):
        return None
    bbox = parse_bbox(args.bbox) if args.bbox else None
    if bbox is None:
        raise EngineError("A web map needs the extent to index: --bbox west,south,east,north.")
    if args.xyz:
        if args.zoom is None and args.resolution is None:
            raise EngineError("An XYZ layer needs --zoom or --resolution (ground metres per pixel).")
        source = xyz_source(args.xyz, bbox, args.bbox_crs, zoom=args.zoom, resolution_m=args.resolution,
                            tile=args.xyz_tile, referer=args.referer)
    else:
        if not args.layers:
            raise EngineError("A WMS needs --layers (the layer name(s) to request).")
        if args.resolution is None:
            raise EngineError("A WMS needs --resolution (ground metres per pixel).")
        source = wms_source(args.wms, args.layers, bbox, args.bbox_crs, crs=args.wms_crs,
                            resolution_m=args.resolution, styles=args.styles, fmt=args.wms_format,
                            version=args.wms_version, referer=args.referer)
    return source.to_path()


def print_estimates(paths: list[str], tiling: Any, options: RemoteOptions) -> None:
    """One line per web map source: tiles, requests and megabytes, before anything is fetched."""
    from . import display_name
    from .webmap import estimate

    for path in paths:
        if path.startswith("webmap:"):
            print(f"rsclip: {display_name(path)}: {estimate(path, tiling, options).text()} "
                  f"(cap {options.max_requests} requests)", file=sys.stderr)
