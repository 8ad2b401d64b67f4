"""Turns the dock's requests into background tasks and their results into map layers."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from qgis.core import Qgis, QgsApplication, QgsCoordinateReferenceSystem, QgsMapLayerType, QgsProject
from qgis.PyQt.QtCore import QObject, pyqtSignal

from ..engine import jobs
from ..engine.errors import EngineError
from ..engine.export import layer_name_for
from ..engine.index import is_index
from ..engine.results import ResultTable, hit_table, label_table, similar_query
from . import settings
from .deps import install_hint, missing_packages
from .layers import (add_result_layer, build_layer, labels_layer_name, search_layer_name, similar_layer_name,
                     tile_extent_in, tile_geometry)
from .log import get_logger
from .tasks import BaseTask

TITLE = "RS-CLIP Search"


@dataclass(frozen=True)
class HitsOutcome:
    """A search or similar-tiles result with everything the GUI needs, prepared in the task."""

    hits: list
    rows: ResultTable
    thumbnails: dict
    #: The raster files of the example tiles (similar tiles), for the layer's name.
    sources: tuple = ()


@dataclass(frozen=True)
class LabelsOutcome:
    labels: list
    rows: ResultTable


class Controller(QObject):
    """Owns the running tasks and the plugin's settings; the only place where dock requests meet the engine.

    The dock is filled from the settings here and each request's choices are remembered here
    (plugin/settings.py), before the request runs or is refused.
    """

    #: The index folder or what it holds may have changed (after indexing, or another folder chosen).
    indexChanged = pyqtSignal()

    def __init__(self, iface, dock) -> None:
        super().__init__(dock)
        self.iface = iface
        self.dock = dock
        self.tasks: list[BaseTask] = []
        self.index_task: BaseTask | None = None
        self.hits: dict[int, object] = {}
        #: The latest result's kind ("hits" or "labels") and its rows, as its layer shows them (for saving).
        self.last_results: tuple[str, ResultTable] | None = None
        #: GeoPackage layer name for the latest result (from its query or class set).
        self.last_layer_name = "rsclip_results"
        self.last_query: tuple[str, str] | None = None  # (index folder, text) of the results listed
        self.last_layer = None
        self.download_dialog = None
        self.installer = None
        self.web_indexer = None
        self.stac_dialog = None
        #: The index whose own model and tiles the dock's Index tab shows, locked (None: the fields are the user's).
        self.locked_index: str | None = None
        self.log = get_logger()
        dock.searchRequested.connect(self.search)
        dock.similarRequested.connect(self.similar)
        dock.labelRequested.connect(self.label)
        dock.indexRequested.connect(self.index)
        dock.cancelRequested.connect(self.cancel_running)
        dock.saveRequested.connect(self.save_results)
        dock.resultChosen.connect(self.zoom_to_tile)
        dock.installRequested.connect(self.open_installer)
        dock.diagnosticsRequested.connect(self.copy_diagnostics)
        dock.webMapRequested.connect(lambda: self.open_web_indexer())
        dock.urlLayerRequested.connect(self.add_url_layer)
        dock.stacRequested.connect(self.open_stac_dialog)
        dock.indexFolderChanged.connect(lambda _folder: self.refresh_status())
        dock.heatmapRequested.connect(self.heatmap)
        project = QgsProject.instance()
        project.layersAdded.connect(self.refresh_rasters)
        project.layersRemoved.connect(self.refresh_rasters)
        project.readProject.connect(self.project_changed)
        project.cleared.connect(self.project_changed)
        dock.set_choices(settings.dock_choices())
        self.setup_dock()
        from .concepts import ConceptsController

        self.concepts = ConceptsController(self)
        from .change import ChangeController

        self.change = ChangeController(self)

    # -- state -----------------------------------------------------------------------
    def setup_dock(self) -> None:
        from ..engine.classsets import available_class_sets, load_class_set
        from ..engine.models import REGISTRY

        missing = missing_packages()
        self.dock.set_missing(install_hint(missing) if missing else None)
        self.dock.set_models(list(REGISTRY), settings.MODEL.get(), {name: (
            f"{spec.arch} ({spec.activation}) · {spec.licence} · cite {spec.short_citation}",
            f"{spec.description}\nConfig: {spec.arch} ({spec.activation})\nLicence: {spec.licence}\n"
            f"Cite: {spec.citation}" + (f"\n{spec.notice}" if spec.notice else "")) for name, spec in REGISTRY.items()})
        self.dock.set_class_sets({name: load_class_set(name) for name in available_class_sets()},
                                settings.CLASS_SET.get())
        self.dock.set_index_dir(self.default_index_dir())
        self.refresh_rasters()
        self.refresh_status()

    def project_changed(self, *_args) -> None:
        self.dock.set_index_dir(self.default_index_dir())
        self.refresh_rasters()
        self.refresh_status()

    def default_index_dir(self) -> str:
        """Next to the project file when saved, else the last folder used, else in the profile."""
        project = QgsProject.instance()
        if project.fileName():
            path = Path(project.fileName())
            return str(path.with_name(f"{path.stem}_rsclip_index"))
        return settings.INDEX_DIR.get() or str(Path(QgsApplication.qgisSettingsDirPath()) / "rsclip_search" / "index")

    def raster_layers(self):
        return [lyr for lyr in QgsProject.instance().mapLayers().values()
                if lyr.type() == QgsMapLayerType.RasterLayer and lyr.providerType() == "gdal"]

    def refresh_rasters(self, *_args) -> None:
        self.dock.set_rasters([(lyr.name(), lyr.source()) for lyr in self.raster_layers()])

    def raster_title(self, path: str) -> str:
        """What to call an indexed raster: its layer's name in the project, else its file name without suffix."""
        from ..engine.sources import display_name

        for layer in self.raster_layers():
            if layer.source() == path:
                return layer.name()
        name = display_name(path)
        return Path(name).stem or name

    def refresh_status(self) -> None:
        from ..engine.models import config_notice
        from ..engine.prompts import describe_templates
        from ..engine.scales import scale_label

        self.indexChanged.emit()
        folder = self.dock.index_dir()
        if not folder or not is_index(folder):
            self.lock_index_settings(None)
            self.dock.set_status("No index in this folder yet: index some rasters on the Index tab.")
            self.dock.set_model_templates("the prompt templates of the index's model", "")
            self.dock.set_scales([])
            return
        try:
            info = jobs.info(folder)
        except EngineError as exc:
            self.lock_index_settings(None)
            self.dock.set_status(str(exc))
            return
        self.dock.set_scales([(scale_label(None, {}), None)] + [(scale_label(s, info.tiling), s) for s in info.scales])
        self.lock_index_settings(info)

        def when(ts: float) -> str:
            return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")

        built = f"built {when(info.created)}"
        if info.updated - info.created > 60:
            built += f", updated {when(info.updated)}"
        notice = config_notice(info.model, how="choose a new index folder and index the rasters again (Index tab)")
        scales = f" at {len(info.scales)} scales" if len(info.scales) > 1 else ""
        status = (f"Model {info.model_label} · {info.tile_count} tiles{scales} from {len(info.rasters)} raster(s) "
                  f"· {built}")
        if info.readonly:
            status += " · read-only"
        missing = info.missing
        if missing:
            names = ", ".join(Path(r.path).name for r in missing[:3]) + ("…" if len(missing) > 3 else "")
            status += (f" · {len(missing)} raster(s) missing (moved or deleted): {names}; index them at their new "
                       "path to relink them")
        self.dock.set_status(status + (f"\n{notice}" if notice else ""))
        self.dock.set_model_templates(describe_templates(info.model, info.model_label, 2), "\n".join(info.templates))

    # -- dependencies and diagnostics ---------------------------------------------------
    def open_installer(self):
        """The "Install dependencies…" dialog; after an install the dock re-checks what is missing."""
        from .install import InstallController

        if self.installer is None:
            self.installer = InstallController(self.iface, self.setup_dock, self)
        return self.installer.open()

    def diagnostics(self) -> str:
        from qgis.core import Qgis as QgisInfo
        from qgis.PyQt.QtCore import QT_VERSION_STR

        from ..engine.deps.diagnostics import engine_report
        from .deps import private_folder, profile_dir
        from .log import recent_problems

        header = [f"QGIS: {QgisInfo.QGIS_VERSION} ({QgisInfo.QGIS_RELEASE_NAME}), Qt {QT_VERSION_STR}"]
        return engine_report(profile_dir(), private_folder(), self.dock.index_dir() or None, recent_problems(),
                             header)

    def copy_diagnostics(self) -> str:
        """Put the diagnostics report on the clipboard (and in the log) for a bug report."""
        from qgis.PyQt.QtWidgets import QApplication

        report = self.diagnostics()
        QApplication.clipboard().setText(report)
        self.log.info("Diagnostics:\n%s", report)
        self.iface.messageBar().pushMessage(TITLE, "Diagnostics copied to the clipboard (also in the Log Messages "
                                            "panel).", level=Qgis.MessageLevel.Info, duration=6)
        return report

    # -- running ---------------------------------------------------------------------
    def notify(self, text: str, level=Qgis.MessageLevel.Info) -> None:
        self.iface.messageBar().pushMessage(TITLE, text, level=level,
                                            duration=8 if level != Qgis.MessageLevel.Critical else 0)
        self.log.log({Qgis.MessageLevel.Critical: 40, Qgis.MessageLevel.Warning: 30}.get(level, 20), text)

    def start(self, task: BaseTask) -> BaseTask:
        """Queue a task on QGIS's task manager, with the dock's progress bar and Cancel following it."""
        self.tasks.append(task)
        task.progressChanged.connect(lambda percent: self.dock.set_progress(percent, task.message))
        self.dock.set_busy(True)
        QgsApplication.taskManager().addTask(task)
        return task

    def _done(self, task: BaseTask) -> bool:
        """Common end of every task: release it, report errors; True when there is a result."""
        if task in self.tasks:
            self.tasks.remove(task)
        self.dock.set_busy(bool(self.tasks))
        if task.cancelled:
            if task.result is None:
                self.notify(f"{task.description()}: cancelled.", Qgis.MessageLevel.Info)
            return task.result is not None
        if task.error:
            self.notify(task.error, Qgis.MessageLevel.Critical)
            return False
        return task.result is not None

    def _folder(self, folder: str) -> str | None:
        if not folder:
            self.notify("Choose an index folder first.", Qgis.MessageLevel.Warning)
            return None
        settings.INDEX_DIR.set(folder)
        return folder

    def _index_model(self, folder: str) -> dict | None:
        """The model an existing index was built with (None if there is no index: the job says so)."""
        if not is_index(folder):
            return None
        try:
            return jobs.info(folder).model
        except EngineError:
            return None

    def lock_index_settings(self, info) -> None:
        """For an existing index (``jobs.IndexInfo``), show its own model and tiles on the Index tab, disabled, and
        say why; None gives the fields back. The engine's rule (``planning.plan_index``): an index keeps both."""
        from ..engine.planning import tiling_text

        if info is None:
            self.locked_index = None
            self.dock.lock_index_settings(None)
            return
        self.locked_index = str(Path(info.index_dir).resolve())
        model, tiling = info.model, info.tiling
        self.dock.lock_index_settings(
            f"This index was built with {info.model_label} and {tiling_text(tiling)}; it keeps them so that its "
            "results stay comparable, and new rasters are cut and embedded the same way. For another model or tile "
            "size, choose a new index folder.",
            str(model.get("name") or "") if model.get("kind") == "registry" else "",
            str(model.get("arch") or ""), str(model.get("checkpoint") or ""), tiling,
            "\n".join(f"{Path(path).name}: {grid.text()}" for path, grid in info.grids.items()))

    def locked_to(self, folder: str) -> bool:
        """Whether the Index tab's model and tile fields show (locked) the index in ``folder``."""
        return bool(folder) and self.locked_index == str(Path(folder).expanduser().resolve())

    def index_request(self, folder: str, params) -> tuple[dict | None, dict]:
        """What the Index tab asks for: nothing for the index its fields are locked to (it keeps its own),
        else its model (None for a custom checkpoint, hashed in the task) and tile settings."""
        from ..engine.models import resolve_model_ref
        from ..engine.planning import tile_request
        from ..engine.scales import parse_scales

        scales = parse_scales(params.scales)  # an existing index gains them; a new one is cut at them
        if self.locked_to(folder):
            return None, tile_request(scales=scales)
        model = resolve_model_ref(name=params.model).to_dict() if params.model else None
        return model, tile_request(params.tile_size, params.tile_units, params.overlap, scales=scales)

    def index(self, params) -> BaseTask | None:
        """Index the checked rasters, as the engine plans the request (``planning.plan_index``, the rule the
        command line and the toolbox follow): refused, or with the index's own model and tiles."""
        from dataclasses import replace

        from ..engine.planning import plan_index
        from ..ui.dock import CUSTOM_MODEL

        settings.remember_index(params, CUSTOM_MODEL)
        params = replace(params, batch_size=settings.BATCH_SIZE.get())
        folder = self._folder(params.index_dir)
        if folder is None:
            return None
        if not params.rasters:
            self.notify("No rasters to index: add raster layers to the project and check them on the Index tab.",
                        Qgis.MessageLevel.Warning)
            return None
        try:
            model, tiling = self.index_request(folder, params)
            plan = plan_index(folder, model, tiling)
        except EngineError as exc:
            self.notify(str(exc), Qgis.MessageLevel.Critical)
            return None
        custom = not params.model and not self.locked_to(folder)  # a custom checkpoint, hashed in the task

        def job(progress, cancel):
            from ..engine.models import resolve_model_ref
            from ..engine.sources import using

            chosen = resolve_model_ref(arch=params.custom_arch, checkpoint=params.custom_checkpoint).to_dict() \
                if custom else model
            with using(params.remote):
                return jobs.index_rasters(folder, params.rasters, model=chosen, tiling=tiling,
                                          batch_size=params.batch_size, progress=progress, cancel=cancel)

        def run() -> BaseTask:
            self.index_task = self.start(BaseTask(f"Indexing {len(params.rasters)} raster(s) for semantic search",
                                                  job, self._index_done))
            return self.index_task

        return self.with_weights(None if custom else plan.model, run)

    # -- imagery not on disk -----------------------------------------------------------
    def open_web_indexer(self, layer=None):
        """The "Index a web map layer" dialog (estimate first, then a task like any index)."""
        from .webmap import WebMapIndexer

        if self.web_indexer is None:
            self.web_indexer = WebMapIndexer(self)
        return self.web_indexer.open(layer)

    def web_tiling(self):
        """Tile settings a web map will be cut with: the engine's plan of the Index tab's request (the index's own
        tiles for an existing index; a refusal is the engine's sentence)."""
        from ..engine.planning import plan_index

        folder = self.dock.index_dir()
        _model, tiling = self.index_request(folder, self.dock.index_params([]))
        return plan_index(folder, None, tiling).tiling

    def index_sources(self, paths: list[str], remote) -> BaseTask | None:
        """Index remote sources (web map strings, URLs) with the Index tab's settings and ``remote`` options."""
        from dataclasses import replace

        return self.index(replace(self.dock.index_params(paths), remote=remote))

    def open_stac_dialog(self):
        """The toolbox's "Build semantic index from STAC", filled in from the dock and the map's extent."""
        import processing
        from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform

        params = self.dock.index_params([])
        values = {"INDEX": params.index_dir, "TILE_SIZE": params.tile_size, "OVERLAP": params.overlap,
                  "TILE_UNITS": "metres" if params.tile_units == "m" else "pixels"}
        canvas = self.iface.mapCanvas()
        crs = canvas.mapSettings().destinationCrs()
        if crs.isValid() and not canvas.extent().isEmpty():
            extent = QgsCoordinateTransform(crs, QgsCoordinateReferenceSystem("EPSG:4326"),
                                            QgsProject.instance()).transformBoundingBox(canvas.extent())
            values["EXTENT"] = (f"{extent.xMinimum()},{extent.xMaximum()},{extent.yMinimum()},{extent.yMaximum()} "
                                "[EPSG:4326]")
        if params.model:
            values["MODEL"] = params.model
        else:
            values.update({"MODEL": "custom", "ARCH": params.custom_arch or "",
                           "CHECKPOINT": params.custom_checkpoint or ""})
        dialog = processing.createAlgorithmDialog("rsclip_search:build_index_stac", values)
        dialog.algorithmFinished.connect(lambda *_args: self.refresh_status())
        dialog.show()
        self.stac_dialog = dialog
        return dialog

    def add_url_layer(self, url: str):
        """A raster by URL (e.g. a COG) as a project layer, so it is listed, shown and indexed like a file."""
        from qgis.core import QgsRasterLayer

        from ..engine.sources import canonical_path, display_name

        try:
            path = canonical_path(url)
        except EngineError as exc:
            self.notify(str(exc), Qgis.MessageLevel.Warning)
            return None
        layer = QgsRasterLayer(path, display_name(path), "gdal")
        if not layer.isValid():
            self.notify(f"{url} could not be opened as a raster (check the address, and that the server allows "
                        "range requests).", Qgis.MessageLevel.Warning)
            return None
        return QgsProject.instance().addMapLayer(layer)

    def with_weights(self, model: dict | None, then: Callable[[], BaseTask]) -> BaseTask | None:
        """Run ``then`` once a registry model's weights are on disk, downloading them first.

        The download is a task of its own followed by a cancellable progress dialog; offline,
        its EngineError says where to put the file by hand.
        """
        from ..engine.models import REGISTRY, ensure_weights, is_cached

        spec = REGISTRY.get(str(model.get("name"))) if model and model.get("kind") == "registry" else None
        if spec is None or is_cached(spec):
            return then()
        from ..ui.download_dialog import DownloadDialog

        dialog = DownloadDialog(spec.name, self.iface.mainWindow())
        self.download_dialog = dialog

        def done(task: BaseTask) -> None:
            dialog.finish()
            self.download_dialog = None
            if self._done(task):
                then()

        task = BaseTask(f"Downloading {spec.name}",
                        lambda progress, cancel: ensure_weights(spec, progress, cancel), done)
        dialog.follow(task)
        return self.start(task)

    def _index_done(self, task: BaseTask) -> None:
        self.index_task = None
        if self._done(task):
            report = task.result
            for path, reason in report.skipped:
                self.notify(f"{Path(path).name} was not indexed: {reason}", Qgis.MessageLevel.Warning)
            for path, count, why in report.unavailable:
                self.notify(f"{count} tiles of {Path(path).name} were skipped: their web map tiles could not be "
                            f"downloaded ({why}). Index it again later to fetch them.", Qgis.MessageLevel.Warning)
            for notice in report.notices:
                self.notify(notice, Qgis.MessageLevel.Warning)
            self.notify(report.summary(), Qgis.MessageLevel.Warning if report.cancelled else Qgis.MessageLevel.Success)
        self.refresh_status()

    def cancel_running(self) -> None:
        """The dock's Cancel: stop whatever runs (an index keeps the tiles committed so far)."""
        for task in list(self.tasks):
            task.cancel()

    def search(self, params) -> BaseTask | None:
        settings.remember_search(params)
        folder = self._folder(params.index_dir)
        if folder is None:
            return None
        if not params.query.strip():
            self.notify("Type what to look for, e.g. 'airport runway'.", Qgis.MessageLevel.Warning)
            return None

        def job(progress, cancel):
            hits = jobs.search(folder, params.query, params.top_k, params.min_score, params.rasters or None,
                               progress=progress, cancel=cancel, scale=params.scale)
            return self._hits_outcome(folder, hits, "search", params.query.strip())

        key = params.query.strip().lower() + ("|" + "|".join(params.rasters) if params.rasters else "")
        query = " ".join(params.query.split())
        within = self.raster_title(params.rasters[0]) if params.rasters else None
        title = f"“{query}”" + (f" in {within}" if within else "")
        asked = query
        if params.scale is not None:
            key, title, asked = f"{key}|×{params.scale}", f"{title} at ×{params.scale}", f"{query} at ×{params.scale}"
        model = self._index_model(folder)
        name = search_layer_name(asked, jobs.model_label(model) if model else "", within)
        return self.with_weights(model, lambda: self.start(BaseTask(
            f"Searching {title}", job, lambda t: self._hits_done(t, folder, "search", key, title, name, query))))

    def similar(self, params) -> BaseTask | None:
        folder = self._folder(params.index_dir)
        if folder is None:
            return None
        if not params.tile_ids:
            self.notify("Select a result tile first.", Qgis.MessageLevel.Warning)
            return None

        def job(progress, cancel):
            from dataclasses import replace

            hits = jobs.similar(folder, params.tile_ids, params.top_k, params.min_score, scale=params.scale)
            return replace(self._hits_outcome(folder, hits, "similar", similar_query(params.tile_ids)),
                           sources=_tile_rasters(folder, params.tile_ids))

        key = "similar:" + ",".join(map(str, sorted(params.tile_ids)))
        count = len(params.tile_ids)
        return self.start(BaseTask(f"Finding tiles similar to {count} tile{'s' if count != 1 else ''}", job,
                                   lambda t: self._similar_done(t, folder, key, count)))

    @staticmethod
    def _hits_outcome(folder: str, hits: list, kind: str, query: str) -> HitsOutcome:
        """Runs in the task: the result's rows (footprints in one CRS) and thumbnails, so the GUI thread only draws."""
        from .thumbnails import tile_thumbnails

        info = jobs.info(folder)
        thumbnails = tile_thumbnails(hits, info.tiling) if hits else {}
        return HitsOutcome(hits, hit_table(hits, query, info.model_label, kind), thumbnails)

    def _hits_done(self, task: BaseTask, folder: str, kind: str, key: str, title: str, name: str,
                   query: str = "") -> None:
        if not self._done(task):
            return
        self.last_query = (folder, query) if query else None  # what a heat map of a listed tile looks for
        self.show_hits(task.result, folder, kind, key, title, name)

    def _similar_done(self, task: BaseTask, folder: str, key: str, count: int) -> None:
        """Named after the example tiles' rasters, which the task has read from the index."""
        if not self._done(task):
            return
        self.last_query = None
        name = similar_layer_name(count, [self.raster_title(path) for path in task.result.sources])
        self.show_hits(task.result, folder, "similar", key, name, name)

    def heatmap(self, tile_id: int) -> BaseTask | None:
        """Where in a listed tile the last search's text matches: a heat map layer over the tile."""
        from .heatmaps import heatmap_folder

        hit = self.hits.get(tile_id)
        if hit is None:
            self.notify("Select a result of a text search first.", Qgis.MessageLevel.Warning)
            return None
        if self.last_query is None:
            self.notify("Heat maps show where a search text matches: search by text, then select a result.",
                        Qgis.MessageLevel.Warning)
            return None
        folder, query = self.last_query

        def job(progress, cancel):
            return jobs.heatmaps(folder, query, [tile_id], heatmap_folder(folder), progress=progress, cancel=cancel)[0]

        return self.start(BaseTask(f"Heat map of tile {tile_id} for “{query}”", job,
                                   lambda task: self._heatmap_done(task, folder, query)))

    def _heatmap_done(self, task: BaseTask, folder: str, query: str):
        from qgis.PyQt import sip

        from .heatmaps import KIND_HEATMAP, heatmap_layer

        if not self._done(task):
            return None
        heat = task.result
        row, col = heat.hottest
        node = None
        if self.last_layer is not None and not sip.isdeleted(self.last_layer):
            node = QgsProject.instance().layerTreeRoot().findLayer(self.last_layer.id())
        shown = node is not None and node.isVisible()  # its fill would hide the imagery under the heat map
        layer = add_result_layer(heatmap_layer(heat.path, f"RS-CLIP heat map: “{query}” in tile {heat.tile.id}"),
                                 KIND_HEATMAP, f"{query}|{heat.tile.id}", folder)  # hides earlier results
        hidden = ""
        if shown and node is not None:
            node.setItemVisibilityChecked(False)
            hidden = f" The layer {self.last_layer.name()} is hidden so the imagery shows; tick it to see it again."
        self.zoom_to_tile(heat.tile.id)
        self.notify(f"Heat map of tile {heat.tile.id}: the text matches best in row {row + 1}, column {col + 1} of "
                    f"its {heat.values.shape[0]}×{heat.values.shape[1]} cells.{hidden}", Qgis.MessageLevel.Success)
        return layer

    def show_hits(self, outcome: HitsOutcome, folder: str, kind: str, key: str, title: str, name: str = ""):
        """Result layer ``name`` (replacing the previous one for the same query; the others hidden), list with
        thumbnails, top hit flashed. ``title``: the query as messages quote it, or "similar to …"."""
        hits = outcome.hits
        found = f"for {title}" if kind == "search" else title
        if not hits:
            nothing = f"No tiles matched {title}." if kind == "search" else f"No tiles found {found}."
            self.dock.show_results([], {}, nothing)
            self.notify(nothing, Qgis.MessageLevel.Info)
            return None
        self.hits = {h.tile.id: h for h in hits}
        self.last_results = ("hits", outcome.rows)
        self.last_layer_name = layer_name_for(title, "search" if kind == "search" else "")
        layer = add_result_layer(build_layer(outcome.rows, name or title), kind, key, folder)
        self.last_layer = layer
        self.dock.show_results(hits, outcome.thumbnails, f"{len(hits)} tiles {found}:")
        top = next(layer.getFeatures())
        layer.selectByIds([top.id()])
        self.iface.mapCanvas().flashGeometries([top.geometry()], layer.crs())
        self.notify(f"{len(hits)} tiles {found}; best score {hits[0].score:.3f}.", Qgis.MessageLevel.Success)
        return layer

    def label(self, params) -> BaseTask | None:
        from ..engine.classsets import load_class_set, parse_classes
        from ..engine.prompts import parse_templates

        settings.remember_label(params)
        folder = self._folder(params.index_dir)
        if folder is None:
            return None
        try:
            classes = load_class_set(params.class_set) if params.class_set else parse_classes(params.custom_classes)
            templates = parse_templates(params.templates) if params.templates.strip() else None
        except EngineError as exc:
            self.notify(str(exc), Qgis.MessageLevel.Critical)
            return None

        def job(progress, cancel):
            labels = jobs.label(folder, classes, templates, progress=progress, cancel=cancel)
            model = jobs.model_label(jobs.model_of(folder))
            return LabelsOutcome(labels, label_table(labels, classes, model, params.class_set))

        name = params.class_set or "custom classes"
        model = self._index_model(folder)
        layer_name = labels_layer_name(params.class_set, classes, jobs.model_label(model) if model else "")
        return self.with_weights(model, lambda: self.start(BaseTask(
            f"Labelling tiles with {name}", job, lambda t: self._labels_done(t, folder, classes, name, layer_name))))

    def _labels_done(self, task: BaseTask, folder: str, classes: list[str], name: str, layer_name: str) -> None:
        if not self._done(task):
            return
        outcome: LabelsOutcome = task.result
        self.last_results = ("labels", outcome.rows)
        self.last_layer_name = layer_name_for(name, "labels")
        layer = add_result_layer(build_layer(outcome.rows, layer_name), "labels", "|".join(classes), folder)
        self.last_layer = layer
        found = len({lab.label for lab in outcome.labels})
        self.notify(f"Labelled {layer.featureCount()} tiles with {len(classes)} classes; {found} of them found "
                    "(the legend lists those).", Qgis.MessageLevel.Success)

    def save_results(self, path: str) -> BaseTask | None:
        """Write the latest result as a layer of a GeoPackage (in a task: it reprojects).

        The engine's rule (``gpkg_plan``), as for ``--out``: a new file, or a new layer in an existing
        GeoPackage; a layer of the same name is replaced only when the user agrees; any other file is
        refused with the engine's sentence.
        """
        from ..engine.export import gpkg_has_layer, gpkg_plan, write_tiles_gpkg

        if self.last_results is None:
            self.notify("Run a search or labelling first; there is nothing to save yet.", Qgis.MessageLevel.Warning)
            return None
        _kind, table = self.last_results
        layer = self.last_layer_name
        settings.RESULTS_DIR.set(str(Path(path).parent))
        self.dock.set_results_folder(str(Path(path).parent))
        overwrite = False
        if gpkg_has_layer(path, layer):
            overwrite = self.dock.confirm(f"{Path(path).name} already has a layer named '{layer}'. Replace that "
                                          "layer? The file's other layers are kept.")
            if not overwrite:
                return None
        try:
            gpkg_plan(path, layer, overwrite)
        except EngineError as exc:
            self.notify(str(exc), Qgis.MessageLevel.Critical)
            return None

        def done(task: BaseTask) -> None:
            if self._done(task):
                self.notify(f"Saved {len(table)} tiles to {task.result} (layer {layer}).", Qgis.MessageLevel.Success)

        return self.start(BaseTask(f"Saving results to {Path(path).name}",
                                   lambda progress, cancel: write_tiles_gpkg(path, table, layer, overwrite), done,
                                   can_cancel=False))

    def zoom_to_tile(self, tile_id: int) -> None:
        hit = self.hits.get(tile_id)
        if hit is None:
            return
        canvas = self.iface.mapCanvas()
        crs = canvas.mapSettings().destinationCrs()
        extent = tile_extent_in(hit.tile, crs)
        canvas.setExtent(extent.buffered(max(extent.width(), extent.height()) * 0.5))
        canvas.refresh()
        canvas.flashGeometries([tile_geometry(hit.tile, hit.tile.crs_wkt)], _crs(hit.tile.crs_wkt))

    def shutdown(self) -> None:
        """Cancel what is still running (the plugin is being unloaded)."""
        self.concepts.shutdown()
        self.change.shutdown()
        for task in list(self.tasks):
            task.on_done = None
            try:
                task.progressChanged.disconnect()
            except TypeError:
                pass
            task.cancel()
        self.tasks.clear()
        if self.download_dialog is not None:
            self.download_dialog.finish()
            self.download_dialog = None
        if self.installer is not None:
            self.installer.shutdown()
            self.installer = None
        if self.web_indexer is not None:
            self.web_indexer.shutdown()
            self.web_indexer = None
        if self.stac_dialog is not None:
            from qgis.PyQt import sip

            if not sip.isdeleted(self.stac_dialog):  # Processing dialogs delete themselves on close
                self.stac_dialog.close()
            self.stac_dialog = None
        project = QgsProject.instance()
        for signal, slot in ((project.layersAdded, self.refresh_rasters), (project.layersRemoved, self.refresh_rasters),
                             (project.readProject, self.project_changed), (project.cleared, self.project_changed)):
            try:
                signal.disconnect(slot)
            except TypeError:
                pass


def _crs(wkt: str) -> QgsCoordinateReferenceSystem:
    return QgsCoordinateReferenceSystem.fromWkt(wkt)


def _tile_rasters(folder: str, tile_ids) -> tuple:
    """The raster files of the given tiles of an index, in tile order (runs in a task)."""
    with jobs.open_for_query(folder) as idx:
        records = idx.tiles(tile_ids)
    return tuple(records[int(i)].raster for i in tile_ids if int(i) in records)
