"""Runs inside the QGIS desktop (qgis --code): change between dates, several scales, a heat map.

RSCLIP_SHOT_SCENE picks the picture:
* change: NAIP 2009 and 2016, the Change tab finding where "ponds" appeared, the places on the map over 2016;
* scales: a search across scales (tiles of three sizes on the map, each hit saying its scale);
* heatmap: the same search, the best tile's heat map over it, zoomed in.
The index is built with the tests' planted model (its embeddings are the tiles' colours and every text means
the colour of the ponds' dark water), so what the pictures show is what that model sees, not a trained one.
"""
import os
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QApplication
from qgis.utils import iface, plugins

SCENE = os.environ["RSCLIP_SHOT_SCENE"]
LOG = Path(os.environ["RSCLIP_SHOT_WORK"]) / "messages.log"


def keep(text, tag, level) -> None:
    with LOG.open("a") as fh:
        fh.write(f"[{tag}] {text}\n")


QgsApplication.messageLog().messageReceived.connect(keep)
before = QgsRasterLayer(os.environ["RSCLIP_SHOT_BEFORE"], "NAIP 2009")
after = QgsRasterLayer(os.environ["RSCLIP_SHOT_RASTER"], "NAIP 2016")
QgsProject.instance().addMapLayer(before)
QgsProject.instance().addMapLayer(after)
QgsProject.instance().layerTreeRoot().findLayer(before.id()).setItemVisibilityChecked(False)
plugin = plugins["rsclip_search"]
dock = plugin.show_dock()
dock.setMinimumWidth(470)
dock.set_index_dir(os.environ["RSCLIP_SHOT_INDEX"])
dock.indexFolderChanged.emit(dock.index_dir())
iface.mainWindow().resize(1400, 900)
iface.mapCanvas().setExtent(after.extent())
query = os.environ["RSCLIP_SHOT_QUERY"]
state = {"ticks": 0, "step": 0, "settle": 0}
if SCENE == "change":
    panel = dock.change_panel
    dock.tabs.setCurrentWidget(panel)
    panel.query_edit.setText(query)
    panel.top_k_spin.setValue(8)
    panel.scale_combo.setCurrentIndex(1)
    steps = ["change", "pick", "settle"]
else:
    dock.tabs.setCurrentIndex(0)
    dock.set_restriction("NAIP 2016", after.source())  # as "Search within this layer…" does
    dock.query_edit.setText(query)
    dock.top_k_spin.setValue(12)
    steps = ["search", "pick", "heatmap", "settle"] if SCENE == "heatmap" else ["search", "pick", "settle"]


def step():
    state["ticks"] += 1
    if plugin.controller.tasks and state["ticks"] < 600:
        return
    name = steps[state["step"]]
    if name == "change":
        dock.change_panel.request_change()
    elif name == "search":
        dock.request_search()
    elif name == "pick":
        lst = dock.change_panel.results_list if SCENE == "change" else dock.results_list
        lst.setCurrentRow(0)
    elif name == "heatmap":
        dock.request_heatmap()
    elif state["settle"] < 8:
        if state["settle"] == 0:
            canvas = iface.mapCanvas()
            if SCENE == "heatmap":
                hit = plugin.controller.hits[dock.results_list.item(0).data(0x0100)]
                from rsclip_search.plugin.layers import tile_extent_in

                box = tile_extent_in(hit.tile, canvas.mapSettings().destinationCrs())
                canvas.setExtent(box.buffered(box.width() * 0.6))
            else:
                canvas.setExtent(after.extent())
            canvas.refresh()
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
