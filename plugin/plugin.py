"""The QGIS plugin: toolbar button and menu entry toggling the dock, layer actions, Processing.

Only Qt/QGIS load at start-up; torch, open_clip and faiss are imported when a task needs
them, so QGIS starts as fast with the plugin as without it.
"""
from __future__ import annotations

import sys
from pathlib import Path

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

# triton comes with CUDA builds of torch and bundles its own LLVM; loaded into QGIS next to the
# LLVM that Mesa's OpenGL drivers bring, it crashes QGIS (seen on QGIS 3.22 under Xvfb). The
# plugin never compiles kernels, so torch is told triton is absent before anything imports it.
sys.modules.setdefault("triton", None)

ICON = Path(__file__).resolve().parent.parent / "resources" / "icons" / "rsclip.svg"
MENU = "&RS-CLIP Search"


class RsClipSearchPlugin:
    def __init__(self, iface) -> None:
        from .deps import activate_private_packages
        from .log import get_logger

        self.iface = iface
        self.activation = activate_private_packages()
        if self.activation.active:
            get_logger().info(self.activation.message)
        self.action: QAction | None = None
        self.dock = None
        self.controller = None
        self.layer_actions = None
        self.provider = None

    def initProcessing(self) -> None:  # noqa: N802 (QGIS's name)
        """Register the toolbox algorithms; QGIS calls this alone for qgis_process, initGui calls it too."""
        if self.provider is not None:
            return
        from .processing.provider import RsClipProvider

        self.provider = RsClipProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        from ..ui.dock import SearchDock
        from .actions import LayerActions
        from .controller import Controller

        self.initProcessing()
        self.action = QAction(QIcon(str(ICON)), "RS-CLIP Search", self.iface.mainWindow())
        self.action.setCheckable(True)
        self.action.setToolTip("Search your imagery in plain words")
        self.action.toggled.connect(self.set_dock_visible)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToMenu(MENU, self.action)
        self.dock = SearchDock(self.iface.mainWindow())
        self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.dock.hide()
        self.dock.visibilityChanged.connect(self.action.setChecked)
        self.controller = Controller(self.iface, self.dock)
        self.layer_actions = LayerActions(self.iface, self.controller, self.show_dock)
        self.layer_actions.install()

    def set_dock_visible(self, visible: bool) -> None:
        if self.dock is not None:
            self.dock.setVisible(visible)

    def show_dock(self):
        self.dock.show()
        self.dock.raise_()
        return self.dock

    def unload(self) -> None:
        if self.layer_actions is not None:
            self.layer_actions.remove()
        if self.controller is not None:
            self.controller.shutdown()
        if self.dock is not None:
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
        if self.action is not None:
            self.iface.removePluginMenu(MENU, self.action)
            self.iface.removeToolBarIcon(self.action)
            self.action.deleteLater()
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
        self.action = self.dock = self.controller = self.layer_actions = self.provider = None
