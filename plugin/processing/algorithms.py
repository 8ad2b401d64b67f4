"""The four toolbox algorithms; each is a thin call into ``engine.jobs``."""
from __future__ import annotations

from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsGeometry, QgsProcessing,
                       QgsProcessingException, QgsProcessingLayerPostProcessorInterface,
                       QgsProcessingParameterEnum, QgsProcessingParameterExtent,
                       QgsProcessingParameterFeatureSink, QgsProcessingParameterFeatureSource,
                       QgsProcessingParameterFile, QgsProcessingParameterFolderDestination,
                       QgsProcessingParameterMultipleLayers, QgsProcessingParameterNumber,
                       QgsProcessingParameterPoint, QgsProcessingParameterString)

from ...engine import jobs
from ...engine.export import HIT_FIELDS, LABEL_FIELDS
from ...engine.index import is_index
from .base import RsClipAlgorithm

WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")
FOOTPRINT_FIELDS = (("raster", "str"), ("tile_id", "int"))


def hit_rows(hits) -> list[dict]:
    return [{"rank": h.rank, "score": h.score, "raster": h.tile.raster, "tile_id": h.tile.id} for h in hits]


def index_folder(alg, parameters, context) -> str:
    folder = alg.parameterAsFile(parameters, "INDEX", context)
    if not folder or not is_index(folder):
        raise QgsProcessingException(f"No RS-CLIP Search index at {folder or '(no folder given)'}; "
                                     "build one with 'Build semantic index' first.")
    return folder


class BuildIndex(RsClipAlgorithm):
    UNITS = ("px", "m")

    def name(self) -> str:
        return "build_index"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Build semantic index")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr("Cuts rasters into tiles, embeds each tile with a remote-sensing CLIP model and adds them to "
                       "an index folder (created if needed). Re-running with more rasters adds them; unchanged "
                       "rasters are skipped. An existing index keeps the model and tile settings it was built "
                       "with. MODEL 'custom' uses ARCH (open_clip architecture or config JSON) and CHECKPOINT. "
                       "Outputs the footprints of the indexed tiles.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        from ...engine.models import DEFAULT_MODEL, REGISTRY

        self.models = [*REGISTRY, "custom"]
        self.addParameter(QgsProcessingParameterMultipleLayers("INPUT", self.tr("Rasters"), QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterFolderDestination("INDEX", self.tr("Index folder")))
        self.addParameter(QgsProcessingParameterEnum("MODEL", self.tr("Model"), self.models,
                                                     defaultValue=self.models.index(DEFAULT_MODEL)))
        self.addParameter(QgsProcessingParameterString("ARCH", self.tr("Custom architecture (name or config JSON)"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterFile("CHECKPOINT", self.tr("Custom checkpoint"), optional=True))
        self.addParameter(QgsProcessingParameterNumber("TILE_SIZE", self.tr("Tile size"),
                                                       QgsProcessingParameterNumber.Double, 224.0, minValue=1))
        self.addParameter(QgsProcessingParameterEnum("TILE_UNITS", self.tr("Tile size units"),
                                                     ["pixels", "metres"], defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber("OVERLAP", self.tr("Overlap fraction"),
                                                       QgsProcessingParameterNumber.Double, 0.0, minValue=0,
                                                       maxValue=0.9))
        self.addParameter(QgsProcessingParameterString("BANDS", self.tr("Bands as R,G,B (e.g. 4,3,2)"), optional=True))
        self.addParameter(QgsProcessingParameterNumber("BATCH_SIZE", self.tr("Batch size"),
                                                       QgsProcessingParameterNumber.Integer, 32, minValue=1))
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", self.tr("Indexed tiles"),
                                                            QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ...engine.cli import _bands
        from ...engine.tiling import TilingSpec

        layers = self.parameterAsLayerList(parameters, "INPUT", context)
        rasters = [lyr.source() for lyr in layers]
        if not rasters:
            raise QgsProcessingException("Choose at least one raster to index.")
        folder = self.parameterAsString(parameters, "INDEX", context)
        model = tiling = None
        if is_index(folder):
            feedback.pushInfo("Adding to an existing index: its recorded model and tile settings are used.")
        else:
            name = self.models[self.parameterAsEnum(parameters, "MODEL", context)]
            arch = self.parameterAsString(parameters, "ARCH", context) or None
            ckpt = self.parameterAsFile(parameters, "CHECKPOINT", context) or None
            model = self.engine(jobs.resolve_model, folder, None if name == "custom" else name,
                                arch if name == "custom" else None, ckpt if name == "custom" else None)
            bands = self.engine(_bands, self.parameterAsString(parameters, "BANDS", context) or None)
            tiling = TilingSpec(size=self.parameterAsDouble(parameters, "TILE_SIZE", context),
                                units=self.UNITS[self.parameterAsEnum(parameters, "TILE_UNITS", context)],
                                overlap=self.parameterAsDouble(parameters, "OVERLAP", context), bands=bands)
            self.engine(tiling.validate)
        report = self.engine(jobs.index_rasters, folder, rasters, model=model, tiling=tiling,
                             batch_size=self.parameterAsInt(parameters, "BATCH_SIZE", context), **self.callbacks(feedback))
        for path, reason in report.skipped:
            feedback.pushWarning(f"Skipped {path}: {reason}")
        feedback.pushInfo(report.summary())
        tiles = jobs.tiles(folder, rasters)
        dest = self.write_tiles(parameters, context, tiles, FOOTPRINT_FIELDS,
                                [{"raster": t.raster, "tile_id": t.id} for t in tiles])
        return {"INDEX": folder, "OUTPUT": dest}


def area_wgs84_wkt(alg, parameters, context) -> str | None:
    """The optional EXTENT and AREA restriction as one WGS84 WKT geometry (their intersection)."""
    parts = []
    if parameters.get("EXTENT"):
        geom = alg.parameterAsExtentGeometry(parameters, "EXTENT", context, WGS84)
        if geom is not None and not geom.isEmpty():
            parts.append(geom)
    source = alg.parameterAsSource(parameters, "AREA", context) if parameters.get("AREA") else None
    if source is not None:
        xform = QgsCoordinateTransform(source.sourceCrs(), WGS84, context.transformContext())
        geoms = []
        for feat in source.getFeatures():
            g = QgsGeometry(feat.geometry())
            g.transform(xform)
            geoms.append(g)
        if not geoms:
            raise QgsProcessingException("The area layer has no features to search within.")
        parts.append(QgsGeometry.unaryUnion(geoms))
    if not parts:
        return None
    area = parts[0]
    for part in parts[1:]:
        area = area.intersection(part)
    return area.asWkt()


class SearchText(RsClipAlgorithm):
    def name(self) -> str:
        return "search_text"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Search imagery by text")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr("Finds the tiles of an index that best match a text, e.g. 'airport runway'. Optionally "
                       "restricted to an extent and/or the polygons of a layer. Output fields: rank, score "
                       "(cosine similarity), raster, tile_id.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterFile("INDEX", self.tr("Index folder"),
                                                     QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterString("QUERY", self.tr("Search text")))
        self.addParameter(QgsProcessingParameterNumber("TOP_K", self.tr("Number of results"),
                                                       QgsProcessingParameterNumber.Integer, 20, minValue=1))
        self.addParameter(QgsProcessingParameterNumber("MIN_SCORE", self.tr("Minimum score"),
                                                       QgsProcessingParameterNumber.Double, optional=True,
                                                       minValue=-1, maxValue=1))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", self.tr("Only within this extent"), optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource("AREA", self.tr("Only within these polygons"),
                                                              [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", self.tr("Matching tiles"),
                                                            QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        folder = index_folder(self, parameters, context)
        query = self.parameterAsString(parameters, "QUERY", context)
        min_score = parameters.get("MIN_SCORE")
        min_score = None if min_score in (None, "") else self.parameterAsDouble(parameters, "MIN_SCORE", context)
        hits = self.engine(jobs.search, folder, query, self.parameterAsInt(parameters, "TOP_K", context), min_score,
                           within_wgs84_wkt=area_wgs84_wkt(self, parameters, context), **self.callbacks(feedback))
        feedback.pushInfo(f"{len(hits)} tiles found.")
        dest = self.write_tiles(parameters, context, [h.tile for h in hits], HIT_FIELDS, hit_rows(hits))
        return {"OUTPUT": dest}


class ClassStyler(QgsProcessingLayerPostProcessorInterface):
    """Styles the label output by class once QGIS has loaded it."""

    def __init__(self, classes: list[str]) -> None:
        super().__init__()
        self.classes = classes

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802
        from ..layers import style_by_class

        style_by_class(layer, self.classes)


class LabelTiles(RsClipAlgorithm):
    def name(self) -> str:
        return "label_tiles"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Zero-shot land-cover labels")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr("Gives every tile of an index its most likely class among a shipped class set (EuroSAT, "
                       "UC Merced, ESA WorldCover) or your own comma-separated list, without training. Output "
                       "fields: label, probability, margin (lead over the runner-up), raster, tile_id.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        from ...engine.classsets import available_class_sets

        self.sets = [*available_class_sets(), "custom list"]
        self.addParameter(QgsProcessingParameterFile("INDEX", self.tr("Index folder"),
                                                     QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterEnum("CLASS_SET", self.tr("Class set"), self.sets, defaultValue=0))
        self.addParameter(QgsProcessingParameterString("CLASSES", self.tr("Custom classes (comma-separated)"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterString("TEMPLATE", self.tr("Prompt template(s) with {} (';'-separated)"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", self.tr("Labelled tiles"),
                                                            QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ...engine.classsets import load_class_set, parse_classes
        from ...engine.prompts import parse_templates

        folder = index_folder(self, parameters, context)
        choice = self.sets[self.parameterAsEnum(parameters, "CLASS_SET", context)]
        if choice == "custom list":
            classes = self.engine(parse_classes, self.parameterAsString(parameters, "CLASSES", context))
        else:
            classes = self.engine(load_class_set, choice)
        templates = self.engine(parse_templates, self.parameterAsString(parameters, "TEMPLATE", context) or None)
        labels = self.engine(jobs.label, folder, classes, templates, **self.callbacks(feedback))
        rows = [{"label": lab.label, "probability": lab.probability, "margin": lab.margin, "raster": lab.tile.raster,
                 "tile_id": lab.tile.id} for lab in labels]
        dest = self.write_tiles(parameters, context, [lab.tile for lab in labels], LABEL_FIELDS, rows)
        if context.willLoadLayerOnCompletion(dest):
            self.styler = ClassStyler(classes)
            context.layerToLoadOnCompletionDetails(dest).setPostProcessor(self.styler)
        return {"OUTPUT": dest}


class SimilarTiles(RsClipAlgorithm):
    def name(self) -> str:
        return "similar_tiles"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Find similar tiles")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr("Finds the tiles most like example tiles: features with a tile_id field (e.g. selected "
                       "results of a search; tick 'Selected features only'), or the tile under a point.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterFile("INDEX", self.tr("Index folder"),
                                                     QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterFeatureSource("TILES", self.tr("Example tiles (with tile_id)"),
                                                              [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterPoint("POINT", self.tr("Or a point on an example tile"), optional=True))
        self.addParameter(QgsProcessingParameterNumber("TOP_K", self.tr("Number of results"),
                                                       QgsProcessingParameterNumber.Integer, 20, minValue=1))
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", self.tr("Similar tiles"),
                                                            QgsProcessing.TypeVectorPolygon))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        folder = index_folder(self, parameters, context)
        ids: list[int] = []
        source = self.parameterAsSource(parameters, "TILES", context) if parameters.get("TILES") else None
        if source is not None:
            field = source.fields().indexOf("tile_id")
            if field < 0:
                raise QgsProcessingException("The example layer has no tile_id field; use an RS-CLIP result layer.")
            ids = sorted({int(f.attribute(field)) for f in source.getFeatures()})
        elif parameters.get("POINT"):
            point = self.parameterAsPoint(parameters, "POINT", context, WGS84)
            ids = self.engine(jobs.tiles_at, folder, point.x(), point.y())
            if not ids:
                raise QgsProcessingException("No indexed tile lies under that point.")
        if not ids:
            raise QgsProcessingException("Give example tiles (features with tile_id) or a point on a tile.")
        hits = self.engine(jobs.similar, folder, ids, self.parameterAsInt(parameters, "TOP_K", context))
        dest = self.write_tiles(parameters, context, [h.tile for h in hits], HIT_FIELDS, hit_rows(hits))
        return {"OUTPUT": dest}


ALGORITHMS = (BuildIndex, SearchText, LabelTiles, SimilarTiles)
