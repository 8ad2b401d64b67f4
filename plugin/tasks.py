"""Engine jobs as QgsTasks: progress and cancel wired through, GUI touched only in finished()."""
from __future__ import annotations

import traceback
from typing import Any, Callable

from qgis.core import QgsTask

from ..engine.errors import Cancelled, EngineError
from .log import get_logger

Job = Callable[..., Any]


class BaseTask(QgsTask):
    """Runs ``job(progress=..., cancel=...)`` in the background; hands the outcome to ``on_done``.

    ``on_done(task)`` runs on the main thread after the job; it reads ``task.result``
    (the job's return value) or ``task.error`` (a sentence for the user).
    """

    def __init__(self, description: str, job: Job, on_done: Callable[["BaseTask"], None] | None = None,
                 can_cancel: bool = True) -> None:
        flags = QgsTask.Flag.CanCancel if can_cancel else QgsTask.Flag(0)
        super().__init__(description, flags)
        self.job = job
        self.on_done = on_done
        self.result: Any = None
        self.error: str | None = None
        self.cancelled = False
        self.message = ""

    def report(self, fraction: float, message: str) -> None:
        """Engine progress callback: the bar in QGIS's task manager, and the latest message."""
        self.message = message
        self.setProgress(max(0.0, min(100.0, 100.0 * fraction)))

    def run(self) -> bool:
        try:
            self.result = self.job(progress=self.report, cancel=self.isCanceled)
            return True
        except Cancelled as exc:
            self.cancelled = True
            self.error = str(exc)
            return False
        except EngineError as exc:
            self.error = str(exc)
            return False
        except Exception:  # noqa: BLE001 (a bug: keep the traceback in the log, tell the user briefly)
            get_logger().error("%s failed:\n%s", self.description(), traceback.format_exc())
            self.error = f"{self.description()} failed with an unexpected error; details are in the Log Messages panel."
            return False

    def finished(self, result: bool) -> None:
        if self.isCanceled():
            self.cancelled = True
        if self.on_done is not None:
            self.on_done(self)
