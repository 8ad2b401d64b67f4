"""Shared fixtures; QGIS itself is started once per session by pytest-qgis."""
from plugin_fixtures import prepare_environment

prepare_environment()

from plugin_fixtures import naip_raster, plugin_package  # noqa: E402,F401
