"""Results as GeoPackages and JSON-ready rows.

A GeoPackage layer has one CRS: tiles are written in their raster's CRS, and where results
span rasters in different CRSs they are reprojected to the CRS most of them share.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Protocol, Sequence

from .errors import EngineError
from .gdalutil import gdal_exceptions
from .labeling import TileLabel
from .search import Hit

HIT_FIELDS = (("rank", "int"), ("score", "real"), ("raster", "str"), ("tile_id", "int"))
LABEL_FIELDS = (("label", "str"), ("probability", "real"), ("margin", "real"), ("raster", "str"), ("tile_id", "int"))


#: Hits of an index with several scales (engine/scales.py) also say their scale.
SCALED_HIT_FIELDS = (*HIT_FIELDS, ("scale", "int"))


def hit_fields(hits: Sequence[Hit]) -> tuple:
    """The fields of a result: with ``scale`` when the hits come from an index with several scales."""
    return SCALED_HIT_FIELDS if any(h.scale is not None for h in hits) else HIT_FIELDS


def hit_row(hit: Hit) -> dict:
    row = {"rank": hit.rank, "score": round(hit.score, 6), "raster": hit.tile.raster, "tile_id": hit.tile.id,
           "window": list(hit.tile.window), "bounds": list(hit.tile.bounds),
           "footprint_wgs84": hit.tile.footprint_wgs84_wkt}
    if hit.scale is not None:
        row["scale"] = hit.scale
    return row


def label_row(lab: TileLabel) -> dict:
    return {"label": lab.label, "probability": round(lab.probability, 6), "margin": round(lab.margin, 6),
            "raster": lab.tile.raster, "tile_id": lab.tile.id, "window": list(lab.tile.window),
            "bounds": list(lab.tile.bounds), "footprint_wgs84": lab.tile.footprint_wgs84_wkt}


def write_hits_gpkg(path: str | Path, hits: Sequence[Hit], layer: str = "search_results") -> Path:
    rows = [(h.tile, {"rank": h.rank, "score": h.score, "raster": h.tile.raster, "tile_id": h.tile.id,
                      "scale": h.scale}) for h in hits]
    return write_tiles_gpkg(path, rows, hit_fields(hits), layer)


def write_labels_gpkg(path: str | Path, labels: Sequence[TileLabel], layer: str = "tile_labels") -> Path:
    rows = [(lab.tile, {"label": lab.label, "probability": lab.probability, "margin": lab.margin,
                        "raster": lab.tile.raster, "tile_id": lab.tile.id}) for lab in labels]
    return write_tiles_gpkg(path, rows, LABEL_FIELDS, layer)


class Footprinted(Protocol):
    """Anything with a footprint in a CRS: an indexed tile, a concept's mark."""

    @property
    def crs_wkt(self) -> str: ...

    @property
    def footprint_wkt(self) -> str: ...


def common_crs(tiles: Sequence[Footprinted]) -> str:
    """The CRS (WKT) most of these tiles are in."""
    return Counter(t.crs_wkt for t in tiles).most_common(1)[0][0] if tiles else ""


def tile_geometry_wkt(tile: Footprinted, target_crs_wkt: str) -> str:
    """The tile's footprint as WKT in ``target_crs_wkt`` (reprojected when its CRS differs)."""
    if tile.crs_wkt == target_crs_wkt:
        return tile.footprint_wkt
    from osgeo import ogr, osr

    src, dst = osr.SpatialReference(), osr.SpatialReference()
    src.ImportFromWkt(tile.crs_wkt)
    dst.ImportFromWkt(target_crs_wkt)
    for srs in (src, dst):
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    geom = ogr.CreateGeometryFromWkt(tile.footprint_wkt)
    geom.Transform(osr.CoordinateTransformation(src, dst))
    return geom.ExportToWkt()


def write_tiles_gpkg(path: str | Path, rows: Sequence[tuple[Footprinted, dict]], fields, layer: str) -> Path:
    """Write tile polygons with attributes to a new GeoPackage, atomically."""
    from osgeo import ogr, osr

    path = Path(path).expanduser().resolve()
    if path.suffix.lower() != ".gpkg":
        raise EngineError(f"The output {path.name} must be a .gpkg file.")
    if not path.parent.is_dir():
        raise EngineError(f"The folder {path.parent} for the output does not exist.")
    crs_wkt = common_crs([t for t, _ in rows])
    tmp = path.with_name(f".{path.stem}.tmp.gpkg")
    ogr_types = {"int": ogr.OFTInteger, "real": ogr.OFTReal, "str": ogr.OFTString}
    driver = ogr.GetDriverByName("GPKG")
    if tmp.exists():
        driver.DeleteDataSource(str(tmp))
    with gdal_exceptions():
        try:
            ds = driver.CreateDataSource(str(tmp))
            srs = None
            if crs_wkt:
                srs = osr.SpatialReference()
                srs.ImportFromWkt(crs_wkt)
            lyr = ds.CreateLayer(layer, srs, ogr.wkbPolygon)
            for name, kind in fields:
                lyr.CreateField(ogr.FieldDefn(name, ogr_types[kind]))
            defn = lyr.GetLayerDefn()
            lyr.StartTransaction()
            feat = None
            for tile, values in rows:
                feat = ogr.Feature(defn)
                for name, _ in fields:
                    if values[name] is None:
                        feat.SetFieldNull(name)
                    else:
                        feat.SetField(name, values[name])
                feat.SetGeometry(ogr.CreateGeometryFromWkt(tile_geometry_wkt(tile, crs_wkt)))
                lyr.CreateFeature(feat)
            lyr.CommitTransaction()
            del feat, lyr, defn
            ds = None
        except RuntimeError as exc:
            if tmp.exists():
                tmp.unlink()
            raise EngineError(f"Cannot write {path}: {exc}.") from None
    os.replace(tmp, path)
    return path
