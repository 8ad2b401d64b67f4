"""QGIS entry point of RS-CLIP Search."""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    """Called by QGIS to create the plugin; everything heavy loads later, on demand."""
    from .plugin.plugin import RsClipSearchPlugin

    return RsClipSearchPlugin(iface)
