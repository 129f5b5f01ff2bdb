"""One voice on the terminal: the C libraries' own messages (PortAudio's, ALSA's, SDL's,
JACK's) do not reach the user's terminal during a show.

They write to file descriptor 2 themselves, below Python. `StderrFilter` points fd 2
at a pipe for the length of a show; a thread reads it line by line, passes every line
that is not a library's on to the real stderr at once (Beep's own one-liners, a child's
error, a traceback), and hands the library's lines to `keep` (the recording's `log`
lines) instead. What they meant is said by Beep in its own line (the audio output's
"audio: ..."). Only a line matching `LIBRARY` is held back: anything unknown still
reaches the terminal."""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable

LIBRARY = re.compile(
    rb"^(ALSA lib |Expression '.*' failed in '|PaAlsa|PortAudio|pa_linux_alsa|"
    rb"Cannot connect to server|jack server is not running|JackShm|Jack: |"
    rb"ALSA: |SDL: |XIO: |Home directory not accessible)"
)
MAX_KEPT = 200  # library lines kept for the recording (a dying server repeats itself)


def is_library_line(line: bytes) -> bool:
    return LIBRARY.match(line.lstrip()) is not None


class StderrFilter:
    """fd 2 through a filter while started (see the module). `keep(text)` receives each
    held-back line (decoded, without its newline), up to MAX_KEPT; `held` counts them
    all. Safe to stop twice; a no-op where fd 2 cannot be duplicated."""

    def __init__(self, keep: Callable[[str], None] | None = None) -> None:
        self.keep = keep
        self.held = 0
        self._saved: int | None = None
        self._read: int | None = None
        self._thread: threading.Thread | None = None
        self._orphan = False  # stop() left the saved fd to the relay (a child holds the pipe)

    def start(self) -> None:
        if self._saved is not None:
            return
        try:
            sys.stderr.flush()
            saved = os.dup(2)
            r, w = os.pipe2(os.O_CLOEXEC)
        except OSError:
            return
        os.set_inheritable(saved, False)
        os.dup2(w, 2)  # fd 2 stays inheritable: a child's stderr goes through us too
        os.close(w)
        self._saved, self._read = saved, r
        self._thread = threading.Thread(target=self._relay, name="beep-stderr", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        saved = self._saved
        if saved is None:
            return
        self._saved = None
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)  # the pipe's last writer in this process is gone
        if self._thread is not None:
            # a child still holding the pipe keeps it open: do not wait for it forever
            self._thread.join(timeout=0.2)
        if self._thread is not None and self._thread.is_alive():
            self._orphan = True  # the relay writes to `saved` until the child lets go
        else:
            os.close(saved)

    def _relay(self) -> None:
        r, out = self._read, self._saved
        assert r is not None and out is not None
        buf = b""
        try:
            while True:
                try:
                    chunk = os.read(r, 65536)
                except InterruptedError:
                    continue
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    self._line(line + b"\n", out)
            if buf:
                self._line(buf, out)
        finally:
            os.close(r)
            if self._orphan:  # (a race with stop() at worst leaks this one fd)
                os.close(out)

    def _line(self, line: bytes, out: int) -> None:
        if is_library_line(line):
            self.held += 1
            if self.keep is not None and self.held <= MAX_KEPT:
                try:
                    self.keep(line.rstrip(b"\n").decode(errors="replace"))
                except Exception:  # noqa: BLE001 - a failing keeper must not stop the relay
                    pass
            return
        view = memoryview(line)
        while view:
            try:
                view = view[os.write(out, view) :]
            except OSError:
                return  # the terminal went away
