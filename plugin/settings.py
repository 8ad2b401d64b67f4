"""The plugin's persistent settings: one typed key each, all under /rsclip_search/.

Only the plugin side reads and writes them (the controller and its helpers): the dock and the
dialogs are filled from them (``dock_choices``, ``web_choices``) and the choices travel back in
the requests, which the controller remembers (``remember_*``) before it runs them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from qgis.core import QgsSettings

from ..engine.models.registry import DEFAULT_MODEL
from ..ui.params import DockChoices, IndexParams, LabelParams, SearchParams, WebMapChoices

T = TypeVar("T")
PREFIX = "rsclip_search"
_DOCK = DockChoices()
_WEB = WebMapChoices()


@dataclass(frozen=True)
class Setting(Generic[T]):
    key: str
    default: T

    def get(self) -> T:
        value = QgsSettings().value(f"{PREFIX}/{self.key}", self.default, type=type(self.default))
        return value if value is not None else self.default

    def set(self, value: T) -> None:
        QgsSettings().setValue(f"{PREFIX}/{self.key}", value)


INDEX_DIR = Setting("index/folder", "")
#: A registry model's name, or the dock's "Custom checkpoint…" entry.
MODEL = Setting("index/model", DEFAULT_MODEL)
CUSTOM_ARCH = Setting("index/custom_arch", _DOCK.custom_arch)
CUSTOM_CHECKPOINT = Setting("index/custom_checkpoint", _DOCK.custom_checkpoint)
TILE_SIZE = Setting("index/tile_size", _DOCK.tile_size)
TILE_UNITS = Setting("index/tile_units", _DOCK.tile_units)
OVERLAP = Setting("index/overlap", _DOCK.overlap)
BATCH_SIZE = Setting("index/batch_size", 32)
TOP_K = Setting("search/top_k", _DOCK.top_k)
#: Below -1 no score can be, so the default means "no minimum".
MIN_SCORE = Setting("search/min_score", _DOCK.min_score)
CLASS_SET = Setting("label/class_set", "worldcover")
CUSTOM_CLASSES = Setting("label/custom_classes", _DOCK.custom_classes)
TEMPLATES = Setting("label/templates", _DOCK.templates)
RESULTS_DIR = Setting("results/folder", _DOCK.results_dir)
TORCH_VARIANT = Setting("deps/variant", "auto")
BUNDLE = Setting("deps/bundle", "")
WEB_MAX_REQUESTS = Setting("web/max_requests", _WEB.max_requests)
WEB_ZOOM = Setting("web/zoom", _WEB.zoom)
WEB_RESOLUTION = Setting("web/resolution_m", _WEB.resolution_m)


def dock_choices() -> DockChoices:
    """The dock's fields as the user left them (the model and class set are chosen with their lists)."""
    return DockChoices(top_k=TOP_K.get(), min_score=MIN_SCORE.get(), custom_classes=CUSTOM_CLASSES.get(),
                       templates=TEMPLATES.get(), custom_arch=CUSTOM_ARCH.get(),
                       custom_checkpoint=CUSTOM_CHECKPOINT.get(), tile_size=TILE_SIZE.get(),
                       tile_units=TILE_UNITS.get(), overlap=OVERLAP.get(), results_dir=RESULTS_DIR.get())


def remember_search(params: SearchParams) -> None:
    TOP_K.set(params.top_k)
    MIN_SCORE.set(_DOCK.min_score if params.min_score is None else params.min_score)


def remember_label(params: LabelParams) -> None:
    CLASS_SET.set(params.class_set)
    CUSTOM_CLASSES.set(params.custom_classes)
    TEMPLATES.set(params.templates)


def remember_index(params: IndexParams, custom_label: str) -> None:
    """The Index tab's model and tiling; ``custom_label``: what MODEL holds for a custom checkpoint."""
    MODEL.set(params.model or custom_label)
    if not params.model:  # a registry model leaves the last custom checkpoint remembered for next time
        CUSTOM_ARCH.set(params.custom_arch or "")
        CUSTOM_CHECKPOINT.set(params.custom_checkpoint or "")
    TILE_SIZE.set(float(params.tile_size))
    TILE_UNITS.set(params.tile_units)
    OVERLAP.set(float(params.overlap))


def web_choices() -> WebMapChoices:
    return WebMapChoices(zoom=WEB_ZOOM.get(), resolution_m=WEB_RESOLUTION.get(), max_requests=WEB_MAX_REQUESTS.get())


def remember_web(choices: WebMapChoices) -> None:
    WEB_ZOOM.set(choices.zoom)
    WEB_RESOLUTION.set(choices.resolution_m)
    WEB_MAX_REQUESTS.set(choices.max_requests)
