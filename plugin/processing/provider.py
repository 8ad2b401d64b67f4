"""The Processing provider: registered by the plugin in initProcessing, removed in unload."""
from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .base import ICON
from .build_index import BuildIndex
from .build_index_remote import BuildIndexStac, BuildIndexWebMap
from .change import FindChange
from .concept_areas import ConceptAreas
from .label_tiles import LabelTiles
from .search_text import SearchText
from .similar_tiles import SimilarTiles

ALGORITHMS = (BuildIndex, SearchText, LabelTiles, SimilarTiles, ConceptAreas, BuildIndexStac, BuildIndexWebMap,
              FindChange)


class RsClipProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "rsclip_search"

    def name(self) -> str:
        return "RS-CLIP Search"

    def longName(self) -> str:  # noqa: N802 (QGIS's name)
        return "RS-CLIP Search: natural-language search and zero-shot labels for imagery"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def loadAlgorithms(self) -> None:  # noqa: N802
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
