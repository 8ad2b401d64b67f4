"""One logger for the plugin, with a single handler into QGIS's Log Messages panel.

The handler also keeps the last warnings and errors, which the diagnostics report lists.
"""
import logging
from collections import deque

from qgis.core import Qgis, QgsMessageLog

LOGGER_NAME = "rsclip_search"
TAG = "RS-CLIP Search"
_LEVELS = {logging.DEBUG: Qgis.MessageLevel.Info, logging.INFO: Qgis.MessageLevel.Info,
           logging.WARNING: Qgis.MessageLevel.Warning, logging.ERROR: Qgis.MessageLevel.Critical,
           logging.CRITICAL: Qgis.MessageLevel.Critical}


class QgsMessageLogHandler(logging.Handler):
    def __init__(self, keep: int = 20) -> None:
        super().__init__()
        self.recent: deque[str] = deque(maxlen=keep)

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.levelno >= logging.WARNING:
            self.recent.append(f"{record.levelname.lower()}: {text}")
        QgsMessageLog.logMessage(text, TAG, _LEVELS.get(record.levelno, Qgis.MessageLevel.Info))


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


def recent_problems() -> list[str]:
    """The last warnings and errors the plugin logged, oldest first."""
    for handler in get_logger().handlers:
        if isinstance(handler, QgsMessageLogHandler):
            return list(handler.recent)
    return []
