"""The Processing provider: registered by the plugin in initProcessing, removed in unload."""
from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms import ALGORITHMS
from .base import ICON


class RsClipProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "rsclip_search"

    def name(self) -> str:
        return "RS-CLIP Search"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def loadAlgorithms(self) -> None:  # noqa: N802
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
