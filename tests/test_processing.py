"""The toolbox algorithms through processing.run on a real headless QGIS."""
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProcessingException, QgsRasterLayer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
NAIP = DATA / "naip" / "naip_m_4709963_se_14_20160816.tif"
LANDSAT = DATA / "landsat" / "landsat_1990.tif"
pytestmark = pytest.mark.skipif(not NAIP.exists(), reason=f"shared test imagery not found at {DATA}")


@pytest.fixture(scope="module")
def provider(qgis_processing, plugin_package):
    from rsclip_search.plugin.processing.provider import RsClipProvider

    registry = QgsApplication.processingRegistry()
    prov = RsClipProvider()
    registry.addProvider(prov)
    yield prov
    registry.removeProvider(prov)


@pytest.fixture(scope="module")
def built(provider, tiny_model, tmp_path_factory):
    import processing

    folder = tmp_path_factory.mktemp("proc") / "idx"
    out = processing.run("rsclip_search:build_index", {
        "INPUT": [str(NAIP), str(LANDSAT)], "INDEX": str(folder), "MODEL": len(_models()) - 1,
        "ARCH": str(tiny_model.config), "CHECKPOINT": str(tiny_model.checkpoint), "TILE_SIZE": 224,
        "TILE_UNITS": 0, "OVERLAP": 0.0, "OUTPUT": "TEMPORARY_OUTPUT"})
    return folder, out


def _models():
    from rsclip_search.engine.models import REGISTRY

    return [*REGISTRY, "custom"]


def in_extent(layer, raster_path):
    raster = QgsRasterLayer(str(raster_path), "r")
    extent = raster.extent().buffered(raster.rasterUnitsPerPixelX() * 0.01)
    return all(extent.contains(f.geometry().boundingBox()) for f in layer.getFeatures())


def test_build_index_outputs_folder_and_footprints(built):
    folder, out = built
    assert out["INDEX"] == str(folder)
    layer = out["OUTPUT"]
    # NAIP 934x723 at 224 px → 5 x 4 tiles; Landsat 697x377 → 4 x 2 tiles (no nodata tiles in either).
    assert layer.featureCount() == 20 + 8
    assert [f.name() for f in layer.fields()] == ["raster", "tile_id"]
    assert layer.crs().authid() == "EPSG:26914", "the CRS most tiles share"
    assert {f["raster"] for f in layer.getFeatures()} == {str(NAIP), str(LANDSAT)}


def test_search_text_fields_geometry_and_crs(built):
    import processing

    folder, _ = built
    out = processing.run("rsclip_search:search_text", {"INDEX": str(folder), "QUERY": "farmland", "TOP_K": 5,
                                                       "OUTPUT": "TEMPORARY_OUTPUT"})
    layer = out["OUTPUT"]
    assert layer.featureCount() == 5
    assert [f.name() for f in layer.fields()] == ["rank", "score", "raster", "tile_id"]
    assert [f["rank"] for f in layer.getFeatures()] == [1, 2, 3, 4, 5]


def test_search_restricted_to_an_extent_returns_only_naip(built):
    import processing

    folder, _ = built
    raster = QgsRasterLayer(str(NAIP), "naip")
    e = raster.extent()
    extent = f"{e.xMinimum()},{e.xMaximum()},{e.yMinimum()},{e.yMaximum()} [EPSG:26914]"
    out = processing.run("rsclip_search:search_text", {"INDEX": str(folder), "QUERY": "road", "TOP_K": 100,
                                                       "EXTENT": extent, "OUTPUT": "TEMPORARY_OUTPUT"})
    layer = out["OUTPUT"]
    assert layer.featureCount() == 20
    assert {f["raster"] for f in layer.getFeatures()} == {str(NAIP)}
    assert layer.crs().authid() == "EPSG:26914" and in_extent(layer, NAIP)


def test_labels_with_shipped_and_custom_classes(built):
    import processing

    from rsclip_search.engine.classsets import available_class_sets, load_class_set

    folder, _ = built
    sets = list(available_class_sets())
    out = processing.run("rsclip_search:label_tiles", {"INDEX": str(folder), "CLASS_SET": sets.index("worldcover"),
                                                       "OUTPUT": "TEMPORARY_OUTPUT"})
    layer = out["OUTPUT"]
    assert layer.featureCount() == 28
    assert [f.name() for f in layer.fields()] == ["label", "probability", "margin", "raster", "tile_id"]
    assert {f["label"] for f in layer.getFeatures()} <= set(load_class_set("worldcover"))
    out = processing.run("rsclip_search:label_tiles", {"INDEX": str(folder), "CLASS_SET": len(sets),
                                                       "CLASSES": "water, crops", "TEMPLATE": "an image of {}",
                                                       "OUTPUT": "TEMPORARY_OUTPUT"})
    assert {f["label"] for f in out["OUTPUT"].getFeatures()} <= {"water", "crops"}


def test_similar_from_features_and_from_a_point(built):
    import processing

    folder, _ = built
    hits = processing.run("rsclip_search:search_text", {"INDEX": str(folder), "QUERY": "lake", "TOP_K": 2,
                                                        "OUTPUT": "TEMPORARY_OUTPUT"})["OUTPUT"]
    out = processing.run("rsclip_search:similar_tiles", {"INDEX": str(folder), "TILES": hits, "TOP_K": 4,
                                                         "OUTPUT": "TEMPORARY_OUTPUT"})["OUTPUT"]
    example_ids = {f["tile_id"] for f in hits.getFeatures()}
    assert out.featureCount() == 4 and not example_ids & {f["tile_id"] for f in out.getFeatures()}
    raster = QgsRasterLayer(str(NAIP), "naip")
    c = raster.extent().center()
    out = processing.run("rsclip_search:similar_tiles", {"INDEX": str(folder), "POINT": f"{c.x()},{c.y()} [EPSG:26914]",
                                                         "TOP_K": 3, "OUTPUT": "TEMPORARY_OUTPUT"})["OUTPUT"]
    assert out.featureCount() == 3


@pytest.mark.parametrize("alg,params,message", [
    ("search_text", {"QUERY": "water"}, "No RS-CLIP Search index"),
    ("search_text", {"QUERY": "   "}, "search text is empty"),
    ("label_tiles", {"CLASS_SET": 3, "CLASSES": "water"}, "at least two"),
    ("similar_tiles", {}, "Give example tiles"),
])
def test_invalid_parameters_fail_with_a_readable_message(built, tmp_path, alg, params, message):
    import processing

    folder, _ = built
    index = str(tmp_path / "none") if message.startswith("No RS-CLIP") else str(folder)
    with pytest.raises(QgsProcessingException, match=message):
        processing.run(f"rsclip_search:{alg}", {"INDEX": index, "OUTPUT": "TEMPORARY_OUTPUT", **params})
