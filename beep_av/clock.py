"""The show's clock: time.monotonic() less the time the show spent suspended (Ctrl-Z,
then `fg`). Every show time (`clock.now() - t0`) is read from here, so a suspended show
goes on from where it stopped: its samples, phases, kills and beep keep their spacing,
and the recording marks the pause (a `pause` line) instead of a jump.

Kernel timestamps arrive on CLOCK_MONOTONIC (kclock.KernelClock.to_monotonic);
`from_monotonic` puts them on this clock. A plain float read and written by the main
thread (the conductor adds to it while every other thread of the process is stopped
with it): no lock."""

from __future__ import annotations

import time

_held = 0.0  # seconds spent suspended since the process started


def now() -> float:
    """The show's clock, in seconds (time.monotonic() less the suspended time)."""
    return time.monotonic() - _held


def from_monotonic(t: float) -> float:
    """A time.monotonic() reading (e.g. a kernel record's time) on the show's clock."""
    return t - _held


def held() -> float:
    """Seconds spent suspended so far."""
    return _held


def hold(seconds: float) -> None:
    """Count `seconds` of suspension: the clock steps back by them."""
    global _held
    if seconds > 0:
        _held += seconds
