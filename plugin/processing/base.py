"""What every RS-CLIP algorithm shares: group, help, engine callbacks, parameter checks, tile output.

Algorithms stay thin: ``read_parameters`` turns parameters into engine arguments (cheap checks only, so
the dialog can refuse bad input before running), ``processAlgorithm`` calls ``engine.jobs``.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Callable

from qgis.core import (QgsCoordinateReferenceSystem, QgsFeature, QgsFeatureSink, QgsField, QgsFields, QgsGeometry,
                       QgsProcessing, QgsProcessingAlgorithm, QgsProcessingException,
                       QgsProcessingOutputLayerDefinition, QgsProcessingParameterBoolean,
                       QgsProcessingParameterDefinition, QgsProcessingParameterEnum, QgsProperty, QgsWkbTypes)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ...engine.errors import EngineError
from ...engine.export import gpkg_plan
from ...engine.index import is_index
from ...engine.results import ResultTable
from ..deps import install_hint, missing_packages
from ..qgis_compat import FIELD_TYPES

ICON = Path(__file__).resolve().parents[2] / "resources" / "icons" / "rsclip.svg"
HELP_URL = "https://github.com/rsclip-search/rsclip-search#processing-toolbox"
#: Shortest pause between two progress texts, so per-tile messages do not flood the log.
TEXT_INTERVAL_S = 1.0
OVERWRITE = "OVERWRITE"
#: Layer name each algorithm's output gets in a GeoPackage (as ``python -m engine ... --out`` names it).
OUTPUT_LAYERS = {"search_text": "search_results", "label_tiles": "tile_labels", "similar_tiles": "similar_tiles",
                 "build_index": "indexed_tiles"}
_OGR_GPKG = re.compile(r"^ogr:dbname='(?P<path>(?:[^']|'')*)'\s+table=\"(?P<table>(?:[^\"]|\"\")*)\"", re.IGNORECASE)


class RsClipAlgorithm(QgsProcessingAlgorithm):
    """Base of the provider's algorithms; subclasses declare parameters, ``read_parameters`` and call the engine."""

    def group(self) -> str:
        return self.tr("Semantic search")

    def groupId(self) -> str:  # noqa: N802 (QGIS's name)
        return "semantic_search"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def helpUrl(self) -> str:  # noqa: N802
        return HELP_URL

    def tr(self, text: str) -> str:
        return QCoreApplication.translate("RsClipSearch", text)

    def createInstance(self):  # noqa: N802
        return type(self)()

    def read_parameters(self, parameters: dict, context) -> dict:
        """Engine arguments from the parameters; raises QgsProcessingException on bad input.

        Runs from ``checkParameterValues`` (before the dialog starts the algorithm) and again
        in ``processAlgorithm``, so it must stay quick: no model loading, no raster reads.
        """
        return {}

    def checkParameterValues(self, parameters: dict, context):  # noqa: N802
        problem = self.enum_problem(parameters)
        if problem:
            return False, problem
        ok, message = super().checkParameterValues(self.enum_names(parameters), context)
        if not ok:
            return ok, message
        try:
            self.read_parameters(parameters, context)
            if self.parameterDefinition("OUTPUT") is not None:
                self.apply_geopackage_rule(parameters, context, rewrite=False)  # refuse before hours of indexing
        except QgsProcessingException as exc:
            return False, str(exc)
        return True, ""

    def static_enums(self) -> list[QgsProcessingParameterEnum]:
        """The enum parameters whose values are option names (stable across versions, unlike positions)."""
        return [p for p in self.parameterDefinitions()
                if isinstance(p, QgsProcessingParameterEnum) and p.usesStaticStrings()]

    def enum_problem(self, parameters: dict) -> str:
        """A readable sentence when a named choice (e.g. CLASS_SET=foo) is neither an option nor its number."""
        for param in self.static_enums():
            value = parameters.get(param.name())
            if value is None or value == "" or isinstance(value, QgsProperty):
                continue
            if enum_option(param, value) is None:
                options = ", ".join(f"'{o}'" for o in param.options())
                return (f"{param.name()} must be one of {options} or their numbers 0 to {len(param.options()) - 1}, "
                        f"not '{value}'.")
        return ""

    def enum_names(self, parameters: dict) -> dict:
        """``parameters`` with enum option numbers replaced by the option names QGIS's own checks expect."""
        named = dict(parameters)
        for param in self.static_enums():
            option = enum_option(param, named.get(param.name()))
            if option is not None:
                named[param.name()] = option
        return named

    def enum_choice(self, parameters: dict, name: str, context) -> str:
        """A static-string enum's option, given by name or by number (``qgis_process help`` lists numbers).

        QGIS's own ``parameterAsEnumString`` silently falls back to the default for a number.
        """
        problem = self.enum_problem({name: parameters.get(name)})
        if problem:
            raise QgsProcessingException(problem)
        return self.parameterAsEnumString(self.enum_names(parameters), name, context)

    @staticmethod
    def callbacks(feedback) -> dict:
        """The engine's progress and cancel callbacks, fed into QgsProcessingFeedback."""
        last = [0.0, ""]

        def progress(fraction: float, message: str) -> None:
            feedback.setProgress(100.0 * fraction)
            now = time.monotonic()
            if message != last[1] and (now - last[0] >= TEXT_INTERVAL_S or fraction >= 1.0):
                feedback.setProgressText(message)
                last[:] = [now, message]

        return {"progress": progress, "cancel": feedback.isCanceled}

    @staticmethod
    def engine(call: Callable, *args, **kwargs):
        """Run an engine call; a user-fixable problem becomes a readable QgsProcessingException."""
        try:
            return call(*args, **kwargs)
        except EngineError as exc:
            raise QgsProcessingException(str(exc)) from None

    @staticmethod
    def require_packages() -> None:
        """Refuse to run, with the install command, when torch/open_clip/faiss are missing."""
        missing = missing_packages()
        if missing:
            raise QgsProcessingException(install_hint(missing))

    def index_folder(self, parameters: dict, context, name: str = "INDEX") -> str:
        """The INDEX folder of a query algorithm, which must hold an index."""
        folder = self.parameterAsFile(parameters, name, context)
        if not folder:
            raise QgsProcessingException("Choose the index folder (built with 'Build semantic index').")
        if not is_index(folder):
            raise QgsProcessingException(f"No RS-CLIP Search index at {folder}; build one with "
                                         "'Build semantic index' first, or choose the folder that holds it.")
        return folder

    def add_overwrite_parameter(self) -> None:
        """OVERWRITE: whether a GeoPackage output may replace a layer of the same name (never the file)."""
        param = QgsProcessingParameterBoolean(OVERWRITE, self.tr("Replace a layer of the same name in an existing "
                                                                 "GeoPackage"), defaultValue=False, optional=True)
        param.setFlags(param.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        self.addParameter(param)

    def apply_geopackage_rule(self, parameters: dict, context, name: str = "OUTPUT", rewrite: bool = True) -> None:
        """Send a .gpkg output through the engine's rule (``engine.export.gpkg_plan``), as the CLI and dock do.

        A new file, or a new layer added to an existing GeoPackage; an existing layer only with OVERWRITE;
        a file that is not a GeoPackage is refused. Memory and other formats are left to QGIS.
        """
        value = parameters.get(name)
        sink = value.sink if isinstance(value, QgsProcessingOutputLayerDefinition) else value
        if isinstance(sink, QgsProperty):
            sink = sink.valueAsString(context.expressionContext(), "")
        text = str(sink or "").strip()
        if not text or text == QgsProcessing.TEMPORARY_OUTPUT or text.startswith("memory:"):
            return
        match = _OGR_GPKG.match(text)
        if match:
            path, layer = match["path"].replace("''", "'"), match["table"].replace('""', '"')
        elif text.lower().split("|")[0].endswith(".gpkg"):
            path, _, option = text.partition("|")
            layer = option.split("layername=", 1)[1] if "layername=" in option else \
                OUTPUT_LAYERS.get(self.name(), "rsclip_results")
        else:
            return
        overwrite = self.parameterAsBool(parameters, OVERWRITE, context) if parameters.get(OVERWRITE) else False
        path = str(Path(path).expanduser().resolve())
        self.engine(gpkg_plan, path, layer, overwrite)
        if not rewrite:
            return
        uri = "ogr:dbname='{}' table=\"{}\" (geom)".format(path.replace("'", "''"), layer.replace('"', '""'))
        if isinstance(value, QgsProcessingOutputLayerDefinition):
            value.sink = QgsProperty.fromValue(uri)
        else:
            parameters[name] = uri

    def write_tiles(self, parameters: dict, context, table: ResultTable, name: str = "OUTPUT") -> str:
        """A polygon sink of a result table (``engine.results``: the fields the command line and the dock write
        too, the query and model included), in the CRS most of its tiles share."""
        self.apply_geopackage_rule(parameters, context, name)
        qfields = QgsFields()
        for field, kind in table.fields:
            qfields.append(QgsField(field, FIELD_TYPES[kind]))
        crs = QgsCoordinateReferenceSystem.fromWkt(table.crs_wkt) if table.crs_wkt else \
            QgsCoordinateReferenceSystem("EPSG:4326")
        sink, dest = self.parameterAsSink(parameters, name, context, qfields, QgsWkbTypes.Type.Polygon, crs)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, name))
        for values, wkt in table.rows:
            feat = QgsFeature(qfields)
            feat.setAttributes(values)
            feat.setGeometry(QgsGeometry.fromWkt(wkt))
            sink.addFeature(feat, QgsFeatureSink.Flag.FastInsert)
        return dest


def enum_option(param: QgsProcessingParameterEnum, value) -> str | None:
    """The option ``value`` names: the option itself, or its position as a number (0 or "0"); else None."""
    if isinstance(value, bool) or value is None:
        return None
    options = param.options()
    text = str(value).strip()
    if text in options:
        return text
    try:
        position = int(text)
    except ValueError:
        return None
    return options[position] if 0 <= position < len(options) else None
