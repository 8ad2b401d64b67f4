"""The dock's "Install dependencies…": plan with the engine, run pip in a QgsTask, activate, refresh the dock."""
from __future__ import annotations

from typing import Callable
from urllib.parse import quote

from qgis.core import Qgis, QgsApplication, QgsSettings
from qgis.PyQt.QtCore import QObject, pyqtSignal

from ..engine.deps import InstallPlan, activate, default_variant, install, plan_install, probe_host
from ..engine.errors import EngineError
from ..ui.install_dialog import InstallDialog
from . import settings
from .deps import profile_dir, qgis_python
from .log import get_logger
from .tasks import BaseTask

TITLE = "RS-CLIP Search"


class InstallTask(BaseTask):
    """Runs the engine's installer; pip's lines travel to the dialog through ``lineReceived`` (queued to the GUI)."""

    lineReceived = pyqtSignal(str)

    def __init__(self, plan: InstallPlan, on_done: Callable[[BaseTask], None]) -> None:
        super().__init__("Installing RS-CLIP Search's Python packages", self._install, on_done)
        self.plan = plan

    def _install(self, progress, cancel):
        return install(self.plan, on_line=self.lineReceived.emit, progress=progress, cancel=cancel)


def qgis_proxy() -> str | None:
    """The HTTP proxy set in QGIS's network options, as a URL pip understands (None: none or the system's)."""
    s = QgsSettings()
    if not s.value("proxy/proxyEnabled", False, type=bool):
        return None
    if s.value("proxy/proxyType", "", type=str) not in ("HttpProxy", "HttpCachingProxy"):
        return None
    host = s.value("proxy/proxyHost", "", type=str)
    if not host:
        return None
    port = s.value("proxy/proxyPort", "", type=str)
    user = s.value("proxy/proxyUser", "", type=str)
    password = s.value("proxy/proxyPassword", "", type=str)
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user else ""
    return f"http://{auth}{host}" + (f":{port}" if port else "")


class InstallController(QObject):
    """Owns the dialog and the one install task; ``on_installed`` runs after a successful install."""

    def __init__(self, iface, on_installed: Callable[[], None], parent=None) -> None:
        super().__init__(parent)
        self.iface = iface
        self.on_installed = on_installed
        self.dialog: InstallDialog | None = None
        self.task: InstallTask | None = None
        self._host = None
        self.log = get_logger()

    def host(self):
        if self._host is None:
            self._host = probe_host(qgis_python())
        return self._host

    def open(self) -> InstallDialog:
        if self.dialog is None:
            self.dialog = InstallDialog(self.iface.mainWindow())
            self.dialog.planRequested.connect(self.show_plan)
            self.dialog.installRequested.connect(self.start)
            try:
                detected = "NVIDIA GPU" if default_variant(self.host()) == "cuda" else "CPU only"
            except EngineError:
                detected = "CPU only"
            self.dialog.set_choices(settings.TORCH_VARIANT.get(), settings.BUNDLE.get(), detected)
        self.show_plan(self.dialog.params())
        self.dialog.show()
        self.dialog.raise_()
        return self.dialog

    def plan(self, params) -> InstallPlan:
        settings.TORCH_VARIANT.set(params.variant)
        settings.BUNDLE.set(params.bundle)
        return plan_install(self.host(), profile_dir(), params.variant, params.bundle or None, proxy=qgis_proxy())

    def show_plan(self, params) -> None:
        try:
            self.dialog.set_plan(self.plan(params).describe(), True)
        except EngineError as exc:
            self.dialog.set_plan(str(exc), False)

    def start(self, params) -> InstallTask | None:
        if self.task is not None:
            return None
        try:
            plan = self.plan(params)
        except EngineError as exc:
            self.dialog.set_plan(str(exc), False)
            return None
        task = InstallTask(plan, self._done)
        task.lineReceived.connect(self.dialog.append_log)
        task.progressChanged.connect(lambda percent: self.dialog.set_progress(percent, task.message))
        self.dialog.cancelRequested.connect(task.cancel)
        self.dialog.set_running(True)
        self.dialog.append_log(f"Installing into {plan.target} …")
        self.task = task
        QgsApplication.taskManager().addTask(task)
        return task

    def _done(self, task: InstallTask) -> None:
        self.task = None
        try:
            self.dialog.cancelRequested.disconnect(task.cancel)
        except TypeError:
            pass
        if task.error or task.result is None:
            text = task.error or "The installation stopped."
            self.dialog.set_result(text, False)
            self.log.warning("Installing dependencies: %s", text)
            return
        activation = activate(task.result.target)
        text = f"Installed {len(task.result.installed)} packages in {task.result.seconds:.0f} s. {activation.message}"
        self.dialog.set_result(text, True)
        self.iface.messageBar().pushMessage(TITLE, text, level=Qgis.MessageLevel.Success
                                            if not activation.restart_needed else Qgis.MessageLevel.Warning,
                                            duration=0 if activation.restart_needed else 10)
        self.log.info(text)
        self.on_installed()

    def shutdown(self) -> None:
        if self.task is not None:
            self.task.on_done = None
            self.task.cancel()
        if self.dialog is not None:
            self.dialog.close()
            self.dialog.deleteLater()
            self.dialog = None
