"""The search dock: query and results, zero-shot labelling, and indexing of the project's rasters.

It only gathers what the user asks for and shows what it is given: requests leave as
parameter dataclasses through signals, and the controller (plugin/controller.py) runs them and
remembers the choices in QGIS's settings; the dock neither reads nor writes settings itself
(``set_choices`` fills it). Other parts of the plugin use its methods (``focus_search_within``,
``request_similar``…), never its widgets.
"""
from __future__ import annotations

from pathlib import Path

from qgis.PyQt.QtCore import QSize, Qt, pyqtSignal
from qgis.PyQt.QtGui import QIcon, QPixmap
from qgis.PyQt.QtWidgets import (QComboBox, QDockWidget, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout,
                                 QLabel, QLineEdit, QListWidget, QListWidgetItem, QPlainTextEdit, QPushButton,
                                 QSpinBox, QStackedWidget, QTabWidget, QToolButton, QVBoxLayout, QWidget)

from .params import DockChoices, IndexParams, LabelParams, SearchParams, SimilarParams
from .progress_bar import JobProgressBar

CUSTOM_MODEL = "Custom checkpoint…"
CUSTOM_CLASSES = "Custom classes…"
TILE_ROLE = Qt.ItemDataRole.UserRole
PATH_ROLE = Qt.ItemDataRole.UserRole + 1


class SearchDock(QDockWidget):
    searchRequested = pyqtSignal(object)
    similarRequested = pyqtSignal(object)
    labelRequested = pyqtSignal(object)
    indexRequested = pyqtSignal(object)
    cancelRequested = pyqtSignal()
    resultChosen = pyqtSignal(int)
    indexFolderChanged = pyqtSignal(str)
    saveRequested = pyqtSignal(str)
    installRequested = pyqtSignal()
    diagnosticsRequested = pyqtSignal()
    webMapRequested = pyqtSignal()
    stacRequested = pyqtSignal()
    urlLayerRequested = pyqtSignal(str)
    heatmapRequested = pyqtSignal(int)

    def __init__(self, parent=None) -> None:
        super().__init__("RS-CLIP Search", parent)
        self.setObjectName("RsClipSearchDock")
        self._restrict: tuple[str, str] | None = None
        self._class_sets: dict[str, list[str]] = {}
        self._model_details: dict[str, tuple[str, str]] = {}
        self._own_templates = "the model's own prompt templates"
        self._unlocked: tuple | None = None  # the Index tab's own values while an index's settings are shown
        self._results_dir = ""
        body = QWidget()
        outer = QVBoxLayout(body)
        self.missing_label = QLabel()
        self.missing_label.setWordWrap(True)
        self.missing_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.missing_label.setStyleSheet("color: #a40000;")
        self.missing_label.hide()
        outer.addWidget(self.missing_label)
        self.install_button = QPushButton("Install dependencies…")
        self.install_button.setToolTip("Install torch, open_clip, faiss and shapely for QGIS's Python, into a folder "
                                       "of your QGIS profile (from the internet or an offline bundle)")
        self.install_button.clicked.connect(self.installRequested.emit)
        self.install_button.hide()
        outer.addWidget(self.install_button)

        row = QHBoxLayout()
        row.addWidget(QLabel("Index"))
        self.index_edit = QLineEdit()
        self.index_edit.setPlaceholderText("index folder (next to the project by default)")
        self.index_edit.editingFinished.connect(lambda: self.indexFolderChanged.emit(self.index_dir()))
        row.addWidget(self.index_edit)
        self.index_browse = QToolButton()
        self.index_browse.setText("…")
        self.index_browse.clicked.connect(self._browse_index)
        row.addWidget(self.index_browse)
        outer.addLayout(row)
        self.status_label = QLabel("No index yet.")
        self.status_label.setWordWrap(True)
        outer.addWidget(self.status_label)

        self.tabs = QTabWidget()
        self.tabs.addTab(self._search_tab(), "Search")
        self.tabs.addTab(self._label_tab(), "Label")
        self.tabs.addTab(self._index_tab(), "Index")
        from .concepts_panel import ConceptsPanel

        self.concepts_panel = ConceptsPanel(self.index_dir)
        self.tabs.addTab(self.concepts_panel, "Concepts")
        from .change_panel import ChangePanel

        self.change_panel = ChangePanel(self.index_dir)
        self.tabs.addTab(self.change_panel, "Change")
        outer.addWidget(self.tabs)
        # while a job runs: a bar as wide as the dock (percentage and the job's message) and Cancel
        busy = QHBoxLayout()
        self.progress = JobProgressBar()
        self.progress.hide()
        busy.addWidget(self.progress, 1)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running job; an index keeps the tiles embedded so far")
        self.cancel_button.hide()
        self.cancel_button.clicked.connect(self.cancelRequested.emit)
        busy.addWidget(self.cancel_button)
        outer.addLayout(busy)
        tools = QHBoxLayout()
        tools.addStretch(1)
        self.diagnostics_button = QToolButton()
        self.diagnostics_button.setText("Diagnostics")
        self.diagnostics_button.setToolTip("Copy a report of versions, device, folders and last errors to the "
                                           "clipboard, for a bug report")
        self.diagnostics_button.clicked.connect(self.diagnosticsRequested.emit)
        tools.addWidget(self.diagnostics_button)
        outer.addLayout(tools)
        self.setWidget(body)
        self.set_choices(DockChoices())

    # -- building ------------------------------------------------------------------
    def _search_tab(self) -> QWidget:
        tab = QWidget()
        lay = QVBoxLayout(tab)
        row = QHBoxLayout()
        self.query_edit = QLineEdit()
        self.query_edit.setPlaceholderText("Describe what to find, e.g. airport runway, flooded fields")
        self.query_edit.returnPressed.connect(self.request_search)
        row.addWidget(self.query_edit)
        self.search_button = QPushButton("Search")
        self.search_button.clicked.connect(self.request_search)
        row.addWidget(self.search_button)
        lay.addLayout(row)
        opts = QHBoxLayout()
        opts.addWidget(QLabel("Top"))
        self.top_k_spin = QSpinBox()
        self.top_k_spin.setRange(1, 100000)
        opts.addWidget(self.top_k_spin)
        opts.addWidget(QLabel("Min. score"))
        self.min_score_spin = QDoubleSpinBox()
        self.min_score_spin.setRange(-1.0, 1.0)
        self.min_score_spin.setSingleStep(0.01)
        self.min_score_spin.setDecimals(3)
        self.min_score_spin.setSpecialValueText("none")
        self.min_score_spin.setMinimum(-1.0)
        opts.addWidget(self.min_score_spin)
        self.scale_label = QLabel("Scale")
        opts.addWidget(self.scale_label)
        self.scale_combo = QComboBox()
        self.scale_combo.setToolTip("All scales: hits rank across tile sizes and a hit that a better one covers is "
                                    "left out; or only the tiles of one size")
        opts.addWidget(self.scale_combo)
        lay.addLayout(opts)
        restrict = QHBoxLayout()
        self.restrict_label = QLabel()
        restrict.addWidget(self.restrict_label)
        self.clear_restrict = QToolButton()
        self.clear_restrict.setText("All rasters")
        self.clear_restrict.clicked.connect(lambda: self.set_restriction(None, None))
        restrict.addWidget(self.clear_restrict)
        lay.addLayout(restrict)
        self.set_restriction(None, None)
        self.results_caption = QLabel()  # what the list holds: "10 tiles for “farm fields”", "… similar to …"
        self.results_caption.setWordWrap(True)
        self.results_caption.hide()
        lay.addWidget(self.results_caption)
        self.results_list = QListWidget()
        self.results_list.setIconSize(QSize(64, 64))
        self.results_list.setUniformItemSizes(True)
        self.results_list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.results_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.results_list.currentItemChanged.connect(self._current_changed)
        lay.addWidget(self.results_list)
        buttons = QHBoxLayout()
        self.similar_button = QPushButton("Find similar to selected result")
        self.similar_button.clicked.connect(lambda: self.request_similar())
        buttons.addWidget(self.similar_button)
        self.save_button = QPushButton("Save as GeoPackage…")
        self.save_button.setToolTip("Write the latest search or labelling result to a GeoPackage")
        self.save_button.clicked.connect(lambda: self.request_save())
        buttons.addWidget(self.save_button)
        lay.addLayout(buttons)
        self.heatmap_button = QPushButton("Where in the tile? (heat map)")
        self.heatmap_button.setToolTip("Show how much each part of the selected result matches the search text, as a "
                                       "semi-transparent layer over the tile (vision-transformer models)")
        self.heatmap_button.clicked.connect(self.request_heatmap)
        lay.addWidget(self.heatmap_button)
        self.set_scales([])
        return tab

    def _label_tab(self) -> QWidget:
        tab = QWidget()
        outer = QVBoxLayout(tab)
        form = QFormLayout()
        outer.addLayout(form)
        outer.addStretch(1)
        self.class_set_combo = QComboBox()
        self.class_set_combo.currentTextChanged.connect(self._class_set_changed)
        form.addRow("Class set", self.class_set_combo)
        # a shipped set shows its classes; "Custom classes…" shows an editor for the user's own
        self.classes_stack = QStackedWidget()
        self.classes_preview = QPlainTextEdit()
        self.classes_preview.setReadOnly(True)
        self.classes_stack.addWidget(self.classes_preview)
        self.classes_edit = QPlainTextEdit()
        self.classes_edit.setPlaceholderText("water, forest, cropland, built-up area (comma or one per line)")
        self.classes_stack.addWidget(self.classes_edit)
        self.classes_stack.setMaximumHeight(120)
        form.addRow("Classes", self.classes_stack)
        self.templates_edit = QLineEdit()
        self.templates_edit.setPlaceholderText("default: a satellite image of {}.; an aerial photograph of {}.; …")
        form.addRow("Prompt templates", self.templates_edit)
        self.templates_note = QLabel()  # which templates the next labelling uses
        self.templates_note.setWordWrap(True)
        self.templates_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.templates_edit.textChanged.connect(self._update_templates_note)
        form.addRow("", self.templates_note)
        self._update_templates_note()
        self.label_button = QPushButton("Label every tile")
        self.label_button.clicked.connect(self.request_label)
        form.addRow(self.label_button)
        return tab

    def _index_tab(self) -> QWidget:
        tab = QWidget()
        form = QFormLayout(tab)
        self.rasters_list = QListWidget()
        form.addRow("Rasters", self.rasters_list)
        self.model_combo = QComboBox()
        self.model_combo.currentTextChanged.connect(self._model_changed)
        form.addRow("Model", self.model_combo)
        self.model_details = QLabel()  # config, activation, licence and attribution of the chosen model
        self.model_details.setWordWrap(True)
        self.model_details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow("", self.model_details)
        self.arch_edit = QLineEdit()
        self.arch_edit.setPlaceholderText("open_clip config (ViT-B-32, ViT-B-32-quickgelu) or model-config JSON")
        form.addRow("Architecture", self.arch_edit)
        ckpt = QHBoxLayout()
        self.checkpoint_edit = QLineEdit()
        ckpt.addWidget(self.checkpoint_edit)
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse_checkpoint)
        ckpt.addWidget(browse)
        form.addRow("Checkpoint", ckpt)
        size = QHBoxLayout()
        self.tile_size_spin = QDoubleSpinBox()
        self.tile_size_spin.setRange(8, 100000)
        self.tile_size_spin.setDecimals(0)
        size.addWidget(self.tile_size_spin)
        self.units_combo = QComboBox()
        self.units_combo.addItem("pixels", "px")
        self.units_combo.addItem("metres", "m")
        size.addWidget(self.units_combo)
        form.addRow("Tile size", size)
        self.overlap_spin = QDoubleSpinBox()
        self.overlap_spin.setRange(0.0, 0.9)
        self.overlap_spin.setSingleStep(0.05)
        form.addRow("Overlap", self.overlap_spin)
        self.scales_edit = QLineEdit()
        self.scales_edit.setPlaceholderText("1 (or e.g. 1,2,4: also tiles 2 and 4 times as large)")
        self.scales_edit.setToolTip("Tile sizes as multiples of the tile size, each embedded at the model's input "
                                    "size; added to an existing index, only the new sizes are embedded")
        form.addRow("Scales", self.scales_edit)
        self.index_settings_note = QLabel()  # why the fields above are locked (an existing index keeps its own)
        self.index_settings_note.setWordWrap(True)
        self.index_settings_note.hide()
        form.addRow(self.index_settings_note)
        self.index_button = QPushButton("Index checked rasters")
        self.index_button.clicked.connect(lambda: self.request_index())
        form.addRow(self.index_button)
        form.addRow(self._remote_rows())
        return tab

    def _remote_rows(self) -> QWidget:
        """Imagery not on disk: a COG by URL (added as a layer, then indexed like a file) and web map layers."""
        box = QWidget()
        lay = QVBoxLayout(box)
        lay.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.url_edit = QLineEdit()
        self.url_edit.setPlaceholderText("https://…/image.tif (cloud-optimised GeoTIFF)")
        self.url_edit.returnPressed.connect(self._request_url)
        row.addWidget(self.url_edit)
        add = QToolButton()
        add.setText("Add")
        add.setToolTip("Add the raster at this URL to the project; only the parts indexed are downloaded")
        add.clicked.connect(self._request_url)
        row.addWidget(add)
        lay.addLayout(row)
        self.web_button = QPushButton("Index a web map layer (XYZ, WMS)…")
        self.web_button.setToolTip("Index an XYZ or WMS layer of the project over an extent, with the number of "
                                   "requests shown first")
        self.web_button.clicked.connect(self.webMapRequested.emit)
        lay.addWidget(self.web_button)
        self.stac_button = QPushButton("Index from a STAC catalogue…")
        self.stac_button.setToolTip("Search a STAC API or catalogue for imagery of the map's extent and index "
                                    "the cloud-optimised GeoTIFFs found; their dates are kept")
        self.stac_button.clicked.connect(self.stacRequested.emit)
        lay.addWidget(self.stac_button)
        return box

    def _request_url(self) -> None:
        url = self.url_edit.text().strip()
        if url:
            self.urlLayerRequested.emit(url)
            self.url_edit.clear()

    # -- filling ---------------------------------------------------------------------
    def set_choices(self, choices: DockChoices) -> None:
        """The fields as the user left them (the controller reads them from QGIS's settings)."""
        self.top_k_spin.setValue(choices.top_k)
        self.min_score_spin.setValue(choices.min_score)
        self.classes_edit.setPlainText(choices.custom_classes)
        self.templates_edit.setText(choices.templates)
        self.arch_edit.setText(choices.custom_arch)
        self.checkpoint_edit.setText(choices.custom_checkpoint)
        self.tile_size_spin.setValue(choices.tile_size)
        self.units_combo.setCurrentIndex(max(0, self.units_combo.findData(choices.tile_units)))
        self.overlap_spin.setValue(choices.overlap)
        self._results_dir = choices.results_dir

    def set_results_folder(self, folder: str) -> None:
        """Where the next "Save as GeoPackage…" starts."""
        self._results_dir = folder

    def set_models(self, names: list[str], current: str, details: dict[str, tuple[str, str]] | None = None) -> None:
        """Registry model names; ``details``: name → (one line of config, activation, licence and attribution;
        the full text for the tooltip)."""
        self._model_details = dict(details or {})
        self.model_combo.clear()
        self.model_combo.addItems([*names, CUSTOM_MODEL])
        for i, name in enumerate(names):
            if name in self._model_details:
                self.model_combo.setItemData(i, self._model_details[name][1], Qt.ItemDataRole.ToolTipRole)
        self.model_combo.setCurrentText(current if current in names or current == CUSTOM_MODEL else names[0])
        self._model_changed(self.model_combo.currentText())

    def lock_index_settings(self, reason: str | None, model: str = "", arch: str = "", checkpoint: str = "",
                            tiling: dict | None = None, details: str = "") -> None:
        """Show an existing index's own model (a registry name, else ``arch`` + ``checkpoint``) and ``tiling``
        in the Index tab, disabled, with ``reason`` under them (``details`` as its tooltip); None gives the fields
        back with their values."""
        fields = (self.model_combo, self.arch_edit, self.checkpoint_edit, self.tile_size_spin, self.units_combo,
                  self.overlap_spin)
        if reason is None:
            if self._unlocked is not None:
                text, arch_text, checkpoint_text, size, units, overlap = self._unlocked
                self._unlocked = None
                self.model_combo.setCurrentText(text)
                self.arch_edit.setText(arch_text)
                self.checkpoint_edit.setText(checkpoint_text)
                self.tile_size_spin.setValue(size)
                self.units_combo.setCurrentIndex(max(0, self.units_combo.findData(units)))
                self.overlap_spin.setValue(overlap)
            for widget in fields:
                widget.setEnabled(True)
                widget.setToolTip("")
            self._model_changed(self.model_combo.currentText())
            self.index_settings_note.hide()
            return
        if self._unlocked is None:
            self._unlocked = (self.model_combo.currentText(), self.arch_edit.text(), self.checkpoint_edit.text(),
                              self.tile_size_spin.value(), self.units_combo.currentData(), self.overlap_spin.value())
        tiling = tiling or {}
        self.model_combo.setCurrentText(model or CUSTOM_MODEL)
        if not model:
            self.arch_edit.setText(arch)
            self.checkpoint_edit.setText(checkpoint)
        self.tile_size_spin.setValue(float(tiling.get("size", self.tile_size_spin.value())))
        self.units_combo.setCurrentIndex(max(0, self.units_combo.findData(tiling.get("units", "px"))))
        self.overlap_spin.setValue(float(tiling.get("overlap") or 0.0))
        for widget in fields:
            widget.setEnabled(False)
            widget.setToolTip(reason)
        self.index_settings_note.setText(reason)
        self.index_settings_note.setToolTip(details)
        self.index_settings_note.show()

    def set_class_sets(self, sets: dict[str, list[str]], current: str) -> None:
        """Shipped class sets (name → classes) to pick from, plus the user's own list."""
        self._class_sets = dict(sets)
        self.class_set_combo.blockSignals(True)
        self.class_set_combo.clear()
        self.class_set_combo.addItems([*self._class_sets, CUSTOM_CLASSES])
        self.class_set_combo.setCurrentText(current if current in self._class_sets else CUSTOM_CLASSES)
        self.class_set_combo.blockSignals(False)
        self._class_set_changed(self.class_set_combo.currentText())

    def set_rasters(self, rasters: list[tuple[str, str]]) -> None:
        """(layer name, file path) of the project's raster layers: new ones checked, others as the user left them."""
        before = {self.rasters_list.item(i).data(PATH_ROLE): self.rasters_list.item(i).checkState()
                  for i in range(self.rasters_list.count())}
        self.rasters_list.clear()
        for name, path in rasters:
            item = QListWidgetItem(name)
            item.setToolTip(path)
            item.setData(PATH_ROLE, path)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(before.get(path, Qt.CheckState.Checked))
            self.rasters_list.addItem(item)

    def set_index_dir(self, folder: str) -> None:
        self.index_edit.setText(folder)

    def index_dir(self) -> str:
        return self.index_edit.text().strip()

    def set_status(self, text: str) -> None:
        self.status_label.setText(text)

    def set_model_templates(self, description: str, templates_tooltip: str) -> None:
        """The index model's own prompt templates, used unless the user types others (Label tab, Search tooltip)."""
        self._own_templates = description
        self.templates_edit.setPlaceholderText(f"default: {description}")
        self.templates_edit.setToolTip(templates_tooltip)
        self.query_edit.setToolTip(f"Searches use {description}.")
        self._update_templates_note()

    def set_missing(self, text: str | None) -> None:
        """Show what is missing and disable the tabs, or hide the note."""
        self.missing_label.setText(text or "")
        self.missing_label.setVisible(bool(text))
        self.install_button.setVisible(bool(text))
        self.tabs.setEnabled(not text)

    def set_restriction(self, name: str | None, path: str | None) -> None:
        self._restrict = (name, path) if path else None
        self.restrict_label.setText(f"Within: {name}" if path else "Within: all indexed rasters")
        self.clear_restrict.setVisible(bool(path))

    def focus_search_within(self, name: str, path: str) -> None:
        """The layer action *Search within this layer…*: the Search tab, restricted to that raster, ready to type."""
        self.set_restriction(name, path)
        self.tabs.setCurrentIndex(0)
        self.query_edit.setFocus()
        self.query_edit.selectAll()

    def set_busy(self, busy: bool) -> None:
        """While a job runs: no second job from the dock, a progress bar and a Cancel button."""
        for button in (self.search_button, self.label_button, self.index_button, self.similar_button,
                       self.save_button, self.web_button, self.stac_button, self.heatmap_button):
            button.setEnabled(not busy)
        self.concepts_panel.set_busy(busy)
        self.change_panel.set_busy(busy)
        self.cancel_button.setVisible(busy)
        self.progress.setVisible(busy)
        if busy:
            self.progress.set_progress(0)

    def set_progress(self, percent: float, message: str = "") -> None:
        self.progress.set_progress(percent, message)

    def show_results(self, hits, thumbnails: dict, caption: str = "") -> None:
        """Fill the list: rank, score, raster name and a thumbnail per tile, under ``caption`` (what they are)."""
        self.results_caption.setText(caption)
        self.results_caption.setVisible(bool(caption))
        self.results_list.blockSignals(True)
        self.results_list.clear()
        for hit in hits:
            scale = f"  ×{hit.scale}" if getattr(hit, "scale", None) is not None else ""
            item = QListWidgetItem(f"{hit.rank}.  score {hit.score:.3f}{scale}\n{Path(hit.tile.raster).name}")
            item.setToolTip(f"tile {hit.tile.id}, window {hit.tile.window}\n{hit.tile.raster}")
            item.setData(TILE_ROLE, int(hit.tile.id))
            image = thumbnails.get(hit.tile.id)
            if image is not None:
                item.setIcon(QIcon(QPixmap.fromImage(image)))
            self.results_list.addItem(item)
        self.results_list.blockSignals(False)

    # -- requests --------------------------------------------------------------------
    def request_search(self) -> None:
        self.searchRequested.emit(SearchParams(
            self.index_dir(), self.query_edit.text(), self.top_k_spin.value(), self._min_score(),
            [self._restrict[1]] if self._restrict else [], self.scale()))

    def request_similar(self, tile_ids: list[int] | None = None, index_dir: str | None = None) -> None:
        """Tiles like the given ones (of the index ``index_dir``, e.g. a result layer's), else like the selected
        result, with the Search tab's Top and Min. score (and scale)."""
        if tile_ids is None:
            item = self.results_list.currentItem()
            tile_ids = [int(item.data(TILE_ROLE))] if item is not None else []
        self.similarRequested.emit(SimilarParams(index_dir or self.index_dir(), list(tile_ids),
                                                 self.top_k_spin.value(), self._min_score(), self.scale()))

    def request_heatmap(self) -> None:
        """A heat map of the selected result (the controller says what to do when none is selected)."""
        item = self.results_list.currentItem()
        self.heatmapRequested.emit(int(item.data(TILE_ROLE)) if item is not None else -1)

    def set_scales(self, scales: list[tuple[str, int | None]]) -> None:
        """(label, scale) choices of an index with several scales ("all scales" first); hidden otherwise."""
        current = self.scale_combo.currentData()
        self.scale_combo.clear()
        for label, value in scales:
            self.scale_combo.addItem(label, value)
        self.scale_combo.setCurrentIndex(max(0, self.scale_combo.findData(current)))
        for widget in (self.scale_combo, self.scale_label):
            widget.setVisible(len(scales) > 2)

    def scale(self) -> int | None:
        """The scale chosen (None: all scales)."""
        return self.scale_combo.currentData() if self.scale_combo.count() > 2 else None

    def request_save(self, path: str | None = None) -> None:
        """Ask where to save (unless given) and emit the GeoPackage path."""
        if path is None:
            start = str(Path(self._results_dir or Path.home()) / "rsclip_results.gpkg")
            # no "replace the file?" question: results become a layer of the file (asked about if it exists)
            path, _ = QFileDialog.getSaveFileName(self, "Save results", start, "GeoPackage (*.gpkg)",
                                                  options=QFileDialog.Option.DontConfirmOverwrite)
            if not path:
                return
            if not path.lower().endswith(".gpkg"):
                path += ".gpkg"
        self.saveRequested.emit(path)

    def confirm(self, question: str) -> bool:
        """Ask a yes/no question (e.g. replace a GeoPackage layer); No is the default."""
        from qgis.PyQt.QtWidgets import QMessageBox

        answer = QMessageBox.question(self, "RS-CLIP Search", question,
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def request_label(self) -> None:
        custom = self.class_set_combo.currentText() == CUSTOM_CLASSES
        self.labelRequested.emit(LabelParams(self.index_dir(), "" if custom else self.class_set_combo.currentText(),
                                             self.classes_edit.toPlainText(), self.templates_edit.text()))

    def request_index(self, rasters: list[str] | None = None) -> None:
        """Index the given raster files, or the checked ones of the list, with the tab's settings."""
        self.indexRequested.emit(self.index_params(rasters))

    def index_params(self, rasters: list[str] | None = None) -> IndexParams:
        """The Index tab's settings for the given rasters, or the checked ones of the list."""
        if rasters is None:
            rasters = [self.rasters_list.item(i).data(PATH_ROLE) for i in range(self.rasters_list.count())
                       if self.rasters_list.item(i).checkState() == Qt.CheckState.Checked]
        custom = self.model_combo.currentText() == CUSTOM_MODEL
        return IndexParams(
            self.index_dir(), rasters, None if custom else self.model_combo.currentText(),
            self.arch_edit.text().strip() if custom else None, self.checkpoint_edit.text().strip() if custom else None,
            self.tile_size_spin.value(), self.units_combo.currentData(), self.overlap_spin.value(),
            scales=self.scales_edit.text().strip())

    def _min_score(self) -> float | None:
        value = self.min_score_spin.value()
        return None if value <= self.min_score_spin.minimum() else value

    def _current_changed(self, current, _previous) -> None:
        if current is not None:
            self.resultChosen.emit(int(current.data(TILE_ROLE)))

    def _class_set_changed(self, name: str) -> None:
        classes = self._class_sets.get(name)
        if classes is None:
            self.classes_stack.setCurrentWidget(self.classes_edit)
            return
        self.classes_preview.setPlainText(f"{len(classes)} classes: " + ", ".join(classes))
        self.classes_stack.setCurrentWidget(self.classes_preview)

    def _model_changed(self, text: str) -> None:
        custom = text == CUSTOM_MODEL
        self.arch_edit.setEnabled(custom)
        self.checkpoint_edit.setEnabled(custom)
        short, full = self._model_details.get(text, ("", ""))
        if custom:
            short = full = ("Any open_clip config, e.g. ViT-B-32; use the -quickgelu config (ViT-B-32-quickgelu) "
                            "for checkpoints trained from OpenAI's CLIP weights.")
        self.model_details.setText(short)
        self.model_details.setToolTip(full)

    def _update_templates_note(self, *_args) -> None:
        typed = bool(self.templates_edit.text().strip())
        self.templates_note.setText("In use: your templates above (they replace the model's own)." if typed
                                    else f"In use: {self._own_templates}")

    def _browse_index(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Index folder", self.index_dir())
        if folder:
            self.index_edit.setText(folder)
            self.indexFolderChanged.emit(folder)

    def _browse_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Model checkpoint", "",
                                              "Checkpoints (*.pt *.pth *.bin);;All files (*)")
        if path:
            self.checkpoint_edit.setText(path)
