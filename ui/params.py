"""What the dock asks for: plain parameter dataclasses, turned into tasks by the controller."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class IndexParams:
    index_dir: str
    rasters: list[str]
    model: str | None = None
    custom_arch: str | None = None
    custom_checkpoint: str | None = None
    tile_size: float = 224.0
    tile_units: str = "px"
    overlap: float = 0.0
    batch_size: int = 32
    #: ``engine.sources.RemoteOptions`` for web maps and URLs (credentials, request cap); None: defaults.
    remote: object | None = None
    #: Tile scales as typed, e.g. "1,2,4" (engine/scales.py); empty: the index's own (1 for a new index).
    scales: str = ""


@dataclass(frozen=True)
class SearchParams:
    index_dir: str
    query: str
    top_k: int = 20
    min_score: float | None = None
    rasters: list[str] = field(default_factory=list)
    #: Only tiles of this scale (an index with several); None: all, best hit per place.
    scale: int | None = None


@dataclass(frozen=True)
class SimilarParams:
    index_dir: str
    tile_ids: list[int]
    top_k: int = 20
    min_score: float | None = None
    scale: int | None = None


@dataclass(frozen=True)
class LabelParams:
    """A shipped class set by name, or (class_set empty) the user's own comma/newline list."""

    index_dir: str
    class_set: str = ""
    custom_classes: str = ""
    templates: str = ""


@dataclass(frozen=True)
class InstallParams:
    """How to install the packages: torch build (auto, cpu, cuda) and an offline bundle (empty: internet)."""

    variant: str = "auto"
    bundle: str = ""


@dataclass(frozen=True)
class DockChoices:
    """What the dock shows when it opens: the user's last choices, which the controller keeps in QGIS's
    settings (plugin/settings.py). The defaults are the plugin's defaults."""

    top_k: int = 20
    #: -1 (below any score) means "no minimum".
    min_score: float = -1.0
    custom_classes: str = ""
    templates: str = ""
    custom_arch: str = ""
    custom_checkpoint: str = ""
    tile_size: float = 224.0
    tile_units: str = "px"
    overlap: float = 0.0
    #: Where the save dialog starts (the folder of the last GeoPackage saved); empty: the home folder.
    results_dir: str = ""


@dataclass(frozen=True)
class WebMapChoices:
    """The web map dialog's zoom (XYZ), ground resolution (WMS) and request cap."""

    zoom: int = 17
    resolution_m: float = 1.0
    max_requests: int = 2000
