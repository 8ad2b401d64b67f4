"""``python -m engine``: the command line."""
import sys

from .cli import main


def _choose_gdal_error_mode() -> None:
    """This process is the command line's own, so it says how GDAL reports errors: by return values, the mode the
    engine expects outside ``gdal_exceptions()``. Unsaid, GDAL 3.9 and later (Debian 13, QGIS 3.40) print a
    FutureWarning on the user's terminal at the first raster opened. Inside QGIS the engine leaves this to QGIS."""
    try:
        from osgeo import gdal
    except ImportError:  # the installer's commands also run in Pythons without GDAL
        return
    gdal.DontUseExceptions()


_choose_gdal_error_mode()
sys.exit(main())
