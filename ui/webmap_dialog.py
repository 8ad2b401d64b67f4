"""The "Index a web map layer" dialog: layer, extent, resolution, request cap and the estimate.

It only gathers choices and shows what it is told (plugin/webmap.py computes the estimate,
starts the job and remembers the choices); ``estimateRequested`` fires whenever a choice changes.
"""
from __future__ import annotations

from qgis.core import QgsCoordinateReferenceSystem, QgsRectangle
from qgis.gui import QgsExtentWidget
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QHBoxLayout,
                                 QLabel, QPushButton, QSpinBox, QVBoxLayout)

from .params import WebMapChoices

TERMS = ("Respect the terms of use of the imagery provider: many forbid bulk downloading or automated analysis "
         "of their tiles. Requests go at most two at a time, retried politely.")


class WebMapDialog(QDialog):
    estimateRequested = pyqtSignal()
    indexRequested = pyqtSignal()

    def __init__(self, canvas, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Index a web map layer")
        self.setObjectName("RsClipWebMapDialog")
        outer = QVBoxLayout(self)
        form = QFormLayout()
        outer.addLayout(form)
        self.layer_combo = QComboBox()
        self.layer_combo.currentIndexChanged.connect(lambda _i: self.estimateRequested.emit())
        form.addRow("Layer", self.layer_combo)
        self.extent_widget = QgsExtentWidget(self)
        self.extent_widget.setMapCanvas(canvas)
        self.extent_widget.extentChanged.connect(lambda _e: self.estimateRequested.emit())
        form.addRow("Extent", self.extent_widget)
        resolution = QHBoxLayout()
        self.zoom_spin = QSpinBox()
        self.zoom_spin.setRange(0, 24)
        self.zoom_spin.setPrefix("zoom ")
        self.zoom_spin.valueChanged.connect(lambda _v: self.estimateRequested.emit())
        resolution.addWidget(self.zoom_spin)
        self.resolution_spin = QDoubleSpinBox()
        self.resolution_spin.setRange(0.01, 100000.0)
        self.resolution_spin.setDecimals(2)
        self.resolution_spin.setSuffix(" m per pixel")
        self.resolution_spin.valueChanged.connect(lambda _v: self.estimateRequested.emit())
        resolution.addWidget(self.resolution_spin)
        self.resolution_spin.hide()
        form.addRow("Resolution", resolution)
        self.cap_spin = QSpinBox()
        self.cap_spin.setRange(1, 10_000_000)
        self.cap_spin.setSuffix(" requests")
        self.cap_spin.setToolTip("The most web map requests this layer may need; a larger extent is refused before "
                                 "anything is downloaded")
        self.cap_spin.valueChanged.connect(lambda _v: self.estimateRequested.emit())
        form.addRow("Cap", self.cap_spin)
        self.estimate_label = QLabel()
        self.estimate_label.setWordWrap(True)
        self.estimate_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.estimate_label)
        self.terms_label = QLabel(TERMS)
        self.terms_label.setWordWrap(True)
        self.terms_label.setStyleSheet("color: #555;")
        outer.addWidget(self.terms_label)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.index_button = QPushButton("Index")
        self.buttons.addButton(self.index_button, QDialogButtonBox.ButtonRole.AcceptRole)
        self.index_button.clicked.connect(self.indexRequested.emit)
        self.buttons.rejected.connect(self.hide)
        outer.addWidget(self.buttons)
        self.setMinimumWidth(520)

    def set_layers(self, layers: list[tuple[str, str]], current: str | None) -> None:
        """(name, layer id) of the project's web layers; ``current`` is selected when given."""
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        for name, layer_id in layers:
            self.layer_combo.addItem(name, layer_id)
        if current is not None:
            self.layer_combo.setCurrentIndex(max(0, self.layer_combo.findData(current)))
        self.layer_combo.blockSignals(False)

    def current_layer_id(self) -> str | None:
        return self.layer_combo.currentData()

    def set_choices(self, choices: WebMapChoices) -> None:
        """Zoom, resolution and cap as the user left them (one estimate follows, not three)."""
        for spin, value in ((self.zoom_spin, choices.zoom), (self.resolution_spin, choices.resolution_m),
                            (self.cap_spin, choices.max_requests)):
            spin.blockSignals(True)
            spin.setValue(value)
            spin.blockSignals(False)
        self.estimateRequested.emit()

    def choices(self) -> WebMapChoices:
        return WebMapChoices(self.zoom_spin.value(), self.resolution_spin.value(), self.cap_spin.value())

    def set_kind(self, kind: str, zmin: int = 0, zmax: int = 24) -> None:
        """XYZ layers choose a zoom level within the layer's range; WMS layers a ground resolution."""
        self.zoom_spin.setVisible(kind == "xyz")
        self.resolution_spin.setVisible(kind != "xyz")
        if kind == "xyz":
            self.zoom_spin.blockSignals(True)
            self.zoom_spin.setRange(zmin, zmax)
            self.zoom_spin.blockSignals(False)

    def use_canvas_extent(self, extent: QgsRectangle, crs: QgsCoordinateReferenceSystem) -> None:
        """Start from the map canvas's extent (the widget's menu offers a layer's extent or drawing one)."""
        self.extent_widget.setCurrentExtent(extent, crs)
        self.extent_widget.setOutputCrs(crs)
        self.extent_widget.setOutputExtentFromUser(extent, crs)

    def extent(self) -> tuple[QgsRectangle, QgsCoordinateReferenceSystem]:
        return self.extent_widget.outputExtent(), self.extent_widget.outputCrs()

    def set_estimate(self, text: str, ok: bool) -> None:
        """What indexing will cost, or why it cannot start; Index is enabled only when it can."""
        self.estimate_label.setText(text)
        self.estimate_label.setStyleSheet("" if ok else "color: #a40000;")
        self.index_button.setEnabled(ok)
