"""One logger for the plugin, with a single handler into QGIS's Log Messages panel."""
import logging

from qgis.core import Qgis, QgsMessageLog

LOGGER_NAME = "rsclip_search"
TAG = "RS-CLIP Search"
_LEVELS = {logging.DEBUG: Qgis.Info, logging.INFO: Qgis.Info, logging.WARNING: Qgis.Warning,
           logging.ERROR: Qgis.Critical, logging.CRITICAL: Qgis.Critical}


class QgsMessageLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        QgsMessageLog.logMessage(self.format(record), TAG, _LEVELS.get(record.levelno, Qgis.Info))


def get_logger() -> logging.Logger:
    """The plugin's logger; the QgsMessageLog handler is added once however often this is called."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, QgsMessageLogHandler) for h in logger.handlers):
        handler = QgsMessageLogHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
