"""Results as GeoPackages and JSON-ready rows.

A GeoPackage layer has one CRS: tiles are written in their raster's CRS, and where results
span rasters in different CRSs they are reprojected to the CRS most of them share. The fields of
each kind of result are ``engine.results``' (the dock's layers and the toolbox's outputs use them
too). GDAL's process-wide exception mode is never changed here (see ``gdalutil``).
"""
from __future__ import annotations

import os
import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Sequence

from .errors import EngineError
from .gdalutil import GdalErrors, gdal_errors
from .index import Footprinted, checked_footprint
from .labeling import TileLabel
from .results import ResultTable, hit_table, label_table
from .search import Hit


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


def write_hits_gpkg(path: str | Path, hits: Sequence[Hit], layer: str = "search_results", overwrite: bool = False,
                    query: str = "", model: str = "", kind: str = "search") -> Path:
    """Search (or similar-tiles) hits as ``layer``, recording the query and the model on every row."""
    return write_tiles_gpkg(path, hit_table(hits, query, model, kind), layer, overwrite)


def write_labels_gpkg(path: str | Path, labels: Sequence[TileLabel], layer: str = "tile_labels",
                      overwrite: bool = False, classes: Sequence[str] = (), model: str = "",
                      class_set: str = "") -> Path:
    """Zero-shot labels as ``layer``, recording the class set (or the classes) and the model on every row."""
    return write_tiles_gpkg(path, label_table(labels, classes, model, class_set), layer, overwrite)


def common_crs(tiles: Sequence[Footprinted]) -> str:
    """The CRS (WKT) most of these tiles are in."""
    return Counter(t.crs_wkt for t in tiles).most_common(1)[0][0] if tiles else ""


def tile_geometry_wkt(tile: Footprinted, target_crs_wkt: str) -> str:
    """The tile's footprint as WKT in ``target_crs_wkt`` (reprojected when its CRS differs)."""
    footprint = checked_footprint(tile)
    if tile.crs_wkt == target_crs_wkt:
        return footprint
    from osgeo import ogr, osr

    with gdal_errors() as errors:
        try:
            src, dst = osr.SpatialReference(), osr.SpatialReference()
            errors.check(src.ImportFromWkt(tile.crs_wkt))
            errors.check(dst.ImportFromWkt(target_crs_wkt))
            for srs in (src, dst):
                srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
            geom = errors.check(ogr.CreateGeometryFromWkt(footprint))
            errors.check(geom.Transform(errors.check(osr.CoordinateTransformation(src, dst))))
            return geom.ExportToWkt()
        except RuntimeError as exc:
            raise EngineError(f"Tile {getattr(tile, 'id', '?')} cannot be converted to the CRS of the other results "
                              f"({str(exc).strip().rstrip('.') or 'unknown GDAL error'}).") from None


def layer_name_for(text: str, prefix: str = "") -> str:
    """A GeoPackage layer name made from a title (e.g. a query): letters, digits and underscores."""
    words = re.findall(r"\w+", f"{prefix} {text}".lower())
    name = "_".join(words)[:60].strip("_") or "results"
    return f"layer_{name}" if name[0].isdigit() or _RESERVED.match(name) else name


_RESERVED = re.compile(r"(gpkg_|gpkgext_|rtree_|sqlite_)", re.IGNORECASE)
#: SQLite application ids of GeoPackages: "GPKG" (1.2+) and "GP10"/"GP11" (1.0, 1.1).
_GPKG_IDS = (0x47504B47, 0x47503130, 0x47503131)


def is_geopackage(path: Path) -> bool:
    """True when ``path`` is a SQLite file that declares itself a GeoPackage (its application id)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(100)
    except OSError:
        return False
    return len(head) == 100 and head[:16] == b"SQLite format 3\x00" and int.from_bytes(head[68:72], "big") in _GPKG_IDS


def gpkg_tables(path: Path) -> set[str]:
    """Lower-cased names of every table and layer in a GeoPackage, read without changing it."""
    # read-only, unless an interrupted write left a hot journal that SQLite must roll back first
    mode = "rw" if Path(f"{path}-journal").exists() else "ro"
    try:
        conn = sqlite3.connect(path.absolute().as_uri() + f"?mode={mode}", uri=True)
        try:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
            names |= {r[0] for r in conn.execute("SELECT table_name FROM gpkg_contents")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise EngineError(f"{path.name} cannot be read as a GeoPackage ({exc}); it was left as it is.") from None
    return {str(n).lower() for n in names}


def gpkg_has_layer(path: str | Path, layer: str) -> bool:
    """Whether ``path`` is an existing GeoPackage that already has a layer (or table) named ``layer``."""
    path = Path(path).expanduser()
    if not path.is_file() or not is_geopackage(path):
        return False
    try:
        return layer.lower() in gpkg_tables(path)
    except EngineError:
        return False


def gpkg_plan(path: str | Path, layer: str, overwrite: bool = False) -> str:
    """What writing ``layer`` to ``path`` does, or ``EngineError`` saying why it must not.

    "create": a new GeoPackage; "add": a new layer in an existing GeoPackage, whose other layers
    are kept; "replace": ``overwrite`` was asked and only the layer of that name is replaced. An
    existing layer without ``overwrite`` is refused, and a file that is not a GeoPackage is never
    touched. The command line, the dock and the Processing toolbox all follow this rule.
    """
    path = Path(path).expanduser().resolve()
    if path.suffix.lower() != ".gpkg":
        raise EngineError(f"The output {path.name} must be a .gpkg file.")
    if not layer or not layer.strip() or _RESERVED.match(layer) or any(c in layer for c in "\"\x00"):
        raise EngineError(f"{layer!r} cannot be a GeoPackage layer name; use letters, digits and underscores.")
    if not path.parent.is_dir():
        raise EngineError(f"The folder {path.parent} for the output does not exist.")
    if not path.exists():
        return "create"
    if not path.is_file() or not is_geopackage(path):
        raise EngineError(f"{path.name} exists and is not a GeoPackage; it was left as it is. Choose another file "
                          "name.")
    if layer.lower() in gpkg_tables(path):
        if not overwrite:
            raise EngineError(f"{path.name} already has a layer named '{layer}'; give another layer name, or choose "
                              "to replace that layer (--overwrite).")
        return "replace"
    return "add"


def write_tiles_gpkg(path: str | Path, table: ResultTable, layer: str, overwrite: bool = False) -> Path:
    """Write a result table's tile polygons as ``layer`` of a GeoPackage (see ``gpkg_plan`` for the rule).

    A new file is written beside its place and renamed into it; a layer added to an existing
    GeoPackage (or replacing one) is written in one SQLite transaction of that file. Either way a
    failure (a full disk, a kill) leaves the file as it was.
    """
    from .storage import check_writable_folder

    path = Path(path).expanduser().resolve()
    plan = gpkg_plan(path, layer, overwrite)
    check_writable_folder(path.parent, "the output")
    if plan == "create":
        _write_new_gpkg(path, table, layer)
    else:
        _write_layer_in_place(path, table, layer, replace=plan == "replace")
    return path


def _fill_layer(ds, table: ResultTable, layer: str, errors: GdalErrors) -> None:
    from osgeo import ogr, osr

    srs = None
    if table.crs_wkt:
        srs = osr.SpatialReference()
        errors.check(srs.ImportFromWkt(table.crs_wkt))
    lyr = errors.check(ds.CreateLayer(layer, srs, ogr.wkbPolygon))
    ogr_types = {"int": ogr.OFTInteger, "real": ogr.OFTReal, "str": ogr.OFTString}
    for name, kind in table.fields:
        errors.check(lyr.CreateField(ogr.FieldDefn(name, ogr_types[kind])))
    defn = lyr.GetLayerDefn()
    for values, wkt in table.rows:
        feat = ogr.Feature(defn)
        for i, value in enumerate(values):
            if value is not None:
                feat.SetField(i, value)
        feat.SetGeometry(errors.check(ogr.CreateGeometryFromWkt(wkt)))
        errors.check(lyr.CreateFeature(feat))


def _write_new_gpkg(path: Path, table: ResultTable, layer: str) -> None:
    from osgeo import ogr

    from .storage import os_storage_error

    tmp = path.with_name(f".{path.stem}.tmp.gpkg")
    driver = ogr.GetDriverByName("GPKG")
    with gdal_errors() as errors:
        try:
            if tmp.exists():
                errors.check(driver.DeleteDataSource(str(tmp)))
            ds = errors.check(driver.CreateDataSource(str(tmp)))
            errors.check(ds.StartTransaction(True))
            _fill_layer(ds, table, layer, errors)
            errors.check(ds.CommitTransaction())
            ds = None
            errors.check()  # what closing the file reported (a full disk)
            os.replace(tmp, path)
        except (RuntimeError, OSError) as exc:
            ds = None
            for leftover in tmp.parent.glob(f"{tmp.name}*"):
                leftover.unlink()
            if isinstance(exc, OSError):
                raise os_storage_error(exc, path.parent, what="the output") from None
            raise _write_error(path, exc) from None


def _write_layer_in_place(path: Path, table: ResultTable, layer: str, replace: bool) -> None:
    from osgeo import gdal

    with gdal_errors() as errors:
        try:
            ds = errors.check(gdal.OpenEx(str(path), gdal.OF_VECTOR | gdal.OF_UPDATE, allowed_drivers=["GPKG"]))
        except RuntimeError as exc:
            raise _write_error(path, exc) from None
        try:
            errors.check(ds.StartTransaction(True))
            if replace:
                names = [ds.GetLayer(i).GetName().lower() for i in range(ds.GetLayerCount())]
                if layer.lower() in names:
                    errors.check(ds.DeleteLayer(names.index(layer.lower())))
            _fill_layer(ds, table, layer, errors)
            errors.check(ds.CommitTransaction())
        except RuntimeError as exc:
            try:
                ds.RollbackTransaction()
            except RuntimeError:
                pass
            ds = None
            raise _write_error(path, exc) from None
        ds = None
        try:
            errors.check()  # what closing the file reported (a full disk)
        except RuntimeError as exc:
            raise _write_error(path, exc) from None


def _write_error(path: Path, exc: Exception) -> EngineError:
    from .storage import disk_full_error

    text = str(exc).strip().rstrip(".")
    if "disk is full" in text.lower() or "no space left" in text.lower():
        return disk_full_error(path.parent)
    return EngineError(f"Cannot write {path}: {text}; the file was left as it was.")
