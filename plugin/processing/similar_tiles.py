"""Find similar tiles: the tiles most like example tiles (features with tile_id, or the tile under a point)."""
from __future__ import annotations

from qgis.core import (NULL, QgsProcessing, QgsProcessingException, QgsProcessingParameterFeatureSink,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterFile, QgsProcessingParameterNumber,
                       QgsProcessingParameterPoint)

from ...engine import jobs
from ...engine.results import hit_table, similar_query
from ..layers import style_by_score
from .areas import add_area_parameters, area_wgs84_wkt, check_extent_crs, point_wgs84
from .base import RsClipAlgorithm
from .styling import style_on_load

TILE_ID = "tile_id"


class SimilarTiles(RsClipAlgorithm):
    def name(self) -> str:
        return "similar_tiles"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Find similar tiles")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(
            "Finds the tiles of an index that look most like example tiles, without any text.\n\n"
            "Examples: TILES, features with a tile_id field from the same index, e.g. a search result layer "
            "(tick 'Selected features only' to use the tiles you selected), and/or POINT, the tile(s) under a "
            "point. The examples themselves are left out of the results.\n"
            "EXTENT and AREA (advanced) restrict the results to tiles touching them.\n\n"
            "Output fields: rank, score, raster, tile_id, query (the example tiles) and model.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterFile("INDEX", self.tr("Index folder"),
                                                     QgsProcessingParameterFile.Behavior.Folder))
        self.addParameter(QgsProcessingParameterFeatureSource("TILES", self.tr("Example tiles (with a tile_id field)"),
                                                              [QgsProcessing.SourceType.TypeVector], optional=True))
        self.addParameter(QgsProcessingParameterPoint("POINT", self.tr("Example point (on an indexed tile)"),
                                                      optional=True))
        self.addParameter(QgsProcessingParameterNumber("TOP_K", self.tr("Number of results"),
                                                       QgsProcessingParameterNumber.Type.Integer, 20, minValue=1))
        add_area_parameters(self, advanced=True)
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", self.tr("Similar tiles"),
                                                            QgsProcessing.SourceType.TypeVectorPolygon))
        self.add_overwrite_parameter()

    def read_parameters(self, parameters: dict, context) -> dict:
        folder = self.index_folder(parameters, context)
        source = self.parameterAsSource(parameters, "TILES", context) if parameters.get("TILES") else None
        if source is None and not parameters.get("POINT"):
            raise QgsProcessingException("Give example tiles (TILES, features with a tile_id field) "
                                         "or a POINT on an indexed tile.")
        if source is not None and source.fields().indexOf(TILE_ID) < 0:
            raise QgsProcessingException("The example layer has no tile_id field; use a layer made by RS-CLIP "
                                         "Search (search results, labels or indexed tiles).")
        check_extent_crs(self, parameters, context)
        return {"folder": folder, "source": source, "top_k": self.parameterAsInt(parameters, "TOP_K", context)}

    def example_ids(self, parameters: dict, context, folder: str, source) -> list[int]:
        ids: set[int] = set()
        if source is not None:
            field = source.fields().indexOf(TILE_ID)
            values = [f.attribute(field) for f in source.getFeatures()]
            ids.update(int(v) for v in values if v is not None and v != NULL)
            if not ids:
                raise QgsProcessingException("The example layer has no features with a tile_id (or none selected "
                                             "with 'Selected features only').")
        if parameters.get("POINT"):
            lon, lat = point_wgs84(self, parameters, context)
            under = self.engine(jobs.tiles_at, folder, lon, lat)
            if not under:
                raise QgsProcessingException(f"No tile of the index lies under the point ({lon:.6f}, {lat:.6f} "
                                             "in WGS84).")
            ids.update(under)
        return sorted(ids)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        self.require_packages()
        args = self.read_parameters(parameters, context)
        ids = self.example_ids(parameters, context, args["folder"], args["source"])
        feedback.pushInfo(f"Looking for tiles like tile(s) {', '.join(map(str, ids[:10]))}"
                          f"{' …' if len(ids) > 10 else ''}.")
        hits = self.engine(jobs.similar, args["folder"], ids, args["top_k"],
                           within_wgs84_wkt=area_wgs84_wkt(self, parameters, context))
        model = jobs.model_label(jobs.model_of(args["folder"]))
        dest = self.write_tiles(parameters, context, hit_table(hits, similar_query(ids), model, "similar"))
        style_on_load(context, dest, style_by_score)
        return {"OUTPUT": dest}
