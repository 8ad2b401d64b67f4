"""Runs inside the QGIS desktop (qgis --code): load NAIP, search from the dock, save the window."""
import os

from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication
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
