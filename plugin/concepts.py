"""The Concepts tab's requests run through the engine's concept jobs; results become styled layers.

Scoring, areas and exports run as tasks (reading a big index's embeddings takes a while the first
time); marks are a few rows in the index's database and are written at once, so a ✓ or ✗ shows
immediately in the list and on the map. The concept in use is remembered in the project.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qgis.core import Qgis, QgsMapLayer, QgsProject, QgsVectorLayer
from qgis.PyQt.QtCore import QObject

from ..engine import jobs
from ..engine.errors import EngineError
from ..engine.results import ResultTable, concept_table
from ..engine.index import is_index
from ..ui.concept_params import VIEW_NEXT
from .layers import INDEX_PROPERTY, add_result_layer, build_layer, is_result_layer, result_layers
from .tasks import BaseTask

STYLES = Path(__file__).resolve().parent.parent / "resources" / "styles"
TILES_STYLE = STYLES / "concept_tiles.qml"
AREAS_STYLE = STYLES / "concept_areas.qml"
AREA_TILES_STYLE = STYLES / "concept_area_tiles.qml"
PROJECT_SCOPE, PROJECT_KEY = "rsclip_search", "concept"
KIND_TILES, KIND_AREAS, KIND_AREA_TILES = "concept", "concept_areas", "concept_area_tiles"


@dataclass(frozen=True)
class RoundOutcome:
    """A scored round with what the GUI shows, prepared in the task."""

    round: object  # engine.feedback.ConceptRound
    hits: list
    rows: ResultTable
    thumbnails: dict
    params: object  # ui.concept_params.ConceptSearchParams


def apply_style(layer: QgsVectorLayer, style: Path) -> None:
    message, ok = layer.loadNamedStyle(
        str(style),
        QgsMapLayer.StyleCategory.Symbology | QgsMapLayer.StyleCategory.Labeling | QgsMapLayer.StyleCategory.Rendering,
    )
    if not ok:
        raise RuntimeError(f"Cannot apply the plugin's style {style}: {message}")
    layer.triggerRepaint()


class ConceptsController(QObject):
    """Runs the Concepts tab for the plugin's Controller (its tasks, message bar and zoom)."""

    def __init__(self, controller) -> None:
        super().__init__(controller)
        self.c = controller
        self.panel = controller.dock.concepts_panel
        self.round = None
        self.round_params = None
        self.layer: QgsVectorLayer | None = None
        p = self.panel
        p.searchRequested.connect(self.score)
        p.markRequested.connect(self.mark)
        p.markSelectedRequested.connect(self.mark_selected)
        p.newRequested.connect(self.create)
        p.renameRequested.connect(self.rename)
        p.deleteRequested.connect(self.delete)
        p.conceptChosen.connect(self.choose)
        p.thresholdChanged.connect(self.threshold_changed)
        p.areasRequested.connect(self.areas)
        p.exportRequested.connect(self.export)
        p.resultChosen.connect(self.c.zoom_to_tile)
        controller.dock.indexFolderChanged.connect(self.refresh)
        project = QgsProject.instance()
        project.readProject.connect(self.refresh)
        project.cleared.connect(self.refresh)
        self.refresh()

    def shutdown(self) -> None:
        from ..engine.scoring import forget_matrices

        forget_matrices()  # the cached embedding matrix can be gigabytes
        project = QgsProject.instance()
        for signal in (project.readProject, project.cleared, self.c.dock.indexFolderChanged):
            try:
                signal.disconnect(self.refresh)
            except TypeError:
                pass

    # -- the concepts of the index ------------------------------------------------------------
    def folder(self) -> str:
        return self.c.dock.index_dir()

    def concepts(self) -> list:
        folder = self.folder()
        if not folder or not is_index(folder):
            return []
        try:
            return jobs.concept_list(folder)
        except EngineError:
            return []

    def refresh(self, *_args, current: str | None = None) -> None:
        """Fill the concept picker from the index; the project's concept (or ``current``) is chosen."""
        concepts = self.concepts()
        names = [c.name for c in concepts]
        if current is None:
            remembered, _ = QgsProject.instance().readEntry(PROJECT_SCOPE, PROJECT_KEY, "")
            current = remembered if remembered in names else (self.panel.concept() or (names[0] if names else ""))
        self.panel.set_concepts(names, current)
        if self.round is not None and self.round.index_dir != self.folder():
            self.round = None
        if self.panel.concept():
            self.choose(self.panel.concept())
        else:
            self.panel.clear_results("Create a concept: type what to find and press Search.")

    def choose(self, name: str) -> None:
        concept = next((c for c in self.concepts() if c.name == name), None)
        if concept is None:
            return
        remember(concept.name)
        if self.round is not None and self.round.concept.name != concept.name:
            self.round = None
            self.panel.clear_results()
        hint = (
            "press Refine to learn from the marks"
            if concept.accepted or concept.rejected
            else "press Search, then accept (✓) or reject (✗) results"
        )
        self.panel.set_concept_info(
            concept.query,
            concept.negative,
            f"{concept.accepted} accepted, {concept.rejected} rejected, {concept.examples} example(s): {hint}.",
        )

    def _folder(self, folder: str) -> str | None:
        return self.c._folder(folder)

    def _model_then(self, folder: str, run) -> BaseTask | None:
        """Make sure the index's model weights are there (texts are embedded), then run."""
        return self.c.with_weights(self.c._index_model(folder), run)

    def create(self, name: str) -> BaseTask | None:
        folder = self._folder(self.folder())
        if folder is None:
            return None
        query, negative = self.panel.texts()

        def done(task: BaseTask) -> None:
            if self.c._done(task):
                self.refresh(current=task.result.name)
                self.c.notify(f"Created concept {task.result.describe()}.", Qgis.MessageLevel.Success)

        return self._model_then(
            folder,
            lambda: self.c.start(
                BaseTask(
                    f"Creating concept '{name}'",
                    lambda progress, cancel: jobs.concept_create(
                        folder, name, query, negative, progress=progress, cancel=cancel
                    ),
                    done,
                )
            ),
        )

    def rename(self, old: str, new: str) -> None:
        try:
            concept = jobs.concept_rename(self.folder(), old, new)
        except EngineError as exc:
            self.c.notify(str(exc), Qgis.MessageLevel.Critical)
            return
        for layer in result_layers(None, old):
            if layer.customProperty("rsclip/kind") in (KIND_TILES, KIND_AREAS, KIND_AREA_TILES):
                layer.setCustomProperty("rsclip/query", concept.name)
        if self.round is not None and self.round.concept.name == old:
            self.round.concept = concept
        self.refresh(current=concept.name)

    def delete(self, name: str) -> None:
        try:
            concept = jobs.concept_delete(self.folder(), name)
        except EngineError as exc:
            self.c.notify(str(exc), Qgis.MessageLevel.Critical)
            return
        self.round = None
        self.panel.clear_results()
        QgsProject.instance().removeEntry(PROJECT_SCOPE, PROJECT_KEY)
        self.refresh(current="")
        self.c.notify(f"Deleted concept '{concept.name}' and its {concept.marks} mark(s).", Qgis.MessageLevel.Info)

    # -- scoring -------------------------------------------------------------------------------
    def score(self, params) -> BaseTask | None:
        """Search (text), Refine (marks) or What to label next, for the concept of ``params``."""
        from .thumbnails import tile_thumbnails

        folder = self._folder(params.index_dir)
        if folder is None:
            return None
        name = " ".join(params.concept.split())
        known = {c.name.lower(): c for c in self.concepts()}
        concept = known.get(name.lower())
        if not name or (concept is None and not params.query):
            self.c.notify(
                "Type what to find everywhere (e.g. solar farms) and press Search, or choose a concept.",
                Qgis.MessageLevel.Warning,
            )
            return None
        text_changed = concept is None or (params.query, params.negative) != (concept.query, concept.negative)

        def job(progress, cancel):
            if concept is None:
                jobs.concept_create(folder, name, params.query, params.negative, progress=progress, cancel=cancel)
            elif text_changed:
                jobs.concept_set_text(folder, name, params.query, params.negative, progress=progress, cancel=cancel)
            rnd = jobs.concept_score(folder, name, params.top_k, params.top_k, params.use_marks, True, progress, cancel)
            hits = rnd.next if params.view == VIEW_NEXT else rnd.best
            thumbnails = tile_thumbnails(hits, jobs.info(folder).tiling) if hits else {}
            return RoundOutcome(rnd, hits, concept_table(hits, rnd.marks, rnd.concept.name, rnd.model, rnd.marked_hits),
                                thumbnails, params)

        what = {False: "Searching", True: "Refining"}.get(params.use_marks, "Finding tiles to label next for")
        run = lambda: self.c.start(BaseTask(f"{what} '{name}'", job, self._round_done))  # noqa: E731
        return self._model_then(folder, run) if text_changed else run()

    def _round_done(self, task: BaseTask) -> None:
        if not self.c._done(task):
            return
        outcome: RoundOutcome = task.result
        rnd, params = outcome.round, outcome.params
        self.round, self.round_params = rnd, params
        if self.panel.concept() != rnd.concept.name:
            self.refresh(current=rnd.concept.name)
        remember(rnd.concept.name)
        what = "Least certain tiles (label these next)" if params.view == VIEW_NEXT else "Best tiles not marked yet"
        self.panel.show_round(f"{rnd.summary()} {what}:", outcome.hits, outcome.thumbnails, rnd.marks, params.view)
        counts, edges = rnd.histogram
        self.panel.set_histogram(counts, edges, rnd.threshold, rnd.scores.probabilities)
        self.threshold_changed(self.panel.threshold())
        self.c.hits.update({h.tile.id: h for h in outcome.hits})
        if outcome.rows.rows:
            layer = add_result_layer(
                build_layer(outcome.rows, f"RS-CLIP concept: {rnd.concept.name}"),
                KIND_TILES,
                rnd.concept.name,
                rnd.index_dir,
            )
            apply_style(layer, TILES_STYLE)
            self.layer = layer
        self.c.notify(rnd.summary(), Qgis.MessageLevel.Success)

    def threshold_changed(self, value: float) -> None:
        if self.round is not None:
            self.panel.set_count(self.round.count_above(value), self.round.tile_count)

    # -- marks ---------------------------------------------------------------------------------
    def mark(self, params) -> bool:
        """Write marks at once; the list and the concept's layer show them."""
        if not params.concept:
            self.c.notify("Choose or create a concept first.", Qgis.MessageLevel.Warning)
            return False
        groups = {"accepted": "accept", "rejected": "reject", "example": "example", "unmark": "unmark"}
        try:
            concept = jobs.concept_mark(params.index_dir, params.concept, **{groups[params.kind]: params.tile_ids})
        except EngineError as exc:
            self.c.notify(str(exc), Qgis.MessageLevel.Critical)
            if self.round is not None:
                self.panel.update_marks(self.round.marks)
            return False
        marks = self.round.marks if self.round is not None and self.round.concept.name == concept.name else {}
        for tile_id in params.tile_ids:
            if params.kind == "unmark":
                marks.pop(int(tile_id), None)
            else:
                marks[int(tile_id)] = params.kind
        self.panel.update_marks(marks)
        self._show_marks_on_map(concept.name, marks)
        self.choose(concept.name)
        return True

    def mark_selected(self, kind: str) -> bool:
        """Mark the tiles selected on the map, in the RS-CLIP result layers of this index."""
        folder = self.folder()
        ids: set[int] = set()
        for layer in QgsProject.instance().mapLayers().values():
            if not is_result_layer(layer) or not _same_folder(layer.customProperty(INDEX_PROPERTY), folder):
                continue
            field = layer.fields().indexOf("tile_id")
            if field < 0:
                continue
            ids.update(int(f.attribute(field)) for f in layer.selectedFeatures() if f.attribute(field) is not None)
        if not ids:
            self.c.notify(
                "Select tiles on the map first (in an RS-CLIP result layer of this index), then accept or reject them.",
                Qgis.MessageLevel.Warning,
            )
            return False
        from ..ui.concept_params import ConceptMarkParams

        done = self.mark(ConceptMarkParams(folder, self.panel.concept(), sorted(ids), kind))
        if done:
            self.c.notify(f"{len(ids)} selected tile(s) {kind}.", Qgis.MessageLevel.Info)
        return done

    def _show_marks_on_map(self, name: str, marks: dict) -> None:
        for layer in result_layers(KIND_TILES, name):
            fields = layer.fields()
            tile_field, mark_field = fields.indexOf("tile_id"), fields.indexOf("mark")
            changes = {
                f.id(): {mark_field: marks.get(int(f.attribute(tile_field)), "")}
                for f in layer.getFeatures()
                if f.attribute(mark_field) != marks.get(int(f.attribute(tile_field)), "")
            }
            if changes:
                layer.dataProvider().changeAttributeValues(changes)
                layer.triggerRepaint()

    # -- areas and training data ------------------------------------------------------------------
    def areas(self, params) -> BaseTask | None:
        folder = self._folder(params.index_dir)
        if folder is None:
            return None
        use_marks = self.round_params.use_marks if self.round_params is not None else None
        target = str(Path(params.path).expanduser().resolve())
        project = QgsProject.instance()
        for layer in list(project.mapLayers().values()):  # a loaded copy of the file being replaced goes first
            if is_result_layer(layer) and layer.source().split("|")[0] == target:
                project.removeMapLayer(layer.id())

        def job(progress, cancel):
            return jobs.concept_areas(
                folder, params.concept, params.threshold, target, use_marks=use_marks, progress=progress, cancel=cancel
            )

        return self.c.start(
            BaseTask(f"Making areas of '{params.concept}'", job, lambda task: self._areas_done(task, folder))
        )

    def _areas_done(self, task: BaseTask, folder: str):
        if not self.c._done(task):
            return None
        out = task.result
        name = out.round.concept.name
        tiles = QgsVectorLayer(f"{out.path}|layername=tiles", f"RS-CLIP area tiles: {name}", "ogr")
        areas = QgsVectorLayer(f"{out.path}|layername=areas", f"RS-CLIP areas: {name}", "ogr")
        for layer, kind, style in ((tiles, KIND_AREA_TILES, AREA_TILES_STYLE), (areas, KIND_AREAS, AREAS_STYLE)):
            if not layer.isValid():
                self.c.notify(f"Cannot load {out.path} into the project.", Qgis.MessageLevel.Critical)
                return None
            add_result_layer(layer, kind, name, folder)
            apply_style(layer, style)
        self.c.notify(out.summary(), Qgis.MessageLevel.Success)
        return areas

    def export(self, params) -> BaseTask | None:
        folder = self._folder(params.index_dir)
        if folder is None:
            return None

        def done(task: BaseTask) -> None:
            if self.c._done(task):
                self.c.notify(
                    task.result.summary(),
                    Qgis.MessageLevel.Warning if task.result.missing_rasters else Qgis.MessageLevel.Success,
                )

        return self.c.start(
            BaseTask(
                f"Exporting training data of '{params.concept}'",
                lambda progress, cancel: jobs.concept_export(
                    folder, params.concept, params.path, params.chips_dir or None, progress, cancel
                ),
                done,
            )
        )


def remember(name: str) -> None:
    """The project's concept (written only when it changes, so opening a project leaves it unmodified)."""
    project = QgsProject.instance()
    if project.readEntry(PROJECT_SCOPE, PROJECT_KEY, "")[0] != name:
        project.writeEntry(PROJECT_SCOPE, PROJECT_KEY, name)


def _same_folder(a, b) -> bool:
    if not a or not b:
        return False
    return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()
