"""The plugin's persistent settings: one typed key each, all under /rsclip_search/."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from qgis.core import QgsSettings

from ..engine.models.registry import DEFAULT_MODEL

T = TypeVar("T")
PREFIX = "rsclip_search"


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
MODEL = Setting("index/model", DEFAULT_MODEL)
CUSTOM_ARCH = Setting("index/custom_arch", "")
CUSTOM_CHECKPOINT = Setting("index/custom_checkpoint", "")
TILE_SIZE = Setting("index/tile_size", 224.0)
TILE_UNITS = Setting("index/tile_units", "px")
OVERLAP = Setting("index/overlap", 0.0)
BATCH_SIZE = Setting("index/batch_size", 32)
TOP_K = Setting("search/top_k", 20)
#: Below -1 no score can be, so the default means "no minimum".
MIN_SCORE = Setting("search/min_score", -1.0)
CLASS_SET = Setting("label/class_set", "worldcover")
CUSTOM_CLASSES = Setting("label/custom_classes", "")
TEMPLATES = Setting("label/templates", "")
RESULTS_DIR = Setting("results/folder", "")
TORCH_VARIANT = Setting("deps/variant", "auto")
BUNDLE = Setting("deps/bundle", "")
WEB_MAX_REQUESTS = Setting("web/max_requests", 2000)
WEB_ZOOM = Setting("web/zoom", 17)
WEB_RESOLUTION = Setting("web/resolution_m", 1.0)
