"""Shared fixtures; QGIS itself is started once per session by pytest-qgis."""
from plugin_fixtures import prepare_environment

prepare_environment()

from plugin_fixtures import naip_raster, plugin_package  # noqa: E402,F401

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Config JSON + checkpoint of a tiny random-weight CLIP (see tests/tinymodel.py)."""
    from tinymodel import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))
