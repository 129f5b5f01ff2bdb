"""The driver: what feeds the conductor. A performance is one Conductor (show.py) fed by
one driver; the driver makes the ShowStates, the conductor shows them.

Drivers: `live.LiveDriver` (the story on a live stage: `show`, `rehearse`),
`stages.replay.ReplayDriver` (`replay FILE`), `watch.WatchDriver` (`watch`). Which one a
command gets is chosen in one place, `app.py`.

Every driver has:
- `kind`: what it performs ("story", "replay", "watch", an act's name);
- `run(publish, stop, t0) -> bool`: called once, in the conductor's engine thread.
  Publishes ShowStates (show time t = time.monotonic() - t0) until its performance is
  over (True) or `stop` is set (False). What it raises ends the show: the conductor
  hands it to the main thread, the teardown ladder gives its exit code (`code`,
  `end_reason` attributes; else 1, "error").
- `command(cmd) -> str | None`: a presenter command the conductor does not handle itself
  (it keeps quit, mute and captions, and ends the show after release): toggle_pause,
  rate_up, rate_down, release. Returns the on-screen message ("" clears it), or None
  when the command does not apply to this driver. Called from the UI thread.
- `close()`: idempotent; called once by the teardown ladder (teardown.py), after the
  engine has stopped, whether or not `run` was ever called.
- `kills() -> list[KillRecord]`: every kill record seen so far (may be empty).

Optional: `paused: bool`, read by the conductor after each command for the HUD."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from beep_av.model import KillRecord, ShowState

Publish = Callable[[ShowState], None]


@runtime_checkable
class Driver(Protocol):
    kind: str

    def run(self, publish: Publish, stop: threading.Event, t0: float) -> bool: ...

    def command(self, cmd: str) -> str | None: ...

    def close(self) -> None: ...

    def kills(self) -> list[KillRecord]: ...


__all__ = ["Driver", "Publish"]
