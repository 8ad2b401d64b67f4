"""The one exception type for problems a user can cause and fix.

Anything raised as ``EngineError`` is shown to the user as its message alone (CLI: one
line on stderr and a non-zero exit; plugin: the message bar). Every other exception is a
bug and keeps its traceback.
"""


class EngineError(Exception):
    """A user-facing failure; ``str(err)`` is one readable sentence."""


class Cancelled(EngineError):
    """The user asked to stop; work committed before the request is kept."""

    def __init__(self, message: str = "Cancelled by the user; work finished so far was kept.") -> None:
        super().__init__(message)
