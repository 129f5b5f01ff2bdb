"""The Linux virtual console under a picture: KD_GRAPHICS while we draw, KD_TEXT again
at every ending.

In KD_GRAPHICS the kernel's console (fbcon) stops drawing on the screen, so the kernel's
own messages (the OOM report, printed at the moment of the kill) and the blinking cursor
never land on the picture. Only the VT's owner may switch it (the kernel wants the VT
to be our controlling terminal, or CAP_SYS_TTY_CONFIG): a user logged in on tty1 can.
Adapter: touches one outside thing, the VT's ioctls."""

from __future__ import annotations

import fcntl
import os
import struct

KDSETMODE = 0x4B3A  # linux/kd.h
KDGETMODE = 0x4B3B
KD_TEXT = 0x00
KD_GRAPHICS = 0x01


def _vt_fd() -> tuple[int | None, str]:
    """An fd on the VT we sit on (stdin's, else the controlling terminal's)."""
    for path in ("/proc/self/fd/0", "/dev/tty"):
        try:
            name = os.path.realpath(path)
            if not name.startswith("/dev/tty") or not name[8:].isdigit():
                continue
            return os.open(name, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC), name
        except OSError:
            continue
    return None, ""


class GraphicsMode:
    """`enter()` puts the VT in KD_GRAPHICS (noting the mode it had); `leave()` puts
    that mode back. Both are safe to call twice, and without a VT they do nothing
    (`why` says what happened, for the show's one-line notes)."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.vt = ""
        self.previous = KD_TEXT
        self.why = ""

    def enter(self) -> bool:
        if self.fd is not None:
            return True
        fd, name = _vt_fd()
        if fd is None:
            self.why = "not on a virtual console: the kernel's console messages are not held back"
            return False
        try:
            buf = fcntl.ioctl(fd, KDGETMODE, struct.pack("i", 0))
            self.previous = struct.unpack("i", buf)[0]
            fcntl.ioctl(fd, KDSETMODE, KD_GRAPHICS)
        except OSError as e:
            os.close(fd)
            self.why = f"cannot put {name} in graphics mode ({e.strerror}); console text may show"
            return False
        self.fd, self.vt = fd, name
        self.why = f"{name} in graphics mode: console text is held back"
        return True

    def leave(self) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            fcntl.ioctl(fd, KDSETMODE, self.previous)
        except OSError:
            pass  # the VT is gone (hangup): nothing left to restore
        finally:
            os.close(fd)
