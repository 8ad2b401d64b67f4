"""Training data out: a concept's accepted, rejected and example tiles as a GeoPackage and image chips.

The GeoPackage layer ``training_tiles`` has one polygon per marked tile (its footprint, in the CRS
most marks share) with ``verdict`` (accepted / rejected / example), ``label`` (1 for accepted and
examples, 0 for rejected), the concept, the raster, the pixel window and, with chips, the chip's
path. Chips are GeoTIFFs of the tile's window at the raster's native resolution with all its
bands, georeferenced, in ``<chips>/<verdict>/`` — an ImageFolder layout a segmentation or
detection pipeline reads directly. Marks whose tile left the index are exported too (marks keep
their footprint); a raster file that is gone gets no chip and is reported.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .areas import write_layers_gpkg
from .atomic import atomic_write
from .concepts import Concept, Mark, concept_marks, slug
from .errors import EngineError
from .export import common_crs, tile_geometry_wkt
from .gdalutil import gdal_errors
from .progress import CancelFn, ProgressFn, check_cancel, no_progress

TRAINING_FIELDS = (("tile_id", "int"), ("verdict", "str"), ("label", "int"), ("concept", "str"), ("raster", "str"),
                   ("col_off", "int"), ("row_off", "int"), ("width", "int"), ("height", "int"), ("chip", "str"))
LABELS = {"accepted": 1, "example": 1, "rejected": 0}


@dataclass
class TrainingExport:
    path: Path
    counts: dict[str, int]
    chips_dir: Path | None = None
    chips: int = 0
    missing_rasters: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()))
        text = f"Wrote {sum(self.counts.values())} marked tile(s) ({parts}) to {self.path}"
        if self.chips_dir is not None:
            text += f" and {self.chips} chip(s) to {self.chips_dir}"
        text += "."
        if self.missing_rasters:
            text += (f" No chips for {len(self.missing_rasters)} raster(s) that cannot be read: "
                     + ", ".join(Path(p).name for p in self.missing_rasters[:3]) + ".")
        return text


def export_training(conn, concept: Concept, out: str | Path, chips: str | Path | None = None,
                    progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> TrainingExport:
    """Write the concept's marked tiles (and optionally their chips); refuses a concept with no marks."""
    progress = progress or no_progress
    marks = concept_marks(conn, concept)
    if not marks:
        raise EngineError(f"The concept '{concept.name}' has no marked tiles to export yet; accept or reject "
                          "some results first.")
    chip_paths: dict[int, str] = {}
    missing: list[str] = []
    chips_dir = None
    if chips:
        chips_dir = Path(chips).expanduser().resolve()
        if chips_dir.exists() and not chips_dir.is_dir():
            raise EngineError(f"{chips_dir} is a file; give a folder for the chips.")
        chip_paths, missing = write_chips(marks, chips_dir, concept, progress, cancel)
    crs_wkt = common_crs(marks)
    rows = [({"tile_id": m.tile_id, "verdict": m.kind, "label": LABELS[m.kind], "concept": concept.name,
              "raster": m.raster, "col_off": m.window[0], "row_off": m.window[1], "width": m.window[2],
              "height": m.window[3], "chip": chip_paths.get(n, "")}, tile_geometry_wkt(m, crs_wkt))
            for n, m in enumerate(marks)]
    desc = (f"Training tiles of concept '{concept.name}'" + (f" (text “{concept.query}”)" if concept.query else "")
            + ": label 1 = accepted or example, 0 = rejected.")
    path = write_layers_gpkg(out, [("training_tiles", "polygon", crs_wkt, TRAINING_FIELDS, rows, desc)],
                             {"RSCLIP_CONCEPT": concept.name, "RSCLIP_QUERY": concept.query,
                              "RSCLIP_NEGATIVE": concept.negative})
    progress(1.0, f"{len(marks)} marked tiles exported")
    return TrainingExport(path, dict(Counter(m.kind for m in marks)), chips_dir, len(chip_paths), missing)


def write_chips(marks: list[Mark], folder: Path, concept: Concept, progress: ProgressFn,
                cancel: CancelFn | None) -> tuple[dict[int, str], list[str]]:
    """One GeoTIFF per mark (native resolution, all bands) under ``folder/<verdict>/``; returns
    {mark position: chip path} and the rasters that could not be read."""
    from osgeo import gdal

    written: dict[int, str] = {}
    missing: list[str] = []
    used: set[str] = set()
    sources: dict[str, object] = {}
    try:
        for n, mark in enumerate(marks):
            check_cancel(cancel)
            progress(n / len(marks), f"chip {n + 1} of {len(marks)}")
            if mark.raster in missing:
                continue
            src = sources.get(mark.raster)
            if src is None:
                try:
                    with gdal_errors() as errors:
                        src = errors.check(gdal.Open(mark.raster))
                except RuntimeError:
                    src = None
                if src is None:
                    missing.append(mark.raster)
                    continue
                sources[mark.raster] = src
            col, row, width, height = mark.window
            sub = folder / mark.kind
            sub.mkdir(parents=True, exist_ok=True)
            name = f"{slug(concept.name)}_{slug(Path(mark.raster).stem)}_{col}_{row}_{width}x{height}"
            candidate, k = name, 1
            while candidate in used:
                k += 1
                candidate = f"{name}_{k}"
            used.add(candidate)
            target = sub / f"{candidate}.tif"

            def cut(tmp: str, src=src, window=(col, row, width, height)) -> None:
                with gdal_errors() as errors:
                    errors.check(gdal.Translate(tmp, src, format="GTiff", srcWin=list(window),
                                                creationOptions=["COMPRESS=DEFLATE"]))
                    errors.check()  # what closing the chip reported (the dataset is released above)

            try:
                atomic_write(target, cut)
            except RuntimeError as exc:
                raise EngineError(f"Cannot write the chip {target}: {exc}.") from None
            written[n] = str(target)
    finally:
        sources.clear()
    return written, missing
