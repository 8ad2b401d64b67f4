"""The "Install dependencies" dialog: the plan, the torch build, internet or bundle, pip's output, cancel."""
from __future__ import annotations

from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QFontDatabase
from qgis.PyQt.QtWidgets import (QButtonGroup, QComboBox, QDialog, QFileDialog, QGridLayout, QHBoxLayout, QLabel,
                                 QLineEdit, QPlainTextEdit, QPushButton, QRadioButton, QToolButton, QVBoxLayout)

from .params import InstallParams
from .progress_bar import JobProgressBar

VARIANT_CHOICES = (("auto", "Automatic"), ("cpu", "CPU only (smaller)"), ("cuda", "NVIDIA GPU (CUDA)"))


class InstallDialog(QDialog):
    """Emits ``planRequested`` when a choice changes and ``installRequested`` on Install; shows what it is told."""

    planRequested = pyqtSignal(object)
    installRequested = pyqtSignal(object)
    cancelRequested = pyqtSignal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("RS-CLIP Search: install dependencies")
        self.resize(760, 560)
        layout = QVBoxLayout(self)
        grid = QGridLayout()
        grid.addWidget(QLabel("Torch build"), 0, 0)
        self.variant_combo = QComboBox()
        for key, text in VARIANT_CHOICES:
            self.variant_combo.addItem(text, key)
        self.variant_combo.currentIndexChanged.connect(self._changed)
        grid.addWidget(self.variant_combo, 0, 1, 1, 2)
        self.internet_radio = QRadioButton("From the internet (PyPI)")
        self.bundle_radio = QRadioButton("From an offline bundle")
        group = QButtonGroup(self)
        group.addButton(self.internet_radio)
        group.addButton(self.bundle_radio)
        self.internet_radio.setChecked(True)
        self.internet_radio.toggled.connect(self._changed)
        grid.addWidget(self.internet_radio, 1, 0, 1, 3)
        grid.addWidget(self.bundle_radio, 2, 0)
        self.bundle_edit = QLineEdit()
        self.bundle_edit.setPlaceholderText("bundle folder or .zip made with make bundle")
        self.bundle_edit.editingFinished.connect(self._changed)
        grid.addWidget(self.bundle_edit, 2, 1)
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse)
        grid.addWidget(browse, 2, 2)
        layout.addLayout(grid)
        self.plan_view = QLabel()
        self.plan_view.setWordWrap(True)
        self.plan_view.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.plan_view)
        self.progress = JobProgressBar()
        layout.addWidget(self.progress)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.log_view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        layout.addWidget(self.log_view, 1)
        self.result_label = QLabel()
        self.result_label.setWordWrap(True)
        layout.addWidget(self.result_label)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.install_button = QPushButton("Install")
        self.install_button.clicked.connect(lambda: self.installRequested.emit(self.params()))
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self._cancel)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close)
        for button in (self.install_button, self.cancel_button, self.close_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.set_running(False)

    def params(self) -> InstallParams:
        bundle = self.bundle_edit.text().strip() if self.bundle_radio.isChecked() else ""
        return InstallParams(variant=self.variant_combo.currentData(), bundle=bundle)

    def set_choices(self, variant: str, bundle: str, detected: str) -> None:
        """Restore the last choices; ``detected`` names what Automatic means on this computer."""
        self.variant_combo.blockSignals(True)
        self.variant_combo.setItemText(0, f"Automatic ({detected})")
        self.variant_combo.setCurrentIndex(max(0, self.variant_combo.findData(variant)))
        self.variant_combo.blockSignals(False)
        self.bundle_edit.setText(bundle)
        self.bundle_radio.setChecked(bool(bundle))

    def set_plan(self, text: str, ok: bool) -> None:
        """The plan (or why there is none); Install is offered only for a plan that can run."""
        self.plan_view.setText(text)
        self.plan_view.setStyleSheet("" if ok else "color: #a40000;")
        self.install_button.setEnabled(ok)

    def append_log(self, line: str) -> None:
        self.log_view.appendPlainText(line)

    def set_progress(self, percent: float, message: str = "") -> None:
        self.progress.set_progress(percent, message)

    def set_running(self, running: bool) -> None:
        for widget in (self.variant_combo, self.internet_radio, self.bundle_radio, self.bundle_edit,
                       self.install_button, self.close_button):
            widget.setEnabled(not running)
        self.cancel_button.setVisible(running)
        self.cancel_button.setEnabled(running)
        if running:
            self.result_label.clear()
            self.progress.set_progress(0)

    def set_result(self, text: str, ok: bool) -> None:
        self.set_running(False)
        self.result_label.setText(text)
        self.result_label.setStyleSheet("color: #0b6e00;" if ok else "color: #a40000;")
        if ok:
            self.progress.set_progress(100)

    def _changed(self, *_args) -> None:
        self.planRequested.emit(self.params())

    def _cancel(self) -> None:
        self.cancel_button.setEnabled(False)
        self.cancelRequested.emit()

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Offline bundle", self.bundle_edit.text(),
                                              "Bundle (manifest.json *.zip)")
        if path:
            if path.endswith("manifest.json"):
                path = path[: -len("manifest.json")].rstrip("/\\")
            self.bundle_edit.setText(path)
            self.bundle_radio.setChecked(True)
            self._changed()
