"""Find all areas of a concept: the tiles scoring above a threshold, dissolved into places."""
from __future__ import annotations

from qgis.core import (QgsCoordinateReferenceSystem, QgsFeature, QgsFeatureSink, QgsField, QgsFields, QgsGeometry,
                       QgsProcessing, QgsProcessingException, QgsProcessingParameterDefinition,
                       QgsProcessingParameterFeatureSink, QgsProcessingParameterFile, QgsProcessingParameterNumber,
                       QgsProcessingParameterString, QgsWkbTypes)

from ...engine import jobs
from ...engine.areas import AREA_FIELDS, AREA_TILE_FIELDS
from ...engine.search import clean_query
from ..concepts import AREA_TILES_STYLE, AREAS_STYLE, apply_style
from .base import RsClipAlgorithm
from .search_text import optional_number
from ..qgis_compat import FIELD_TYPES
from .styling import style_on_load



class ConceptAreas(RsClipAlgorithm):
    def name(self) -> str:
        return "concept_areas"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Find all areas of a concept")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(
            "Maps every place of a concept: scores every tile of the index, keeps those scoring at least THRESHOLD "
            "and dissolves tiles that touch (edge or corner) or overlap into areas.\n\n"
            "CONCEPT: a concept stored in the index (made in the dock's Concepts tab or with 'python -m engine "
            "concept create'); its accepted and rejected tiles are used: Rocchio with a few marks, a logistic "
            "regression from 5 accepted and 5 rejected. Or QUERY (and NEGATIVE, what it is not) for a text-only "
            "search that is not stored.\n"
            "THRESHOLD: cosine similarity for text and Rocchio, probability (0–1) for the classifier; empty = the "
            "method's starting threshold (0.5 for the classifier, else the top 1 % of tiles).\n\n"
            "Areas: area_id, tiles, best_score, mean_score, area_m2 and area_ha (overlapping tiles counted once; "
            "ground area), rasters, and the concept, query, negative text, method, marks and threshold used. "
            "TILES (optional): the tiles of the areas with tile_id, score, area_id and verdict.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterFile("INDEX", self.tr("Index folder"),
                                                     QgsProcessingParameterFile.Behavior.Folder))
        self.addParameter(QgsProcessingParameterString("CONCEPT", self.tr("Concept stored in the index"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterString("QUERY", self.tr("…or a search text (not stored)"),
                                                       optional=True))
        negative = QgsProcessingParameterString("NEGATIVE", self.tr("What it is not (with QUERY)"), optional=True)
        negative.setFlags(negative.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        self.addParameter(negative)
        self.addParameter(QgsProcessingParameterNumber("THRESHOLD", self.tr("Score threshold (empty: automatic)"),
                                                       QgsProcessingParameterNumber.Type.Double, optional=True))
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", self.tr("Areas"),
                                                            QgsProcessing.SourceType.TypeVectorPolygon))
        self.addParameter(QgsProcessingParameterFeatureSink("TILES", self.tr("Tiles of the areas"),
                                                            QgsProcessing.SourceType.TypeVectorPolygon, optional=True,
                                                            createByDefault=False))

    def read_parameters(self, parameters: dict, context) -> dict:
        folder = self.index_folder(parameters, context)
        concept = " ".join(self.parameterAsString(parameters, "CONCEPT", context).split())
        query = self.parameterAsString(parameters, "QUERY", context)
        negative = self.parameterAsString(parameters, "NEGATIVE", context).strip()
        if concept and query.strip():
            raise QgsProcessingException("Give either CONCEPT (a concept stored in the index) or QUERY (a text), "
                                         "not both.")
        if not concept and not query.strip():
            raise QgsProcessingException("Give CONCEPT (a concept stored in the index) or QUERY (what to find, "
                                         "e.g. 'solar farms').")
        if negative and not query.strip():
            raise QgsProcessingException("NEGATIVE goes with QUERY; a stored concept keeps its own negative text.")
        return {"folder": folder, "concept": concept or None,
                "query": self.engine(clean_query, query) if query.strip() else None, "negative": negative or None,
                "threshold": optional_number(self, parameters, "THRESHOLD", context)}

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        self.require_packages()
        args = self.read_parameters(parameters, context)
        out = self.engine(jobs.concept_areas, args["folder"], args["concept"], args["threshold"],
                          query=args["query"], negative=args["negative"], **self.callbacks(feedback))
        feedback.pushInfo(out.round.summary())
        feedback.pushInfo(out.summary())
        crs = QgsCoordinateReferenceSystem.fromWkt(out.result.crs_wkt) if out.result.crs_wkt else \
            QgsCoordinateReferenceSystem("EPSG:4326")
        result = {"OUTPUT": self.write_rows(parameters, context, "OUTPUT", AREA_FIELDS, out.area_rows(), crs,
                                            QgsWkbTypes.Type.MultiPolygon)}
        style_on_load(context, result["OUTPUT"], lambda layer: apply_style(layer, AREAS_STYLE))
        if parameters.get("TILES"):
            result["TILES"] = self.write_rows(parameters, context, "TILES", AREA_TILE_FIELDS, out.tile_rows(), crs,
                                              QgsWkbTypes.Type.Polygon)
            style_on_load(context, result["TILES"], lambda layer: apply_style(layer, AREA_TILES_STYLE))
        return result

    def write_rows(self, parameters: dict, context, name: str, fields, rows, crs, wkb_type) -> str:
        """A sink of (attributes, WKT) rows with ``fields``."""
        qfields = QgsFields()
        for field, kind in fields:
            qfields.append(QgsField(field, FIELD_TYPES["int64" if kind == "int" else kind]))
        sink, dest = self.parameterAsSink(parameters, name, context, qfields, wkb_type, crs)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, name))
        for values, wkt in rows:
            feat = QgsFeature(qfields)
            feat.setAttributes([values[f] for f, _ in fields])
            geom = QgsGeometry.fromWkt(wkt)
            if wkb_type == QgsWkbTypes.Type.MultiPolygon:
                geom.convertToMultiType()
            feat.setGeometry(geom)
            sink.addFeature(feat, QgsFeatureSink.Flag.FastInsert)
        return dest
