"""A progress bar that says what the job is doing: the percentage and the job's latest message.

The message is fitted to the room the style leaves for the text (elided in the middle, so both the
start, e.g. a raster's name, and the end, e.g. "tile 12 of 63", stay), and shown whole in the tooltip.
"""
from __future__ import annotations

import re

from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QProgressBar, QSizePolicy, QStyle, QStyleOptionProgressBar

#: QProgressBar replaces %p, %v and %m anywhere in its format; a zero-width space keeps a message's own.
_PLACEHOLDER = re.compile(r"%(?=[pvm])")
PERCENT = "%p%"
GAP = "  "


class JobProgressBar(QProgressBar):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.message = ""
        self.setRange(0, 100)
        self.setTextVisible(True)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)  # inside the bar in every style, not beside it
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_progress(self, percent: float, message: str = "") -> None:
        self.setValue(int(max(0.0, min(100.0, percent))))
        self.message = " ".join(message.split())
        self.setToolTip(self.message)
        self._fit()

    def text_room(self) -> int:
        """The width the style gives the bar's text, in pixels."""
        option = QStyleOptionProgressBar()
        self.initStyleOption(option)
        return self.style().subElementRect(QStyle.SubElement.SE_ProgressBarLabel, option, self).width()

    def _fit(self) -> None:
        if not self.message:
            self.setFormat(PERCENT)
            return
        metrics = self.fontMetrics()
        # room for the widest percentage, so the text does not jump as the number grows
        room = self.text_room() - metrics.horizontalAdvance(f"100%{GAP}") - metrics.averageCharWidth()
        shown = metrics.elidedText(self.message, Qt.TextElideMode.ElideMiddle, max(room, 0))
        self.setFormat(PERCENT + (GAP + _PLACEHOLDER.sub("%\u200b", shown) if shown else ""))

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        self._fit()
