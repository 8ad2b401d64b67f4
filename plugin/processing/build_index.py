"""Build semantic index: tile, embed and index rasters; outputs the indexed tile footprints."""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum, QgsProcessingParameterFeatureSink, QgsProcessingParameterFile,
                       QgsProcessingParameterFolderDestination, QgsProcessingParameterMultipleLayers,
                       QgsProcessingParameterNumber, QgsProcessingParameterString)

from ...engine import jobs
from ...engine.index import is_index
from .base import RsClipAlgorithm
from .styling import style_footprints, style_on_load

FOOTPRINT_FIELDS = (("raster", "str"), ("tile_id", "int"))
CUSTOM = "custom"
UNITS = {"pixels": "px", "metres": "m"}


def tiling_text(tiling: dict) -> str:
    unit = "px" if tiling.get("units") == "px" else "m"
    return f"{float(tiling.get('size', 0)):g} {unit} tiles, overlap {float(tiling.get('overlap', 0)):g}"


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
            "interrupted raster resumes. An existing index keeps the model and tile settings it was built with.\n\n"
            "MODEL: a registry model (its weights are downloaded once), or 'custom' with ARCH (an open_clip "
            "architecture such as ViT-B-32, or a model-config JSON) and CHECKPOINT (a local weights file).\n"
            "TILE_SIZE in TILE_UNITS (pixels, or metres on the ground); OVERLAP as a fraction of a tile; "
            "BANDS as R,G,B band numbers (e.g. 4,3,2), default the first three.\n"
            "SCALES (e.g. 1,2,4): also tiles 2 and 4 times TILE_SIZE, each embedded at the model's input size, "
            "so objects of very different sizes each fill some tile; given for an existing index, the new scales "
            "are added and only their tiles embedded.\n\n"
            "URLS: rasters read over HTTP with range requests (only the windows indexed are downloaded). Web map "
            "layers (XYZ, WMS) and STAC catalogues have algorithms of their own.\n\n"
            "Rasters that cannot be indexed are reported as warnings and the others go on. "
            "Output: the footprints of the tiles of these rasters (fields raster, tile_id).")

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
        from ...engine.scales import parse_scales
        from ...engine.tiling import TilingSpec, parse_bands

        model = self.enum_choice(parameters, "MODEL", context)
        arch = self.parameterAsString(parameters, "ARCH", context).strip() or None
        checkpoint = self.parameterAsFile(parameters, "CHECKPOINT", context) or None
        if model == CUSTOM and not (arch and checkpoint):
            raise QgsProcessingException("MODEL 'custom' needs ARCH (an open_clip architecture or model-config "
                                         "JSON) and CHECKPOINT (its weights file).")
        tiling = TilingSpec(size=self.parameterAsDouble(parameters, "TILE_SIZE", context),
                            units=UNITS[self.enum_choice(parameters, "TILE_UNITS", context)],
                            overlap=self.parameterAsDouble(parameters, "OVERLAP", context),
                            bands=self.engine(parse_bands, self.parameterAsString(parameters, "BANDS", context)))
        self.engine(tiling.validate)
        return {"name": None if model == CUSTOM else model, "arch": arch if model == CUSTOM else None,
                "checkpoint": checkpoint if model == CUSTOM else None, "tiling": tiling,
                "batch_size": self.parameterAsInt(parameters, "BATCH_SIZE", context),
                "scales": self.engine(parse_scales, self.parameterAsString(parameters, "SCALES", context))}

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
        model, tiling = self.model_and_tiling(folder, args, feedback)
        report = self.engine(jobs.index_rasters, folder, rasters, model=model, tiling=tiling,
                             batch_size=args["batch_size"], scales=args["scales"], **self.callbacks(feedback))
        return self.finish(parameters, context, feedback, folder, report, rasters)

    def model_and_tiling(self, folder: str, args: dict, feedback) -> tuple:
        """(model, tiling) for a new index; (None, None) for an existing one, which keeps its own."""
        if is_index(folder):
            info = self.engine(jobs.info, folder)
            feedback.pushInfo(f"Adding to the index at {folder}, built with {info.model_label} and "
                              f"{tiling_text(info.tiling)}; MODEL and the tile parameters only apply to a new index.")
            return None, None
        return self.engine(jobs.resolve_model, folder, args["name"], args["arch"], args["checkpoint"]), args["tiling"]

    def finish(self, parameters, context, feedback, folder: str, report, rasters: list) -> dict:
        """Warnings for what was not indexed, and the footprints of ``rasters``' tiles as the output."""
        for path, reason in report.skipped:
            feedback.pushWarning(f"Not indexed: {path}: {reason}")
        for path, count, why in report.unavailable:
            feedback.pushWarning(f"{count} tiles of {path} were skipped, their web map tiles could not be "
                                 f"downloaded ({why}); run again to retry them.")
        if report.cancelled:
            feedback.pushWarning(report.summary())
        tiles = jobs.tiles(folder, rasters)
        dest = self.write_tiles(parameters, context, tiles, FOOTPRINT_FIELDS,
                                [{"raster": t.raster, "tile_id": t.id} for t in tiles])
        style_on_load(context, dest, style_footprints)
        return {"INDEX": folder, "OUTPUT": dest}
