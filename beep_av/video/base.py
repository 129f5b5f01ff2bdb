"""What the conductor needs from a picture output (window, kms, framebuffer, terminal,
headless)."""

from __future__ import annotations

from typing import Protocol

from beep_av.model import ShowState

# Presenter commands an output may return from frame() (keys, window close).
COMMANDS = (
    "toggle_pause",  # space: start or pause the hog
    "rate_up",  # +
    "rate_down",  # -
    "release",  # r: kill the hog, tear the stage down
    "mute",  # m
    "captions",  # c: cycle en -> fr -> off
    "fullscreen",  # f (handled inside the window; listed for completeness)
    "quit",  # q, Esc, window closed
)


class Output(Protocol):
    fps: float  # frames per second the conductor should call frame() at

    def open(self) -> None:
        """Acquire the display. Raises CannotStage (exit 3) with the fix."""
        ...

    def frame(self, state: ShowState) -> list[str]:
        """Draw one frame of `state`; return presenter commands seen since the last call."""
        ...

    def close(self) -> None:
        """Give the display back as it was (cursor, console, terminal modes). Safe twice."""
        ...
