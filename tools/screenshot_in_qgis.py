"""Runs inside the QGIS desktop (qgis --code): load NAIP, search from the dock, save the window."""
import os

from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QApplication, QDockWidget
from qgis.utils import iface, plugins

raster = QgsRasterLayer(os.environ["RSCLIP_SHOT_RASTER"], "NAIP 2016")
QgsProject.instance().addMapLayer(raster)
plugin = plugins["rsclip_search"]
dock = plugin.show_dock()
dock.set_index_dir(os.environ["RSCLIP_SHOT_INDEX"])
plugin.controller.refresh_status()
dock.top_k_spin.setValue(10)
dock.query_edit.setText(os.environ["RSCLIP_SHOT_QUERY"])
iface.mainWindow().resize(1400, 900)
# the Layers panel, wide enough to read the result layers' names and legends (the Browser panel makes room)
for side in iface.mainWindow().findChildren(QDockWidget):
    if side.objectName() == "Browser":
        side.hide()
    elif side.objectName() == "Layers":
        iface.mainWindow().resizeDocks([side], [290], Qt.Orientation.Horizontal)
iface.mapCanvas().setExtent(raster.extent())
state = {"ticks": 0, "searched": False}


def step():
    state["ticks"] += 1
    if not state["searched"]:
        state["searched"] = True
        dock.request_search()
    elif plugin.controller.tasks and state["ticks"] < 600:
        pass
    elif state.get("settle", 0) < 8:
        if state.get("settle", 0) == 0:
            dock.results_list.setCurrentRow(0)
            iface.mapCanvas().setExtent(raster.extent())
            iface.mapCanvas().refresh()
        state["settle"] = state.get("settle", 0) + 1
    else:
        timer.stop()
        iface.mainWindow().grab().save(os.environ["RSCLIP_SHOT_OUT"])
        QApplication.instance().exit(0)
    return None


timer = QTimer()
timer.timeout.connect(step)
timer.start(500)
