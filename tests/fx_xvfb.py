"""An Xvfb server for real-window tests: started with -displayfd (a fixed :99 may be
taken on a shared machine), stopped by its own pid."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass
class Xvfb:
    proc: subprocess.Popen
    display: str  # ":N"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a child that should draw on this server."""
        env = dict(os.environ)
        env["DISPLAY"] = self.display
        env.pop("WAYLAND_DISPLAY", None)
        env["SDL_VIDEODRIVER"] = "x11"
        return env

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # our own child, by pid
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_xvfb(screen: str = "1280x720x24", timeout: float = 10.0) -> Xvfb:
    """Start Xvfb on a free display number chosen by the server itself."""
    exe = shutil.which("Xvfb")
    if exe is None:
        raise FileNotFoundError("Xvfb is not installed (apt-get install xvfb)")
    r, w = os.pipe()
    proc = subprocess.Popen(
        [exe, "-displayfd", str(w), "-screen", "0", screen, "-nolisten", "tcp"],
        pass_fds=(w,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(w)
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                raise RuntimeError("Xvfb did not report a display")
            ready, _, _ = select.select([r], [], [], left)
            if ready:
                chunk = os.read(r, 64)
                if not chunk:
                    raise RuntimeError("Xvfb closed -displayfd without a display")
                buf += chunk
    except BaseException:
        Xvfb(proc, ":0").stop()
        raise
    finally:
        os.close(r)
    return Xvfb(proc, ":" + buf.decode().strip())


@pytest.fixture
def xvfb() -> Iterator[Xvfb]:
    """A fresh 1280x720x24 Xvfb for one test; skips (or fails under CI) without Xvfb."""
    from tests.conftest import require

    require(shutil.which("Xvfb") is not None, "Xvfb is not installed (apt-get install xvfb)")
    server = start_xvfb()
    try:
        yield server
    finally:
        server.stop()
