"""Getting the engine's Python packages into a user's own QGIS: plan, install, bundle, diagnose.

Everything here runs in QGIS's own Python *before* torch exists there, so it imports only
the standard library. Packages go into a plugin-private folder inside the QGIS profile
(never into QGIS's or the system's Python), installed by that Python's pip, with NumPy held
at the version QGIS's GDAL bindings were built against.
"""
from .bundle import BundleManifest, assemble_bundle, build_bundle, verify_bundle
from .host import HostFacts, current_host, detect_nvidia, probe_host
from .installer import (Activation, InstallPlan, InstallResult, activate, deps_dir, install, installed_record,
                        missing_imports, plan_install)
from .pins import VARIANTS, Requirements, default_variant, requirements_for

__all__ = ["Activation", "BundleManifest", "HostFacts", "InstallPlan", "InstallResult", "Requirements", "VARIANTS",
           "activate", "assemble_bundle", "build_bundle", "current_host", "default_variant", "deps_dir",
           "detect_nvidia", "install", "installed_record", "missing_imports", "plan_install", "probe_host",
           "requirements_for", "verify_bundle"]
