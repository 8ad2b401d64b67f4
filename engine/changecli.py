"""``python -m engine change``: the places that changed most between two dates of an index's rasters."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def add_change_parser(sub) -> None:
    p = sub.add_parser("change", help="the places that changed between two dates (with a text: where it appeared)")
    p.add_argument("--index", required=True, metavar="DIR")
    p.add_argument("--before", nargs="+", required=True, metavar="RASTER", help="indexed raster(s) of the first date")
    p.add_argument("--after", nargs="+", required=True, metavar="RASTER", help="indexed raster(s) of the second date")
    p.add_argument("--query", metavar="TEXT", help="what to look for, e.g. 'new buildings'; without it, the "
                   "places whose tiles changed most (cosine distance between the dates)")
    direction = p.add_mutually_exclusive_group()
    direction.add_argument("--disappeared", action="store_const", const="disappeared", dest="direction",
                           help="where the text matched before and no longer does (default: where it appeared)")
    direction.add_argument("--either", action="store_const", const="either", dest="direction",
                           help="where the text's score changed most, up or down")
    p.add_argument("--top-k", type=int, default=20, metavar="K")
    p.add_argument("--scale", type=int, metavar="S", help="only tiles of this scale (an index with --scales)")
    p.add_argument("--keep-overlaps", action="store_true", help="keep places that a better place covers (left out "
                   "by default when several scales are compared)")
    p.add_argument("--min-iou", type=float, default=0.5, metavar="F",
                   help="how much two tiles must overlap to be paired (intersection over union, default 0.5)")
    p.add_argument("--out", metavar="FILE.gpkg", help="write the places to a GeoPackage (both scores, difference)")
    p.add_argument("--json", action="store_true", help="print the places as JSON")


def run_change(args, progress) -> int:
    from . import jobs
    from .change import change_values

    result = jobs.change(args.index, args.before, args.after, args.query, args.direction or "appeared", args.top_k,
                         args.scale, args.min_iou, args.out, progress=progress,
                         suppress=False if args.keep_overlaps else None)
    if args.json:
        rows = [{**change_values(r, result), "footprint_wkt": r.footprint_wkt} for r in result.rows]
        print(json.dumps({"query": result.query, "direction": result.direction, "pairs": result.pairs,
                          "before": result.before, "after": result.after, "results": rows}, indent=2))
        return 0
    print(result.summary())
    for r in result.rows:
        scores = (f"  before {r.score_before:.4f}  after {r.score_after:.4f}"
                  if r.score_before is not None and r.score_after is not None else "")
        scale = f"  ×{r.scale}" if r.scale is not None else ""
        print(f"{r.rank:4d}  change {r.change:+.4f}{scores}  tiles {r.before.id} → {r.after.id}  "
              f"{Path(r.after.raster).name} window {r.after.window}{scale}")
    if args.out:
        print(f"Wrote {len(result.rows)} places to {args.out}", file=sys.stderr)
    return 0
