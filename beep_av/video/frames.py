"""Save frames as PNG files (--frames DIR): frame-00001.png, frame-00002.png, ...

Off the UI thread: `offer` only copies the frame into a free surface of a small pool
(a blit, ~1 ms at 720p); a saver thread encodes and writes it. The encoder is zlib,
which lets go of the GIL while it compresses: `pygame.image.save` holds it for the whole
encode (~110 ms a 720p frame here), so on any thread it would stall the UI as much as on
the UI thread itself. When every pool surface is still waiting for the disk, the frame
is dropped and counted: the show never waits for a disk."""

from __future__ import annotations

import os
import re
import struct
import threading
import zlib
from collections import deque
from pathlib import Path

import numpy as np
import pygame

from beep_av import outfiles
from beep_av.errors import BadInput

POOL = 3  # frames waiting to be saved, at most (each one surface of the window's size)
LEVEL = 1  # zlib level: static does not compress anyway, black frames do at any level
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FRAME_NAME = re.compile(r"frame-\d{5,}\.png\Z")  # the names FrameSaver writes


def write_png(path, rgb: np.ndarray, level: int = LEVEL) -> None:
    """Write (h, w, 3) uint8 RGB as an 8-bit truecolour PNG (no filter, zlib `level`)
    to `path`, a path or an open binary file (left open). Releases the GIL while it
    compresses and writes."""
    h, w, _ = rgb.shape
    rows = np.empty((h, 1 + 3 * w), dtype=np.uint8)
    rows[:, 0] = 0  # filter type 0 (None) on every row
    rows[:, 1:] = rgb.reshape(h, 3 * w)
    data = zlib.compress(rows, level)

    def chunk(f, tag: bytes, body: bytes) -> None:
        f.write(struct.pack(">I", len(body)) + tag)
        f.write(body)
        f.write(struct.pack(">I", zlib.crc32(body, zlib.crc32(tag)) & 0xFFFFFFFF))

    def put(f) -> None:
        f.write(PNG_SIGNATURE)
        chunk(f, b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        chunk(f, b"IDAT", data)
        chunk(f, b"IEND", b"")

    if hasattr(path, "write"):
        put(path)
        return
    with open(path, "wb") as f:
        put(f)


class FrameSaver:
    """Saves every `every`-th surface it is given, numbered from 1 in saving order.
    `saved` counts frames taken for saving, `dropped` those the pool had no room for
    (they get no number). A file that cannot be written ends the show (BadInput, on
    the UI thread at the next offer or at close). The folder and every frame are made
    under outfiles' rules (a planted link or another user's file is refused)."""

    def __init__(self, dir: str | Path, every: int = 1, pool: int = POOL) -> None:
        if not isinstance(every, int) or every < 1:
            raise BadInput(f"--frames-every: {every!r} must be a whole number, at least 1")
        self.dir = Path(dir)
        self.every = every
        self.seen = 0  # surfaces offered
        self.saved = 0  # frames taken for saving (numbered)
        self.dropped = 0  # frames whose turn it was, with every pool surface still busy
        self.written = 0  # files written (saver thread)
        self.error: str | None = None  # the saver's failure, raised on the UI thread
        self._label = f"--frames {dir}"
        self._dirfd = outfiles.make_dir(str(dir), self._label)  # BadInput: one line
        self._pool = max(1, pool)
        self._made = 0  # pool surfaces that exist
        self._free: deque[pygame.Surface] = deque()  # back from the saver thread
        self._todo: deque[tuple[pygame.Surface, Path] | None] = deque()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="beep-frames", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ the UI thread

    def offer(self, surface: pygame.Surface) -> Path | None:
        """Take `surface` for saving if it is its turn; return the file it will be
        written to, or None (not its turn, or dropped)."""
        self._raise_error()
        self.seen += 1
        if (self.seen - 1) % self.every or self._closed:
            return None
        buf = self._buffer(surface)
        if buf is None:
            self.dropped += 1
            return None
        buf.blit(surface, (0, 0))
        self.saved += 1
        path = self.dir / f"frame-{self.saved:05d}.png"
        self._todo.append((buf, path))
        self._wake.set()
        return path

    def _buffer(self, surface: pygame.Surface) -> pygame.Surface | None:
        size = surface.get_size()
        while self._free:
            buf = self._free.popleft()
            if buf.get_size() == size:
                return buf
            self._made -= 1  # the window was resized: let the old one go
        if self._made < self._pool:
            self._made += 1
            return pygame.Surface(size, 0, surface)  # the same format: a plain copy
        return None

    def _raise_error(self) -> None:
        if self.error is not None:
            why, self.error = self.error, None
            raise BadInput(why)

    def close(self) -> None:
        """Save what was taken, stop the saver thread. Safe twice. Raises BadInput if
        a file could not be written."""
        if not self._closed:
            self._closed = True
            self._todo.append(None)
            self._wake.set()
            self._thread.join(60)
            if not self._thread.is_alive() and self._dirfd >= 0:
                os.close(self._dirfd)
                self._dirfd = -1
        self._raise_error()

    # ------------------------------------------------------------ the saver thread

    def _run(self) -> None:
        while True:
            self._wake.wait(1.0)
            self._wake.clear()  # before draining: an offer after this wakes the next round
            while self._todo:
                item = self._todo.popleft()
                if item is None:
                    return
                buf, path = item
                if self.error is None:
                    self._save(buf, path)
                self._free.append(buf)

    def _save(self, buf: pygame.Surface, path: Path) -> None:
        w, h = buf.get_size()
        try:
            rgb = np.frombuffer(pygame.image.tobytes(buf, "RGB"), np.uint8).reshape(h, w, 3)
            out = outfiles.open_in(self._dirfd, str(self.dir), path.name, self._label)
            with out.f:
                write_png(out.f, rgb)
        except BadInput as e:
            self.error = e.message
            return
        except (pygame.error, OSError) as e:
            self.error = f"--frames {self.dir}: cannot write {path.name} ({e})"
            return
        self.written += 1
