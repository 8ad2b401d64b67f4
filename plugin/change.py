"""The Change tab's requests run through ``engine.jobs.change``; the places become a styled layer.

The pairing and scoring run in a task (they read the index's embeddings); the before and after
thumbnails of each place are read there too, side by side, so the GUI thread only draws.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from qgis.core import Qgis, QgsProject
from qgis.PyQt.QtCore import QObject

from ..engine import jobs
from ..engine.errors import EngineError
from ..engine.index import is_index
from ..engine.results import ResultTable, change_table
from .layers import SCORE_STYLES, add_result_layer, build_layer, style_by_score
from .tasks import BaseTask

KIND_CHANGE = "change"


@dataclass(frozen=True)
class ChangeOutcome:
    result: object  # engine.change.ChangeResult
    rows: ResultTable
    thumbnails: dict  # rank → QImage (before | after)


def pair_thumbnails(result, tiling: dict, size: int = 64) -> dict:
    """rank → a QImage of the before tile beside the after tile (made off the GUI thread, as QImage allows)."""
    from qgis.PyQt.QtGui import QColor, QImage, QPainter

    from .thumbnails import tile_thumbnails

    rows = result.rows[:200]
    before = tile_thumbnails([SimpleNamespace(tile=r.before) for r in rows], tiling, size)
    after = tile_thumbnails([SimpleNamespace(tile=r.after) for r in rows], tiling, size)
    out = {}
    for r in rows:
        image = QImage(2 * size + 2, size, QImage.Format.Format_RGB888)
        image.fill(QColor("white"))
        painter = QPainter(image)
        for n, part in enumerate((before.get(r.before.id), after.get(r.after.id))):
            if part is not None:
                painter.drawImage(n * (size + 2), 0, part)
        painter.end()
        out[r.rank] = image
    return out


def style_change(layer) -> None:
    """The shipped change.qml with its classes recomputed from this layer's changes (a toolbox output)."""
    style_by_score(layer, style=SCORE_STYLES[KIND_CHANGE])


class ChangeController(QObject):
    """Runs the Change tab for the plugin's Controller (its tasks, message bar and zoom)."""

    def __init__(self, controller) -> None:
        super().__init__(controller)
        self.c = controller
        self.panel = controller.dock.change_panel
        self.result = None
        self.layer = None
        self.panel.changeRequested.connect(self.find)
        self.panel.placeChosen.connect(self.zoom_to_place)
        self.panel.saveRequested.connect(self.save)
        controller.indexChanged.connect(self.refresh)  # also emitted when another index folder is chosen
        project = QgsProject.instance()
        project.readProject.connect(self.refresh)
        project.cleared.connect(self.refresh)
        self.refresh()

    def shutdown(self) -> None:
        project = QgsProject.instance()
        for signal in (project.readProject, project.cleared, self.c.indexChanged):
            try:
                signal.disconnect(self.refresh)
            except TypeError:
                pass

    def refresh(self, *_args) -> None:
        """The index's rasters in both pickers and its scales in the scale choice."""
        from ..engine.scales import scale_label

        folder = self.c.dock.index_dir()
        info = None
        if folder and is_index(folder):
            try:
                info = jobs.info(folder)
            except EngineError:
                info = None
        rasters = [(Path(r.path).name, r.path) for r in info.rasters] if info is not None else []
        self.panel.set_rasters(rasters)
        scales = sorted(info.scales) if info is not None else []
        self.panel.set_scales([(scale_label(None, {}), None)] +
                              [(scale_label(s, info.tiling), s) for s in scales] if info is not None else [])
        if self.result is not None and self.result.index_dir != folder:
            self.result = None

    def find(self, params) -> BaseTask | None:
        from ..ui.change_panel import DIRECTIONS

        folder = self.c._folder(params.index_dir)
        if folder is None:
            return None
        if not params.before or not params.after:
            self.c.notify("Check the raster(s) of the first date under Before and of the second under After.",
                          Qgis.MessageLevel.Warning)
            return None

        def job(progress, cancel):
            result = jobs.change(folder, params.before, params.after, params.query or None, params.direction,
                                 params.top_k, params.scale, progress=progress, cancel=cancel)
            return ChangeOutcome(result, change_table(result), pair_thumbnails(result, jobs.info(folder).tiling))

        said = dict(DIRECTIONS).get(params.direction, params.direction)
        title = f"“{params.query}” {said.split(' (')[0]}" if params.query else "what changed"
        run = lambda: self.c.start(BaseTask(f"Finding {title}", job, self._done))  # noqa: E731
        return self.c.with_weights(self.c._index_model(folder), run) if params.query else run()

    def _done(self, task: BaseTask):
        if not self.c._done(task):
            return None
        outcome: ChangeOutcome = task.result
        result = outcome.result
        self.result = result
        self.panel.show_places(result.summary(), result.rows, outcome.thumbnails)
        if not result.rows:
            return None
        what = f"'{result.query}' {result.direction}" if result.query else "changed"
        names = f"{_short(result.before)} → {_short(result.after)}"
        layer = add_result_layer(build_layer(outcome.rows, f"RS-CLIP change: {what}, {names}"), KIND_CHANGE,
                                 f"{what}|{names}", result.index_dir)  # styled by change.qml (layers.SCORE_STYLES)
        self.layer = layer
        self.c.notify(result.summary(), Qgis.MessageLevel.Success)
        return layer

    def zoom_to_place(self, rank: int) -> None:
        """Zoom to a place and flash the ground both tiles show."""
        from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsGeometry

        if self.result is None or not 1 <= rank <= len(self.result.rows):
            return
        row = self.result.rows[rank - 1]
        canvas = self.c.iface.mapCanvas()
        geom = QgsGeometry.fromWkt(row.footprint_wkt)
        src = QgsCoordinateReferenceSystem.fromWkt(row.crs_wkt)
        shown = QgsGeometry(geom)
        dest = canvas.mapSettings().destinationCrs()
        if src != dest:
            shown.transform(QgsCoordinateTransform(src, dest, QgsProject.instance()))
        extent = shown.boundingBox()
        canvas.setExtent(extent.buffered(max(extent.width(), extent.height()) * 0.5))
        canvas.refresh()
        canvas.flashGeometries([geom], src)

    def save(self, path: str) -> BaseTask | None:
        from ..engine.change import write_change_gpkg

        if self.result is None:
            self.c.notify("Find changes first; there is nothing to save yet.", Qgis.MessageLevel.Warning)
            return None
        result = self.result

        def done(task: BaseTask) -> None:
            if self.c._done(task):
                self.c.notify(f"Saved {len(result.rows)} places to {task.result}.", Qgis.MessageLevel.Success)

        return self.c.start(BaseTask(f"Saving the change to {Path(path).name}",
                                     lambda progress, cancel: write_change_gpkg(path, result), done,
                                     can_cancel=False))


def _short(paths) -> str:
    names = [Path(p).stem for p in paths]
    return names[0] + (f" +{len(names) - 1}" if len(names) > 1 else "")
