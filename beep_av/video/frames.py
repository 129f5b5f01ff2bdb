"""Save frames as PNG files (--frames DIR): frame-00001.png, frame-00002.png, ..."""

from __future__ import annotations

from pathlib import Path

import pygame

from beep_av.errors import BadInput


class FrameSaver:
    """Saves every `every`-th surface it is given, numbered from 1 in saving order."""

    def __init__(self, dir: str | Path, every: int = 1) -> None:
        if not isinstance(every, int) or every < 1:
            raise BadInput(f"--frames-every: {every!r} must be a whole number, at least 1")
        self.dir = Path(dir)
        self.every = every
        self.seen = 0  # surfaces offered
        self.saved = 0  # files written
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BadInput(
                f"--frames {dir}: cannot create the folder ({e.strerror or e})"
            ) from None
        if not self.dir.is_dir():
            raise BadInput(f"--frames {dir}: not a folder")

    def offer(self, surface: pygame.Surface) -> Path | None:
        """Save `surface` if it is its turn; return the file written, or None."""
        self.seen += 1
        if (self.seen - 1) % self.every:
            return None
        self.saved += 1
        path = self.dir / f"frame-{self.saved:05d}.png"
        try:
            pygame.image.save(surface, str(path))
        except (pygame.error, OSError) as e:
            raise BadInput(f"--frames {self.dir}: cannot write {path.name} ({e})") from None
        return path
