"""A cancellable progress dialog that follows a model-download task."""
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QProgressDialog


class DownloadDialog(QProgressDialog):
    def __init__(self, model_name: str, parent=None) -> None:
        super().__init__(f"Downloading the weights of {model_name}…", "Cancel", 0, 100, parent)
        self.setWindowTitle("RS-CLIP Search")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.setMinimumDuration(0)
        self.setAutoClose(False)
        self.setAutoReset(False)
        self._task = None

    def follow(self, task) -> None:
        """Mirror the task's progress; Cancel cancels the task (a partial file is kept for resume)."""
        self._task = task
        task.progressChanged.connect(self._progress)
        self.canceled.connect(task.cancel)
        self.setValue(0)
        self.show()

    def _progress(self, percent: float) -> None:
        self.setValue(int(percent))
        if self._task is not None and self._task.message:
            self.setLabelText(self._task.message)

    def finish(self) -> None:
        """Close without cancelling (the task is over) and let Qt delete the dialog."""
        if self._task is not None:
            try:
                self.canceled.disconnect(self._task.cancel)
                self._task.progressChanged.disconnect(self._progress)
            except TypeError:
                pass
            self._task = None
        self.close()
        self.deleteLater()
