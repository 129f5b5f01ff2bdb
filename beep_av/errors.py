"""The project's own exceptions: each carries the exit code of the DESIGN contract."""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_CANNOT_STAGE = 3
# The hog was killed by a signal from user space (kill -9, earlyoom, systemd-oomd), not by
# the kernel's OOM killer: the show ran, but what it shows did not happen. Not 1 (beep-av
# failed) nor 3 (preflight: this machine cannot stage it): a code of its own, so a script
# can tell "something else killed the hog" from both.
EXIT_USER_KILL = 4
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
