"""Search imagery by text: the tiles of an index that best match a phrase."""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingParameterFeatureSink, QgsProcessingParameterFile,
                       QgsProcessingParameterNumber, QgsProcessingParameterString)

from ...engine import jobs
from ...engine.results import hit_table
from ...engine.search import clean_query
from ..layers import style_by_score
from .areas import add_area_parameters, area_wgs84_wkt, check_extent_crs
from .base import RsClipAlgorithm
from .styling import style_on_load


def optional_number(alg, parameters: dict, name: str, context) -> float | None:
    """An optional numeric parameter: None when left empty (0 is a real value)."""
    value = parameters.get(name)
    return None if value is None or value == "" else alg.parameterAsDouble(parameters, name, context)


class SearchText(RsClipAlgorithm):
    def name(self) -> str:
        return "search_text"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Search imagery by text")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(
            "Finds the tiles of an index that best match a text, e.g. 'airport runway' or 'flooded fields'.\n\n"
            "TOP_K: how many tiles to return; MIN_SCORE: drop tiles scoring below it (cosine similarity, -1 to 1). "
            "EXTENT and AREA (polygons; 'Selected features only' works) restrict the search to tiles touching "
            "them; with both, to where they overlap.\n\n"
            "In an index with several scales, hits rank across tile sizes and a hit that a better one covers by half "
            "or more is left out; SCALE keeps only the tiles of one scale.\n\n"
            "Output fields: rank (1 = best), score, raster, tile_id, query and model (and scale, in an index with "
            "several); in the CRS most result tiles share.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterFile("INDEX", self.tr("Index folder"),
                                                     QgsProcessingParameterFile.Behavior.Folder))
        self.addParameter(QgsProcessingParameterString("QUERY", self.tr("Search text")))
        self.addParameter(QgsProcessingParameterNumber("TOP_K", self.tr("Number of results"),
                                                       QgsProcessingParameterNumber.Type.Integer, 20, minValue=1))
        self.addParameter(QgsProcessingParameterNumber("MIN_SCORE", self.tr("Minimum score"),
                                                       QgsProcessingParameterNumber.Type.Double, optional=True,
                                                       minValue=-1, maxValue=1))
        self.addParameter(QgsProcessingParameterNumber("SCALE", self.tr("Only tiles of scale (index with several)"),
                                                       QgsProcessingParameterNumber.Type.Integer, optional=True,
                                                       minValue=1))
        add_area_parameters(self)
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", self.tr("Matching tiles"),
                                                            QgsProcessing.SourceType.TypeVectorPolygon))
        self.add_overwrite_parameter()

    def read_parameters(self, parameters: dict, context) -> dict:
        folder = self.index_folder(parameters, context)
        query = self.engine(clean_query, self.parameterAsString(parameters, "QUERY", context))
        check_extent_crs(self, parameters, context)
        scale = optional_number(self, parameters, "SCALE", context)
        return {"folder": folder, "query": query, "top_k": self.parameterAsInt(parameters, "TOP_K", context),
                "min_score": optional_number(self, parameters, "MIN_SCORE", context),
                "scale": None if scale is None else int(scale)}

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        self.require_packages()
        args = self.read_parameters(parameters, context)
        hits = self.engine(jobs.search, args["folder"], args["query"], args["top_k"], args["min_score"],
                           within_wgs84_wkt=area_wgs84_wkt(self, parameters, context), scale=args["scale"],
                           **self.callbacks(feedback))
        feedback.pushInfo(f"{len(hits)} tile(s) match '{args['query']}'.")
        model = jobs.model_label(jobs.model_of(args["folder"]))
        dest = self.write_tiles(parameters, context, hit_table(hits, args["query"], model))
        style_on_load(context, dest, style_by_score)
        return {"OUTPUT": dest}
