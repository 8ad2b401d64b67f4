"""Find change between dates: pair the tiles of two dates by ground overlap and rank what changed."""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum, QgsProcessingParameterFeatureSink, QgsProcessingParameterFile,
                       QgsProcessingParameterMultipleLayers, QgsProcessingParameterNumber,
                       QgsProcessingParameterString)

from ...engine import jobs
from ...engine.change import DIRECTIONS
from ...engine.results import change_table
from ..change import style_change
from .base import RsClipAlgorithm
from .search_text import optional_number
from .styling import style_on_load


class FindChange(RsClipAlgorithm):
    BEFORE, AFTER, QUERY, DIRECTION, SCALE, MIN_IOU = "BEFORE", "AFTER", "QUERY", "DIRECTION", "SCALE", "MIN_IOU"

    def name(self) -> str:
        return "find_change"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Find change between dates")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(
            "Compares two dates of imagery in one index: each tile of the BEFORE rasters is paired with the tile of "
            "the AFTER rasters that covers the same ground (intersection over union at least MIN_IOU, 0.5 by "
            "default; rasters of different grids and CRSs pair too), then the pairs are ranked.\n\n"
            "With QUERY (e.g. 'new buildings'): by score after − score before, the places where it appeared; "
            "DIRECTION 'disappeared' ranks the opposite way, 'either' by the size of the change. Without QUERY: "
            "by the cosine distance between the two tiles' embeddings, the places that changed most.\n\n"
            "SCALE (an index built with several scales): only tiles of that scale.\n\n"
            "Output fields: rank, change, score_before, score_after, difference, distance, iou, before_raster, "
            "after_raster, before_tile, after_tile, scale, query, direction; polygons of the ground both tiles "
            "show, in the CRS of the BEFORE rasters.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterFile("INDEX", self.tr("Index folder"),
                                                     QgsProcessingParameterFile.Behavior.Folder))
        self.addParameter(QgsProcessingParameterMultipleLayers(self.BEFORE, self.tr("Rasters of the first date"),
                                                               QgsProcessing.SourceType.TypeRaster))
        self.addParameter(QgsProcessingParameterMultipleLayers(self.AFTER, self.tr("Rasters of the second date"),
                                                               QgsProcessing.SourceType.TypeRaster))
        self.addParameter(QgsProcessingParameterString(self.QUERY, self.tr("Text (empty: any change)"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.DIRECTION, self.tr("With a text, where it"),
                                                     list(DIRECTIONS), defaultValue=DIRECTIONS[0],
                                                     usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterNumber("TOP_K", self.tr("Number of places"),
                                                       QgsProcessingParameterNumber.Type.Integer, 20, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(self.SCALE, self.tr("Only tiles of scale"),
                                                       QgsProcessingParameterNumber.Type.Integer, optional=True,
                                                       minValue=1))
        iou = QgsProcessingParameterNumber(self.MIN_IOU, self.tr("Overlap needed to pair two tiles (IoU)"),
                                           QgsProcessingParameterNumber.Type.Double, 0.5, minValue=0.01, maxValue=1)
        iou.setFlags(iou.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        self.addParameter(iou)
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", self.tr("Places that changed"),
                                                            QgsProcessing.SourceType.TypeVectorPolygon))

    def read_parameters(self, parameters: dict, context) -> dict:
        folder = self.index_folder(parameters, context)
        before = [layer.source() for layer in self.parameterAsLayerList(parameters, self.BEFORE, context)]
        after = [layer.source() for layer in self.parameterAsLayerList(parameters, self.AFTER, context)]
        if not before or not after:
            raise QgsProcessingException("Choose the rasters of both dates (BEFORE and AFTER).")
        if set(before) & set(after):
            raise QgsProcessingException("A raster cannot be in both BEFORE and AFTER; each belongs to one date.")
        scale = optional_number(self, parameters, self.SCALE, context)
        return {"folder": folder, "before": before, "after": after,
                "query": self.parameterAsString(parameters, self.QUERY, context).strip(),
                "direction": self.enum_choice(parameters, self.DIRECTION, context),
                "top_k": self.parameterAsInt(parameters, "TOP_K", context),
                "scale": None if scale is None else int(scale),
                "min_iou": self.parameterAsDouble(parameters, self.MIN_IOU, context)}

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        self.require_packages()
        args = self.read_parameters(parameters, context)
        result = self.engine(jobs.change, args["folder"], args["before"], args["after"], args["query"] or None,
                             args["direction"], args["top_k"], args["scale"], args["min_iou"],
                             **self.callbacks(feedback))
        feedback.pushInfo(result.summary())
        dest = self.write_tiles(parameters, context, change_table(result))
        style_on_load(context, dest, style_change)
        return {"OUTPUT": dest}
