"""The dock's Concepts tab: find every X by accepting and rejecting results until they are right.

Pick or create a concept, search by text, accept (✓) or reject (✗) result rows or the tiles
selected on the map, refine, ask what to label next, choose a score threshold on the live
histogram, make areas, export training data. Like the rest of the dock it only asks and shows:
requests leave as dataclasses (ui/concept_params.py) and plugin/concepts.py runs them.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from qgis.PyQt.QtCore import QRectF, QSize, Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor, QPainter, QPen, QPixmap, QTextOption
from qgis.PyQt.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                                 QHBoxLayout, QInputDialog, QLabel, QLineEdit, QListWidget, QListWidgetItem,
                                 QMessageBox, QPushButton, QSizePolicy, QSpinBox, QToolButton, QVBoxLayout, QWidget)

from .concept_params import (VIEW_BEST, VIEW_NEXT, ConceptAreasParams, ConceptExportParams, ConceptMarkParams,
                             ConceptSearchParams)

TILE_ROLE = Qt.ItemDataRole.UserRole
MARK_SYMBOLS = {"accepted": "✓ accepted", "rejected": "✗ rejected", "example": "★ example"}
MARK_COLOURS = {"accepted": "#1b7a2f", "rejected": "#b2182b", "example": "#1f5fa8"}
#: Threshold decimals, as scores are printed; values are rounded down so "at or above" keeps the boundary tile.
DECIMALS = 6


def _down(value: float) -> float:
    return math.floor(value * 10 ** DECIMALS) / 10 ** DECIMALS


class ScoreHistogram(QWidget):
    """Every tile's score as a histogram (bar heights on a log scale, so rare high scores show),
    bars at or above the threshold highlighted; click or drag to move the threshold."""

    thresholdPicked = pyqtSignal(float)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.counts: list[int] = []
        self.edges: list[float] = []
        self.threshold: float | None = None
        self.setMinimumHeight(70)
        self.setMaximumHeight(90)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Scores of all tiles; click or drag to set the threshold")

    def set_data(self, counts, edges, threshold: float | None) -> None:
        self.counts = [int(c) for c in counts]
        self.edges = [float(e) for e in edges]
        self.threshold = threshold
        self.update()

    def set_threshold(self, threshold: float) -> None:
        self.threshold = threshold
        self.update()

    def _x(self, value: float, width: float) -> float:
        lo, hi = self.edges[0], self.edges[-1]
        return (value - lo) / (hi - lo) * width if hi > lo else 0.0

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        rect = self.rect().adjusted(1, 1, -1, -14)
        painter.fillRect(self.rect(), self.palette().base())
        if not self.counts:
            painter.drawText(QRectF(self.rect()), "No scores yet", QTextOption(Qt.AlignmentFlag.AlignCenter))
            return
        top = max(math.log1p(c) for c in self.counts) or 1.0
        width = rect.width() / len(self.counts)
        for i, count in enumerate(self.counts):
            if not count:
                continue
            height = rect.height() * math.log1p(count) / top
            above = self.threshold is not None and self.edges[i + 1] > self.threshold
            painter.fillRect(QRectF(rect.left() + i * width, rect.bottom() - height, max(width - 1, 1), height),
                             QColor("#e6550d") if above else QColor("#9e9e9e"))
        painter.setPen(self.palette().text().color())
        axis = QRectF(rect.left(), rect.bottom() + 1, rect.width(), 13)
        painter.drawText(axis, f"{self.edges[0]:.3g}", QTextOption(Qt.AlignmentFlag.AlignLeft))
        painter.drawText(axis, f"{self.edges[-1]:.3g}", QTextOption(Qt.AlignmentFlag.AlignRight))
        if self.threshold is not None:
            x = rect.left() + self._x(self.threshold, rect.width())
            painter.setPen(QPen(QColor("#08306b"), 2))
            painter.drawLine(int(x), rect.top(), int(x), rect.bottom())

    def _pick(self, event) -> None:
        if not self.edges:
            return
        rect = self.rect().adjusted(1, 1, -1, -14)
        point = event.position() if hasattr(event, "position") else event.pos()  # Qt 6 / Qt 5
        fraction = min(max((point.x() - rect.left()) / max(rect.width(), 1), 0.0), 1.0)
        self.thresholdPicked.emit(self.edges[0] + fraction * (self.edges[-1] - self.edges[0]))

    def mousePressEvent(self, event) -> None:  # noqa: N802
        self._pick(event)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        self._pick(event)


class ResultRow(QWidget):
    """One result: thumbnail, rank, score, raster and mark, with ✓ and ✗ buttons."""

    marked = pyqtSignal(int, str)

    def __init__(self, tile_id: int, text: str, tooltip: str, image=None, mark: str = "", parent=None) -> None:
        super().__init__(parent)
        self.tile_id = tile_id
        self.base_text = text
        self.mark = mark
        lay = QHBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.thumb = QLabel()
        self.thumb.setFixedSize(QSize(56, 56))
        if image is not None:
            self.thumb.setPixmap(QPixmap.fromImage(image).scaled(56, 56))
        lay.addWidget(self.thumb)
        self.label = QLabel()
        self.label.setToolTip(tooltip)
        self.label.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        lay.addWidget(self.label)
        self.accept_button = QToolButton()
        self.accept_button.setCheckable(True)
        self.accept_button.setText("✓")
        self.accept_button.setToolTip("Accept: this tile is the concept (click again to unmark)")
        self.accept_button.clicked.connect(lambda: self._click("accepted"))
        lay.addWidget(self.accept_button)
        self.reject_button = QToolButton()
        self.reject_button.setCheckable(True)
        self.reject_button.setText("✗")
        self.reject_button.setToolTip("Reject: this tile is not the concept (click again to unmark)")
        self.reject_button.clicked.connect(lambda: self._click("rejected"))
        lay.addWidget(self.reject_button)
        self.set_mark(mark)

    def _click(self, kind: str) -> None:
        self.marked.emit(self.tile_id, "unmark" if self.mark == kind else kind)

    def set_mark(self, mark: str) -> None:
        self.mark = mark
        note = MARK_SYMBOLS.get(mark, "")
        colour = MARK_COLOURS.get(mark, "")
        self.label.setText(self.base_text + (f"<br><b style='color:{colour}'>{note}</b>" if note else ""))
        self.accept_button.setChecked(mark == "accepted")
        self.reject_button.setChecked(mark == "rejected")


class ConceptsPanel(QWidget):
    conceptChosen = pyqtSignal(str)
    newRequested = pyqtSignal(str)
    renameRequested = pyqtSignal(str, str)
    deleteRequested = pyqtSignal(str)
    searchRequested = pyqtSignal(object)
    markRequested = pyqtSignal(object)
    markSelectedRequested = pyqtSignal(str)
    resultChosen = pyqtSignal(int)
    thresholdChanged = pyqtSignal(float)
    areasRequested = pyqtSignal(object)
    exportRequested = pyqtSignal(object)

    def __init__(self, index_dir: Callable[[], str], parent=None) -> None:
        super().__init__(parent)
        self.index_dir = index_dir
        self.view = VIEW_BEST
        outer = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(QLabel("Concept"))
        self.concept_combo = QComboBox()
        self.concept_combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.concept_combo.setToolTip("The concepts stored in this index")
        self.concept_combo.currentTextChanged.connect(self._concept_changed)
        row.addWidget(self.concept_combo)
        self.new_button = QToolButton()
        self.new_button.setText("New…")
        self.new_button.clicked.connect(lambda: self.request_new())
        row.addWidget(self.new_button)
        self.rename_button = QToolButton()
        self.rename_button.setText("Rename…")
        self.rename_button.clicked.connect(lambda: self.request_rename())
        row.addWidget(self.rename_button)
        self.delete_button = QToolButton()
        self.delete_button.setText("Delete")
        self.delete_button.clicked.connect(lambda: self.request_delete())
        row.addWidget(self.delete_button)
        outer.addLayout(row)

        form = QFormLayout()
        self.query_edit = QLineEdit()
        self.query_edit.setPlaceholderText("What to find everywhere, e.g. solar farms")
        self.query_edit.returnPressed.connect(self.request_search)
        form.addRow("Text", self.query_edit)
        self.negative_edit = QLineEdit()
        self.negative_edit.setPlaceholderText("optional, e.g. greenhouses")
        self.negative_edit.returnPressed.connect(self.request_search)
        form.addRow("But not", self.negative_edit)
        outer.addLayout(form)
        buttons = QHBoxLayout()
        self.search_button = QPushButton("Search")
        self.search_button.setToolTip("Score every tile by the text (and example tiles); marks are not used")
        self.search_button.clicked.connect(self.request_search)
        buttons.addWidget(self.search_button)
        self.refine_button = QPushButton("Refine")
        self.refine_button.setToolTip("Learn from the accepted and rejected tiles and score every tile again")
        self.refine_button.clicked.connect(lambda: self.request_score(True, VIEW_BEST))
        buttons.addWidget(self.refine_button)
        self.next_button = QPushButton("What to label next")
        self.next_button.setToolTip("The tiles the current scorer is least sure about: marking them teaches most")
        self.next_button.clicked.connect(lambda: self.request_score(None, VIEW_NEXT))
        buttons.addWidget(self.next_button)
        buttons.addWidget(QLabel("Show"))
        self.top_k_spin = QSpinBox()
        self.top_k_spin.setRange(1, 1000)
        self.top_k_spin.setValue(20)
        buttons.addWidget(self.top_k_spin)
        outer.addLayout(buttons)
        self.method_label = QLabel("Create a concept: type what to find and press Search.")
        self.method_label.setWordWrap(True)
        self.method_label.setStyleSheet("color: palette(dark);")
        outer.addWidget(self.method_label)

        self.results_list = QListWidget()
        self.results_list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.results_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.results_list.currentItemChanged.connect(self._current_changed)
        outer.addWidget(self.results_list, 1)
        selected = QHBoxLayout()
        selected.addWidget(QLabel("Selected on the map:"))
        self.accept_selected_button = QPushButton("✓ Accept")
        self.accept_selected_button.setToolTip("Accept the tiles selected on the map (in RS-CLIP result layers)")
        self.accept_selected_button.clicked.connect(lambda: self.markSelectedRequested.emit("accepted"))
        selected.addWidget(self.accept_selected_button)
        self.reject_selected_button = QPushButton("✗ Reject")
        self.reject_selected_button.setToolTip("Reject the tiles selected on the map (in RS-CLIP result layers)")
        self.reject_selected_button.clicked.connect(lambda: self.markSelectedRequested.emit("rejected"))
        selected.addWidget(self.reject_selected_button)
        self.example_selected_button = QPushButton("★ Example")
        self.example_selected_button.setToolTip("Use the tiles selected on the map as examples: Search then looks "
                                                "for tiles like them as well as for the text")
        self.example_selected_button.clicked.connect(lambda: self.markSelectedRequested.emit("example"))
        selected.addWidget(self.example_selected_button)
        outer.addLayout(selected)

        self.histogram = ScoreHistogram()
        self.histogram.thresholdPicked.connect(self._picked)
        outer.addWidget(self.histogram)
        threshold = QHBoxLayout()
        threshold.addWidget(QLabel("Threshold"))
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setDecimals(DECIMALS)
        self.threshold_spin.setKeyboardTracking(False)
        self.threshold_spin.valueChanged.connect(self._threshold_changed)
        threshold.addWidget(self.threshold_spin)
        self.count_label = QLabel("")
        self.count_label.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        threshold.addWidget(self.count_label)
        outer.addLayout(threshold)
        out = QHBoxLayout()
        self.areas_button = QPushButton("Make areas…")
        self.areas_button.setToolTip("Dissolve the tiles at or above the threshold into areas (layers + GeoPackage)")
        self.areas_button.clicked.connect(lambda: self.request_areas())
        out.addWidget(self.areas_button)
        self.export_button = QPushButton("Export training data…")
        self.export_button.setToolTip("The accepted and rejected tiles as a GeoPackage (and image chips)")
        self.export_button.clicked.connect(lambda: self.request_export())
        out.addWidget(self.export_button)
        self.chips_check = QCheckBox("with chips")
        self.chips_check.setToolTip("Also write each marked tile as a GeoTIFF chip, in accepted/ and rejected/ folders")
        out.addWidget(self.chips_check)
        outer.addLayout(out)
        self._has_round = False
        self._update_enabled()

    # -- filling ---------------------------------------------------------------------
    def concept(self) -> str:
        return self.concept_combo.currentText().strip()

    def texts(self) -> tuple[str, str]:
        """What to find and what it is not, as typed."""
        return self.query_edit.text().strip(), self.negative_edit.text().strip()

    def set_concepts(self, names: list[str], current: str | None = None) -> None:
        """The index's concepts; ``current`` (or the previous choice) stays chosen when it exists."""
        keep = current if current is not None else self.concept()
        self.concept_combo.blockSignals(True)
        self.concept_combo.clear()
        self.concept_combo.addItems(names)
        if keep in names:
            self.concept_combo.setCurrentText(keep)
        elif not names:
            self.concept_combo.setCurrentIndex(-1)
        self.concept_combo.blockSignals(False)
        self._update_enabled()

    def set_concept_info(self, query: str, negative: str, summary: str) -> None:
        self.query_edit.setText(query)
        self.negative_edit.setText(negative)
        self.method_label.setText(summary)

    def clear_results(self, message: str = "") -> None:
        self.results_list.clear()
        self.histogram.set_data([], [], None)
        self.count_label.setText("")
        self._has_round = False
        if message:
            self.method_label.setText(message)
        self._update_enabled()

    def show_round(self, summary: str, hits, thumbnails: dict, marks: dict, view: str) -> None:
        """The list of best (or least certain) tiles with their thumbnails and marks."""
        self.view = view
        self.method_label.setText(summary)
        self.results_list.blockSignals(True)
        self.results_list.clear()
        for hit in hits:
            tile = hit.tile
            text = f"<b>{hit.rank}.</b> score {hit.score:.3f} · tile {tile.id}<br>{Path(tile.raster).name}"
            row = ResultRow(int(tile.id), text, f"tile {tile.id}, window {tile.window}\n{tile.raster}",
                            thumbnails.get(tile.id), marks.get(int(tile.id), ""))
            row.marked.connect(self._row_marked)
            item = QListWidgetItem()
            item.setData(TILE_ROLE, int(tile.id))
            item.setSizeHint(row.sizeHint())
            self.results_list.addItem(item)
            self.results_list.setItemWidget(item, row)
        self.results_list.blockSignals(False)
        self._has_round = True
        self._update_enabled()

    def row(self, i: int) -> ResultRow:
        return self.results_list.itemWidget(self.results_list.item(i))

    def rows(self) -> list[ResultRow]:
        return [self.row(i) for i in range(self.results_list.count())]

    def update_marks(self, marks: dict) -> None:
        """Show the marks of the listed tiles (tile id → kind; absent = not marked)."""
        for row in self.rows():
            row.set_mark(marks.get(row.tile_id, ""))

    def set_histogram(self, counts, edges, threshold: float, probabilities: bool) -> None:
        lo, hi = _down(float(edges[0])), math.ceil(float(edges[-1]) * 10 ** DECIMALS) / 10 ** DECIMALS
        self.threshold_spin.blockSignals(True)
        self.threshold_spin.setRange(lo, hi)
        self.threshold_spin.setSingleStep(max((hi - lo) / 100.0, 10 ** -DECIMALS))
        self.threshold_spin.setValue(_down(threshold))
        self.threshold_spin.blockSignals(False)
        self.threshold_spin.setToolTip("Probability of the concept (0–1)" if probabilities else "Cosine similarity")
        self.histogram.set_data(counts, edges, threshold)

    def set_count(self, above: int, total: int) -> None:
        self.count_label.setText(f"{above:,} of {total:,} tiles at or above")

    def threshold(self) -> float:
        return float(self.threshold_spin.value())

    def set_threshold(self, value: float) -> None:
        """Move the threshold as the user would (the count follows)."""
        self.threshold_spin.setValue(_down(value))

    def set_busy(self, busy: bool) -> None:
        for w in (self.search_button, self.refine_button, self.next_button, self.areas_button, self.export_button,
                  self.new_button, self.rename_button, self.delete_button):
            w.setEnabled(not busy)
        if not busy:
            self._update_enabled()

    def _update_enabled(self) -> None:
        has = bool(self.concept())
        for w in (self.rename_button, self.delete_button, self.refine_button, self.next_button,
                  self.export_button, self.accept_selected_button, self.reject_selected_button,
                  self.example_selected_button):
            w.setEnabled(has)
        self.areas_button.setEnabled(has and self._has_round)
        self.threshold_spin.setEnabled(self._has_round)

    # -- requests --------------------------------------------------------------------
    def request_search(self) -> None:
        """Search by text: the concept chosen, or a new one named after the text."""
        query = " ".join(self.query_edit.text().split())
        name = self.concept() or query
        self.searchRequested.emit(ConceptSearchParams(self.index_dir(), name, query, self.negative_edit.text().strip(),
                                                      False, VIEW_BEST, self.top_k_spin.value()))

    def request_score(self, use_marks: bool | None, view: str) -> None:
        self.searchRequested.emit(ConceptSearchParams(self.index_dir(), self.concept(), self.query_edit.text().strip(),
                                                      self.negative_edit.text().strip(), use_marks, view,
                                                      self.top_k_spin.value()))

    def request_new(self, name: str | None = None) -> None:
        if name is None:
            name, ok = QInputDialog.getText(self, "New concept", "Name of the concept (e.g. solar farms):",
                                            QLineEdit.EchoMode.Normal, self.query_edit.text().strip())
            if not ok:
                return
        self.newRequested.emit(name)

    def request_rename(self, new_name: str | None = None) -> None:
        old = self.concept()
        if new_name is None:
            new_name, ok = QInputDialog.getText(self, "Rename concept", f"New name for '{old}':",
                                                QLineEdit.EchoMode.Normal, old)
            if not ok:
                return
        self.renameRequested.emit(old, new_name)

    def request_delete(self, confirm: bool = True) -> None:
        name = self.concept()
        if confirm and QMessageBox.question(
                self, "Delete concept", f"Delete the concept '{name}' and its marks? The index's tiles stay.",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                QMessageBox.StandardButton.No) != QMessageBox.StandardButton.Yes:
            return
        self.deleteRequested.emit(name)

    def request_areas(self, path: str | None = None) -> None:
        if path is None:
            path = self._ask_gpkg("Save the areas", f"{self.concept()}_areas.gpkg")
            if not path:
                return
        self.areasRequested.emit(ConceptAreasParams(self.index_dir(), self.concept(), self.threshold(), path))

    def request_export(self, path: str | None = None, chips_dir: str | None = None) -> None:
        if path is None:
            path = self._ask_gpkg("Save the training tiles", f"{self.concept()}_training.gpkg")
            if not path:
                return
        if chips_dir is None:
            chips_dir = ""
            if self.chips_check.isChecked():
                chips_dir = QFileDialog.getExistingDirectory(self, "Folder for the image chips", str(Path(path).parent))
                if not chips_dir:
                    return
        self.exportRequested.emit(ConceptExportParams(self.index_dir(), self.concept(), path, chips_dir))

    def _ask_gpkg(self, title: str, name: str) -> str:
        start = str(Path(self.index_dir() or Path.home()).parent / name.replace("/", "_"))
        path, _ = QFileDialog.getSaveFileName(self, title, start, "GeoPackage (*.gpkg)")
        if path and not path.lower().endswith(".gpkg"):
            path += ".gpkg"
        return path

    def _row_marked(self, tile_id: int, kind: str) -> None:
        self.markRequested.emit(ConceptMarkParams(self.index_dir(), self.concept(), [tile_id], kind))

    def _concept_changed(self, name: str) -> None:
        self._update_enabled()
        if name:
            self.conceptChosen.emit(name)

    def _current_changed(self, current, _previous) -> None:
        if current is not None:
            self.resultChosen.emit(int(current.data(TILE_ROLE)))

    def _picked(self, value: float) -> None:
        self.threshold_spin.setValue(_down(value))

    def _threshold_changed(self, value: float) -> None:
        self.histogram.set_threshold(value)
        self.thresholdChanged.emit(float(value))
