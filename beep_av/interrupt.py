"""The ending signals (SIGINT, SIGTERM, SIGHUP) as a flag that the show checks at safe
points, never as an exception raised at whatever line the signal happened to land on.

- `install()` (main thread) sets a handler that only notes the signal number, and
  `signal.set_wakeup_fd` on a pipe: the C-level handler writes a byte there at once,
  whichever thread the kernel delivered the signal to, so a loop blocked in select/poll
  on `wake_fd()` wakes at once (other signals with a Python handler, such as the
  terminal's SIGWINCH, write bytes too: the flag, not the pipe, says what happened).
- The show's loops call `check()` at safe points (between prepare steps, in the waits
  for the hog and in the conductor's frame loop); it raises `Interrupted` when an ending
  signal has come, and the show ends the normal way (teardown, exit 130).
- `sleep(s)` and `wait_readable(fds, s)` are the waits that return early on a signal.
- `ignore()` (the teardown) sets SIG_IGN: further signals cannot cut the cleanup short.
- SIGTSTP (Ctrl-Z) is noted the same way, in its own flag: the conductor takes it at
  its safe point (`take_suspend()`), pauses the hog, gives the terminal back, and only
  then stops the process (`stop_here()`), the shell's `fg` continuing it.

Nothing here takes a lock: a Python handler runs between two bytecodes of the main
thread, maybe inside a `with lock:` of that same thread."""

from __future__ import annotations

import os
import select
import signal
import time
from typing import Any

ENDING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived: raised by check() at a safe point; the show
    cleans up and exits 130."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_pending: int | None = None  # the first ending signal since install()
_suspend = False  # a SIGTSTP came and the conductor has not taken it yet
_pipe: tuple[int, int] | None = None  # (read, write) of the wake-up pipe
_old_wakeup: int = -1


def _handler(signum: int, frame: Any) -> None:
    # a plain assignment: no lock, no allocation that could fail, no exception
    global _pending
    if _pending is None:
        _pending = signum


def _tstp(signum: int, frame: Any) -> None:
    global _suspend
    _suspend = True


def install() -> dict[int, Any]:
    """Note SIGINT, SIGTERM and SIGHUP in the flag from now on (main thread only, before
    the show starts its threads, which inherit its mask). Returns the old handlers.
    Clears a flag left by an earlier show of this process, and unblocks the three in
    case whoever started us had them blocked."""
    global _pending, _pipe, _old_wakeup
    _pending = None
    if _pipe is None:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        _pipe = (r, w)
        _old_wakeup = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    old = {sig: signal.signal(sig, _handler) for sig in ENDING}
    signal.pthread_sigmask(signal.SIG_UNBLOCK, ENDING)
    global _suspend
    _suspend = False
    signal.signal(signal.SIGTSTP, _tstp)
    return old


def ignore() -> None:
    """SIG_IGN for the ending signals (the teardown must not be cut short; afterwards the
    command only reports and exits, so they stay ignored), and the wake-up pipe closed.
    A signal that came before stays noted in the flag."""
    global _pipe, _old_wakeup
    for sig in ENDING:
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTSTP, signal.SIG_DFL)  # Ctrl-Z stops the teardown as usual
    if _pipe is not None:
        try:
            signal.set_wakeup_fd(_old_wakeup)
        except (ValueError, OSError):
            signal.set_wakeup_fd(-1)
        for fd in _pipe:
            os.close(fd)
        _pipe, _old_wakeup = None, -1


def pending() -> int | None:
    """The ending signal that came, or None."""
    return _pending


def check() -> None:
    """Raise Interrupted if an ending signal has come (a safe point of the show)."""
    if _pending is not None:
        raise Interrupted(_pending)


def take_suspend() -> bool:
    """True once for each Ctrl-Z (SIGTSTP) that came since the last call."""
    global _suspend
    if not _suspend:
        return False
    _suspend = False
    return True


def stop_here() -> float:
    """Stop this process as Ctrl-Z would have (SIGTSTP, default action), until a
    SIGCONT (`fg`, `bg`); then take Ctrl-Z again. Returns the seconds it was stopped.
    A process the shell cannot resume (an orphaned process group) is not stopped: the
    kernel drops the signal, and this returns at once."""
    global _suspend
    t = time.monotonic()
    signal.signal(signal.SIGTSTP, signal.SIG_DFL)
    try:
        os.kill(os.getpid(), signal.SIGTSTP)
    finally:
        signal.signal(signal.SIGTSTP, _tstp)
        _suspend = False  # a second Ctrl-Z while stopping is this one
    return time.monotonic() - t


def wake_fd() -> int | None:
    """The read end of the wake-up pipe (None before install()): readable after a signal."""
    return _pipe[0] if _pipe is not None else None


def drain() -> None:
    """Empty the wake-up pipe (its bytes only say that some signal came)."""
    if _pipe is None:
        return
    try:
        while os.read(_pipe[0], 512):
            pass
    except BlockingIOError:
        pass


def wait_readable(fds: list[int], timeout: float) -> list[int]:
    """select() on `fds` for up to `timeout` s, returning early when an ending signal
    comes (then the list may be empty: check() next). Returns the ready fds of `fds`."""
    wake = wake_fd()
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        if _pending is not None:
            return []
        left = max(0.0, deadline - time.monotonic())
        watch = fds if wake is None else [*fds, wake]
        ready, _, _ = select.select(watch, [], [], left)
        if wake is not None and wake in ready:
            drain()
            ready = [fd for fd in ready if fd != wake]
            if not ready and _pending is None and left > 0:
                continue  # another signal (SIGWINCH): wait out the rest
        return ready


def sleep(timeout: float) -> bool:
    """Sleep up to `timeout` s; True (at once) when an ending signal has come."""
    if timeout > 0:
        wait_readable([], timeout)
    return _pending is not None


__all__ = [
    "ENDING",
    "Interrupted",
    "check",
    "drain",
    "ignore",
    "install",
    "pending",
    "sleep",
    "stop_here",
    "take_suspend",
    "wait_readable",
    "wake_fd",
]
