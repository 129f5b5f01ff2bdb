"""One key map for every output: the presenter's keys by the character they type, and
the names a scripted key plan (`--keys 2:plus`) may use. Pure. The window, the terminal
and the outputs driven by a key plan all derive their tables from these two."""

from __future__ import annotations

# character -> presenter command (video/base.py COMMANDS); letters in either case
COMMANDS: dict[str, str] = {
    " ": "toggle_pause",
    "+": "rate_up",
    "=": "rate_up",  # + without shift on most layouts
    "-": "rate_down",
    "_": "rate_down",
    "r": "release",
    "m": "mute",
    "c": "captions",
    "q": "quit",
    "\x1b": "quit",  # Esc
}
# handled inside a window itself, not sent to the conductor
WINDOW_KEYS: dict[str, str] = {"f": "fullscreen", "h": "help"}

# key plan name -> the character it stands for
PLAN_NAMES: dict[str, str] = {
    "space": " ",
    "plus": "+",
    "+": "+",
    "=": "=",
    "minus": "-",
    "-": "-",
    "r": "r",
    "m": "m",
    "c": "c",
    "q": "q",
    "esc": "\x1b",
    "escape": "\x1b",
    "f": "f",
    "h": "h",
}


def command_for(ch: str) -> str | None:
    """The presenter command a typed character means (None: no command)."""
    return COMMANDS.get(ch.lower() if ch.isalpha() else ch)


def plan_command(name: str) -> str | None:
    """The command (or window action) a key plan's name means; None when unknown."""
    ch = PLAN_NAMES.get(name.lower())
    if ch is None:
        return None
    return COMMANDS.get(ch) or WINDOW_KEYS.get(ch)
