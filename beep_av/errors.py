"""The project's own exceptions: each carries the exit code of the DESIGN contract."""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_CANNOT_STAGE = 3
EXIT_INTERRUPTED = 130


class BeepError(Exception):
    """An error that ends the command with a one-line message and an exit code."""

    code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(BeepError):
    """Bad input or usage: exit 2, nothing created."""

    code = EXIT_USAGE


class CannotStage(BeepError):
    """This machine cannot stage what was asked: exit 3; the message names the fix."""

    code = EXIT_CANNOT_STAGE
