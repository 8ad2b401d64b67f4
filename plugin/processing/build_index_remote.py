"""Build a semantic index from imagery that is not on disk: a STAC catalogue, or a web map layer over an extent.

Both take the model and tile parameters of "Build semantic index" (they are subclasses that
swap its inputs) and end the same way: warnings for what was not indexed, footprints out.
"""
from __future__ import annotations

from qgis.core import (QgsCoordinateReferenceSystem, QgsProcessingException, QgsProcessingParameterExtent,
                       QgsProcessingParameterNumber, QgsProcessingParameterRasterLayer, QgsProcessingParameterString)

from ...engine.sources import RemoteOptions, using
from .build_index import BuildIndex

WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")


def _drop_file_inputs(algorithm: BuildIndex) -> None:
    """Build semantic index's parameters less its INPUT and URLS: the source is described otherwise."""
    for name in ("INPUT", "URLS"):
        algorithm.removeParameter(name)


class BuildIndexStac(BuildIndex):
    def name(self) -> str:
        return "build_index_stac"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Build semantic index from STAC")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(
            "Searches a STAC API (or reads a static STAC catalogue, collection or item) for imagery in EXTENT "
            "between the dates of DATETIME, picks each item's true-colour asset ('visual', else an RGB asset; "
            "ASSET chooses another) and indexes those cloud-optimised GeoTIFFs by URL, reading only the windows "
            "it needs. The items' dates are kept in the index.\n\n"
            "DATETIME: 2016, 2016-08, 2016-01-01/2017-12-31 or ../2020-06. At most MAX_ITEMS items (oldest first).\n"
            "Respect the terms of use of the catalogue's imagery. Model and tile parameters as in "
            "'Build semantic index'.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        super().initAlgorithm(config)
        _drop_file_inputs(self)
        self.addParameter(QgsProcessingParameterString("STAC_URL", self.tr("STAC API or catalogue URL")))
        self.addParameter(QgsProcessingParameterString("COLLECTIONS", self.tr("Collections (comma-separated)"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", self.tr("Extent"), optional=True))
        self.addParameter(QgsProcessingParameterString("DATETIME", self.tr("Dates (e.g. 2016-01-01/2017-12-31)"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterString("ASSET", self.tr("Asset (default: visual / RGB)"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterNumber("MAX_ITEMS", self.tr("Most items to index"),
                                                       QgsProcessingParameterNumber.Type.Integer, 50, minValue=1))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ...engine.sources.stac import index_stac

        self.require_packages()
        args = self.read_parameters(parameters, context)
        url = self.parameterAsString(parameters, "STAC_URL", context).strip()
        if not url:
            raise QgsProcessingException("Give the URL of a STAC API or catalogue.")
        bbox = None
        if parameters.get("EXTENT"):
            extent = self.parameterAsExtent(parameters, "EXTENT", context, WGS84)
            bbox = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
        collections = [c.strip() for c in self.parameterAsString(parameters, "COLLECTIONS", context).split(",")
                       if c.strip()]
        folder = self.parameterAsFileOutput(parameters, "INDEX", context)
        self.plan(folder, args, feedback)
        report, found = self.engine(
            index_stac, folder, url, collections, bbox, self.parameterAsString(parameters, "DATETIME", context) or None,
            self.parameterAsString(parameters, "ASSET", context).strip() or None,
            self.parameterAsInt(parameters, "MAX_ITEMS", context), model=args["model"], tiling=args["tiles"],
            batch_size=args["batch_size"], **self.callbacks(feedback))
        feedback.pushInfo(f"{found.matched} item(s) matched; indexed the {found.rasters[0].asset!r} asset of "
                          f"{len(found.rasters)}; their dates are kept in the index.")
        for item, reason in found.skipped:
            feedback.pushWarning(f"Item {item} skipped: {reason}")
        return self.finish(parameters, context, feedback, folder, report, [r.path for r in found.rasters])


class BuildIndexWebMap(BuildIndex):
    def name(self) -> str:
        return "build_index_web_map"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Build semantic index from a web map layer")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(
            "Indexes an XYZ or WMS layer of the project over EXTENT, at ZOOM (XYZ) or RESOLUTION metres per pixel "
            "(WMS; for XYZ the nearest zoom). The number of web map requests is estimated first, and an extent "
            "needing more than MAX_REQUESTS is refused before any request. Tiles are downloaded at most two at a "
            "time, retried on errors (honouring Retry-After) and cached; a tile that cannot be downloaded is "
            "skipped and counted, and running again fetches only what is missing.\n\n"
            "Respect the terms of use of the imagery provider: many forbid bulk downloading. Model and tile "
            "parameters as in 'Build semantic index'.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        super().initAlgorithm(config)
        _drop_file_inputs(self)
        self.addParameter(QgsProcessingParameterRasterLayer("LAYER", self.tr("Web map layer (XYZ or WMS)")))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", self.tr("Extent")))
        self.addParameter(QgsProcessingParameterNumber("ZOOM", self.tr("Zoom level (XYZ)"),
                                                       QgsProcessingParameterNumber.Type.Integer, optional=True,
                                                       minValue=0, maxValue=24))
        self.addParameter(QgsProcessingParameterNumber("RESOLUTION", self.tr("Ground resolution (m per pixel)"),
                                                       QgsProcessingParameterNumber.Type.Double, optional=True,
                                                       minValue=0.0))
        self.addParameter(QgsProcessingParameterNumber("MAX_REQUESTS", self.tr("Most web map requests"),
                                                       QgsProcessingParameterNumber.Type.Integer,
                                                       RemoteOptions.max_requests, minValue=1))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        from ...engine import jobs
        from ...engine.sources.webmap import estimate, zoom_for_resolution
        from ..webmap import is_web_layer, remote_options, source_path, web_service

        self.require_packages()
        args = self.read_parameters(parameters, context)
        layer = self.parameterAsRasterLayer(parameters, "LAYER", context)
        if not is_web_layer(layer):
            raise QgsProcessingException("LAYER must be an XYZ or WMS layer; index files with 'Build semantic index'.")
        service = self.engine(web_service, layer)
        crs = self.parameterAsExtentCrs(parameters, "EXTENT", context)
        extent = self.parameterAsExtent(parameters, "EXTENT", context, crs)
        zoom = self.parameterAsInt(parameters, "ZOOM", context) if parameters.get("ZOOM") not in (None, "") else None
        metres = self.parameterAsDouble(parameters, "RESOLUTION", context) or None
        if service.kind == "xyz" and zoom is None:
            if metres is None:
                raise QgsProcessingException("Give ZOOM (or RESOLUTION in metres per pixel) for an XYZ layer.")
            centre = self.parameterAsExtent(parameters, "EXTENT", context, WGS84).center().y()
            zoom = zoom_for_resolution(metres, centre, service.tile)
        path = self.engine(source_path, service, extent, crs, zoom, metres)
        options = self.engine(remote_options, service, self.parameterAsInt(parameters, "MAX_REQUESTS", context))
        folder = self.parameterAsFileOutput(parameters, "INDEX", context)
        plan = self.plan(folder, args, feedback)
        guess = self.engine(estimate, path, plan.tiling, options)
        feedback.pushInfo(f"{layer.name()}: {guess.text()} (cap {options.max_requests} requests).")
        with using(options):
            report = self.engine(jobs.index_rasters, folder, [path], model=args["model"], tiling=args["tiles"],
                                 batch_size=args["batch_size"], **self.callbacks(feedback))
        return self.finish(parameters, context, feedback, folder, report, [path])
