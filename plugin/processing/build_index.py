"""Build semantic index: tile, embed and index rasters; outputs the indexed tile footprints."""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum, QgsProcessingParameterFeatureSink, QgsProcessingParameterFile,
                       QgsProcessingParameterFolderDestination, QgsProcessingParameterMultipleLayers,
                       QgsProcessingParameterNumber, QgsProcessingParameterString)

from ...engine import jobs
from ...engine.index import is_index
from ...engine.planning import IndexPlan, plan_index, tile_request
from ...engine.results import footprint_table
from .base import RsClipAlgorithm
from .styling import style_footprints, style_on_load

CUSTOM = "custom"
UNITS = {"pixels": "px", "metres": "m"}


class BuildIndex(RsClipAlgorithm):
    def name(self) -> str:
        return "build_index"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Build semantic index")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(
            "Cuts rasters into tiles, embeds each tile with a remote-sensing CLIP model and stores them in an "
            "index folder, which the other RS-CLIP algorithms search.\n\n"
            "Run it again with more rasters to add them to the same folder: unchanged rasters are skipped and an "
            "interrupted raster resumes. An existing index keeps the model and tile settings it was built with: "
            "leave MODEL and the tile parameters out (or give its own) to add to it; other values are refused.\n\n"
            "MODEL: a registry model (its weights are downloaded once), or 'custom' with ARCH (an open_clip "
            "architecture such as ViT-B-32, or a model-config JSON) and CHECKPOINT (a local weights file).\n"
            "TILE_SIZE in TILE_UNITS (pixels, or metres on the ground: at least 32 px a side on each raster, so "
            "coarse rasters get larger tiles, with a warning); OVERLAP as a fraction of a tile; "
            "BANDS as R,G,B band numbers (e.g. 4,3,2), default the first three.\n"
            "SCALES (e.g. 1,2,4): also tiles 2 and 4 times TILE_SIZE, each embedded at the model's input size, "
            "so objects of very different sizes each fill some tile; given for an existing index, the new scales "
            "are added and only their tiles embedded.\n\n"
            "URLS: rasters read over HTTP with range requests (only the windows indexed are downloaded). Web map "
            "layers (XYZ, WMS) and STAC catalogues have algorithms of their own.\n\n"
            "Rasters that cannot be indexed are reported as warnings and the others go on. "
            "Output: the footprints of the tiles of these rasters (fields raster, tile_id, model).")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        from ...engine.models import DEFAULT_MODEL, REGISTRY

        self.addParameter(QgsProcessingParameterMultipleLayers("INPUT", self.tr("Rasters to index"),
                                                               QgsProcessing.SourceType.TypeRaster, optional=True))
        self.addParameter(QgsProcessingParameterString(
            "URLS", self.tr("Rasters by URL (cloud-optimised GeoTIFFs: https://…, /vsicurl/…), one per line"),
            multiLine=True, optional=True))
        self.addParameter(QgsProcessingParameterFolderDestination("INDEX", self.tr("Index folder")))
        self.addParameter(QgsProcessingParameterEnum("MODEL", self.tr("Model"), [*REGISTRY, CUSTOM],
                                                     defaultValue=DEFAULT_MODEL, usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterString(
            "ARCH", self.tr("Custom model: open_clip architecture or model-config JSON"), optional=True))
        self.addParameter(QgsProcessingParameterFile("CHECKPOINT", self.tr("Custom model: checkpoint file"),
                                                     optional=True))
        self.addParameter(QgsProcessingParameterNumber("TILE_SIZE", self.tr("Tile size"),
                                                       QgsProcessingParameterNumber.Type.Double, 224.0, minValue=1))
        self.addParameter(QgsProcessingParameterEnum("TILE_UNITS", self.tr("Tile size units"), list(UNITS),
                                                     defaultValue="pixels", usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterNumber("OVERLAP", self.tr("Overlap between tiles (fraction)"),
                                                       QgsProcessingParameterNumber.Type.Double, 0.0, minValue=0,
                                                       maxValue=0.9))
        self.addParameter(QgsProcessingParameterString("BANDS", self.tr("Bands as R,G,B (e.g. 4,3,2)"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterString("SCALES", self.tr("Tile scales (e.g. 1,2,4)"),
                                                       optional=True))
        batch = QgsProcessingParameterNumber("BATCH_SIZE", self.tr("Tiles per batch"),
                                             QgsProcessingParameterNumber.Type.Integer, 32, minValue=1)
        batch.setFlags(batch.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        self.addParameter(batch)
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", self.tr("Indexed tiles"),
                                                            QgsProcessing.SourceType.TypeVectorPolygon))
        self.add_overwrite_parameter()

    def read_parameters(self, parameters: dict, context) -> dict:
        """The request: MODEL and the tile parameters that were given (``planning.tile_request``); what is left
        out is an existing index's own, else the default, as on the command line."""
        from dataclasses import replace

        from ...engine.scales import parse_scales
        from ...engine.tiling import TilingSpec, parse_bands

        def given(name: str) -> bool:
            return parameters.get(name) not in (None, "")

        model = self.enum_choice(parameters, "MODEL", context) if given("MODEL") else None
        arch = self.parameterAsString(parameters, "ARCH", context).strip() or None
        checkpoint = self.parameterAsFile(parameters, "CHECKPOINT", context) or None
        if model == CUSTOM and not (arch and checkpoint):
            raise QgsProcessingException("MODEL 'custom' needs ARCH (an open_clip architecture or model-config "
                                         "JSON) and CHECKPOINT (its weights file).")
        sized = given("TILE_SIZE") or given("TILE_UNITS")
        tiles = tile_request(self.parameterAsDouble(parameters, "TILE_SIZE", context) if sized else None,
                             UNITS[self.enum_choice(parameters, "TILE_UNITS", context)] if sized else None,
                             self.parameterAsDouble(parameters, "OVERLAP", context) if given("OVERLAP") else None,
                             self.engine(parse_bands, self.parameterAsString(parameters, "BANDS", context)),
                             self.engine(parse_scales, self.parameterAsString(parameters, "SCALES", context)))
        self.engine(lambda: replace(TilingSpec(), **tiles).validate())
        return {"name": None if model == CUSTOM else model, "arch": arch if model == CUSTOM else None,
                "checkpoint": checkpoint if model == CUSTOM else None, "tiles": tiles,
                "batch_size": self.parameterAsInt(parameters, "BATCH_SIZE", context)}

    def checkParameterValues(self, parameters: dict, context):  # noqa: N802
        """Also the engine's plan for an existing index, so another model or tile size is refused before running
        (a custom checkpoint is hashed only when the algorithm runs)."""
        ok, message = super().checkParameterValues(parameters, context)
        if not ok or "INDEX" not in parameters:
            return ok, message
        folder = self.parameterAsFileOutput(parameters, "INDEX", context)
        if not folder or not is_index(folder):
            return ok, message
        try:
            args = self.read_parameters(parameters, context)
            self.plan(folder, {**args, "arch": None, "checkpoint": None})
        except QgsProcessingException as exc:
            return False, str(exc)
        return True, ""

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        self.require_packages()
        args = self.read_parameters(parameters, context)
        layers = self.parameterAsLayerList(parameters, "INPUT", context)
        web = [layer.name() for layer in layers if layer.providerType() == "wms"]
        if web:
            raise QgsProcessingException(f"{', '.join(web)}: web map layers need an extent and a resolution; use "
                                         "'Build semantic index from a web map layer'.")
        urls = [line.strip() for line in self.parameterAsString(parameters, "URLS", context).splitlines()]
        rasters = [layer.source() for layer in layers] + [url for url in urls if url]
        if not rasters:
            raise QgsProcessingException("Choose at least one raster (or give a URL) to index.")
        folder = self.parameterAsFileOutput(parameters, "INDEX", context)
        self.plan(folder, args, feedback)
        report = self.engine(jobs.index_rasters, folder, rasters, model=args["model"], tiling=args["tiles"],
                             batch_size=args["batch_size"], **self.callbacks(feedback))
        return self.finish(parameters, context, feedback, folder, report, rasters)

    def plan(self, folder: str, args: dict, feedback=None) -> IndexPlan:
        """The engine's plan of this request (``planning.plan_index``, as the command line and the dock make it);
        resolves the model asked for into ``args["model"]`` (None when MODEL was not given)."""
        from ...engine.models import resolve_model_ref

        model = None
        if args["name"] or args["arch"]:
            model = self.engine(resolve_model_ref, args["name"], args["arch"], args["checkpoint"]).to_dict()
        args["model"] = model
        plan = self.engine(plan_index, folder, model, args["tiles"])
        if feedback is not None:
            feedback.pushInfo(plan.describe())
        return plan

    def finish(self, parameters, context, feedback, folder: str, report, rasters: list) -> dict:
        """Warnings for what was not indexed, and the footprints of ``rasters``' tiles as the output."""
        for path, reason in report.skipped:
            feedback.pushWarning(f"Not indexed: {path}: {reason}")
        for notice in report.notices:
            feedback.pushWarning(notice)
        for path, count, why in report.unavailable:
            feedback.pushWarning(f"{count} tiles of {path} were skipped, their web map tiles could not be "
                                 f"downloaded ({why}); run again to retry them.")
        if report.cancelled:
            feedback.pushWarning(report.summary())
        tiles = jobs.tiles(folder, rasters)
        dest = self.write_tiles(parameters, context, footprint_table(tiles, jobs.model_label(jobs.model_of(folder))))
        style_on_load(context, dest, style_footprints)
        return {"INDEX": folder, "OUTPUT": dest}
