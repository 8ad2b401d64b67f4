"""A cancellable progress dialog that follows a model-download task."""
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QProgressDialog


class DownloadDialog(QProgressDialog):
    def __init__(self, model_name: str, parent=None) -> None:
        super().__init__(f"Downloading the weights of {model_name}…", "Cancel", 0, 100, parent)
        self.setWindowTitle("RS-CLIP Search")
        self.setWindowModality(Qt.WindowModal)
        self.setMinimumDuration(0)
        self.setAutoClose(False)

    def follow(self, task) -> None:
        """Mirror the task's progress; Cancel cancels the task (a partial file is kept for resume)."""
        task.progressChanged.connect(lambda p: self.setValue(int(p)))
        self.canceled.connect(task.cancel)
        self.show()
