"""Index the project's web map layers (XYZ, WMS) over an extent, with the cost shown first.

A QGIS web layer (provider ``wms``) is read from its data source URI: the URL template or
service, layers, styles, format, CRS, the Referer and other ``http-header:`` entries, and its
authentication configuration. The engine stores only what is not secret (URL, Referer, the
authcfg *id*); the credentials are resolved here, on the main thread, by QGIS's authentication
manager into request headers that live only as long as the job. Not supported, and said so:
WMTS layers (their tile matrices live in capabilities the engine does not read), and
authentication methods that do not work by headers (client certificates, URL tokens).
QGIS's own network cache is not used: tiles go to the engine's tile cache, which the CLI
shares (``RSCLIP_WEB_CACHE``, else ``~/.cache/rsclip_search/web``).
"""
from __future__ import annotations

from dataclasses import dataclass

from qgis.core import (Qgis, QgsApplication, QgsCoordinateReferenceSystem, QgsDataSourceUri, QgsMapLayerType,
                       QgsProject, QgsProviderRegistry, QgsRectangle)
from qgis.PyQt.QtCore import QObject, QUrl
from qgis.PyQt.QtNetwork import QNetworkRequest

from ..engine.errors import EngineError
from ..engine.sources import RemoteOptions
from . import settings

WEB_PROVIDER = "wms"
#: Authentication methods that do not end up as request headers.
UNSUPPORTED_AUTH = ("PKI-Paths", "PKI-PKCS#12", "Identity-Cert", "EsriToken")


@dataclass(frozen=True)
class WebService:
    """What a QGIS web layer points at, read from its data source URI."""

    kind: str
    url: str
    crs: str = "EPSG:3857"
    layers: str = ""
    styles: str = ""
    fmt: str = "image/png"
    referer: str = ""
    authcfg: str = ""
    zmin: int = 0
    zmax: int = 22
    tile: int = 256
    headers: tuple[tuple[str, str], ...] = ()


def is_web_layer(layer) -> bool:
    return layer is not None and layer.type() == QgsMapLayerType.RasterLayer and layer.providerType() == WEB_PROVIDER


def web_layers() -> list:
    return [lyr for lyr in QgsProject.instance().mapLayers().values() if is_web_layer(lyr)]


def _joined(value) -> str:
    if value is None or value == "" or (hasattr(value, "isNull") and value.isNull()):
        return ""
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def web_service(layer) -> WebService:
    """The layer's service; ``EngineError`` for what cannot be indexed (WMTS, unknown kinds)."""
    parts = QgsProviderRegistry.instance().decodeUri(WEB_PROVIDER, layer.source())
    url = _joined(parts.get("url"))
    headers = {key[len("http-header:"):].lower(): _joined(value) for key, value in parts.items()
               if str(key).startswith("http-header:")}
    referer = headers.pop("referer", "") or _joined(parts.get("referer"))
    extra = tuple((name.title(), value) for name, value in headers.items() if value)
    authcfg = _joined(parts.get("authcfg"))
    if _joined(parts.get("type")) == "xyz":
        ratio = float(_joined(parts.get("tilePixelRatio")) or 1)
        return WebService("xyz", url, referer=referer, authcfg=authcfg, headers=extra,
                          zmin=int(_joined(parts.get("zmin")) or 0), zmax=int(_joined(parts.get("zmax")) or 22),
                          tile=512 if ratio >= 2 else 256)
    if parts.get("tileMatrixSet"):
        raise EngineError(f"{layer.name()} is a WMTS layer, which cannot be indexed yet; add the service's tile URL "
                          "template as an XYZ layer, or use its WMS.")
    if not _joined(parts.get("layers")):
        raise EngineError(f"{layer.name()} is not an XYZ or WMS layer that can be indexed.")
    uri = QgsDataSourceUri()
    uri.setEncodedUri(layer.source())  # every repeated layers=/styles= entry, as QGIS's WMS provider reads them
    return WebService("wms", url, crs=_joined(parts.get("crs")) or layer.crs().authid(),
                      layers=",".join(uri.params("layers")), styles=",".join(uri.params("styles")),
                      fmt=_joined(parts.get("format")) or "image/png", referer=referer, authcfg=authcfg,
                      headers=extra)


def auth_headers(authcfg: str, url: str) -> tuple[tuple[str, str], ...]:
    """The headers QGIS's authentication manager adds for ``authcfg`` (main thread: it may ask for a password)."""
    if not authcfg:
        return ()
    manager = QgsApplication.authManager()
    method = manager.configAuthMethodKey(authcfg)
    if not method:
        raise EngineError(f"The authentication configuration '{authcfg}' of this layer is not in this QGIS.")
    if method in UNSUPPORTED_AUTH:
        raise EngineError(f"The layer's authentication ({method}) does not work by request headers, which is all "
                          "RS-CLIP Search can send; use a layer with Basic or header authentication.")
    request = QNetworkRequest(QUrl(url.replace("{", "%7B").replace("}", "%7D")))
    ok, request = manager.updateNetworkRequest(request, authcfg)
    if not ok:
        raise EngineError(f"QGIS could not apply the authentication configuration '{authcfg}' (locked or damaged).")
    return tuple((bytes(name).decode("latin-1"), bytes(request.rawHeader(name)).decode("latin-1"))
                 for name in request.rawHeaderList())


def remote_options(service: WebService, max_requests: int) -> RemoteOptions:
    """The job's options: the layer's extra headers and user agent, its credentials, the user's cap."""
    headers = dict(service.headers)
    user_agent = headers.pop("User-Agent", "") or RemoteOptions.user_agent
    auth = ((service.authcfg, auth_headers(service.authcfg, service.url)),) if service.authcfg else ()
    return RemoteOptions(user_agent=user_agent, max_requests=int(max_requests), headers=tuple(headers.items()),
                         auth=auth).validate()


def source_path(service: WebService, extent: QgsRectangle, crs: QgsCoordinateReferenceSystem, zoom: int | None,
                resolution_m: float | None) -> str:
    """The engine's source string for ``service`` over ``extent`` (in ``crs``)."""
    from ..engine.sources.webmap import wms_source, xyz_source

    if extent is None or extent.isEmpty():
        raise EngineError("Choose the extent to index (the map canvas, a layer's extent, or draw one).")
    bounds = (extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
    bounds_crs = crs.authid() or crs.toWkt()
    if service.kind == "xyz":
        return xyz_source(service.url, bounds, bounds_crs, zoom=zoom, tile=service.tile, referer=service.referer,
                          authcfg=service.authcfg).to_path()
    return wms_source(service.url, service.layers, bounds, bounds_crs, crs=service.crs, resolution_m=resolution_m,
                      styles=service.styles, fmt=service.fmt, referer=service.referer,
                      authcfg=service.authcfg).to_path()


class WebMapIndexer(QObject):
    """The dialog's glue: fills it from the project, shows the estimate as choices change, starts the job."""

    def __init__(self, controller) -> None:
        super().__init__(controller)
        self.controller = controller
        self.dialog = None
        self.ready: tuple[str, RemoteOptions] | None = None

    def open(self, layer=None):
        from ..ui.webmap_dialog import WebMapDialog

        canvas = self.controller.iface.mapCanvas()
        if self.dialog is None:
            self.dialog = WebMapDialog(canvas, self.controller.iface.mainWindow())
            self.dialog.estimateRequested.connect(self.refresh)
            self.dialog.indexRequested.connect(self.start)
            self.dialog.set_choices(settings.web_choices())
        layers = web_layers()
        self.dialog.set_layers([(lyr.name(), lyr.id()) for lyr in layers], layer.id() if layer is not None else None)
        self.dialog.use_canvas_extent(canvas.extent(), canvas.mapSettings().destinationCrs())
        self.refresh()
        self.dialog.show()
        self.dialog.raise_()
        return self.dialog

    def _layer(self):
        layer_id = self.dialog.current_layer_id()
        return QgsProject.instance().mapLayer(layer_id) if layer_id else None

    def refresh(self) -> None:
        """Recompute the estimate for the dialog's current choices (no request is made)."""
        from ..engine.sources.webmap import estimate

        dialog = self.dialog
        self.ready = None
        layer = self._layer()
        if layer is None:
            dialog.set_estimate("Add an XYZ or WMS layer to the project first.", False)
            return
        try:
            service = web_service(layer)
            dialog.set_kind(service.kind, service.zmin, service.zmax)
            extent, crs = dialog.extent()
            choices = dialog.choices()
            path = source_path(service, extent, crs, choices.zoom, choices.resolution_m)
            options = RemoteOptions(max_requests=choices.max_requests)
            tiling = self.controller.web_tiling()
            guess = estimate(path, tiling, options)
        except EngineError as exc:
            dialog.set_estimate(str(exc), False)
            return
        if guess.requests > choices.max_requests:
            dialog.set_estimate(f"{guess.text()}.\nThat is more than the cap of {choices.max_requests} requests: "
                                "raise the cap, or choose a smaller extent or a coarser resolution.", False)
            return
        dialog.set_estimate(guess.text() + ".", True)
        self.ready = (path, service)

    def start(self):
        self.refresh()
        if self.ready is None:
            return None
        path, service = self.ready
        dialog = self.dialog
        choices = dialog.choices()
        settings.remember_web(choices)
        try:
            options = remote_options(service, choices.max_requests)
        except EngineError as exc:
            self.controller.notify(str(exc), Qgis.MessageLevel.Critical)
            return None
        dialog.hide()
        return self.controller.index_sources([path], options)

    def shutdown(self) -> None:
        if self.dialog is not None:
            self.dialog.close()
            self.dialog.deleteLater()
            self.dialog = None
