"""The one teardown ladder of every performance (show, rehearse, replay, watch).

    with Teardown(say) as ladder:
        stage = make_stage(...)
        ladder.push("stage", stage.teardown)   # right after it is created
        ...
        ladder.code = conductor.run()
    code = ladder.code

Entering installs the signal handlers (SIGINT, SIGTERM, SIGHUP only set a flag). Each
part is pushed right after it is created; whatever fails half-way, everything created
so far is undone in reverse order, exactly once, each step even if one before it fails
(a failing step is one `warning: cleanup NAME: ...` line). Before the first step the
ending signals are ignored (interrupt.ignore): a second Ctrl-C cannot cut the teardown
short, and they stay ignored while the command reports and exits.

The exit code: what the body set in `code`; 130 (or `interrupted_code`: a watch ends
with 0) when an ending signal or Ctrl-C ended it, which is then not raised further;
else the exception's own `code` (1 for a bug), and the exception goes on to the CLI's
one line.

The recording is the last step whatever its place in the stack (`record()`): its `end`
line carries what only the other steps know (the audio's underflows, the file
descriptors still open once everything else is closed)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from beep_av.errors import EXIT_INTERRUPTED
from beep_av.interrupt import Interrupted, ignore, install

Say = Callable[[str], None]


def open_fds() -> int | None:
    """How many file descriptors this process has open (None where /proc is missing)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the listing's own fd
    except OSError:
        return None


class Teardown:
    def __init__(
        self,
        say: Say,
        *,
        interrupted_code: int = EXIT_INTERRUPTED,
        fds_start: int | None = None,
    ) -> None:
        self.say = say
        self.interrupted_code = interrupted_code
        self.fds_start = fds_start  # open fds before the show made anything (live)
        self.code = 1
        self.end_reason: str | None = None  # set when an exception ended the show
        self.errors: list[str] = []
        self.conductor = None  # the conductor, once built: its end reason, fps, kill
        self.driver = None  # the driver, once built: its kills for an every-kill recording
        self.audio_report = None  # what closing the audio said
        self.stopped_t: float | None = None  # show time the teardown began
        self._stack = ExitStack()
        self._recorder = None
        self._t0 = 0.0

    # ------------------------------------------------------------ building

    def push(self, name: str, fn: Callable[[], Any]) -> None:
        """Undo `fn()` at teardown (named `name` if it fails)."""
        self._stack.callback(self._step, name, fn)

    def record(self, recorder, t0: float) -> None:
        """The recording: ended and closed after every other step."""
        self._recorder, self._t0 = recorder, t0

    def close_audio(self, audio) -> None:
        """Push the audio's close; keep its report for the recording and the last line."""

        def close() -> None:
            self.audio_report = audio.close()

        self.push("audio", close)

    # ------------------------------------------------------------ the ladder

    def _step(self, name: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 — every step must run
            self.errors.append(f"{name}: {e}")

    def __enter__(self) -> Teardown:
        install()
        return self

    def __exit__(self, typ, e, tb) -> bool:
        suppress = False
        if e is not None:
            if isinstance(e, Interrupted | KeyboardInterrupt):
                self.code, self.end_reason, suppress = self.interrupted_code, "interrupted", True
            else:
                self.code = getattr(e, "code", 1)
                self.end_reason = getattr(e, "end_reason", "error")
        # a second Ctrl-C, SIGTERM or SIGHUP during cleanup must not cut it short (an
        # interrupted teardown would leave a cgroup or a swapfile behind); they stay
        # ignored afterwards too: the command only reports and exits from here, and a
        # late signal would turn the documented exit code into a death by signal
        ignore()
        c = self.conductor
        if c is not None:
            self.stopped_t = c.now()
        self._stack.close()
        if self._recorder is not None:
            self._end_recording()
        line = sound_line(self.audio_report)
        if line:
            self.say(line)
        for err in self.errors:
            self.say(f"warning: cleanup {err}")
        return suppress

    def _end_recording(self) -> None:
        rec, c, report = self._recorder, self.conductor, self.audio_report
        if rec.every_kill and self.driver is not None:
            # every kill the driver saw, also those still waiting for the stage
            self._step("recording", lambda: [rec.kill(k) for k in self.driver.kills()])
        fields: dict[str, Any] = {"exit": self.code}
        if c is not None and c.fps() is not None:
            fields["fps"] = round(c.fps(), 1)
        if report is not None:
            fields["underflows"] = getattr(report, "underflows", None)
            fields["audio"] = getattr(report, "device", None)
        if self.fds_start is not None:
            # everything but the recording is closed by now: its own fd is not a leak
            now_open = open_fds()
            fields["fds_start"] = self.fds_start
            fields["fds"] = None if now_open is None else now_open - 1
        reason = self.end_reason or (c.end_reason if c is not None else "error")
        kill = c.state.kill if c is not None else None
        if kill is not None and not kill.oom:
            fields.update(oom=False, killer=kill.killer)  # never an OOM kill
        if self.code == EXIT_INTERRUPTED:
            reason = "interrupted"
        t = time.monotonic() - self._t0
        self._step("recording", lambda: rec.end(t, reason, **fields))
        self._step("recording", rec.close)


__all__ = ["Teardown", "open_fds"]


def sound_line(report: Any) -> str | None:
    """The last word on the sound, for a newcomer: why it was silent, or how often it
    dropped out; nothing when there is nothing to say (it played, or --audio off)."""
    if report is None:
        return None
    device = str(getattr(report, "device", "off"))
    underflows = getattr(report, "underflows", 0) or 0
    if device == "none":
        return "sound: no sound device, so the show played silently; `beep-av doctor` says why"
    if device == "off" or device.startswith("wav:") and " + " not in device:
        return None
    if underflows:
        return (
            f"sound: {underflows} dropout(s) on {device} (the machine was too busy to "
            "feed the sound card in time)"
        )
    return None
