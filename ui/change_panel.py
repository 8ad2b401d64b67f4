"""The dock's Change tab: which rasters are the first date and which the second, what to look for, and the
places that changed, each with the before and after tile side by side.

Like the rest of the dock it only asks and shows: a request leaves as a ``ChangeParams`` and
plugin/change.py runs it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from qgis.PyQt.QtCore import QSize, Qt, pyqtSignal
from qgis.PyQt.QtGui import QIcon, QPixmap
from qgis.PyQt.QtWidgets import (QComboBox, QFileDialog, QFormLayout, QGridLayout, QHBoxLayout, QLabel, QLineEdit,
                                 QListWidget, QListWidgetItem, QPushButton, QSpinBox, QVBoxLayout, QWidget)

PATH_ROLE = Qt.ItemDataRole.UserRole
RANK_ROLE = Qt.ItemDataRole.UserRole + 1
DIRECTIONS = (("appeared", "appeared (score rose)"), ("disappeared", "disappeared (score fell)"),
              ("either", "appeared or disappeared"))
_DATE = re.compile(r"(?<!\d)((?:19|20)\d{2})(?:[-_]?(\d{2})(?:[-_]?(\d{2}))?)?(?!\d)")


@dataclass(frozen=True)
class ChangeParams:
    """Compare the ``before`` rasters with the ``after`` ones; with ``query`` for where it appeared/disappeared."""

    index_dir: str
    before: list[str]
    after: list[str]
    query: str = ""
    direction: str = "appeared"
    top_k: int = 20
    scale: int | None = None


def date_key(path: str) -> str:
    """A sortable date found in a file name (20160816, 2016-08-16, 2016), or "" when there is none."""
    match = _DATE.search(Path(path).name)
    return "".join(g or "" for g in match.groups()) if match else ""


def date_label(path: str) -> str:
    """The date of a file name as 2016-08-16 (or 2016-08, 2016), "" when there is none."""
    match = _DATE.search(Path(path).name)
    return "-".join(g for g in match.groups() if g) if match else ""


class ChangePanel(QWidget):
    changeRequested = pyqtSignal(object)
    placeChosen = pyqtSignal(int)
    saveRequested = pyqtSignal(str)

    def __init__(self, index_dir, parent=None) -> None:
        super().__init__(parent)
        self.index_dir = index_dir
        outer = QVBoxLayout(self)
        self.hint_label = QLabel("Index the rasters of both dates into this index, then choose which is which.")
        self.hint_label.setWordWrap(True)
        outer.addWidget(self.hint_label)
        grid = QGridLayout()
        grid.addWidget(QLabel("<b>Before</b> (first date)"), 0, 0)
        grid.addWidget(QLabel("<b>After</b> (second date)"), 0, 1)
        self.before_list = QListWidget()
        self.after_list = QListWidget()
        for n, lst in enumerate((self.before_list, self.after_list)):
            lst.setMaximumHeight(110)
            lst.setTextElideMode(Qt.TextElideMode.ElideMiddle)
            lst.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
            lst.setToolTip("Indexed rasters; check the ones of this date (a mosaic can be several)")
            lst.itemChanged.connect(self._checked)
            grid.addWidget(lst, 1, n)
        outer.addLayout(grid)
        form = QFormLayout()
        self.query_edit = QLineEdit()
        self.query_edit.setPlaceholderText("optional: what to look for, e.g. new buildings (empty: any change)")
        self.query_edit.returnPressed.connect(self.request_change)
        self.query_edit.textChanged.connect(lambda text: self.direction_combo.setEnabled(bool(text.strip())))
        form.addRow("Text", self.query_edit)
        self.direction_combo = QComboBox()
        for value, text in DIRECTIONS:
            self.direction_combo.addItem(text, value)
        self.direction_combo.setEnabled(False)
        self.direction_combo.setToolTip("Rank by score after − score before (appeared), the opposite (disappeared), "
                                        "or its size either way")
        form.addRow("Where it", self.direction_combo)
        opts = QHBoxLayout()
        opts.addWidget(QLabel("Top"))
        self.top_k_spin = QSpinBox()
        self.top_k_spin.setRange(1, 100000)
        self.top_k_spin.setValue(20)
        opts.addWidget(self.top_k_spin)
        self.scale_label = QLabel("Scale")
        opts.addWidget(self.scale_label)
        self.scale_combo = QComboBox()
        opts.addWidget(self.scale_combo)
        opts.addStretch(1)
        form.addRow(opts)
        outer.addLayout(form)
        self.find_button = QPushButton("Find changes")
        self.find_button.setToolTip("Pair the tiles of the two dates that cover the same ground (overlap ≥ half) and "
                                    "rank the pairs by how much they changed")
        self.find_button.clicked.connect(self.request_change)
        outer.addWidget(self.find_button)
        self.summary_label = QLabel()
        self.summary_label.setWordWrap(True)
        outer.addWidget(self.summary_label)
        self.results_list = QListWidget()
        self.results_list.setIconSize(QSize(128, 64))
        self.results_list.setUniformItemSizes(True)
        self.results_list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.results_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.results_list.currentItemChanged.connect(self._current_changed)
        outer.addWidget(self.results_list, 1)  # the list takes the tab's spare height
        self.save_button = QPushButton("Save as GeoPackage…")
        self.save_button.setToolTip("Write the places (both scores, the difference and both tiles) to a GeoPackage")
        self.save_button.clicked.connect(lambda: self.request_save())
        outer.addWidget(self.save_button)
        self.set_scales([])

    # -- filling ---------------------------------------------------------------------------------
    def set_rasters(self, rasters: list[tuple[str, str]]) -> None:
        """(name, path) of the index's rasters; the choices are kept, else the earliest date is "before" and
        the latest "after" (dates read from file names)."""
        chosen = (self.before(), self.after())
        ordered = sorted(rasters, key=lambda r: (date_key(r[1]), r[0]))
        fresh = not any(chosen) or not {p for _, p in rasters} >= set(chosen[0]) | set(chosen[1])
        for n, lst in enumerate((self.before_list, self.after_list)):
            lst.blockSignals(True)
            lst.clear()
            for i, (name, path) in enumerate(ordered):
                date = date_label(path)
                item = QListWidgetItem(f"{date} · {name}" if date else name)
                item.setToolTip(path)
                item.setData(PATH_ROLE, path)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                if fresh:
                    on = len(ordered) > 1 and i == (0 if n == 0 else len(ordered) - 1)
                else:
                    on = path in chosen[n]
                item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
                lst.addItem(item)
            lst.blockSignals(False)
            lst.setMaximumHeight(min(110, 8 + max(2, len(ordered)) * lst.sizeHintForRow(0)))
        self.hint_label.setVisible(len(rasters) < 2)

    def set_scales(self, scales: list[tuple[str, int | None]]) -> None:
        """(label, scale) choices of the index's scales; hidden for an index with one scale."""
        self.scale_combo.clear()
        for label, value in scales:
            self.scale_combo.addItem(label, value)
        for widget in (self.scale_combo, self.scale_label):
            widget.setVisible(len(scales) > 2)

    def check(self, before: list[str], after: list[str]) -> None:
        """Check exactly these paths in the two lists."""
        for lst, paths in ((self.before_list, before), (self.after_list, after)):
            for i in range(lst.count()):
                item = lst.item(i)
                on = item.data(PATH_ROLE) in paths
                item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    def before(self) -> list[str]:
        return self._checked_paths(self.before_list)

    def after(self) -> list[str]:
        return self._checked_paths(self.after_list)

    @staticmethod
    def _checked_paths(lst: QListWidget) -> list[str]:
        return [lst.item(i).data(PATH_ROLE) for i in range(lst.count())
                if lst.item(i).checkState() == Qt.CheckState.Checked]

    def _checked(self, item: QListWidgetItem) -> None:
        """A raster checked on one side is unchecked on the other: it belongs to one date."""
        if item.checkState() != Qt.CheckState.Checked:
            return
        other = self.after_list if item.listWidget() is self.before_list else self.before_list
        path = item.data(PATH_ROLE)
        for i in range(other.count()):
            if other.item(i).data(PATH_ROLE) == path and other.item(i).checkState() == Qt.CheckState.Checked:
                other.item(i).setCheckState(Qt.CheckState.Unchecked)

    def set_busy(self, busy: bool) -> None:
        self.find_button.setEnabled(not busy)
        self.save_button.setEnabled(not busy)

    def show_places(self, summary: str, rows, thumbnails: dict) -> None:
        """Fill the list: rank, change, both scores (with a text) and the before | after thumbnails."""
        self.summary_label.setText(summary)
        self.results_list.blockSignals(True)
        self.results_list.clear()
        for row in rows:
            if row.score_before is not None and row.score_after is not None:
                scores = f"score {row.score_before:.3f} → {row.score_after:.3f}"
            else:
                scores = f"distance {row.distance:.3f}"
            scale = f"  ×{row.scale}" if row.scale is not None else ""
            item = QListWidgetItem(f"{row.rank}.  change {row.change:+.3f}{scale}\n{scores}")
            item.setToolTip(f"before: tile {row.before.id} of {row.before.raster}\n"
                            f"after: tile {row.after.id} of {row.after.raster}\noverlap (IoU) {row.iou:.2f}")
            item.setData(RANK_ROLE, int(row.rank))
            image = thumbnails.get(row.rank)
            if image is not None:
                item.setIcon(QIcon(QPixmap.fromImage(image)))
            self.results_list.addItem(item)
        self.results_list.blockSignals(False)

    # -- requests ----------------------------------------------------------------------------------
    def params(self) -> ChangeParams:
        query = self.query_edit.text().strip()
        return ChangeParams(self.index_dir(), self.before(), self.after(), query,
                            self.direction_combo.currentData() or "appeared", self.top_k_spin.value(),
                            self.scale_combo.currentData() if self.scale_combo.count() > 2 else None)

    def request_change(self) -> None:
        self.changeRequested.emit(self.params())

    def request_save(self, path: str | None = None) -> None:
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save the places that changed",
                                                  str(Path.home() / "rsclip_change.gpkg"), "GeoPackage (*.gpkg)")
            if not path:
                return
            if not path.lower().endswith(".gpkg"):
                path += ".gpkg"
        self.saveRequested.emit(path)

    def _current_changed(self, current, _previous) -> None:
        if current is not None:
            self.placeChosen.emit(int(current.data(RANK_ROLE)))
