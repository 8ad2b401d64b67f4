"""Zero-shot land-cover labels: every tile's most likely class, styled by class."""
from __future__ import annotations

from functools import partial

from qgis.core import (QgsProcessing, QgsProcessingParameterEnum, QgsProcessingParameterFeatureSink,
                       QgsProcessingParameterFile, QgsProcessingParameterString)

from ...engine import jobs
from ...engine.classsets import available_class_sets, load_class_set, parse_classes
from ...engine.results import label_table
from ...engine.prompts import parse_templates
from ..layers import style_by_class
from .areas import add_area_parameters, area_wgs84_wkt, check_extent_crs
from .base import RsClipAlgorithm
from .styling import style_on_load

CUSTOM_LIST = "custom list"


class LabelTiles(RsClipAlgorithm):
    def name(self) -> str:
        return "label_tiles"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Zero-shot land-cover labels")

    def shortHelpString(self) -> str:  # noqa: N802
        return self.tr(
            "Gives every tile of an index its most likely land-cover class, without training: the tile is "
            "compared with a text description of each class.\n\n"
            "CLASS_SET: a shipped set (eurosat, ucmerced, worldcover), or 'custom list' to use CLASSES, your own "
            "classes separated by commas or new lines (at least two).\n"
            "TEMPLATE: optional prompt template(s) with {} where the class name goes, separated by ';' "
            "(e.g. 'a satellite image of {}'); default: the prompt templates of the index's model "
            "(see 'python -m engine models').\n"
            "EXTENT and AREA (advanced) restrict labelling to tiles touching them.\n\n"
            "Output fields: label, probability, margin (lead over the runner-up class), raster, tile_id, classes "
            "(the class set) and model; "
            "the layer is styled with one colour per class.")

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        sets = [*available_class_sets(), CUSTOM_LIST]
        self.addParameter(QgsProcessingParameterFile("INDEX", self.tr("Index folder"),
                                                     QgsProcessingParameterFile.Behavior.Folder))
        self.addParameter(QgsProcessingParameterEnum("CLASS_SET", self.tr("Class set"), sets,
                                                     defaultValue=sets[0], usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterString("CLASSES", self.tr("Custom classes (comma-separated)"),
                                                       multiLine=True, optional=True))
        self.addParameter(QgsProcessingParameterString("TEMPLATE", self.tr("Prompt template(s) with {}, ';'-separated"),
                                                       optional=True))
        add_area_parameters(self, advanced=True)
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", self.tr("Labelled tiles"),
                                                            QgsProcessing.SourceType.TypeVectorPolygon))
        self.add_overwrite_parameter()

    def read_parameters(self, parameters: dict, context) -> dict:
        folder = self.index_folder(parameters, context)
        choice = self.enum_choice(parameters, "CLASS_SET", context)
        if choice == CUSTOM_LIST:
            classes = self.engine(parse_classes, self.parameterAsString(parameters, "CLASSES", context))
        else:
            classes = self.engine(load_class_set, choice)
        templates = self.engine(parse_templates, self.parameterAsString(parameters, "TEMPLATE", context) or None)
        check_extent_crs(self, parameters, context)
        return {"folder": folder, "classes": classes, "templates": templates,
                "class_set": "" if choice == CUSTOM_LIST else choice}

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        self.require_packages()
        args = self.read_parameters(parameters, context)
        labels = self.engine(jobs.label, args["folder"], args["classes"], args["templates"],
                             within_wgs84_wkt=area_wgs84_wkt(self, parameters, context), **self.callbacks(feedback))
        feedback.pushInfo(f"{len(labels)} tile(s) labelled with {len(args['classes'])} classes.")
        model = jobs.model_label(jobs.model_of(args["folder"]))
        dest = self.write_tiles(parameters, context, label_table(labels, args["classes"], model, args["class_set"]))
        style_on_load(context, dest, partial(style_by_class, classes=args["classes"]))
        return {"OUTPUT": dest}
