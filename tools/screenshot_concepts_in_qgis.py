"""Runs inside the QGIS desktop (qgis --code): the find-every-X loop in the Concepts tab, then areas on the map.

Search by text, accept and reject results, refine, choose a threshold, make areas, save the window.
With the tests' random-weight model the marks below are arbitrary: the picture shows the interface.
"""
import os
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QApplication, QDockWidget
from qgis.utils import iface, plugins

LOG = Path(os.environ["RSCLIP_SHOT_WORK"]) / "messages.log"  # QGIS's message log, to see what went wrong


def keep(text, tag, level) -> None:
    with LOG.open("a") as fh:
        fh.write(f"[{tag}] {text}\n")


QgsApplication.messageLog().messageReceived.connect(keep)
raster = QgsRasterLayer(os.environ["RSCLIP_SHOT_RASTER"], "NAIP 2016")
QgsProject.instance().addMapLayer(raster)
plugin = plugins["rsclip_search"]
dock = plugin.show_dock()
dock.setMinimumWidth(470)
dock.set_index_dir(os.environ["RSCLIP_SHOT_INDEX"])
dock.indexFolderChanged.emit(dock.index_dir())
panel = dock.concepts_panel
dock.tabs.setCurrentWidget(panel)
panel.top_k_spin.setValue(12)
panel.query_edit.setText(os.environ["RSCLIP_SHOT_QUERY"])
iface.mainWindow().resize(1400, 900)
# the Layers panel, wide enough to read the result layers' names and legends (the Browser panel makes room)
for side in iface.mainWindow().findChildren(QDockWidget):
    if side.objectName() == "Browser":
        side.hide()
    elif side.objectName() == "Layers":
        iface.mainWindow().resizeDocks([side], [290], Qt.Orientation.Horizontal)
iface.mapCanvas().setExtent(raster.extent())
steps = ["search", "mark", "refine", "areas", "settle"]
state = {"ticks": 0, "step": 0, "settle": 0}


def busy() -> bool:
    return bool(plugin.controller.tasks)


def step():
    state["ticks"] += 1
    if busy() and state["ticks"] < 600:
        return
    name = steps[state["step"]]
    if name == "search":
        panel.request_search()
    elif name == "mark":
        for i in (0, 1, 2, 5, 9):
            panel.row(i).accept_button.click()
        for i in (3, 4, 6, 7, 8):
            panel.row(i).reject_button.click()
    elif name == "refine":
        panel.refine_button.click()
    elif name == "areas":
        scores = sorted(plugin.controller.concepts.round.scores.scores.tolist())
        panel.set_threshold(scores[-16])
        panel.request_areas(str(Path(os.environ["RSCLIP_SHOT_WORK"]) / "farm_fields_areas.gpkg"))
    elif state["settle"] < 8:
        if state["settle"] == 0:
            iface.mapCanvas().setExtent(raster.extent())
            iface.mapCanvas().refresh()
        state["settle"] += 1
        return
    else:
        timer.stop()
        iface.mainWindow().grab().save(os.environ["RSCLIP_SHOT_OUT"])
        QApplication.instance().exit(0)
        return
    state["step"] += 1


timer = QTimer()
timer.timeout.connect(step)
timer.start(500)
