"""What every RS-CLIP algorithm shares: group, translation, engine callbacks, error wording, output."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from qgis.core import (QgsCoordinateReferenceSystem, QgsFeature, QgsFeatureSink, QgsField, QgsFields, QgsGeometry,
                       QgsProcessingAlgorithm, QgsProcessingException, QgsWkbTypes)
from qgis.PyQt.QtCore import QCoreApplication, QVariant
from qgis.PyQt.QtGui import QIcon

from ...engine.errors import EngineError
from ...engine.export import common_crs, tile_geometry_wkt

ICON = Path(__file__).resolve().parents[2] / "resources" / "icons" / "rsclip.svg"
_VARIANTS = {"int": QVariant.Int, "real": QVariant.Double, "str": QVariant.String}


class RsClipAlgorithm(QgsProcessingAlgorithm):
    """Base of the provider's algorithms; subclasses only declare parameters and call the engine."""

    def group(self) -> str:
        return self.tr("Semantic search")

    def groupId(self) -> str:  # noqa: N802
        return "semantic_search"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def tr(self, text: str) -> str:
        return QCoreApplication.translate("RsClipSearch", text)

    def createInstance(self):  # noqa: N802
        return type(self)()

    @staticmethod
    def callbacks(feedback) -> dict:
        """The engine's progress and cancel callbacks, fed from QgsProcessingFeedback."""

        def progress(fraction: float, message: str) -> None:
            feedback.setProgress(100.0 * fraction)
            feedback.setProgressText(message)

        return {"progress": progress, "cancel": feedback.isCanceled}

    @staticmethod
    def engine(call: Callable, *args, **kwargs):
        """Run an engine call; a user-fixable problem becomes a readable QgsProcessingException."""
        try:
            return call(*args, **kwargs)
        except EngineError as exc:
            raise QgsProcessingException(str(exc)) from None

    def write_tiles(self, parameters, context, tiles: Sequence, fields: Sequence[tuple[str, str]],
                    rows: Sequence[dict], name: str = "OUTPUT") -> str:
        """A polygon sink of tiles in the CRS most of them share, with ``fields`` taken from ``rows``."""
        qfields = QgsFields()
        for field, kind in fields:
            qfields.append(QgsField(field, _VARIANTS[kind]))
        crs_wkt = common_crs(tiles)
        crs = QgsCoordinateReferenceSystem.fromWkt(crs_wkt) if crs_wkt else QgsCoordinateReferenceSystem("EPSG:4326")
        sink, dest = self.parameterAsSink(parameters, name, context, qfields, QgsWkbTypes.Polygon, crs)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, name))
        for tile, row in zip(tiles, rows):
            feat = QgsFeature(qfields)
            feat.setAttributes([row[f] for f, _ in fields])
            feat.setGeometry(QgsGeometry.fromWkt(tile_geometry_wkt(tile, crs_wkt)))
            sink.addFeature(feat, QgsFeatureSink.FastInsert)
        return dest
