"""Plain callbacks through which long engine work reports progress and hears cancel.

The engine never talks to Qt: the plugin adapts these to ``QgsTask.setProgress`` /
``QgsProcessingFeedback`` and the CLI to a text progress bar.
"""
from typing import Callable, Optional

from .errors import Cancelled

#: ``progress(fraction, message)`` with ``fraction`` in [0, 1].
ProgressFn = Callable[[float, str], None]
#: ``cancel()`` returns True once the user asked to stop.
CancelFn = Callable[[], bool]


def no_progress(fraction: float, message: str) -> None:
    """Progress sink for callers that do not display progress."""


def never_cancel() -> bool:
    """Cancel check for callers that cannot cancel."""
    return False


def check_cancel(cancel: Optional[CancelFn]) -> None:
    """Raise ``Cancelled`` if the caller asked to stop."""
    if cancel is not None and cancel():
        raise Cancelled()


def scaled(progress: Optional[ProgressFn], start: float, end: float) -> ProgressFn:
    """Map a sub-step's 0..1 progress into ``[start, end]`` of the caller's bar."""
    sink = progress or no_progress

    def report(fraction: float, message: str) -> None:
        sink(start + (end - start) * min(max(fraction, 0.0), 1.0), message)

    return report
