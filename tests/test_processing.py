"""The toolbox algorithms through processing.run on a real headless QGIS, with the tiny model on real rasters."""
from pathlib import Path

import pytest
from qgis.core import (QgsApplication, QgsCategorizedSymbolRenderer, QgsCoordinateReferenceSystem,
                       QgsCoordinateTransform, QgsDistanceArea, QgsFeature, QgsGeometry, QgsGraduatedSymbolRenderer,
                       QgsPointXY, QgsProcessingException, QgsProcessingFeatureSourceDefinition,
                       QgsProcessingFeedback, QgsProject, QgsRasterLayer, QgsRectangle, QgsVectorLayer)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
NAIP = DATA / "naip" / "naip_m_4709963_se_14_20160816.tif"
LANDSAT = DATA / "landsat" / "landsat_1990.tif"
pytestmark = pytest.mark.skipif(not (NAIP.exists() and LANDSAT.exists()),
                                reason=f"shared test imagery not found at {DATA}")
# NAIP 934x723 px at 224 px → 5 x 4 tiles; Landsat 697x377 → 4 x 2 (neither has nodata-only tiles).
NAIP_TILES, LANDSAT_TILES = 20, 8
WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")


class RecordingFeedback(QgsProcessingFeedback):
    """Keeps what an algorithm reported; cancels once progress passes ``cancel_at`` percent."""

    def __init__(self, cancel_at: float | None = None) -> None:
        super().__init__()
        self.cancel_at = cancel_at
        self.progress_values: list[float] = []
        self.texts: list[str] = []
        self.infos: list[str] = []
        self.warnings: list[str] = []

    def setProgress(self, value: float) -> None:  # noqa: N802 (called from Python by the engine adapter)
        self.progress_values.append(value)
        if self.cancel_at is not None and value > self.cancel_at:
            self.cancel()
        super().setProgress(value)

    def setProgressText(self, text):  # noqa: N802
        self.texts.append(text)
        super().setProgressText(text)

    def pushInfo(self, text):  # noqa: N802
        self.infos.append(text)
        super().pushInfo(text)

    def pushWarning(self, text):  # noqa: N802
        self.warnings.append(text)
        super().pushWarning(text)


def run(alg: str, params: dict, feedback=None) -> dict:
    import processing

    return processing.run(f"rsclip_search:{alg}", {"OUTPUT": "TEMPORARY_OUTPUT", **params}, feedback=feedback)


@pytest.fixture(scope="module")
def provider(qgis_processing, plugin_package):
    from rsclip_search.plugin.processing.provider import RsClipProvider

    registry = QgsApplication.processingRegistry()
    prov = RsClipProvider()
    assert registry.addProvider(prov)
    yield prov
    registry.removeProvider(prov)


@pytest.fixture(scope="module")
def custom_model(tiny_model) -> dict:
    return {"MODEL": "custom", "ARCH": str(tiny_model.config), "CHECKPOINT": str(tiny_model.checkpoint)}


@pytest.fixture(scope="module")
def built(provider, custom_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("proc") / "idx"
    feedback = RecordingFeedback()
    out = run("build_index", {"INPUT": [str(NAIP), str(LANDSAT)], "INDEX": str(folder), **custom_model,
                              "TILE_SIZE": 224, "TILE_UNITS": "pixels", "OVERLAP": 0.0}, feedback)
    return folder, out, feedback


@pytest.fixture
def project_layer(qgis_new_project):
    """Adds layers to the project (where feature-source definitions look them up) and removes them after."""
    added = []

    def add(layer):
        QgsProject.instance().addMapLayer(layer)
        added.append(layer.id())
        return layer

    yield add
    QgsProject.instance().removeMapLayers([i for i in added if QgsProject.instance().mapLayer(i)])


def raster_extent(path: Path, crs: QgsCoordinateReferenceSystem) -> QgsRectangle:
    raster = QgsRasterLayer(str(path), "r")
    extent = raster.extent()
    if raster.crs() != crs:
        extent = QgsCoordinateTransform(raster.crs(), crs, QgsProject.instance()).transformBoundingBox(extent)
    return extent


def tiles_inside_their_rasters(layer: QgsVectorLayer) -> bool:
    """Every feature's footprint, brought back into its raster's CRS, lies within the raster (±1 % of a pixel)."""
    for feat in layer.getFeatures():
        raster = QgsRasterLayer(feat["raster"], "r")
        geom = QgsGeometry(feat.geometry())
        geom.transform(QgsCoordinateTransform(layer.crs(), raster.crs(), QgsProject.instance()))
        if not raster.extent().buffered(raster.rasterUnitsPerPixelX() * 0.01).contains(geom.boundingBox()):
            return False
    return True


def ids(layer) -> list[int]:
    return [f["tile_id"] for f in layer.getFeatures()]


def test_build_index_outputs_folder_and_footprints(built):
    from rsclip_search.engine import jobs

    folder, out, feedback = built
    assert out["INDEX"] == str(folder)
    layer = out["OUTPUT"]
    assert layer.featureCount() == NAIP_TILES + LANDSAT_TILES == jobs.info(folder).tile_count
    assert [f.name() for f in layer.fields()] == ["raster", "tile_id", "model"]
    assert {f["model"] for f in layer.getFeatures()} == {"tiny-clip.json + tiny-clip.pt"}
    assert layer.crs().authid() == "EPSG:26914", "the CRS most tiles share"
    rasters = [f["raster"] for f in layer.getFeatures()]
    assert rasters.count(str(NAIP)) == NAIP_TILES and rasters.count(str(LANDSAT)) == LANDSAT_TILES
    assert len(set(ids(layer))) == layer.featureCount()
    assert tiles_inside_their_rasters(layer), "Landsat tiles reprojected to UTM must still cover Landsat"
    assert max(feedback.progress_values) == pytest.approx(100.0)
    assert any(NAIP.name in t for t in feedback.texts) and not feedback.warnings


def test_build_in_metres_with_bands_into_a_temporary_folder_skipping_an_unusable_raster(provider, custom_model,
                                                                                          tmp_path):
    from osgeo import gdal

    from rsclip_search.engine import jobs
    from rsclip_search.engine.index import is_index

    no_crs = tmp_path / "no_crs.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(no_crs), 64, 64, 3, gdal.GDT_Byte)
    ds.GetRasterBand(1).Fill(120)
    ds = None
    feedback = RecordingFeedback()
    out = run("build_index", {"INPUT": [str(LANDSAT), str(no_crs)], "INDEX": "TEMPORARY_OUTPUT", **custom_model,
                              "TILE_SIZE": 10000, "TILE_UNITS": "metres", "BANDS": "3, 2, 1"}, feedback)
    assert is_index(out["INDEX"]) and Path(out["INDEX"]).name != "TEMPORARY_OUTPUT"
    assert jobs.info(out["INDEX"]).tiling["bands"] == [3, 2, 1]
    assert len(feedback.warnings) == 1 and no_crs.name in feedback.warnings[0]
    assert "coordinate reference system" in feedback.warnings[0]
    layer = out["OUTPUT"]
    assert layer.crs().authid() == "EPSG:4326" and {f["raster"] for f in layer.getFeatures()} == {str(LANDSAT)}
    # ~62 km x 34 km at ~90 m pixels: 10 km tiles are ~112 px → 6 x 3 tiles plus a last column and row snapped
    # to the raster's edges = 7 x 4, each about 10 km wide on the ground.
    assert layer.featureCount() == 28
    measure = QgsDistanceArea()
    measure.setSourceCrs(WGS84, QgsProject.instance().transformContext())
    measure.setEllipsoid("WGS84")
    for feat in layer.getFeatures():
        ring = feat.geometry().asPolygon()[0]
        assert measure.measureLine(ring[0], ring[1]) == pytest.approx(10000, rel=0.02)
    assert tiles_inside_their_rasters(layer)


def test_rerun_keeps_the_recorded_model_and_tiling_and_adds_nothing(built):
    """Another tile size is refused (as on the command line and in the dock: tests/test_one_rule.py); with MODEL
    and the tile parameters left out, the index's own are used."""
    from rsclip_search.engine import jobs

    folder, _, _ = built
    with pytest.raises(QgsProcessingException, match="built with other tile settings .224 px tiles, overlap 0., "
                                                      "not 100 px tiles"):
        run("build_index", {"INPUT": [str(NAIP)], "INDEX": str(folder), "TILE_SIZE": 100})
    feedback = RecordingFeedback()
    out = run("build_index", {"INPUT": [str(NAIP)], "INDEX": str(folder)}, feedback)
    assert f"Adding to the index at {folder}, built with tiny-clip.json + tiny-clip.pt and 224 px tiles, overlap 0." \
        in feedback.infos
    assert any("0 new tiles" in t and "1 unchanged" in t for t in feedback.texts), "the engine's summary"
    assert out["OUTPUT"].featureCount() == NAIP_TILES, "footprints of the rasters given"
    assert jobs.info(folder).tile_count == NAIP_TILES + LANDSAT_TILES


def test_cancel_keeps_the_tiles_indexed_so_far(provider, custom_model, tmp_path):
    from rsclip_search.engine import jobs

    feedback = RecordingFeedback(cancel_at=30)
    out = run("build_index", {"INPUT": [str(NAIP)], "INDEX": str(tmp_path / "idx"), **custom_model,
                              "BATCH_SIZE": 2}, feedback)
    kept = jobs.info(tmp_path / "idx").tile_count
    assert 0 < kept < NAIP_TILES
    assert out["OUTPUT"].featureCount() == kept
    assert any("Cancelled" in w for w in feedback.warnings)


def test_search_text_fields_order_geometry_and_crs(built):
    folder, _, _ = built
    layer = run("search_text", {"INDEX": str(folder), "QUERY": "farmland", "TOP_K": 5})["OUTPUT"]
    assert layer.featureCount() == 5
    assert [f.name() for f in layer.fields()] == ["rank", "score", "raster", "tile_id", "query", "model"]
    feats = list(layer.getFeatures())
    assert {(f["query"], f["model"]) for f in feats} == {("farmland", "tiny-clip.json + tiny-clip.pt")}
    assert [f["rank"] for f in feats] == [1, 2, 3, 4, 5]
    assert [f["score"] for f in feats] == sorted((f["score"] for f in feats), reverse=True)
    assert layer.crs().authid() in ("EPSG:26914", "EPSG:4326") and tiles_inside_their_rasters(layer)


def test_min_score_drops_weaker_tiles(built):
    folder, _, _ = built
    scores = [f["score"] for f in run("search_text", {"INDEX": str(folder), "QUERY": "forest",
                                                      "TOP_K": 100})["OUTPUT"].getFeatures()]
    assert len(scores) == NAIP_TILES + LANDSAT_TILES
    cut = scores[2] - 1e-6  # scores are written with 6 decimals
    kept = [f["score"] for f in run("search_text", {"INDEX": str(folder), "QUERY": "forest", "TOP_K": 100,
                                                    "MIN_SCORE": cut})["OUTPUT"].getFeatures()]
    assert kept == [s for s in scores if s >= cut] and len(kept) >= 3
    none = run("search_text", {"INDEX": str(folder), "QUERY": "forest", "MIN_SCORE": 1.0})["OUTPUT"]
    assert none.isValid() and none.featureCount() == 0
    assert none.fields().names() == ["rank", "score", "raster", "tile_id", "query", "model"]


def test_search_restricted_to_an_extent_returns_only_naip(built):
    folder, _, _ = built
    e = raster_extent(NAIP, QgsCoordinateReferenceSystem("EPSG:26914"))
    extent = f"{e.xMinimum()},{e.xMaximum()},{e.yMinimum()},{e.yMaximum()} [EPSG:26914]"
    layer = run("search_text", {"INDEX": str(folder), "QUERY": "road", "TOP_K": 100, "EXTENT": extent})["OUTPUT"]
    assert layer.featureCount() == NAIP_TILES
    assert {f["raster"] for f in layer.getFeatures()} == {str(NAIP)}
    assert layer.crs().authid() == "EPSG:26914" and tiles_inside_their_rasters(layer)


def polygon_layer(crs: str, rects: list[QgsRectangle]) -> QgsVectorLayer:
    layer = QgsVectorLayer(f"Polygon?crs={crs}", "area", "memory")
    feats = []
    for rect in rects:
        feat = QgsFeature()
        feat.setGeometry(QgsGeometry.fromRect(rect))
        feats.append(feat)
    layer.dataProvider().addFeatures(feats)
    return layer


def test_search_within_the_selected_polygons_of_an_area_layer(built, project_layer):
    folder, out, _ = built
    landsat = raster_extent(LANDSAT, WGS84)
    west = QgsRectangle(landsat.xMinimum() - 0.1, landsat.yMinimum() - 0.1, landsat.center().x() - 0.05,
                        landsat.yMaximum() + 0.1)
    area = project_layer(polygon_layer("EPSG:4326", [west, raster_extent(NAIP, WGS84)]))
    area.selectByIds([next(area.getFeatures()).id()])
    layer = run("search_text", {"INDEX": str(folder), "QUERY": "river", "TOP_K": 100,
                                "AREA": QgsProcessingFeatureSourceDefinition(area.id(), True)})["OUTPUT"]
    footprints = out["OUTPUT"]
    to_wgs84 = QgsCoordinateTransform(footprints.crs(), WGS84, QgsProject.instance())
    expected = set()
    for feat in footprints.getFeatures():
        geom = QgsGeometry(feat.geometry())
        geom.transform(to_wgs84)
        if geom.intersects(QgsGeometry.fromRect(west)):
            expected.add(feat["tile_id"])
    assert 0 < len(expected) < LANDSAT_TILES
    assert set(ids(layer)) == expected, "only the selected (western Landsat) polygon restricts the search"


def test_labels_with_shipped_and_custom_classes(built):
    from rsclip_search.engine.classsets import load_class_set

    folder, _, _ = built
    layer = run("label_tiles", {"INDEX": str(folder), "CLASS_SET": "worldcover"})["OUTPUT"]
    assert layer.featureCount() == NAIP_TILES + LANDSAT_TILES
    assert [f.name() for f in layer.fields()] == ["label", "probability", "margin", "raster", "tile_id", "classes",
                                                  "model"]
    assert {(f["classes"], f["model"]) for f in layer.getFeatures()} == \
        {("worldcover", "tiny-clip.json + tiny-clip.pt")}
    assert {f["label"] for f in layer.getFeatures()} <= set(load_class_set("worldcover"))
    assert all(0 < f["probability"] <= 1 and f["margin"] >= 0 for f in layer.getFeatures())
    assert layer.crs().authid() == "EPSG:26914" and tiles_inside_their_rasters(layer)
    layer = run("label_tiles", {"INDEX": str(folder), "CLASS_SET": "custom list", "CLASSES": "water, crops",
                                "TEMPLATE": "an image of {}; a photo of {}"})["OUTPUT"]
    assert {f["label"] for f in layer.getFeatures()} <= {"water", "crops"}


def test_loaded_outputs_are_styled_by_class_and_by_score(built, qgis_new_project):
    import processing

    folder, _, _ = built
    out = processing.runAndLoadResults("rsclip_search:label_tiles", {
        "INDEX": str(folder), "CLASS_SET": "custom list", "CLASSES": "water\nforest\nbuildings",
        "OUTPUT": "TEMPORARY_OUTPUT"})
    layer = QgsProject.instance().mapLayer(out["OUTPUT"])
    assert isinstance(layer.renderer(), QgsCategorizedSymbolRenderer)
    assert layer.renderer().classAttribute() == "label"
    found = {f["label"] for f in layer.getFeatures()}
    assert [c.value() for c in layer.renderer().categories()] == [c for c in ("water", "forest", "buildings")
                                                                   if c in found], "the classes found, in set order"
    out = processing.runAndLoadResults("rsclip_search:search_text", {
        "INDEX": str(folder), "QUERY": "lake", "TOP_K": 10, "OUTPUT": "TEMPORARY_OUTPUT"})
    layer = QgsProject.instance().mapLayer(out["OUTPUT"])
    assert isinstance(layer.renderer(), QgsGraduatedSymbolRenderer) and layer.renderer().classAttribute() == "score"


@pytest.mark.parametrize("by", ["name", "number", "number as text"])
def test_enum_options_by_name_or_by_the_number_qgis_process_help_lists(built, tmp_path, tiny_model, by):
    """``qgis_process help`` lists enum options by number (``- 2: worldcover``); names stay accepted."""
    from rsclip_search.engine import jobs
    from rsclip_search.engine.classsets import available_class_sets, load_class_set
    from rsclip_search.engine.models import REGISTRY

    def choice(options: list, name: str):
        return {"name": name, "number": options.index(name), "number as text": str(options.index(name))}[by]

    folder, _, _ = built
    class_sets = [*available_class_sets(), "custom list"]
    layer = run("label_tiles", {"INDEX": str(folder), "CLASS_SET": choice(class_sets, "ucmerced")})["OUTPUT"]
    assert {f["label"] for f in layer.getFeatures()} <= set(load_class_set("ucmerced"))
    layer = run("label_tiles", {"INDEX": str(folder), "CLASS_SET": choice(class_sets, "custom list"),
                                "CLASSES": "water, crops"})["OUTPUT"]
    assert {f["label"] for f in layer.getFeatures()} <= {"water", "crops"}

    new = tmp_path / "idx"
    run("build_index", {"INPUT": [str(LANDSAT)], "INDEX": str(new), "ARCH": str(tiny_model.config),
                        "CHECKPOINT": str(tiny_model.checkpoint), "MODEL": choice([*REGISTRY, "custom"], "custom"),
                        "TILE_SIZE": 20_000, "TILE_UNITS": choice(["pixels", "metres"], "metres")})
    info = jobs.info(new)
    assert info.model_label == "tiny-clip.json + tiny-clip.pt" and info.tiling["units"] == "m"


def test_similar_from_features_selected_features_and_a_point(built, project_layer):
    from rsclip_search.engine import jobs

    folder, _, _ = built
    hits = run("search_text", {"INDEX": str(folder), "QUERY": "lake", "TOP_K": 3})["OUTPUT"]
    out = run("similar_tiles", {"INDEX": str(folder), "TILES": hits, "TOP_K": 4})["OUTPUT"]
    assert out.featureCount() == 4 and not set(ids(hits)) & set(ids(out))
    assert ids(out) == [h.tile.id for h in jobs.similar(folder, ids(hits), 4)]

    hits = project_layer(hits)
    chosen = next(hits.getFeatures())
    hits.selectByIds([chosen.id()])
    out = run("similar_tiles", {"INDEX": str(folder), "TILES": QgsProcessingFeatureSourceDefinition(hits.id(), True),
                                "TOP_K": 3})["OUTPUT"]
    assert ids(out) == [h.tile.id for h in jobs.similar(folder, [chosen["tile_id"]], 3)]

    c = raster_extent(NAIP, QgsCoordinateReferenceSystem("EPSG:26914")).center()
    out = run("similar_tiles", {"INDEX": str(folder), "POINT": f"{c.x()},{c.y()} [EPSG:26914]", "TOP_K": 3})["OUTPUT"]
    to_wgs84 = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:26914"), WGS84, QgsProject.instance())
    lonlat = to_wgs84.transform(QgsPointXY(c))
    under = jobs.tiles_at(folder, lonlat.x(), lonlat.y())
    assert under and ids(out) == [h.tile.id for h in jobs.similar(folder, under, 3)]
    assert out.crs().authid() in ("EPSG:26914", "EPSG:4326") and tiles_inside_their_rasters(out)


def no_tile_id_layer():
    return polygon_layer("EPSG:4326", [QgsRectangle(0, 0, 1, 1)])


@pytest.mark.parametrize("alg,params,message", [
    ("search_text", {"INDEX": "missing", "QUERY": "water"}, "No RS-CLIP Search index at"),
    ("search_text", {"INDEX": "not_index", "QUERY": "water"}, "No RS-CLIP Search index at"),
    ("search_text", {"QUERY": "   "}, "The search text is empty"),
    ("search_text", {"QUERY": "water", "EXTENT": "-74.7,-74.6,-8.6,-8.5 [EPSG:4326]", "AREA": "far_area"},
     "do not overlap"),
    ("label_tiles", {"CLASS_SET": "crops"}, "CLASS_SET must be one of 'eurosat', 'ucmerced', 'worldcover', "
                                            "'custom list' or their numbers 0 to 3, not 'crops'"),
    ("label_tiles", {"CLASS_SET": "4"}, "CLASS_SET must be one of"),
    ("label_tiles", {"CLASS_SET": -1}, "not '-1'"),
    ("label_tiles", {"CLASS_SET": "custom list", "CLASSES": "water, Water"}, "at least two different classes"),
    ("label_tiles", {"CLASS_SET": "eurosat", "TEMPLATE": "a photo"}, "has no '{}'"),
    ("similar_tiles", {}, "Give example tiles"),
    ("similar_tiles", {"TILES": "no_tile_id"}, "has no tile_id field"),
    ("similar_tiles", {"TILES": "nothing_selected"}, "no features with a tile_id"),
    ("similar_tiles", {"POINT": "0,0 [EPSG:4326]"}, "No tile of the index lies under the point"),
    ("build_index", {"MODEL": "custom", "ARCH": "ViT-B-32"}, "MODEL 'custom' needs ARCH"),
    ("build_index", {"BANDS": "red,green,blue"}, "Bands 'red,green,blue' must be band numbers"),
    ("build_index", {"BANDS": "1,2"}, "must name one band"),
    ("build_index", {"TILE_UNITS": "feet"}, "TILE_UNITS must be one of 'pixels', 'metres'"),
    ("build_index", {"MODEL": "8"}, "MODEL must be one of 'remoteclip-vit-b-32'"),
])
def test_invalid_parameters_fail_with_a_readable_message(built, tmp_path, project_layer, alg, params, message):
    folder, _, _ = built
    (tmp_path / "not_index").mkdir()
    (tmp_path / "not_index" / "notes.txt").write_text("not an index")
    values = {"missing": str(tmp_path / "missing"), "not_index": str(tmp_path / "not_index"),
              "far_area": polygon_layer("EPSG:4326", [QgsRectangle(10, 10, 11, 11)]),
              "no_tile_id": no_tile_id_layer()}
    if params.get("TILES") == "nothing_selected":
        hits = project_layer(run("search_text", {"INDEX": str(folder), "QUERY": "lake", "TOP_K": 2})["OUTPUT"])
        params = {"TILES": QgsProcessingFeatureSourceDefinition(hits.id(), True)}
    params = {k: values.get(v, v) if isinstance(v, str) else v for k, v in params.items()}
    if alg == "build_index":
        params = {"INPUT": [str(NAIP)], "INDEX": str(tmp_path / "new"), **params}
    with pytest.raises(QgsProcessingException) as err:
        run(alg, {"INDEX": str(folder), **params})
    assert message in str(err.value) and "Traceback" not in str(err.value)
    assert not (tmp_path / "new").exists(), "a refused build creates nothing"


def test_geopackage_outputs_add_a_layer_refuse_an_existing_one_or_replace_it(built, tmp_path):
    """The engine's GeoPackage rule (as search --out): add, refuse, OVERWRITE replaces only that layer."""
    from osgeo import gdal, ogr

    folder = built[0]
    out = tmp_path / "project.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(out))
    roads = ds.CreateLayer("roads", None, ogr.wkbPoint)
    feat = ogr.Feature(roads.GetLayerDefn())
    feat.SetGeometry(ogr.CreateGeometryFromWkt("POINT (1 2)"))
    roads.CreateFeature(feat)
    ds = feat = roads = None

    def layers() -> dict:
        opened = gdal.OpenEx(str(out), gdal.OF_VECTOR)
        return {opened.GetLayer(i).GetName(): opened.GetLayer(i).GetFeatureCount()
                for i in range(opened.GetLayerCount())}

    run("search_text", {"INDEX": str(folder), "QUERY": "lake", "TOP_K": 4, "OUTPUT": str(out)})
    assert layers() == {"roads": 1, "search_results": 4}
    with pytest.raises(QgsProcessingException, match="already has a layer named 'search_results'"):
        run("search_text", {"INDEX": str(folder), "QUERY": "lake", "TOP_K": 2, "OUTPUT": str(out)})
    run("search_text", {"INDEX": str(folder), "QUERY": "lake", "TOP_K": 2, "OUTPUT": str(out), "OVERWRITE": True})
    run("label_tiles", {"INDEX": str(folder), "CLASS_SET": "worldcover", "OUTPUT": str(out)})
    assert layers() == {"roads": 1, "search_results": 2, "tile_labels": NAIP_TILES + LANDSAT_TILES}
    notes = tmp_path / "notes.gpkg"
    notes.write_text("field notes")
    with pytest.raises(QgsProcessingException, match="is not a GeoPackage"):
        run("search_text", {"INDEX": str(folder), "QUERY": "lake", "OUTPUT": str(notes), "OVERWRITE": True})
    assert notes.read_text() == "field notes"
