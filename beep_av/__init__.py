"""Beep: see and hear the Linux OOM killer."""

import os as _os

# pygame prints a banner on import; a show's stdout is the story, not an advert
_os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

__version__ = "0.1.0"
