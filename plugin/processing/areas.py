"""Restriction areas (an extent and/or polygons, in any CRS) as the WGS84 WKT the engine filters by."""
from __future__ import annotations

from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsCsException, QgsGeometry,
                       QgsProcessingException, QgsProcessingParameterDefinition, QgsProcessingParameterExtent,
                       QgsProcessingParameterFeatureSource, QgsProcessing)

WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")


def add_area_parameters(alg, advanced: bool = False) -> None:
    """The optional EXTENT and AREA parameters shared by the query algorithms."""
    extent = QgsProcessingParameterExtent("EXTENT", alg.tr("Only tiles within this extent"), optional=True)
    area = QgsProcessingParameterFeatureSource("AREA", alg.tr("Only tiles within these polygons"),
                                               [QgsProcessing.SourceType.TypeVectorPolygon], optional=True)
    for param in (extent, area):
        if advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        alg.addParameter(param)


def check_extent_crs(alg, parameters: dict, context) -> None:
    """An extent without a CRS (e.g. from qgis_process with no project) would be taken as degrees."""
    if parameters.get("EXTENT") and not alg.parameterAsExtentCrs(parameters, "EXTENT", context).isValid():
        raise QgsProcessingException("Give the CRS of EXTENT, e.g. 'xmin,xmax,ymin,ymax [EPSG:32614]'.")


def point_wgs84(alg, parameters: dict, context, name: str = "POINT") -> tuple[float, float]:
    """The point parameter as (lon, lat); a point without a CRS is refused like an extent."""
    if not alg.parameterAsPointCrs(parameters, name, context).isValid():
        raise QgsProcessingException(f"Give the CRS of {name}, e.g. 'x,y [EPSG:32614]'.")
    point = alg.parameterAsPoint(parameters, name, context, WGS84)
    return point.x(), point.y()


def union_wgs84(source, transform_context) -> QgsGeometry:
    """The union of a feature source's geometries in WGS84 (null geometry when it has none)."""
    xform = QgsCoordinateTransform(source.sourceCrs(), WGS84, transform_context)
    parts = []
    for feature in source.getFeatures():
        geom = QgsGeometry(feature.geometry())
        if geom.isNull() or geom.isEmpty():
            continue
        try:
            geom.transform(xform)
        except QgsCsException as exc:
            raise QgsProcessingException(f"A polygon of the area layer cannot be converted to WGS84 ({exc}).") from None
        parts.append(geom.makeValid())
    return QgsGeometry.unaryUnion(parts) if parts else QgsGeometry()


def area_wgs84_wkt(alg, parameters: dict, context) -> str | None:
    """EXTENT and AREA as one WGS84 WKT (their intersection when both are given), or None for 'anywhere'."""
    check_extent_crs(alg, parameters, context)
    parts = []
    if parameters.get("EXTENT"):
        parts.append(alg.parameterAsExtentGeometry(parameters, "EXTENT", context, WGS84))
    if parameters.get("AREA"):
        source = alg.parameterAsSource(parameters, "AREA", context)
        if source is None:
            raise QgsProcessingException(alg.invalidSourceError(parameters, "AREA"))
        geom = union_wgs84(source, context.transformContext())
        if geom.isNull() or geom.isEmpty():
            raise QgsProcessingException("The area layer has no polygons (or none selected) to restrict to.")
        parts.append(geom)
    if not parts:
        return None
    area = parts[0]
    for part in parts[1:]:
        area = area.intersection(part)
    if area.isNull() or area.isEmpty():
        raise QgsProcessingException("The extent and the area layer do not overlap; nothing is left to search in.")
    return area.asWkt()
